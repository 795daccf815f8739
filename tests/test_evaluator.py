"""Scoring with `evaluate.evaluator("image-classification")` on a `datasets` dataset, as the README shows, against
pim-infer on the same images: plain, 16-bit and transparent ones."""

import json

import numpy as np
import pytest
from datasets import load_dataset
from evaluate import evaluator
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from modeling_pim.tools.pim_infer import main as pim_infer
from modeling_pim.training.metrics import load_accuracy_metric, with_image_to_rgb
from test_infer import LABELS, model_dir, write_images  # noqa: F401 (model_dir is a fixture)


def write_16_bit_and_transparent_images(folder, seed):
    """A 16-bit gray PNG (`convert("RGB")` clips it to white) and an RGBA PNG whose transparent pixels hide blue."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4), dtype=np.uint16) * 257
    Image.fromarray(blocks).resize((80, 64), Image.Resampling.NEAREST).save(folder / "gray16.png")
    transparent = Image.new("RGBA", (80, 64), (0, 0, 255, 0))
    transparent.paste((*rng.integers(0, 256, 3).tolist(), 255), (20, 12, 60, 52))
    transparent.save(folder / "transparent.png")


@pytest.fixture
def images_dir(tmp_path):
    root = tmp_path / "images"
    for seed, label in enumerate(LABELS):
        write_images(root / label, 4, seed=10 + seed)
        write_16_bit_and_transparent_images(root / label, seed=20 + seed)
    return root


def evaluator_accuracy(model_dir, images_dir, cache_dir, decode):  # noqa: F811
    """The README's recipe; `decode=False` leaves out `with_image_to_rgb`."""
    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    dataset = load_dataset("imagefolder", data_dir=str(images_dir), split="train", cache_dir=str(cache_dir))
    dataset = dataset.align_labels_with_mapping(model.config.label2id, "label")  # label ids = the model's
    if decode:
        dataset = with_image_to_rgb(dataset)
    results = evaluator("image-classification").compute(
        model_or_pipeline=model,
        feature_extractor=processor,
        data=dataset,
        metric=load_accuracy_metric(),  # evaluate.load("accuracy"), or its bundled copy offline
        label_mapping=model.config.label2id,
    )
    return results["accuracy"], len(dataset)


def test_evaluate_evaluator_gives_pim_infer_accuracy(model_dir, images_dir, tmp_path, datasets_cache):  # noqa: F811
    accuracy, num_images = evaluator_accuracy(model_dir, images_dir, datasets_cache, decode=True)
    stock_accuracy, _ = evaluator_accuracy(model_dir, images_dir, datasets_cache, decode=False)

    assert pim_infer([str(model_dir), str(images_dir), "--output_dir", str(tmp_path / "out"), "--num_workers", "0"]) == 0
    infer_results = json.loads((tmp_path / "out" / "infer_results.json").read_text())
    assert infer_results["num_predicted"] == num_images == 18
    assert 0 < accuracy < 1  # the untrained model gets some images right, not all
    assert accuracy == infer_results["accuracy"]
    # Without it, transformers' convert("RGB") shows the model other pictures and another accuracy.
    assert stock_accuracy != accuracy


def test_with_image_to_rgb_names_a_missing_column(images_dir, datasets_cache):
    dataset = load_dataset("imagefolder", data_dir=str(images_dir), split="train", cache_dir=str(datasets_cache))

    with pytest.raises(ValueError, match=r"^The dataset has no column 'img'; its columns are \['image', 'label'\]\.$"):
        with_image_to_rgb(dataset, image_column="img")
    converted = with_image_to_rgb(dataset)
    assert converted[0]["image"].mode == "RGB" and converted["label"] == dataset["label"]
