"""
train_pim.py --backbone_weights FILE: a file that gives the backbone none or few of its tensors (keys with a prefix,
another architecture, a part of the weights) or a tensor of another shape is refused by name with the counts, never
trained on as if pretrained; a file that fits is loaded and the log says how much of it.
"""

import logging
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fgvc_trees import make_image_folders


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim.utils.cli import UserInputError  # noqa: E402
from test_train_pim import TINY_RUN, user_error  # noqa: E402


def timm_weights() -> dict[str, torch.Tensor]:
    """The state dict of a timm test_resnet whose every tensor holds distinct values (as trained weights do)."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet")
    return {name: torch.randn_like(value) if value.is_floating_point() else value
            for name, value in model.state_dict().items()}  # fmt: skip


def build_with_weights(weights: Path):
    pim_args, model_args, _, _, origins = train_pim.parse_arguments(
        [*TINY_RUN, "--backbone_pretrained", "true", "--backbone_weights", str(weights)]
    )
    return train_pim.build_model(train_pim.build_config(pim_args, model_args, origins), model_args, ["a", "b"])


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_weights_that_fit_are_loaded_and_counted_in_the_log(tmp_path, caplog, suffix):
    weights = timm_weights()
    path = tmp_path / f"test_resnet.{suffix}"
    save_file(weights, path) if suffix == "safetensors" else torch.save({"state_dict": weights}, path)
    with caplog.at_level(logging.INFO):
        model = build_with_weights(path)
    backbone = model.base_model.backbone.model
    torch.testing.assert_close(backbone.state_dict()["conv1.0.weight"], weights["conv1.0.weight"])
    expected = f"Backbone: loaded 75 of the 75 non-constant tensors of test_resnet (100% of their values) from {path}."
    assert expected in caplog.text


def test_weights_that_fit_none_or_few_tensors_are_refused_by_name_with_the_counts(tmp_path):
    weights = timm_weights()
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({f"backbone.{name}": value for name, value in weights.items()}, prefixed)
    with pytest.raises(UserInputError) as error:
        build_with_weights(prefixed)
    assert str(error.value) == (
        f"--backbone_weights {prefixed} holds the values of 0 of the 15 non-constant tensors of test_resnet (0% of "
        "their values; its keys start with 'backbone.'; test_resnet's are conv1.0.weight, conv1.1.weight, "
        "conv1.1.bias, ...): give timm's weights of test_resnet (the state dict of timm.create_model('test_resnet'), "
        "e.g. the model.safetensors of its Hub repository)."
    )
    other = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit").state_dict(), other)
    with pytest.raises(UserInputError, match=r"values of 0 of the 15 non-constant .*; its keys are blocks\.0\."):
        build_with_weights(other)
    part = tmp_path / "stem.safetensors"  # the first layers only: most of the backbone would stay random
    save_file({name: value for name, value in weights.items() if name.startswith(("conv1", "bn1"))}, part)
    with pytest.raises(UserInputError) as error:
        build_with_weights(part)
    assert str(error.value).startswith(
        f"--backbone_weights {part} holds the values of 15 of the 27 non-constant tensors of test_resnet (2% of their "
        "values; its keys are bn1.bias, bn1.running_mean, bn1.running_var, ...; "
    )


def test_a_tensor_of_another_shape_is_refused_by_name(tmp_path):
    weights = timm_weights()
    weights["bn1.weight"] = torch.ones(64)
    path = tmp_path / "wider.safetensors"
    save_file(weights, path)
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=2)
    flags = ["--backbone_pretrained", "true", "--backbone_weights", str(path), "--train_dir", str(data_dir / "train")]
    assert user_error([*TINY_RUN, *flags, "--output_dir", str(tmp_path / "run")]) == (
        f"--backbone_weights {path} does not fit --backbone test_resnet (size mismatch for bn1.weight: copying a param "
        "with shape torch.Size([64]) from checkpoint, the shape in current model is torch.Size([32])): give timm's "
        "weights of test_resnet."
    )
