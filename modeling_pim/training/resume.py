"""
Resuming a training run from one of its checkpoints: the training arguments of the run that saved a checkpoint, and
those a resumed run must keep to be the same run.

`Trainer.train(resume_from_checkpoint=...)` restores the optimizer's state (its learning rate, weight decay, betas,
epsilon), the scheduler's state (its base learning rate and step) and the position in the epoch's data order from the
checkpoint, whatever the new run's arguments say; a run resumed with other values of these arguments would train
with the old ones while its `training_recipe.json` and model card record the new ones.
"""

import enum
import importlib
import pickle
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import SchedulerType


# The arguments a resumed run takes from its checkpoint: the optimizer's and scheduler's hyper-parameters, and the
# seeds of the data order (a resumed epoch skips the batches the checkpoint's run trained, in that run's order).
SAME_RUN_ARGUMENTS = (
    "optim",
    "optim_args",
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "seed",
    "data_seed",
)
# Schedules whose learning rate does not depend on the number of training steps (with a warmup of 0 or at least one
# step: a `warmup_steps` below 1 is a fraction of the training steps).
LENGTH_INDEPENDENT_SCHEDULES = (
    SchedulerType.CONSTANT,
    SchedulerType.CONSTANT_WITH_WARMUP,
    SchedulerType.INVERSE_SQRT,
    SchedulerType.REDUCE_ON_PLATEAU,
    SchedulerType.GREEDY,
)
BATCH_ARGUMENTS = "--per_device_train_batch_size × --gradient_accumulation_steps × processes"
LENGTH_ARGUMENTS = "--num_train_epochs / --max_steps"
# Where the classes `torch.load` may rebuild from `training_args.bin` come from (`TrainingArguments`, its enums,
# accelerate's state): nothing else is unpickled.
TRUSTED_MODULES = ("transformers.", "accelerate.", "modeling_pim.")


def read_checkpoint_training_arguments(checkpoint: str | Path) -> TrainingArguments | None:
    """
    The `TrainingArguments` of the run that saved `checkpoint`, from its `training_args.bin` (which `Trainer` saves
    in every checkpoint), read with `torch.load(weights_only=True)` allowing only the classes of transformers,
    accelerate and this package.

    Returns:
        The arguments, or `None` when the checkpoint has no `training_args.bin`.

    Raises:
        `ValueError`: the file needs another class, or cannot be read (e.g. saved by a transformers version whose
        classes are gone); the message names the file.
    """
    path = Path(checkpoint) / TRAINING_ARGS_NAME
    if not path.is_file():
        return None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        untrusted = [name for name in names if not name.startswith(TRUSTED_MODULES)]
        if untrusted:
            raise ValueError(f"it holds objects of {', '.join(untrusted)}")
        classes = [getattr(importlib.import_module(module), name) for module, name in map(_split_name, names)]
        with torch.serialization.safe_globals(classes):
            arguments = torch.load(path, weights_only=True)
    except (ValueError, pickle.UnpicklingError, ImportError, AttributeError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path} cannot be read as training arguments ({error})") from error
    if not isinstance(arguments, TrainingArguments):
        raise ValueError(f"{path} holds a {type(arguments).__name__}, not training arguments")
    return arguments


def _split_name(name: str) -> tuple[str, str]:
    module, _, attribute = name.rpartition(".")
    return module, attribute


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _schedule_depends_on_length(arguments: TrainingArguments) -> bool:
    warmup_is_fraction = 0 < arguments.warmup_steps < 1
    return arguments.lr_scheduler_type not in LENGTH_INDEPENDENT_SCHEDULES or warmup_is_fraction


def _training_length(arguments: TrainingArguments) -> tuple[str, Any]:
    """The argument that sets the number of training steps (`max_steps` when positive), and its value."""
    if arguments.max_steps > 0:
        return "max_steps", arguments.max_steps
    return "num_train_epochs", arguments.num_train_epochs


def _images_per_step(arguments: TrainingArguments) -> tuple[int, str]:
    per_device, accumulation = arguments.per_device_train_batch_size, arguments.gradient_accumulation_steps
    processes = arguments.world_size
    total = arguments.train_batch_size * accumulation * processes
    return total, f"{total} ({per_device} × {accumulation} × {processes})"


def differing_training_arguments(saved: TrainingArguments, new: TrainingArguments) -> dict[str, tuple[Any, Any]]:
    """
    The arguments of `new` that a run resumed from a checkpoint of `saved` could not use, each with the checkpoint's
    value and the new one: those of `SAME_RUN_ARGUMENTS`, the images per optimizer step (the per-device batch size
    × the gradient accumulation steps × the processes, which fix what a step and an epoch's position are), and, for
    a schedule that depends on it, the training length (`num_train_epochs`, or `max_steps` when positive).

    Returns:
        `{flag: (saved value, new value)}`, in the order above: a flag (`--learning_rate`), `BATCH_ARGUMENTS` (values
        `"16 (8 × 2 × 1)"`) or, when one run sets `max_steps` and the other `num_train_epochs`, `LENGTH_ARGUMENTS`
        (values `"max_steps 10"`). Empty when the run can be resumed.
    """
    differences = {}
    for name in SAME_RUN_ARGUMENTS:
        saved_value, new_value = _plain(getattr(saved, name)), _plain(getattr(new, name))
        if saved_value != new_value:
            differences[f"--{name}"] = (saved_value, new_value)
    (saved_images, saved_text), (new_images, new_text) = _images_per_step(saved), _images_per_step(new)
    if saved_images != new_images:
        differences[BATCH_ARGUMENTS] = (saved_text, new_text)
    if _schedule_depends_on_length(saved) or _schedule_depends_on_length(new):
        saved_length, new_length = _training_length(saved), _training_length(new)
        if saved_length[0] != new_length[0]:
            differences[LENGTH_ARGUMENTS] = tuple(f"{name} {value}" for name, value in (saved_length, new_length))
        elif saved_length != new_length:
            differences[f"--{new_length[0]}"] = (saved_length[1], new_length[1])
    return differences


__all__ = [
    "BATCH_ARGUMENTS",
    "LENGTH_ARGUMENTS",
    "LENGTH_INDEPENDENT_SCHEDULES",
    "SAME_RUN_ARGUMENTS",
    "differing_training_arguments",
    "read_checkpoint_training_arguments",
]
