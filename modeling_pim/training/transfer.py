"""Starting a training run from a trained PIM model, on the same classes or on others (e.g. a CUB model → NABirds)."""

import logging

import torch

from .. import PimForImageClassification


logger = logging.getLogger(__name__)


def class_dependent_keys(model: PimForImageClassification) -> list[str]:
    """
    The keys of `model`'s state dict whose shape depends on the number of classes (the token classifiers' last layer,
    the final classifier): those that differ between the model built with one more class, on the meta device.
    """
    config = model.config.__class__.from_dict({**model.config.to_dict(), "num_labels": model.config.num_labels + 1})
    config.id2label = {index: str(index) for index in range(config.num_labels)}
    with torch.device("meta"):
        other = PimForImageClassification(config).state_dict()
    return [key for key, value in model.state_dict().items() if other[key].shape != value.shape]


def load_for_labels(
    model_name_or_path: str, id2label: dict[int, str]
) -> tuple[PimForImageClassification, list[str]]:
    """
    Loads a trained PIM model to train on the classes `id2label`.

    On the classes it was trained on (same names, same order), the model is returned as it is. On other classes, the
    model keeps every tensor that does not depend on the classes (backbone, feature pyramid, token classifiers but for
    their last layer, combiner; the selector has none) and re-initialises, with PyTorch's default, those that do
    ([`class_dependent_keys`]), even when the number of classes is the same: the logged list names them.

    Returns:
        `(model, reset_keys)`: the model and the keys of the tensors it re-initialised (empty on the same classes).
    """
    pretrained = PimForImageClassification.from_pretrained(model_name_or_path)
    if pretrained.config.id2label == id2label:
        return pretrained, []
    config = pretrained.config.__class__.from_dict(
        {
            **pretrained.config.to_dict(),
            "num_labels": len(id2label),
            "id2label": id2label,
            "label2id": {label: index for index, label in id2label.items()},
        }
    )
    model = PimForImageClassification(config)
    reset = class_dependent_keys(model)
    kept = {key: value for key, value in pretrained.state_dict().items() if key not in reset}
    model.load_state_dict(kept, strict=False)
    logger.warning(
        f"{model_name_or_path} was trained on other classes ({pretrained.config.num_labels}) than this dataset's "
        f"({len(id2label)}): kept {len(kept)} tensors (backbone, pyramid, combiner), re-initialised the "
        f"{len(reset)} that depend on the classes: {', '.join(reset)}."
    )
    return model, reset


__all__ = ["class_dependent_keys", "load_for_labels"]
