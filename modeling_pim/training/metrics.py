"""
Classification metrics: plain NumPy functions (top-k accuracy, mean per-class accuracy) and top-1 accuracy through
an `evaluate` module — the Hub's `accuracy` when the Hub can be used, else the identical copy bundled in
`modeling_pim/training/evaluate_modules/accuracy`, so that evaluation also works offline. Also how well image
embeddings (`PimModel`'s `pooler_output`) retrieve images of the same class, and [`with_image_to_rgb`], which makes
`evaluate`'s image-classification evaluator see a dataset's images as PIM's pipelines and `pim-infer` do.
"""

import functools
import os
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from transformers.utils import ModelOutput, logging

from ..image_processing_pim import image_to_rgb


logger = logging.get_logger(__name__)

BUNDLED_ACCURACY_PATH = Path(__file__).resolve().parent / "evaluate_modules" / "accuracy"

# Environment variables that forbid reaching the Hub, as read by huggingface_hub, evaluate and transformers.
OFFLINE_ENVIRONMENT_VARIABLES = ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE")


def _check_logits_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates `(N, C)` logits and `(N,)` integer labels in [0, C)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"Expected logits of shape (num_samples, num_classes) and labels of shape (num_samples,) with "
            f"num_samples > 0, got {logits.shape} and {labels.shape}."
        )
    if np.isnan(logits).any():
        raise ValueError("The logits contain NaN: the scores are undefined (check the model for divergence).")
    _check_labels(labels, "labels", logits.shape[1])
    return logits, labels


def _check_labels(labels: np.ndarray, name: str, num_classes: int | None) -> None:
    """Validates a 1-D array of integer class indices in [0, num_classes)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {labels.dtype}.")
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes if num_classes is not None else 'num_classes'}), got values from "
            f"{labels.min()} to {labels.max()}."
        )


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """
    Fraction of samples whose label is among the `k` highest logits.

    Ties are broken towards the lower class index (as `argmax` does), so `k=1` is the accuracy of `logits.argmax(-1)`.
    A `k` larger than the number of classes is clamped to it (giving 1.0).

    Args:
        logits (`np.ndarray`): scores of shape (num_samples, num_classes).
        labels (`np.ndarray`): integer labels of shape (num_samples,).
        k (`int`): number of top-scoring classes that count, at least 1.
    """
    logits, labels = _check_logits_labels(logits, labels)
    if k < 1:
        raise ValueError(f"k={k} must be at least 1.")
    k = min(k, logits.shape[1])
    top_classes = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top_classes == labels[:, None]).any(axis=1).mean())


def mean_per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """
    The mean over the classes present in `labels` of each class's recall (correct predictions / samples of the
    class), so every class weighs the same whatever its size.

    Args:
        predictions (`np.ndarray`): predicted class indices of shape (num_samples,).
        labels (`np.ndarray`): true class indices of shape (num_samples,).
        num_classes (`int`, *optional*): when given, indices must lie in [0, num_classes); classes absent from
            `labels` never count.
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(
            f"Expected predictions and labels of the same shape (num_samples,) with num_samples > 0, got "
            f"{predictions.shape} and {labels.shape}."
        )
    _check_labels(predictions, "predictions", num_classes)
    _check_labels(labels, "labels", num_classes)
    samples = np.bincount(labels)
    correct = np.bincount(labels, weights=predictions == labels, minlength=len(samples))
    present = samples > 0
    return float((correct[present] / samples[present]).mean())


def _hub_is_offline() -> bool:
    """Whether the environment (or huggingface_hub's configuration) forbids reaching the Hub."""
    truthy = {"1", "ON", "YES", "TRUE"}
    from_environment = any(os.environ.get(name, "").upper() in truthy for name in OFFLINE_ENVIRONMENT_VARIABLES)
    return from_environment or hub_constants.HF_HUB_OFFLINE


def load_accuracy_metric(**kwargs) -> evaluate.EvaluationModule:
    """
    The `accuracy` metric of `evaluate`: `evaluate.load("accuracy")` from the Hub unless the Hub is switched off
    (`HF_HUB_OFFLINE`, `HF_EVALUATE_OFFLINE` or `TRANSFORMERS_OFFLINE` set), else — or when loading it fails for any
    reason, e.g. no network — the identical copy bundled at `BUNDLED_ACCURACY_PATH`, which loads without any network
    access.

    Args:
        kwargs: passed to `evaluate.load` (e.g. `keep_in_memory=True`, `experiment_id=`).
    """
    if not _hub_is_offline():
        try:
            return evaluate.load("accuracy", **kwargs)
        except Exception as error:  # Any Hub or network failure: the bundled copy computes the same metric.
            logger.warning(
                f"Could not load the 'accuracy' metric from the Hub ({type(error).__name__}: {error}); using the "
                f"bundled copy at {BUNDLED_ACCURACY_PATH}."
            )
    return evaluate.load(str(BUNDLED_ACCURACY_PATH), **kwargs)


def _images_to_rgb(batch: dict[str, list[Any]], image_column: str) -> dict[str, list[Any]]:
    """A `with_transform` batch with the images of `image_column` (when the access reads it) through `image_to_rgb`."""
    if image_column not in batch:
        return batch
    return {**batch, image_column: [image_to_rgb(image) for image in batch[image_column]]}


def with_image_to_rgb(dataset: datasets.Dataset, image_column: str = "image") -> datasets.Dataset:
    """
    `dataset` whose images are converted by [`image_to_rgb`] as they are read (a lazy `with_transform`: nothing is
    decoded or stored in advance; it replaces any transform `dataset` had).

    `evaluate.evaluator("image-classification")` builds transformers' own `ImageClassificationPipeline` from a model
    instance (it never reads `config.custom_pipelines`), whose `load_image` calls `image.convert("RGB")`: 16-bit
    images clipped at 255, transparent pixels showing the colour they hide. Given this dataset, the pipeline receives
    the RGB images PIM's pipelines and `pim-infer` make (its `convert("RGB")` is then a no-op), so the evaluator's
    accuracy is `pim-infer`'s.

    Args:
        dataset (`datasets.Dataset`): a dataset with a column of decoded PIL images (the `Image` feature's default).
        image_column (`str`): that column's name (the evaluator's `input_column`).

    Raises:
        `ValueError`: `dataset` has no column `image_column`.
    """
    if image_column not in dataset.column_names:
        raise ValueError(f"The dataset has no column {image_column!r}; its columns are {dataset.column_names}.")
    return dataset.with_transform(functools.partial(_images_to_rgb, image_column=image_column))


@functools.cache
def _default_accuracy_metric() -> evaluate.EvaluationModule:
    """The accuracy metric used by `classification_metrics`, loaded once per process and kept in memory."""
    return load_accuracy_metric(keep_in_memory=True)


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, top_k: int = 5, accuracy_metric: evaluate.EvaluationModule | None = None
) -> dict[str, float]:
    """
    Top-1 accuracy (through the `evaluate` accuracy module), top-k accuracy and mean per-class accuracy.

    Args:
        logits (`np.ndarray`): scores of shape (num_samples, num_classes).
        labels (`np.ndarray`): integer labels of shape (num_samples,).
        top_k (`int`, *optional*, defaults to 5): the k of the top-k accuracy. The key is named after the requested
            k (`"top5_accuracy"`) even when k is clamped to a smaller number of classes.
        accuracy_metric (`evaluate.EvaluationModule`, *optional*): the module computing top-1 accuracy; defaults to
            [`load_accuracy_metric`]'s, loaded once.

    Returns:
        `dict[str, float]`: `accuracy`, `top{top_k}_accuracy` and `mean_per_class_accuracy`.
    """
    logits, labels = _check_logits_labels(logits, labels)
    predictions = logits.argmax(axis=-1)
    metric = accuracy_metric if accuracy_metric is not None else _default_accuracy_metric()
    accuracy = metric.compute(predictions=predictions.tolist(), references=labels.tolist())["accuracy"]
    return {
        "accuracy": float(accuracy),
        f"top{top_k}_accuracy": top_k_accuracy(logits, labels, top_k),
        "mean_per_class_accuracy": mean_per_class_accuracy(predictions, labels, num_classes=logits.shape[1]),
    }


def embedding_retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """
    How well embeddings group images by class, with the cosine similarity of every pair of distinct images.

    Args:
        embeddings (`torch.Tensor`): one embedding per image, `(N, D)`, N ≥ 2 (L2-normalised here).
        labels (`torch.Tensor`): their integer classes, `(N,)`.

    Returns:
        `dict[str, float]`: `same_class_cosine` and `other_class_cosine`, the mean cosine similarity over the pairs
        of distinct images of the same class and of different classes (NaN when there is no such pair), and
        `recall_at_1`, the fraction of images whose most similar other image (leave-one-out nearest neighbour) is of
        their class.

    Raises:
        `ValueError`: shapes other than `(N, D)` and `(N,)` with N ≥ 2.
    """
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),) or len(labels) < 2:
        raise ValueError(
            "Expected embeddings of shape (num_images, dim) and labels of shape (num_images,) with num_images >= 2, "
            f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}."
        )
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    similarity = unit @ unit.T  # (N, N)
    same = labels[:, None] == labels[None, :]
    itself = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    nearest = similarity.masked_fill(itself, float("-inf")).argmax(dim=1)  # (N,)
    return {
        "same_class_cosine": similarity[same & ~itself].mean().item(),
        "other_class_cosine": similarity[~same].mean().item(),
        "recall_at_1": (labels[nearest] == labels).float().mean().item(),
    }


def sum_of_softmax_ensemble(output: ModelOutput) -> torch.Tensor:
    """
    A diagnostic, never the model's prediction: the sum of the softmax of every image-level head of a
    [`PimImageClassifierOutput`] — every layer's (`layer_logits`), HERBS' top-down ones (`top_down_layer_logits`)
    and the final `logits` — `(B, K)`, as the authors' HERBS `run_evaluation.py` (`sum_all_out`) predicts. Our
    accuracy is the final head's (`logits`); compare with this only to relate our figures to theirs.
    """
    heads = [*(output.layer_logits or ()), *(output.top_down_layer_logits or ()), output.logits]
    return torch.stack([head.softmax(dim=-1) for head in heads]).sum(0)


__all__ = [
    "BUNDLED_ACCURACY_PATH",
    "classification_metrics",
    "embedding_retrieval_metrics",
    "load_accuracy_metric",
    "mean_per_class_accuracy",
    "sum_of_softmax_ensemble",
    "top_k_accuracy",
    "with_image_to_rgb",
]
