"""`push_to_hub.py`: the staged folder (dry run) loads as remote code, its model card, and login errors."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError

from tiny_models import tiny_pim_config

from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
from modeling_pim.hub.model_card import base_model_id, build_model_card, describe_dataset


ROOT = Path(__file__).resolve().parents[1]
LABELS = ["cardinal", "blue jay", "house sparrow"]
STAGED_FILES = {
    "README.md",
    "config.json",
    "configuration_pim.py",
    "eval_results.json",
    "image_processing_pim.py",
    "model.safetensors",
    "modeling_pim.py",
    "preprocessor_config.json",
    "test_results.json",
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
    return path


@pytest.fixture(scope="module")
def staged(push_to_hub, training_output, tmp_path_factory):
    local_dir = tmp_path_factory.mktemp("staged") / "upload"
    args = ["--model_dir", str(training_output), "--repo_id", "someone/pim-test", "--dry_run"]
    assert push_to_hub.main(args + ["--local_dir", str(local_dir)]) == 0
    return local_dir


def test_dry_run_writes_exactly_the_upload(staged):
    assert {path.name for path in staged.iterdir()} == STAGED_FILES
    assert "AutoModelForImageClassification" in json.loads((staged / "config.json").read_text())["auto_map"]
    assert "AutoImageProcessor" in json.loads((staged / "preprocessor_config.json").read_text())["auto_map"]


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
        print(json.dumps({{"module": type(model).__module__, "logits": logits.tolist(), "predictions": predictions}}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr

    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")
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
    assert data.widget and data.widget[0]["src"].startswith("https://")
    results = {(result.dataset_split, result.metric_type): result for result in data.eval_results}
    assert results["test", "accuracy"].metric_value == 0.875
    assert results["test", "accuracy"].dataset_name == "CUB-200-2011"
    assert results["validation", "top_5_accuracy"].metric_value == 0.99
    assert all("layer" not in metric_type and "combiner" not in metric_type for _, metric_type in results)
    text = card.text
    assert 'pipeline("image-classification", model="someone/pim-test", trust_remote_code=True)' in text
    assert "pip install" in text and "timm" in text and "arXiv:2202.03822" in text
    assert "Diagnostics" in text and "`layer2_accuracy`" in text
    assert "learning_rate: 0.0005" in text
    assert "test (5794 images)" in text
    assert "resnet.pth" not in text and "/data/" not in text and "hf_secret" not in text


def test_model_card_without_training_outputs_is_valid(config):
    card = ModelCard(str(build_model_card(config, "someone/pim-bare")))

    assert card.data.pipeline_tag == "image-classification"
    assert card.data.eval_results is None and card.data.datasets is None
    assert "No evaluation results" in card.text and "No `training_recipe.json`" in card.text


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
    assert "is not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        push_to_hub.main(["--model_dir", str(training_output), "--repo_id", "not a repo id"])


@pytest.mark.parametrize(
    "data_args, expected",
    [
        ({"dataset": "hub", "dataset_name": "user/birds"}, ("user/birds", "user/birds")),
        ({"dataset": "nabirds"}, ("NABirds", None)),
        ({"dataset": "folders", "train_dir": "/data/train"}, ("custom image folders", None)),
        ({}, ("an unspecified dataset", None)),
    ],
)
def test_dataset_of_the_recipe(data_args, expected):
    assert describe_dataset({"data_args": data_args}) == expected


def test_base_model_is_the_starting_checkpoint_or_the_timm_weights(config, tmp_path):
    assert base_model_id(config, {}) == "timm/test_resnet.r160_in1k"
    assert base_model_id(config, {"model_args": {"model_name_or_path": "user/pim-cub"}}) == "user/pim-cub"
    assert base_model_id(config, {"model_args": {"model_name_or_path": str(tmp_path)}}) is None
    scratch = PimConfig(**{**config.to_dict(), "backbone_pretrained": False})
    assert base_model_id(scratch, {}) is None
