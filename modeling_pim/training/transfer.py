"""
Starting a training run from a trained PIM model, on the same classes or on others (e.g. a CUB model → NABirds), with
the training fields given for the run ([`fine_tuning_config`]); comparing a checkpoint's configuration with a run's
([`differing_fields`]).
"""

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import PimConfig, PimForImageClassification


logger = logging.getLogger(__name__)

# How each field of a checkpoint's `PimConfig` takes a value given for a run that starts from the checkpoint:
# fields of the loss and of the training-time behaviour, which leave the checkpoint's tensors as they are, take it;
TRAINING_FIELDS = (
    "combiner_dropout",
    "lambda_b",
    "lambda_s",
    "lambda_n",
    "lambda_c",
    "label_smoothing",
    "selection_rule",
    "lambda_b0",
    "refinement_temperature",
    "refinement_temperature_halving_epochs",
)
# fields that decide which modules exist and which backbone outputs they read keep the checkpoint's (another value
# would give the checkpoint's tensors another meaning, even when their shapes stay);
ARCHITECTURE_FIELDS = (
    "backbone",
    "feature_taps",
    "out_indices",
    "use_fpn",
    "proj_type",
    "upsample_type",
    "use_selection",
    "use_combiner",
    "use_bottom_up_fpn",
)
# fields that size the modules take a value that keeps every tensor of the checkpoint (names and shapes), e.g.
# `image_size` of a CNN with bilinear upsampling, or `drop_path_rate` in `backbone_kwargs`;
SIZE_FIELDS = ("backbone_kwargs", "image_size", "fpn_size", "num_selects", "comb_proj_size", "tokens_per_graph_node")
# and `backbone_pretrained` (how a new model's backbone starts) is not used: the checkpoint holds the weights.
UNUSED_FIELDS = ("backbone_pretrained",)


@dataclass
class FineTuningConfig:
    """What [`fine_tuning_config`] makes of the values given for a run that starts from a checkpoint."""

    config: PimConfig | None
    """The checkpoint's configuration with the given values applied; `None` when `conflicts` is not empty."""
    applied: dict[str, Any] = field(default_factory=dict)
    """The given values that differ from the checkpoint's and replace them, by field."""
    conflicts: dict[str, Any] = field(default_factory=dict)
    """The fields whose given value the checkpoint cannot take, with the checkpoint's value."""
    unused: dict[str, Any] = field(default_factory=dict)
    """The given values of `UNUSED_FIELDS` that differ from the checkpoint's, which are not used."""


def with_values(config: PimConfig, values: dict[str, Any]) -> PimConfig:
    """
    A copy of `config` with `values` (fields, or `num_labels`/`id2label`/`label2id`), validated as any `PimConfig`.

    Raises:
        [`PimConfigError`]: a value the configuration refuses.
    """
    return config.__class__.from_dict({**config.to_dict(), **values})


def with_labels(config: PimConfig, id2label: dict[int, str]) -> PimConfig:
    """A copy of `config` for the classes `id2label` (index → name)."""
    labels = {"num_labels": len(id2label), "id2label": id2label}
    return with_values(config, {**labels, "label2id": {label: index for index, label in id2label.items()}})


def _tensor_shapes(config: PimConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of the model `config` builds (on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in PimForImageClassification(config).state_dict().items()}


def fine_tuning_config(checkpoint: PimConfig, values: dict[str, Any]) -> FineTuningConfig:
    """
    The configuration of a run that starts from a checkpoint whose configuration is `checkpoint`, given `values` for
    some of its fields (a recipe's, a command line's): the checkpoint's, with the values of `TRAINING_FIELDS`, and
    those of `SIZE_FIELDS` that keep every tensor of the checkpoint, applied. A value of `ARCHITECTURE_FIELDS` that
    differs from the checkpoint's, or one of `SIZE_FIELDS` that changes a tensor's name or shape, is a conflict (a
    value equal to the checkpoint's never is).

    Raises:
        [`PimConfigError`]: a value that no configuration can take (e.g. a negative `lambda_b`), or a combination the
        model refuses (e.g. more selected tokens than a layer has at the given `image_size`).
    """
    candidate = with_values(checkpoint, values)
    changed = {
        name: getattr(candidate, name) for name in values if getattr(candidate, name) != getattr(checkpoint, name)
    }
    unused = {name: value for name, value in changed.items() if name in UNUSED_FIELDS}
    applied = {name: value for name, value in changed.items() if name not in UNUSED_FIELDS}
    conflicts = {name: getattr(checkpoint, name) for name in applied if name in ARCHITECTURE_FIELDS}
    sizes = [name for name in applied if name in SIZE_FIELDS]
    if sizes and not conflicts:
        reference = _tensor_shapes(checkpoint)
        if _tensor_shapes(with_values(checkpoint, applied)) != reference:
            blamed = [name for name in sizes if _changes_tensors(checkpoint, name, applied[name], reference)]
            conflicts = {name: getattr(checkpoint, name) for name in blamed or sizes}
    if conflicts:
        return FineTuningConfig(None, applied, conflicts, unused)
    return FineTuningConfig(with_values(checkpoint, applied), applied, {}, unused)


def _changes_tensors(checkpoint: PimConfig, name: str, value: Any, reference: dict[str, tuple[int, ...]]) -> bool:
    """Whether `checkpoint` with `name` set to `value` alone has other tensors than `reference` (or is invalid)."""
    try:
        return _tensor_shapes(with_values(checkpoint, {name: value})) != reference
    except ValueError:  # valid only with the other given values
        return True


def differing_fields(saved: PimConfig, config: PimConfig) -> dict[str, tuple[Any, Any]]:
    """
    The `PimConfig` fields (but `UNUSED_FIELDS`, and the classes) whose value in `config` differs from `saved`'s, with
    `(saved value, config value)`: a checkpoint of another model or of another run when not empty.
    """
    return {
        name: (getattr(saved, name), getattr(config, name))
        for name in PimConfig.__annotations__
        if name not in UNUSED_FIELDS and getattr(saved, name) != getattr(config, name)
    }


def class_dependent_keys(model: PimForImageClassification) -> list[str]:
    """
    The keys of `model`'s state dict whose shape depends on the number of classes (the token classifiers' last layer,
    the final classifier): those that differ between the model built with one more class, on the meta device.
    """
    config = with_labels(model.config, {index: str(index) for index in range(model.config.num_labels + 1)})
    with torch.device("meta"):
        other = PimForImageClassification(config).state_dict()
    return [key for key, value in model.state_dict().items() if other[key].shape != value.shape]


def load_for_labels(
    model_name_or_path: str, id2label: dict[int, str], config: PimConfig | None = None
) -> tuple[PimForImageClassification, list[str]]:
    """
    Loads a trained PIM model to train on the classes `id2label`, with `config` (a configuration whose tensors are the
    checkpoint's, from [`fine_tuning_config`]) instead of the checkpoint's own if given.

    On the classes it was trained on (same names, same order), the model is returned as it is. On other classes, the
    model keeps every tensor that does not depend on the classes (backbone, feature pyramid, token classifiers but for
    their last layer, combiner; the selector has none) and re-initialises, with PyTorch's default, those that do
    ([`class_dependent_keys`]), even when the number of classes is the same: the logged list names them.

    Returns:
        `(model, reset_keys)`: the model and the keys of the tensors it re-initialised (empty on the same classes).
    """
    pretrained = PimForImageClassification.from_pretrained(model_name_or_path, config=config)
    if pretrained.config.id2label == id2label:
        return pretrained, []
    model = PimForImageClassification(with_labels(pretrained.config, id2label))
    reset = class_dependent_keys(model)
    kept = {key: value for key, value in pretrained.state_dict().items() if key not in reset}
    model.load_state_dict(kept, strict=False)
    logger.warning(
        f"{model_name_or_path} was trained on other classes ({pretrained.config.num_labels}) than this dataset's "
        f"({len(id2label)}): kept {len(kept)} tensors (backbone, pyramid, combiner), re-initialised the "
        f"{len(reset)} that depend on the classes: {', '.join(reset)}."
    )
    return model, reset


__all__ = [
    "ARCHITECTURE_FIELDS",
    "SIZE_FIELDS",
    "TRAINING_FIELDS",
    "UNUSED_FIELDS",
    "FineTuningConfig",
    "class_dependent_keys",
    "differing_fields",
    "fine_tuning_config",
    "load_for_labels",
    "with_labels",
    "with_values",
]
