"""Scoring with `evaluate.evaluator("image-classification")` on a `datasets` dataset, as the README shows, against
pim-infer on the same images."""

import json

from datasets import load_dataset
from evaluate import evaluator
from transformers import AutoImageProcessor, AutoModelForImageClassification

from modeling_pim.tools.pim_infer import main as pim_infer
from modeling_pim.training.metrics import load_accuracy_metric
from test_infer import LABELS, model_dir, write_images  # noqa: F401 (model_dir is a fixture)


def test_evaluate_evaluator_gives_pim_infer_accuracy(model_dir, tmp_path, datasets_cache):  # noqa: F811
    images_dir = tmp_path / "images"
    for seed, label in enumerate(LABELS):
        write_images(images_dir / label, 4, seed=10 + seed)

    # The README's recipe.
    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    dataset = load_dataset("imagefolder", data_dir=str(images_dir), split="train", cache_dir=str(datasets_cache))
    dataset = dataset.align_labels_with_mapping(model.config.label2id, "label")  # label ids = the model's
    results = evaluator("image-classification").compute(
        model_or_pipeline=model,
        feature_extractor=processor,
        data=dataset,
        metric=load_accuracy_metric(),  # evaluate.load("accuracy"), or its bundled copy offline
        label_mapping=model.config.label2id,
    )

    assert pim_infer([str(model_dir), str(images_dir), "--output_dir", str(tmp_path / "out"), "--num_workers", "0"]) == 0
    infer_results = json.loads((tmp_path / "out" / "infer_results.json").read_text())
    assert infer_results["num_predicted"] == len(dataset) == 12
    assert 0 < results["accuracy"] < 1  # the untrained model gets some images right, not all
    assert results["accuracy"] == infer_results["accuracy"]
