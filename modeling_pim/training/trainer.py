"""Trainer pieces for PIM: loss-part logging, per-head gathering and the metrics of the final head."""

from collections.abc import Callable

import numpy as np
import torch
from transformers import EvalPrediction, Trainer

from .metrics import classification_metrics, top_k_accuracy


LOSS_PARTS = ("loss_layers", "loss_selected", "loss_dropped", "loss_combiner")


class PimTrainer(Trainer):
    """
    A `Trainer` that also logs the unweighted parts of PIM's loss (`loss_layers`, `loss_selected`, `loss_dropped`,
    `loss_combiner`), averaged over the optimizer steps since the last log and over processes.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_part_sums: dict[str, torch.Tensor] = {}
        self._loss_part_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            for name in LOSS_PARTS:
                part = outputs.get(name)
                if part is not None:
                    self._loss_part_sums[name] = self._loss_part_sums.get(name, 0) + part.detach().float()
            self._loss_part_count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_part_count:
            for name, total in self._loss_part_sums.items():
                mean = self.accelerator.reduce(total / self._loss_part_count, reduction="mean")
                logs[name] = round(mean.item(), 4)
            self._loss_part_sums = {}
            self._loss_part_count = 0
        super().log(logs, start_time)


def stack_heads(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """
    `preprocess_logits_for_metrics`: keeps only what the metrics need, `(B, 1 + L, K)` = the final head followed by
    every layer's head, so evaluation never gathers token-level logits.
    """
    if isinstance(logits, torch.Tensor):
        return logits[:, None]
    final, *rest = logits
    layer_logits = rest[0] if rest else ()
    return torch.stack([final, *layer_logits], dim=1)


def build_compute_metrics(top_k: int = 5) -> Callable[[EvalPrediction], dict[str, float]]:
    """
    `compute_metrics` for predictions from [`stack_heads`]: `accuracy` (top-1 through `evaluate`),
    `top{k}_accuracy` and `mean_per_class_accuracy` of the final head — *the* accuracy — then `layer{i}_accuracy`
    of every layer's head as diagnostics, and `num_samples` (every evaluated sample counted once, also under DDP).
    """

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        heads = np.asarray(prediction.predictions)
        labels = np.asarray(prediction.label_ids)
        metrics = classification_metrics(heads[:, 0], labels, top_k=top_k)
        for layer in range(1, heads.shape[1]):
            metrics[f"layer{layer}_accuracy"] = top_k_accuracy(heads[:, layer], labels, 1)
        metrics["num_samples"] = int(labels.shape[0])
        return metrics

    return compute_metrics


__all__ = ["LOSS_PARTS", "PimTrainer", "build_compute_metrics", "stack_heads"]
