"""Training from a trained PIM model on other classes (e.g. CUB → NABirds): what is kept, what is re-initialised."""

import logging
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification

from fgvc_trees import make_nabirds_tree
from modeling_pim import PimConfig
from modeling_pim.training.transfer import (
    ARCHITECTURE_FIELDS,
    SIZE_FIELDS,
    TRAINING_FIELDS,
    UNUSED_FIELDS,
    class_dependent_keys,
    differing_fields,
    fine_tuning_config,
    load_for_labels,
    with_labels,
)
from test_modeling_pim import MODULE_SWITCHES, images, tiny_config, tiny_model


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from test_train_pim import TINY_RUN  # noqa: E402


OTHER_LABELS = {0: "Mallard", 1: "Wood Duck", 2: "Northern Cardinal", 3: "Barn Swallow", 4: "Wren"}


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        ("fpn+selector+combiner", [*(f"pim.token_classifiers.{i}.layers.3.{p}" for i in range(4) for p in ("weight", "bias")), "classifier.weight", "classifier.bias"]),
        ("selector", [f"pim.token_classifiers.{i}.layers.{p}" for i in range(4) for p in ("weight", "bias")]),
        ("backbone only", ["classifier.weight", "classifier.bias"]),
    ],
)  # fmt: skip
def test_class_dependent_keys_are_the_token_classifiers_last_layers_and_the_classifier(switches, expected):
    assert class_dependent_keys(tiny_model("test_resnet", **MODULE_SWITCHES[switches])) == expected


def test_same_classes_keep_the_model_as_it_is(tmp_path):
    source = tiny_model("test_resnet").eval()
    source.save_pretrained(tmp_path)
    model, reset = load_for_labels(str(tmp_path), source.config.id2label)
    assert reset == []
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images()).logits, source(images()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("num_labels", [5, 3])  # as many classes as the source, and fewer
def test_other_classes_keep_everything_but_the_class_dependent_tensors(tmp_path, caplog, num_labels):
    source = tiny_model("test_resnet")
    source.save_pretrained(tmp_path)
    id2label = {index: OTHER_LABELS[index] for index in range(num_labels)}
    with caplog.at_level(logging.WARNING, logger="modeling_pim.training.transfer"):
        model, reset = load_for_labels(str(tmp_path), id2label)
    assert reset == class_dependent_keys(model) and len(reset) == 10
    assert model.config.id2label == id2label and model.config.label2id["Mallard"] == 0
    source_state, state = source.state_dict(), model.state_dict()
    for key, value in state.items():
        if key in reset:
            bound = 1 / model.get_parameter(key.replace(".bias", ".weight"))[0].numel() ** 0.5
            assert value.shape[0] == num_labels and value.abs().max() <= bound, key
            assert value.shape != source_state[key].shape or not torch.equal(value, source_state[key]), key
        else:
            assert torch.equal(value, source_state[key]), f"{key} was not kept"
    message = caplog.text
    assert "other classes (5) than this dataset's" in message and f"({num_labels})" in message
    assert all(key in message for key in reset)
    assert torch.isfinite(model(images(), labels=torch.tensor([0, 1])).loss)


def test_train_pim_fine_tunes_a_model_on_other_classes(tmp_path, caplog):
    source = tiny_model("test_resnet", image_size=32, num_selects=[8, 4, 2, 1], tokens_per_graph_node=3)
    source.save_pretrained(tmp_path / "cub-model")
    data_dir = make_nabirds_tree(tmp_path / "data")
    output_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="modeling_pim.training.transfer"):
        train_pim.main(
            [
                *TINY_RUN,
                *("--dataset", "nabirds", "--data_dir", str(data_dir), "--max_steps", "1"),
                *("--model_name_or_path", str(tmp_path / "cub-model"), "--output_dir", str(output_dir)),
            ]
        )
    assert "re-initialised the 10 that depend on the classes" in caplog.text
    model = AutoModelForImageClassification.from_pretrained(output_dir)
    assert model.config.num_labels == 3 and "Mallard (Male)" in model.config.label2id


def test_every_config_field_has_one_rule_for_a_run_from_a_checkpoint():
    rules = [*TRAINING_FIELDS, *ARCHITECTURE_FIELDS, *SIZE_FIELDS, *UNUSED_FIELDS]
    assert sorted(rules) == sorted(PimConfig.__annotations__)


@pytest.mark.parametrize(
    ("family", "values", "applied", "conflicts"),
    [
        ("test_resnet", {"image_size": 96, "lambda_b": 2.0}, {"image_size": 96, "lambda_b": 2.0}, {}),  # bilinear CNN
        ("test_vit", {"image_size": 96}, {"image_size": 96}, {"image_size": 64}),  # position embeddings, Conv1d
        ("test_resnet", {"comb_proj_size": 99}, {"comb_proj_size": 99}, {}),  # not used with the feature pyramid
        ("test_resnet", {"fpn_size": 32, "image_size": 96}, {"fpn_size": 32, "image_size": 96}, {"fpn_size": 16}),
        ("test_resnet", {"proj_type": "Linear", "fpn_size": 32}, {"proj_type": "Linear", "fpn_size": 32},
         {"proj_type": "Conv"}),
        ("test_resnet", {"backbone_kwargs": {"drop_path_rate": 0.1}}, {"backbone_kwargs": {"drop_path_rate": 0.1}},
         {}),
        ("test_resnet", {"fpn_size": 16, "backbone_pretrained": True, "lambda_n": 5.0}, {}, {}),  # the checkpoint's
    ],
)  # fmt: skip
def test_a_run_from_a_checkpoint_takes_the_values_that_keep_its_tensors(family, values, applied, conflicts):
    checkpoint = tiny_config(family, backbone_pretrained=False)
    result = fine_tuning_config(checkpoint, values)
    assert (result.applied, result.conflicts) == (applied, conflicts)
    assert result.unused == ({"backbone_pretrained": True} if "backbone_pretrained" in values else {})
    if not conflicts:
        assert {name: getattr(result.config, name) for name in applied} == applied
        assert result.config.id2label == checkpoint.id2label


def test_a_checkpoint_of_another_run_differs_in_its_fields_not_in_its_classes():
    saved = tiny_config("test_resnet")
    assert differing_fields(saved, with_labels(saved, {0: "other"})) == {}
    assert differing_fields(saved, tiny_config("test_resnet", lambda_b=1.0, backbone_pretrained=False)) == {
        "lambda_b": (0.5, 1.0)
    }
