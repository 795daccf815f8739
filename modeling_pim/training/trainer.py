"""
Trainer pieces for PIM: loss-part logging, per-head gathering, the metrics of the final head, and the training
arguments of `train_pim.py`.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import has_length
from transformers.utils import logging

from .metrics import classification_metrics, top_k_accuracy


logger = logging.get_logger(__name__)

LOSS_PARTS = ("loss_layers", "loss_selected", "loss_dropped", "loss_combiner", "loss_refinement")


class RefinementEpochCallback(TrainerCallback):
    """
    Tells the model the epoch at the start of every epoch (`model.set_refinement_epoch`), which sets the temperature
    of HERBS' refinement term (`PimConfig.refinement_temperature_halving_epochs`). The Trainer restores `state.epoch`
    from `trainer_state.json` when it resumes, so a resumed run continues at the temperature it stopped at.
    """

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and hasattr(model, "set_refinement_epoch"):
            model.set_refinement_epoch(state.epoch or 0)


@dataclass
class PimTrainingArguments(TrainingArguments):
    """`TrainingArguments` with `overwrite_output_dir`, which transformers 5 removed and `train_pim.py` uses."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an --output_dir that holds a previous run: its checkpoints, model and results "
            "(config.json, model.safetensors, *_results.json, test_example.*, ...) are removed before training, and "
            "no checkpoint is resumed. Without it, such a folder is refused, unless the run resumes from its last "
            "checkpoint."
        },
    )


def check_training_arguments(args: TrainingArguments) -> None:
    """
    Refuses the `TrainingArguments` with which `Trainer` would not train or evaluate PIM with its own loss: Trainer
    then takes the labels away from the model and computes a cross-entropy of `logits` only, or evaluates without
    labels, and PIM's layer, token and combiner losses (or its accuracy) silently disappear.

    Raises:
        `ValueError`: `label_smoothing_factor` is not 0 (use `PimConfig.label_smoothing`, which smooths every
        cross-entropy term of PIM's loss), `label_names` is set to anything but `["labels"]`, or
        `prediction_loss_only` is true (evaluation without accuracy).
    """
    if args.label_smoothing_factor != 0:
        raise ValueError(
            f"label_smoothing_factor={args.label_smoothing_factor} makes Trainer replace PIM's loss by a smoothed "
            "cross-entropy of the final logits only (the layer, token and combiner losses would vanish): set "
            "PimConfig.label_smoothing instead (train_pim.py --label_smoothing), which smooths every cross-entropy "
            "term of PIM's loss, and leave label_smoothing_factor at 0."
        )
    if args.label_names not in (None, ["labels"]):
        raise ValueError(
            f"label_names={args.label_names}: PIM's batches hold their class indices under 'labels', the argument "
            "of PimForImageClassification.forward that computes the loss; with other names Trainer evaluates without "
            "labels (no loss, no accuracy). Leave label_names unset."
        )
    if args.prediction_loss_only:
        raise ValueError(
            "prediction_loss_only=True: evaluation would compute the loss only, without the accuracy of the final "
            "head (and load_best_model_at_end could not select on it). Leave prediction_loss_only false."
        )


class PimTrainer(Trainer):
    """
    A `Trainer` for [`PimForImageClassification`] that

    - logs the unweighted parts of PIM's loss (`loss_layers`, `loss_selected`, `loss_dropped`, `loss_combiner`, and
      HERBS' `loss_refinement`), averaged over the optimizer steps since the last log, over the replicas of
      `nn.DataParallel` (which returns one value per GPU) and over processes, and for HERBS the temperature in use
      (`model.current_refinement_temperature`) as `refinement_temperature`, as Trainer logs the current
      `learning_rate`;
    - sets the epoch of HERBS' refinement temperature at the start of every epoch ([`RefinementEpochCallback`]);
    - always evaluates and predicts on every sample: `dataloader_drop_last` only applies to training;
    - drops a last training batch of a single image (or, under `nn.DataParallel`, one that would give a GPU a
      single image), which BatchNorm cannot train on ("Expected more than 1 value per channel when training").

    Raises:
        `ValueError`: from [`check_training_arguments`], or when a `compute_loss_func` is given: PIM computes its
        loss in `forward(pixel_values, labels)`, and a `compute_loss_func` would replace it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_training_arguments(self.args)
        if self.compute_loss_func is not None:
            raise ValueError(
                "PimTrainer got a compute_loss_func: PIM computes its loss (layers, tokens, combiner) in "
                "forward(pixel_values, labels), and Trainer would replace it by compute_loss_func(outputs, labels). "
                "Change the loss through PimConfig (lambda_b, lambda_s, lambda_n, lambda_c, label_smoothing) instead."
            )
        self.add_callback(RefinementEpochCallback)
        self._loss_part_sums: dict[str, torch.Tensor] = {}
        self._loss_part_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            for name in LOSS_PARTS:
                part = outputs.get(name)
                if part is not None:
                    part = part.detach().float().mean()  # nn.DataParallel gathers one value per GPU
                    self._loss_part_sums[name] = self._loss_part_sums.get(name, 0) + part
            self._loss_part_count += 1
        return (loss, outputs) if return_outputs else loss

    @contextlib.contextmanager
    def _drop_last(self, drop_last: bool) -> Iterator[None]:
        """Builds a data loader with `drop_last`, whatever `args.dataloader_drop_last` says."""
        flag = self.args.dataloader_drop_last
        self.args.dataloader_drop_last = drop_last
        try:
            yield
        finally:
            self.args.dataloader_drop_last = flag

    def _last_training_batch_gives_a_replica_one_image(self) -> bool:
        """Whether an epoch ends with a batch of which a process or a DataParallel replica would get 1 image."""
        if not has_length(self.train_dataset) or (self.args.world_size > 1 and self.accelerator.even_batches):
            return False  # with several processes, accelerate fills every last batch from the start of the epoch
        remainder = len(self.train_dataset) % self._train_batch_size
        if remainder == 0:
            return False
        replica_batches = torch.arange(remainder).chunk(max(1, self.args.n_gpu))  # how nn.DataParallel splits a batch
        return min(len(batch) for batch in replica_batches) == 1

    def get_train_dataloader(self) -> DataLoader:
        drop_single = not self.args.dataloader_drop_last and self._last_training_batch_gives_a_replica_one_image()
        if drop_single:
            logger.warning(
                f"The {len(self.train_dataset)} training images in batches of {self._train_batch_size} end each epoch "
                "with a batch that gives a GPU or process a single image, on which BatchNorm cannot train: that last "
                "batch is dropped (different images each epoch, as training batches are shuffled)."
            )
        with self._drop_last(self.args.dataloader_drop_last or drop_single):
            return super().get_train_dataloader()

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        with self._drop_last(False):
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        with self._drop_last(False):
            return super().get_test_dataloader(test_dataset)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_part_count:
            for name, total in self._loss_part_sums.items():
                mean = self.accelerator.reduce(total / self._loss_part_count, reduction="mean")
                logs[name] = round(mean.item(), 4)
            self._loss_part_sums = {}
            self._loss_part_count = 0
            if getattr(self.model.config, "use_bottom_up_fpn", False):
                logs["refinement_temperature"] = self.model.current_refinement_temperature
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


def evaluation_metric_names(num_layer_heads: int, top_k: int = 5) -> list[str]:
    """
    The names of the evaluation metrics of a model with `num_layer_heads` layer heads (`layer_logits`), without
    Trainer's `eval_` prefix: `loss` (Trainer's), then those of [`build_compute_metrics`] but `num_samples`, the
    values `metric_for_best_model` can select on.
    """
    layers = [f"layer{layer}_accuracy" for layer in range(1, num_layer_heads + 1)]
    return ["loss", "accuracy", f"top{top_k}_accuracy", "mean_per_class_accuracy", *layers]


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


__all__ = [
    "LOSS_PARTS",
    "PimTrainer",
    "PimTrainingArguments",
    "RefinementEpochCallback",
    "build_compute_metrics",
    "check_training_arguments",
    "evaluation_metric_names",
    "stack_heads",
]
