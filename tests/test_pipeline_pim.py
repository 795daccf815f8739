"""
PIM's pipelines (`modeling_pim/pipeline_pim.py`, remote code): `pipeline("image-classification")` and
`pipeline("image-feature-extraction")` with `trust_remote_code=True` decode images with `image_to_rgb`, in a process
where this package cannot be imported, so that a 16-bit or transparent image gives the answer of its 8-bit, on-white
twin (transformers' own pipelines clip it with `convert("RGB")`).
"""

import base64
import json
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import ImageClassificationPipeline, pipeline

from tiny_models import run_as_remote_code, tiny_pim_config

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim import pipeline_pim
from modeling_pim.pipeline_pim import CUSTOM_PIPELINES


LABELS = ["cardinal", "blue jay", "house sparrow"]
# What the subprocess prints: the pipelines' classes and answers, as JSON on its last line.
REMOTE_CODE_PIPELINES = textwrap.dedent(
    """
    import functools, http.server, json, sys, threading
    sys.modules["modeling_pim"] = None  # this repository's package must not be importable
    import PIL.Image
    from transformers import ImageClassificationPipeline, ImageFeatureExtractionPipeline, pipeline

    folder = sys.argv[1]
    file = lambda name: f"{folder}/{name}"
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    # transformers' own pipelines on the same model: load_image's convert("RGB").
    plain_classifier = pipeline(
        "image-classification", model=folder, trust_remote_code=True, pipeline_class=ImageClassificationPipeline
    )
    plain_extractor = pipeline(
        "image-feature-extraction", model=folder, trust_remote_code=True,
        pipeline_class=ImageFeatureExtractionPipeline,
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/gradient16.png"
    scores = lambda predictions: [[p["label"], p["score"]] for p in predictions]
    with PIL.Image.open(file("gradient16.png")) as image16:
        result = {
            "classes": [type(classifier).__module__.split(".")[-1] + "." + type(classifier).__name__,
                        type(extractor).__module__.split(".")[-1] + "." + type(extractor).__name__],
            "gradient8": scores(classifier(file("gradient8.png"), top_k=3)),
            "gradient16": scores(classifier(file("gradient16.png"), top_k=3)),
            "gradient16_image": scores(classifier(image16, top_k=3)),
            "gradient16_url": scores(classifier(url, top_k=3)),
            "gradient16_base64": scores(classifier(open(file("gradient16.base64")).read(), top_k=3)),
            "plain_gradient16": scores(plain_classifier(file("gradient16.png"), top_k=3)),
            "on_white": scores(classifier(file("on_white.png"), top_k=3)),
            "transparent": scores(classifier(file("transparent.png"), top_k=3)),
            "plain_transparent": scores(plain_classifier(file("transparent.png"), top_k=3)),
            "batch_logits": [
                scores(predictions)
                for predictions in classifier(
                    [file("gradient16.png"), file("transparent.png")] * 3, batch_size=6, top_k=2, function_to_apply="none"
                )
            ],
            "batch_embeddings": [
                embedding[0] for embedding in extractor([file("gradient8.png"), file("gradient16.png")] * 3, batch_size=6)
            ],
            "embedding8": extractor(file("gradient8.png"))[0],
            "embedding16": extractor(file("gradient16.png"))[0],
            "plain_embedding16": plain_extractor(file("gradient16.png"))[0],
        }
    server.shutdown()
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def remote_code_answers(tmp_path_factory):
    """The answers of the pipelines built from a saved folder in a process without this package, and the folder."""
    folder = tmp_path_factory.mktemp("pipeline_model")
    torch.manual_seed(0)
    PimForImageClassification(tiny_pim_config(LABELS)).save_pretrained(folder)
    PimImageProcessor.for_image_size(64).save_pretrained(folder)

    gradient8 = np.tile(np.linspace(0, 255, 96).round().astype(np.uint8), (80, 1))  # (80, 96), left black, right white
    PIL.Image.fromarray(gradient8).save(folder / "gradient8.png")
    PIL.Image.fromarray(gradient8.astype(np.uint16) * 257).save(folder / "gradient16.png")  # the same over 0..65535
    (folder / "gradient16.base64").write_text(base64.b64encode((folder / "gradient16.png").read_bytes()).decode())
    rgba = PIL.Image.new("RGBA", (90, 70), (0, 0, 0, 0))  # transparent black around a red square
    rgba.paste((200, 30, 30, 255), (20, 10, 70, 60))
    rgba.save(folder / "transparent.png")
    PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB").save(
        folder / "on_white.png"
    )

    return json.loads(run_as_remote_code(REMOTE_CODE_PIPELINES, folder).strip().splitlines()[-1]), folder


def test_saved_config_names_the_pipelines_and_the_file_travels(remote_code_answers):
    answers, folder = remote_code_answers
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    assert (folder / "pipeline_pim.py").read_bytes() == Path(pipeline_pim.__file__).read_bytes()
    assert answers["classes"] == [
        "pipeline_pim.PimImageClassificationPipeline",
        "pipeline_pim.PimImageFeatureExtractionPipeline",
    ]


def test_16_bit_image_is_classified_as_its_8_bit_twin_from_every_source(remote_code_answers):
    answers, _ = remote_code_answers
    for source in ("gradient16", "gradient16_image", "gradient16_url", "gradient16_base64"):
        assert answers[source] == answers["gradient8"], source
    # transformers' own pipeline sees a white picture: another answer.
    assert answers["plain_gradient16"] != answers["gradient8"]


def test_transparent_image_is_classified_as_on_white(remote_code_answers):
    answers, _ = remote_code_answers
    assert answers["transparent"] == answers["on_white"]
    assert answers["plain_transparent"] != answers["on_white"]


def test_batching_top_k_and_function_to_apply_are_transformers(remote_code_answers):
    answers, folder = remote_code_answers
    model = PimForImageClassification.from_pretrained(folder).eval()
    processor = PimImageProcessor.from_pretrained(folder)
    images = [PIL.Image.open(folder / "gradient8.png"), PIL.Image.open(folder / "on_white.png")] * 3
    with torch.no_grad():
        logits = model(**processor(images, return_tensors="pt")).logits
    # A batch of 6 images, more than the model's 4 layers: its per-layer outputs must not be split by image.
    assert len(answers["batch_logits"]) == 6
    for predictions, expected in zip(answers["batch_logits"], logits):
        top = expected.argsort(descending=True)[:2]
        assert [label for label, _ in predictions] == [LABELS[i] for i in top]
        assert [score for _, score in predictions] == pytest.approx(expected[top].tolist(), abs=1e-5)


def test_feature_extraction_embeds_a_16_bit_image_as_its_8_bit_twin(remote_code_answers):
    answers, _ = remote_code_answers
    assert len(answers["embedding16"]) == 32  # fpn_size of the tiny model: PimModel's pooler_output
    assert answers["embedding16"] == answers["embedding8"]
    assert answers["plain_embedding16"] != answers["embedding8"]
    assert len(answers["batch_embeddings"]) == 6
    for embedding in answers["batch_embeddings"]:
        assert embedding == pytest.approx(answers["embedding8"], abs=1e-5)


def test_pipelines_built_directly_on_model_instances_decode_as_the_saved_ones(remote_code_answers):
    """`pipeline(task, model=instance)` ignores `custom_pipelines`; the README's direct construction decodes as PIM."""
    answers, folder = remote_code_answers
    model = PimForImageClassification.from_pretrained(folder).eval()
    processor = PimImageProcessor.from_pretrained(folder)

    def scores(predictions):
        return [[prediction["label"], pytest.approx(prediction["score"], abs=1e-6)] for prediction in predictions]

    classifier = pipeline_pim.PimImageClassificationPipeline(model=model, image_processor=processor)
    extractor = pipeline_pim.PimImageFeatureExtractionPipeline(model=model.pim, image_processor=processor)
    stock = pipeline("image-classification", model=model, image_processor=processor)

    for name in ("gradient16", "transparent"):
        assert answers[name] == scores(classifier(str(folder / f"{name}.png"), top_k=3)), name
        assert answers[f"plain_{name}"] == scores(stock(str(folder / f"{name}.png"), top_k=3)), name
    assert type(stock) is ImageClassificationPipeline
    assert extractor(str(folder / "gradient16.png"))[0] == pytest.approx(answers["embedding8"], abs=1e-6)


def test_arrays_are_decoded_as_the_same_picture_from_a_file_or_refused(remote_code_answers):
    """Gray, 16-bit and RGBA arrays go through image_to_rgb; arrays transformers would misread as 8-bit are refused."""
    answers, folder = remote_code_answers
    model = PimForImageClassification.from_pretrained(folder).eval()
    classifier = pipeline_pim.PimImageClassificationPipeline(
        model=model, image_processor=PimImageProcessor.from_pretrained(folder)
    )
    gradient8 = np.array(PIL.Image.open(folder / "gradient8.png"))  # (80, 96) uint8
    transparent = np.array(PIL.Image.open(folder / "transparent.png"))  # (70, 90, 4) uint8
    on_white = np.array(PIL.Image.open(folder / "on_white.png"))  # (70, 90, 3) uint8

    def scores(image):
        predictions = classifier(image, top_k=3)
        return [[prediction["label"], pytest.approx(prediction["score"], abs=1e-6)] for prediction in predictions]

    for name, pixels in [
        ("uint8 (H, W)", gradient8),
        ("uint8 (H, W, 1)", gradient8[:, :, None]),
        ("uint16 (H, W)", gradient8.astype(np.uint16) * 257),
        ("uint16 tensor (H, W, 1)", torch.from_numpy(gradient8.astype(np.int32) * 257).to(torch.uint16)[:, :, None]),
    ]:
        assert answers["gradient8"] == scores(pixels), name
    assert answers["on_white"] == scores(transparent) == scores(on_white) == scores(torch.from_numpy(on_white))

    for pixels, described in [
        (on_white.astype(np.float32) / 255, "float32 of shape (70, 90, 3)"),
        (on_white.astype(np.uint16) * 257, "uint16 of shape (70, 90, 3)"),
        (torch.from_numpy(gradient8).float(), "float32 of shape (80, 96)"),
    ]:
        with pytest.raises(ValueError) as error:
            classifier(pixels)
        assert str(error.value) == (
            "PIM's pipeline takes arrays and tensors of 8-bit RGB pixels (uint8, (H, W, 3) or (3, H, W)), gray (H, W) "
            f"of uint8 or uint16, or RGBA (H, W, 4) of uint8; got {described}. Pass a PIL image or the image file "
            "instead: 16-bit, float and transparent images are then converted by their range (image_to_rgb), not "
            "rescaled by 1/255 as 8-bit pixels."
        )
