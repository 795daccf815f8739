"""
`push_to_hub.py`: the staged model repository (dry run) loads as remote code, its model card and widget example, the
Inference Endpoints handler run as the toolkit runs it, the Gradio Space run and called as a client would, the upload
through huggingface_hub (mocked), and the errors.
"""

import base64
import importlib.metadata
import io
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import gradio
import httpx2
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, SpaceCard
from huggingface_hub.errors import HfHubHTTPError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from tiny_models import tiny_pim_config

from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
from modeling_pim.hub.handler import decode_base64_image
from modeling_pim.hub.model_card import CITATION, HERBS_CITATION, base_model_id, build_model_card


ROOT = Path(__file__).resolve().parents[1]
LABELS = ["cardinal", "blue jay", "house sparrow"]
STAGED_FILES = {
    "README.md",
    "config.json",
    "configuration_pim.py",
    "eval_results.json",
    "handler.py",
    "image_processing_pim.py",
    "model.safetensors",
    "modeling_pim.py",
    "pipeline_pim.py",
    "preprocessor_config.json",
    "requirements.txt",
    "test_results.json",
    "widget_example.png",
}
# What setup.cfg declares (install_requires), by canonical distribution name.
DECLARED_REQUIREMENTS = {
    canonicalize_name(requirement.name): str(requirement)
    for requirement in map(Requirement, importlib.metadata.requires("modeling-pim"))
    if requirement.marker is None
}


@pytest.fixture(scope="module")
def push_to_hub():
    spec = importlib.util.spec_from_file_location("push_to_hub", ROOT / "push_to_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config():
    return tiny_pim_config(LABELS)


@pytest.fixture(scope="module")
def training_output(config, tmp_path_factory):
    """A training output_dir: model, processor, metrics and recipe as train_pim.py writes them."""
    path = tmp_path_factory.mktemp("output")
    torch.manual_seed(0)
    PimForImageClassification(config).save_pretrained(path)
    PimImageProcessor.for_image_size(64).save_pretrained(path)
    metrics = {
        "eval": {"eval_accuracy": 0.9, "eval_top5_accuracy": 0.99, "eval_layer2_accuracy": 0.8, "eval_loss": 0.5},
        "test": {"test_accuracy": 0.875, "test_mean_per_class_accuracy": 0.87, "test_num_samples": 5794},
    }
    for split, values in metrics.items():
        (path / f"{split}_results.json").write_text(json.dumps(values))
    recipe = {
        "model_args": {"backbone": "test_resnet", "model_name_or_path": None, "backbone_weights": "w/resnet.pth"},
        "data_args": {"dataset": "cub200", "dataset_name": None, "data_dir": "/data/CUB_200_2011"},
        "training_args": {"learning_rate": 0.0005, "num_train_epochs": 50, "hub_token": "hf_secret", "seed": 42},
    }
    (path / "training_recipe.json").write_text(json.dumps(recipe))
    # The first test image, as train_pim.py records it (modeling_pim.hub.widget.save_test_example).
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path / "test_example.png")
    return path


@pytest.fixture(scope="module")
def published(push_to_hub, training_output, tmp_path_factory):
    """The dry run with a Space: `(model repository folder, Space folder)`."""
    root = tmp_path_factory.mktemp("staged")
    args = ["--model_dir", str(training_output), "--repo_id", "someone/pim-test", "--dry_run"]
    args += ["--local_dir", str(root / "upload"), "--space_id", "someone/pim-test-demo"]
    assert push_to_hub.main(args + ["--space_local_dir", str(root / "space")]) == 0
    return root / "upload", root / "space"


@pytest.fixture(scope="module")
def staged(published):
    return published[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dry_run_writes_exactly_the_upload(staged, training_output):
    assert {path.name for path in staged.iterdir()} == STAGED_FILES
    assert "AutoModelForImageClassification" in json.loads((staged / "config.json").read_text())["auto_map"]
    assert "AutoImageProcessor" in json.loads((staged / "preprocessor_config.json").read_text())["auto_map"]
    assert (staged / "widget_example.png").read_bytes() == (training_output / "test_example.png").read_bytes()


def test_requirements_are_what_the_code_imports_at_the_declared_versions(published):
    model_code = {"transformers", "timm", "torch", "torchvision", "pillow"}
    for folder, expected in ((published[0], model_code), (published[1], model_code | {"matplotlib", "huggingface-hub"})):
        lines = (folder / "requirements.txt").read_text().split()
        requirements = {canonicalize_name(Requirement(line).name): line for line in lines}
        assert expected <= set(requirements)
        assert "gradio" not in requirements and "modeling-pim" not in requirements
        for name, line in requirements.items():  # the range setup.cfg declares, else the bare name
            assert line == DECLARED_REQUIREMENTS.get(name, Requirement(line).name)


def test_staged_folder_loads_as_remote_code_without_our_package(staged, training_output, tmp_path):
    pixel_values = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(pixel_values, tmp_path / "pixel_values.pt")
    with torch.no_grad():
        expected = PimForImageClassification.from_pretrained(training_output).eval()(pixel_values=pixel_values).logits
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_pim"] = None  # our package must not be importable: the folder's code is used
        import json, torch
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline

        model = AutoModelForImageClassification.from_pretrained({str(staged)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(pixel_values=torch.load({str(tmp_path / "pixel_values.pt")!r})).logits
        classifier = pipeline("image-classification", model={str(staged)!r}, trust_remote_code=True)
        predictions = classifier(Image.new("RGB", (80, 60), (200, 30, 30)), top_k=2)
        print(json.dumps({{"module": type(model).__module__, "logits": logits.tolist(), "predictions": predictions,
                          "pipeline": type(classifier).__module__ + "." + type(classifier).__name__}}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr

    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")
    assert result["pipeline"].startswith("transformers_modules")
    assert result["pipeline"].endswith(".pipeline_pim.PimImageClassificationPipeline")
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=1e-4, atol=1e-5)
    assert len(result["predictions"]) == 2 and {p["label"] for p in result["predictions"]} <= set(LABELS)


def test_model_card_metadata_and_body(staged):
    card = ModelCard.load(staged / "README.md")
    data = card.data

    assert data.pipeline_tag == "image-classification"
    assert data.library_name == "transformers"
    assert data.base_model == "timm/test_resnet.r160_in1k"
    assert data.datasets == ["bentrevett/caltech-ucsd-birds-200-2011"]
    assert {"pim", "fine-grained-visual-classification", "timm", "test_resnet"} <= set(data.tags)
    results = {(result.dataset_split, result.metric_type): result for result in data.eval_results}
    assert results.keys() == {("test", "accuracy"), ("test", "mean_per_class_accuracy")}
    assert results["test", "accuracy"].metric_value == 0.875
    assert results["test", "accuracy"].dataset_name == "CUB-200-2011"
    text = card.text
    assert "| validation | Top-5 accuracy | 99.00% |" in text
    assert "does not run models whose code lives in their repository" in text
    assert "[`someone/pim-test-demo`](https://huggingface.co/spaces/someone/pim-test-demo)" in text
    assert "handler.py" in text and CITATION in text
    assert 'pipeline("image-classification", model="someone/pim-test", trust_remote_code=True)' in text
    assert "pip install" in text and "timm" in text and "arXiv:2202.03822" in text
    assert "Diagnostics" in text and "`layer2_accuracy`" in text
    assert "learning_rate: 0.0005" in text
    assert "test (5794 images)" in text
    assert "resnet.pth" not in text and "/data/" not in text and "hf_secret" not in text


def test_model_card_without_training_outputs_is_valid(config):
    card = ModelCard(str(build_model_card(config, "someone/pim-bare")))

    assert card.data.pipeline_tag == "image-classification"
    assert card.data.eval_results is None and card.data.datasets is None and "widget" not in card.data.to_dict()
    assert "No evaluation results" in card.text and "No `training_recipe.json`" in card.text
    assert "does not run models whose code" in card.text and "example on this page" not in card.text


def test_model_card_of_a_herbs_model_says_so(config):
    herbs = PimConfig(**{**config.to_dict(), "use_bottom_up_fpn": True, "selection_rule": "predicted_class",
                         "lambda_b0": 1.375})
    card = ModelCard(str(build_model_card(herbs, "someone/herbs-bare")))

    assert "herbs" in card.data.tags and "pim" in card.data.tags
    assert "[arXiv 2303.06442](https://arxiv.org/abs/2303.06442)" in card.text
    assert "| Token selection rule | `predicted_class` |" in card.text
    assert "lambda_b0 1.375, temperature 64.0 halved every 10 epochs" in card.text
    assert "herbs" not in ModelCard(str(build_model_card(config, "someone/pim-bare"))).data.tags


def test_widget_shows_the_repository_image_with_the_model_output(staged, training_output):
    widget = ModelCard.load(staged / "README.md").data.widget

    assert len(widget) == 1 and widget[0]["src"] == "widget_example.png"
    model = PimForImageClassification.from_pretrained(training_output).eval()
    processor = PimImageProcessor.from_pretrained(training_output)
    with torch.no_grad():
        inputs = processor(images=Image.open(staged / "widget_example.png").convert("RGB"), return_tensors="pt")
        probabilities = model(**inputs).logits.softmax(-1)[0]
    ranked = probabilities.argsort(descending=True)
    assert [entry["label"] for entry in widget[0]["output"]] == [LABELS[i] for i in ranked]
    assert [entry["score"] for entry in widget[0]["output"]] == pytest.approx(probabilities[ranked].tolist(), abs=1e-4)


def test_readme_and_card_cite_the_papers_from_one_source():
    readme = (ROOT / "README.md").read_text()
    assert CITATION in readme and HERBS_CITATION in readme
    assert "author  = {Chou, Po-Yung and Lin, Cheng-Hung and Kao, Wen-Chung}" in CITATION


def test_endpoint_handler_reads_mime_base64_with_line_breaks():
    """`base64.encodebytes` (and `base64` without `-w0`) breaks lines every 76 characters; other characters fail."""
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    wrapped = base64.encodebytes(buffer.getvalue()).decode()
    assert "\n" in wrapped.strip()

    for data in (wrapped, wrapped.replace("\n", "\r\n"), "data:image/png;base64," + wrapped):
        np.testing.assert_array_equal(np.asarray(decode_base64_image(data)), pixels)
    with pytest.raises(ValueError, match=r"^'inputs' is not a base64-encoded image file: "):
        decode_base64_image(wrapped.replace("\n", "!"))


def test_endpoint_handler_answers_as_the_toolkit_calls_it(staged, tmp_path):
    """The toolkit imports handler.py from the repository folder, in a process where our package does not exist."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_pim"] = None  # our package must not be importable: the folder's code is used
        import base64, importlib.util, io, json
        from PIL import Image

        spec = importlib.util.spec_from_file_location("handler", {str(staged / "handler.py")!r})
        handler_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler_module)
        handler = handler_module.EndpointHandler(path={str(staged)!r})
        image_file = {str(staged / "widget_example.png")!r}
        # An image body: the toolkit's deserializer gives an RGB PIL image.
        from_image = handler({{"inputs": Image.open(image_file).convert("RGB")}})
        # A JSON body: parsed JSON with a base64 string, and the task's parameters.
        body = json.dumps({{"inputs": base64.b64encode(open(image_file, "rb").read()).decode(), "parameters": {{"top_k": 2}}}})
        from_json = handler(json.loads(body))
        # Transparency: a base64 PNG goes through the model's image_to_rgb (onto white), not convert("RGB").
        rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
        rgba.paste((200, 30, 30, 255), (10, 5, 30, 25))
        buffer = io.BytesIO()
        rgba.save(buffer, format="PNG")
        transparent = handler({{"inputs": base64.b64encode(buffer.getvalue()).decode()}})
        on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
        same_as_on_white = transparent == handler({{"inputs": on_white}})
        errors = []
        for data in ({{"inputs": "not base64!"}}, {{"inputs": {str(staged / "config.json")!r}}}, {{"inputs": 3}},
                     {{"inputs": Image.new("RGB", (8, 8)), "parameters": {{"temperature": 2}}}}):
            try:
                handler(data)
            except ValueError as error:
                errors.append(str(error))
        print(json.dumps({{"image": from_image, "json": from_json, "on_white": same_as_on_white, "errors": errors}}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    widget_output = ModelCard.load(staged / "README.md").data.widget[0]["output"]
    assert [entry["label"] for entry in result["image"]] == [entry["label"] for entry in widget_output]
    assert [entry["score"] for entry in result["image"]] == pytest.approx(
        [entry["score"] for entry in widget_output], abs=1e-4
    )
    assert result["json"] == result["image"][:2]
    assert result["on_white"]
    assert result["errors"][0].startswith("'inputs' is not a base64-encoded image file")
    assert result["errors"][1].startswith("'inputs' is not a base64-encoded image file")  # a path is never opened
    assert result["errors"][2] == "'inputs' must be an image (an image body, or base64 in a JSON body), got int."
    assert result["errors"][3].startswith("Unknown parameters ['temperature']")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"top_k": "3"}, "parameters.top_k must be a positive integer (e.g. 5), got '3'."),
        ({"top_k": 0}, "parameters.top_k must be a positive integer (e.g. 5), got 0."),
        ({"top_k": 2.5}, "parameters.top_k must be a positive integer (e.g. 5), got 2.5."),
        ({"top_k": True}, "parameters.top_k must be a positive integer (e.g. 5), got True."),
        (
            {"function_to_apply": "max"},
            "parameters.function_to_apply must be one of 'softmax', 'sigmoid', 'none', got 'max'.",
        ),
        ({"function_to_apply": 1}, "parameters.function_to_apply must be one of 'softmax', 'sigmoid', 'none', got 1."),
        (["top_k"], "'parameters' must be an object such as {\"top_k\": 5}, got list."),
    ],
)
def test_endpoint_handler_refuses_bad_parameters_before_classifying(parameters, message):
    from modeling_pim.hub.handler import EndpointHandler

    handler = EndpointHandler.__new__(EndpointHandler)  # no model: the parameters are checked first
    handler.classifier = None
    with pytest.raises(ValueError) as error:
        handler({"inputs": Image.new("RGB", (8, 8)), "parameters": parameters})
    assert str(error.value) == message


def test_endpoint_handler_passes_valid_parameters_to_the_pipeline():
    from modeling_pim.hub.handler import EndpointHandler

    handler = EndpointHandler.__new__(EndpointHandler)
    handler.classifier = lambda image, **parameters: [{"label": str(sorted(parameters.items())), "score": 1}]
    answer = handler({"inputs": Image.new("RGB", (8, 8)), "parameters": {"top_k": 2, "function_to_apply": "Sigmoid"}})
    assert answer == [{"label": "[('function_to_apply', 'Sigmoid'), ('top_k', 2)]", "score": 1.0}]


def test_space_is_a_gradio_app_linked_to_the_model_with_the_heatmap_code(published):
    space = published[1]
    card = SpaceCard.load(space / "README.md")

    assert card.data.sdk == "gradio" and card.data.models == ["someone/pim-test"] and card.data.app_file == "app.py"
    assert card.data.sdk_version == gradio.__version__
    assert (space / "examples" / "widget_example.png").read_bytes() == (published[0] / "widget_example.png").read_bytes()
    assert (space / "app.py").read_bytes() == (ROOT / "modeling_pim" / "hub" / "app.py").read_bytes()
    staged_modules = {path.relative_to(space).as_posix() for path in (space / "modeling_pim").rglob("*.py")}
    # The heatmap, and the model classes it reads (the weights and config come from the model repository).
    assert {
        "modeling_pim/tools/heatmap.py",
        "modeling_pim/tools/infer.py",
        "modeling_pim/image_processing_pim.py",
        "modeling_pim/modeling_pim.py",
        "modeling_pim/configuration_pim.py",
    } <= staged_modules
    for module in staged_modules - {path for path in staged_modules if path.endswith("__init__.py")}:
        assert (space / module).read_bytes() == (ROOT / module).read_bytes()
    assert (space / "modeling_pim" / "__init__.py").read_text().count("\n") == 1  # a docstring, no registration


def test_space_app_answers_a_gradio_client_with_labels_and_the_heatmap(published, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    model_repository, space = published
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    # What `python app.py` does in the Space, plus a check that the staged copy of our package is the one imported.
    launcher = textwrap.dedent(
        """
        import runpy, sys
        sys.path.insert(0, ".")
        import modeling_pim.tools.heatmap
        assert modeling_pim.tools.heatmap.__file__.startswith(sys.argv[1]), modeling_pim.tools.heatmap.__file__
        runpy.run_path("app.py", run_name="__main__")
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        PIM_MODEL=str(model_repository),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp_path / "gradio"),
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
    )
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "client"))
    server = subprocess.Popen(
        [sys.executable, "-c", launcher, str(space.resolve())],
        cwd=space,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "the Space app did not start within 240 s"
                time.sleep(0.5)
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        labels, heatmap = client.predict(handle_file(space / "examples" / "widget_example.png"), api_name="/predict")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    widget_output = ModelCard.load(model_repository / "README.md").data.widget[0]["output"]
    assert labels["label"] == widget_output[0]["label"]
    confidences = {entry["label"]: entry["confidence"] for entry in labels["confidences"]}
    assert set(confidences) == set(LABELS)
    for entry in widget_output:
        assert confidences[entry["label"]] == pytest.approx(entry["score"], abs=1e-4)
    with Image.open(heatmap) as figure:
        assert figure.format == "PNG" and figure.width > 600 and figure.height > 200


def test_upload_creates_the_model_then_the_gradio_space(push_to_hub, training_output, monkeypatch, capsys):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs.get("repo_type"), kwargs.get("space_sdk")))

    def upload_folder(self, *, folder_path, repo_id, repo_type=None, **kwargs):
        files = sorted(path.relative_to(folder_path).as_posix() for path in Path(folder_path).rglob("*") if path.is_file())
        calls.append(("upload_folder", repo_id, repo_type, files))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(push_to_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(push_to_hub, "get_token", lambda: "hf_token")
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    args = ["--model_dir", str(training_output), "--repo_id", "someone/pim-test", "--space_id", "someone/demo"]
    assert push_to_hub.main(args) == 0

    assert [call[:3] for call in calls] == [
        ("create_repo", "someone/pim-test", "model"),
        ("upload_folder", "someone/pim-test", "model"),
        ("create_repo", "someone/demo", "space"),
        ("upload_folder", "someone/demo", "space"),
    ]
    assert calls[0][3] is None and calls[2][3] == "gradio"
    assert set(calls[1][3]) == STAGED_FILES
    assert {"app.py", "README.md", "requirements.txt", "modeling_pim/tools/heatmap.py"} <= set(calls[3][3])
    assert "https://huggingface.co/spaces/someone/demo" in capsys.readouterr().out


def test_upload_without_login_is_a_clear_error(push_to_hub, training_output, monkeypatch, capsys):
    monkeypatch.setattr(push_to_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(push_to_hub, "get_token", lambda: None)
    monkeypatch.setattr(HfApi, "create_repo", lambda *args, **kwargs: pytest.fail("must not reach the Hub"))

    assert push_to_hub.main(["--model_dir", str(training_output), "--repo_id", "someone/pim-test"]) == 2

    error = capsys.readouterr().err
    assert "Not logged in" in error and "hf auth login" in error and "Traceback" not in error


def test_rejected_token_is_a_clear_error(push_to_hub, training_output, monkeypatch, capsys):
    def unauthorized(*args, **kwargs):
        response = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
        raise HfHubHTTPError("401 Client Error: Unauthorized", response=response)

    monkeypatch.setattr(push_to_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(push_to_hub, "get_token", lambda: "hf_invalid")
    monkeypatch.setattr(HfApi, "create_repo", unauthorized)

    assert push_to_hub.main(["--model_dir", str(training_output), "--repo_id", "someone/pim-test"]) == 2

    assert "refused the token" in capsys.readouterr().err


def test_bad_arguments_are_clear_errors(push_to_hub, training_output, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file.txt").write_text("x")
    dry_run = ["--repo_id", "a/b", "--dry_run", "--local_dir"]

    assert push_to_hub.main(["--model_dir", str(tmp_path / "nope"), *dry_run, str(tmp_path / "out")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert push_to_hub.main(["--model_dir", str(training_output), *dry_run, str(occupied)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        push_to_hub.main(["--model_dir", str(training_output), "--repo_id", "not a repo id"])


@pytest.mark.parametrize(
    "extra, error",
    [
        (["--space_id", "a/b"], "--space_id 'a/b' is the model's --repo_id: give the Space a name of its own"),
        (["--space_id", "a/c"], "--dry_run with --space_id needs --space_local_dir DIR2"),
        (["--space_local_dir", "x"], "--space_local_dir is only used with --dry_run and --space_id."),
        (["--space_id", "not a space"], "--space_id 'not a space' is not a valid Hub repository id"),
    ],
)
def test_bad_space_arguments_are_one_line_errors(push_to_hub, training_output, tmp_path, capsys, extra, error):
    args = ["--model_dir", str(training_output), "--repo_id", "a/b", "--dry_run", "--local_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main(args + extra)

    assert exit_info.value.code == 2
    assert f"push_to_hub.py: error: {error}" in capsys.readouterr().err


def test_a_widget_image_that_is_not_an_image_is_a_one_line_error(push_to_hub, training_output, tmp_path, capsys):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    args = ["--model_dir", str(training_output), "--repo_id", "a/b", "--dry_run", "--local_dir", str(tmp_path / "out")]

    assert push_to_hub.main(args + ["--widget_image", str(notes)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"push_to_hub.py: error: --widget_image {str(notes)!r} is not an image PIL can read (")
    assert error.count("\n") == 1 and "Traceback" not in error
    assert push_to_hub.main(args + ["--widget_image", str(tmp_path / "missing.jpg")]) == 2
    assert "--widget_image" in capsys.readouterr().err


def test_a_model_folder_without_test_results_gives_a_card_without_model_index(
    push_to_hub, config, tmp_path, caplog
):
    model_dir = tmp_path / "model"
    PimForImageClassification(config).save_pretrained(model_dir)
    (model_dir / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.9}))
    widget_image = tmp_path / "bird.jpg"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(widget_image)
    args = ["--model_dir", str(model_dir), "--repo_id", "a/b", "--dry_run", "--local_dir", str(tmp_path / "out")]

    assert push_to_hub.main(args + ["--widget_image", str(widget_image)]) == 0

    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.eval_results is None and "model-index" not in (tmp_path / "out" / "README.md").read_text()
    assert "| validation | Top-1 accuracy | 90.00% |" in card.text
    assert card.data.widget[0]["src"] == "widget_example.jpg"
    assert (tmp_path / "out" / "widget_example.jpg").read_bytes() == widget_image.read_bytes()
    assert any("has no test_results.json: the card has no model-index" in record.message for record in caplog.records)


def test_base_model_is_the_starting_checkpoint_or_the_timm_weights(config, tmp_path):
    assert base_model_id(config, {}) == "timm/test_resnet.r160_in1k"
    assert base_model_id(config, {"model_args": {"model_name_or_path": "user/pim-cub"}}) == "user/pim-cub"
    assert base_model_id(config, {"model_args": {"model_name_or_path": str(tmp_path)}}) is None
    scratch = PimConfig(**{**config.to_dict(), "backbone_pretrained": False})
    assert base_model_id(scratch, {}) is None


def test_results_written_before_the_model_are_refused(push_to_hub, training_output, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(training_output, model_dir)  # keeps the modification times
    saved = (model_dir / "model.safetensors").stat().st_mtime
    os.utime(model_dir / "test_results.json", (saved - 3600, saved - 3600))  # a previous run's, an hour older
    os.utime(model_dir / "test_example.png", (saved - 61, saved - 61))
    os.utime(model_dir / "eval_results.json", (saved - 59, saved - 59))  # within the tolerance of a copy
    args = ["--model_dir", str(model_dir), "--repo_id", "a/b", "--dry_run", "--local_dir", str(tmp_path / "out")]

    assert push_to_hub.main(args) == 2

    assert capsys.readouterr().err == (
        f"push_to_hub.py: error: --model_dir {str(model_dir)!r}: test_example.png, test_results.json, written more "
        "than 60 s before its model.safetensors, describe a previous model (e.g. of an earlier run in the same "
        "--output_dir), and the card would publish them as this model's. Evaluate this model again (python "
        f"train_pim.py ... --do_train false --model_name_or_path {model_dir} --output_dir {model_dir}, with the data "
        "flags of its training), or remove those files; if they are this model's (a copied folder), `touch` them.\n"
    )
    assert not any((tmp_path / "out").iterdir())  # nothing staged
