#!/usr/bin/env python
"""
Train PIM (Chou et al., arXiv 2202.03822) with `transformers.Trainer`.

    python train_pim.py configuration/cub200_swin_large_384.yaml --data_dir /data/CUB_200_2011
    accelerate launch --multi_gpu train_pim.py configuration/cub200_swin_large_384.yaml --data_dir ...

The optional first argument is a recipe (YAML) whose keys are the flags below; flags given after it override it.
"""

import sys

from modeling_pim.utils.cli import (
    UserInputError,
    cache_help,
    check_output_directory,
    help_requested,
    print_cached_help,
    run_command,
)


# The help text is built from PimConfig and TrainingArguments, whose imports (torch, transformers) take seconds: it is
# cached once built and printed from the cache before those imports.
HELP_DISTRIBUTIONS = ("transformers",)
if __name__ == "__main__":
    print_cached_help("train_pim.py", __file__, HELP_DISTRIBUTIONS, sys.argv[1:])

import argparse
import dataclasses
import json
import logging
import re
import types
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute
import timm
import torch
import transformers
import yaml
from datasets import concatenate_datasets
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import HfArgumentParser, PretrainedConfig, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint
from transformers.training_args import ParallelMode

from modeling_pim import PimConfig, PimConfigError, PimForImageClassification, PimImageProcessor
from modeling_pim.image_processing_pim import RESIZE_RATIO
from modeling_pim.data.archives import ARCHIVES
from modeling_pim.data.fgvc_datasets import (
    FgvcDatasetDict,
    load_archive,
    load_hub_dataset,
    load_image_folders,
    split_validation,
)
from modeling_pim.data.report import (
    build_data_report,
    check_data_report,
    check_labeled,
    is_unlabeled,
    log_data_report,
)
from modeling_pim.data.synthetic import MAX_NUM_CLASSES, default_cache_dir, generate_fine_grained_dataset
from modeling_pim.data.transforms import (
    DEFAULT_UNREADABLE_FIX,
    build_eval_transform,
    build_train_transform,
    collate_fn,
    with_image_transform,
)
from modeling_pim.hub.widget import save_test_example
from modeling_pim.training.backbone_weights import check_backbone_weights
from modeling_pim.training.resume import differing_training_arguments, read_checkpoint_training_arguments
from modeling_pim.training.run_folder import (
    DATA_REPORT_FILENAME,
    TEST_PREDICTIONS_FILENAME,
    checkpoint_folders,
    evaluation_files,
    previous_run_files,
    remove_paths,
)
from modeling_pim.training.trainer import (
    PimTrainer,
    PimTrainingArguments,
    build_compute_metrics,
    check_training_arguments,
    evaluation_metric_names,
    stack_heads,
)
from modeling_pim.training.transfer import differing_fields, fine_tuning_config, load_for_labels, with_labels
from modeling_pim.utils.model_location import check_model_location, model_loading_error


logger = logging.getLogger(__name__)
DATASETS = (*ARCHIVES, "folders", "hub", "synthetic")
# The flags that say where the data of each `--dataset` is; a flag of another dataset is refused.
DATA_SOURCE_FLAGS = {
    **{
        name: ("data_dir", "dataset_config_name") if archive.configuration else ("data_dir",)
        for name, archive in ARCHIVES.items()
    },
    "folders": ("train_dir", "validation_dir", "test_dir"),
    "hub": ("dataset_name", "dataset_config_name", "image_column_name", "label_column_name"),
    "synthetic": ("synthetic_num_classes", "synthetic_train_per_class", "synthetic_dir"),
}
# A flag given one of these values on the command line is unset (its default), as `key: null` in a recipe.
UNSET_VALUES = ("", "null", "none")
# The folders whose files a run reads as data (besides a local --dataset_name), which must not hold its --output_dir
# (an archive's --data_dir is read through its list files only).
DATA_FOLDER_FLAGS = ("train_dir", "validation_dir", "test_dir", "synthetic_dir")
# The two ways to get validation data: given on the command line, either replaces the recipe's other one.
VALIDATION_SOURCE_FLAGS = ("validation_dir", "validation_split_percentage")
# `--resume_from_checkpoint false` (or `no`): a new run, which does not resume the last checkpoint of its --output_dir.
NO_RESUME_VALUES = ("false", "no")

USAGE = "train_pim.py [RECIPE.yaml] [--flag VALUE ...]"
DESCRIPTION = """\
Train PIM (Chou et al., arXiv 2202.03822) with transformers.Trainer.

RECIPE.yaml (optional, first): a recipe from configuration/ or your own, whose keys are the flags below; flags
given after it override it. `key: null` in a recipe, and '', null or none as a flag's value (--validation_dir ''),
mean the flag's default (unset). Flags that say where the data is (--train_dir, --dataset_name, ...) select their
--dataset whatever the recipe says.

  python train_pim.py configuration/cub200_swin_large_384.yaml --data_dir /data/CUB_200_2011
  python train_pim.py configuration/demo_cpu.yaml --train_dir D/train --validation_dir D/val --test_dir D/test
  accelerate launch --multi_gpu train_pim.py configuration/nabirds_swin_large_384.yaml --data_dir /data/nabirds

Common flags:
  --dataset {cub200,nabirds,stanford_cars,fgvc_aircraft,flowers102,stanford_dogs,inaturalist,folders,hub,synthetic}
  --data_dir DIR               the unpacked official archive (cub200 ... inaturalist)
  --dataset_config_name NAME   fgvc_aircraft: variant|family|manufacturer; inaturalist: 2021|2021_mini|2017|...
  --train_dir, --validation_dir, --test_dir DIR
                               one sub-folder of images per class (folders)
  --dataset_name ID_OR_PATH    a Hub image-classification dataset (hub)
  --validation_split_percentage P
                               hold out P % of the training images for model selection
  --backbone NAME              any timm model; --backbone_pretrained true|false, --backbone_weights FILE
  --model_name_or_path DIR     fine-tune a PIM checkpoint
  --image_size N, --label_smoothing EPS
  --output_dir DIR, --num_train_epochs N, --per_device_train_batch_size N, --learning_rate LR,
  --eval_strategy no|epoch|steps, --bf16 true, --resume_from_checkpoint DIR|false
  --overwrite_output_dir true  start over in an --output_dir holding a previous run (else refused, or resumed
                               from its last checkpoint)

Before training, the run logs and writes OUTPUT_DIR/data_report.json (images and classes per split, skipped files).

All flags: every PimConfig field, the model and data flags, then transformers.TrainingArguments."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help, and the description as written."""


def _config_field_help() -> dict[str, str]:
    """The `Args:` entries of PimConfig's docstring, so that every flag is documented in one place."""
    entries = re.findall(r"^ {8}(\w+) \(`[^\n]*\n((?: {12}.*\n)+)", PimConfig.__doc__, flags=re.MULTILINE)
    return {name: " ".join(line.strip() for line in text.splitlines()) for name, text in entries}


def _model_argument_fields() -> list[tuple[str, Any, Any]]:
    help_texts = _config_field_help()
    fields = []
    for name, annotation in PimConfig.__annotations__.items():
        default = getattr(PimConfig, name)
        if name == "backbone_kwargs":
            annotation, default = dict | str | None, None
            help_text = help_texts[name] + " On the command line: a JSON object."
        elif isinstance(default, tuple):
            annotation, default = list[int], field(default_factory=lambda value=default: list(value))
            help_text = help_texts[name]
        else:
            help_text = help_texts[name]
        metadata = {"help": help_text}
        if isinstance(default, dataclasses.Field):
            default.metadata = metadata
            fields.append((name, annotation, default))
        else:
            fields.append((name, annotation, field(default=default, metadata=metadata)))
    return fields


PimArguments = dataclasses.make_dataclass("PimArguments", _model_argument_fields())
PimArguments.__doc__ = "Every field of `PimConfig`, as flags (see its docstring)."


@dataclass
class ModelArguments:
    """Where the model starts from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A PIM checkpoint (folder or Hub id) to fine-tune instead of building a new model. Its "
            "architecture is kept: the model flags the recipe or the command line set are applied when they keep its "
            "tensors (loss weights, label_smoothing, combiner_dropout, the refinement temperatures, image_size of a "
            "CNN, ...) and refused when they would change them (backbone, num_selects, fpn_size, ...); the others are "
            "the checkpoint's. On other classes than its own, its class-dependent tensors (token classifiers' last "
            "layer, final classifier) are re-initialised and named in the log; the rest is kept. Its saved image "
            "processor (resize, normalisation) is used, with --resize_size and a changed image_size applied."
        },
    )
    backbone_weights: str | None = field(
        default=None,
        metadata={
            "help": "A local timm weights file (.safetensors/.pth) for the backbone of a new model, for machines "
            "without Hub access; by default timm downloads them when `backbone_pretrained` is true."
        },
    )


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on, and how to augment it."""

    dataset: str = field(
        default="folders",
        metadata={
            "help": "cub200, nabirds, stanford_cars, fgvc_aircraft, flowers102, stanford_dogs, inaturalist: the "
            "official archive in --data_dir, with its official splits and class names; folders: --train_dir/"
            "--validation_dir/--test_dir with one sub-folder per class; hub: --dataset_name; synthetic: the "
            "generated fine-grained demo set. Given on the command line, the flags of one source select it.",
            "choices": DATASETS,
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "The unpacked official archive: its top folder (CUB_200_2011, nabirds, stanford_cars, "
            "fgvc-aircraft-2013b, flowers-102, the folder of Images/ and lists/ for stanford_dogs, the folder of the "
            "annotation files for inaturalist) or the folder it was unpacked into."
        },
    )
    train_dir: str | None = field(default=None, metadata={"help": "Training images, <class>/<image> (folders)."})
    validation_dir: str | None = field(
        default=None,
        metadata={"help": "Validation images (folders); its class folders may be some of train_dir's, by name."},
    )
    test_dir: str | None = field(
        default=None, metadata={"help": "Test images (folders); its class folders may be some of train_dir's, by name."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub image-classification dataset id, or a local folder datasets.load_dataset reads."},
    )
    dataset_config_name: str | None = field(
        default=None,
        metadata={
            "help": "The dataset's configuration: a Hub dataset's; fgvc_aircraft: the annotation level, variant (100 "
            "classes, default), family (70) or manufacturer (30); inaturalist: the competition, 2021, 2021_mini "
            "(train_mini.json), 2019, 2018 or 2017 (default: the only one in --data_dir)."
        },
    )
    image_column_name: str | None = field(
        default=None, metadata={"help": "Its image column (default: the only Image column, else 'image', 'img', ...)."}
    )
    label_column_name: str | None = field(
        default=None,
        metadata={"help": "Its label column (default: the only ClassLabel column, else 'label', 'labels', ...)."},
    )
    merge_validation_into_train: bool = field(
        default=False,
        metadata={
            "help": "Train on the train and validation splits together (the 'trainval' protocol of FGVC-Aircraft and "
            "Flowers-102 results); --validation_split_percentage then holds out images of both for model selection."
        },
    )
    validation_split_percentage: float = field(
        default=0.0,
        metadata={
            "help": "Hold out this percentage of the training set (stratified, seeded) as the validation set used "
            "for model selection, so that the test set is only evaluated once, at the end. 0: no hold-out. A "
            "percentage, not a fraction: 15 holds out 15 percent; below 1 (0.15: 0.15 percent), a warning says so."
        },
    )
    synthetic_num_classes: int = field(default=8, metadata={"help": "Classes of the synthetic demo set."})
    synthetic_train_per_class: int = field(
        default=400, metadata={"help": "Training images per class of the synthetic demo set (50 for validation and test)."}
    )
    synthetic_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the synthetic demo set is generated (default: a cache folder): a new or empty folder, or "
            "one holding a synthetic set (regenerated when its parameters differ); train/, validation/ or test/ "
            "folders of other files are refused, never deleted."
        },
    )
    resize_size: int | None = field(
        default=None,
        metadata={
            "help": "Resize side before cropping image_size (default: image_size × 510 / 384, the paper's; with "
            "--model_name_or_path, the resize of the processor saved with that model, scaled with image_size)."
        },
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips in training."})
    blur_probability: float = field(default=0.1, metadata={"help": "Probability of the Gaussian blur (k=5)."})
    sharpness_probability: float = field(default=0.1, metadata={"help": "Probability of the sharpness ×1.5."})
    skip_unreadable: bool = field(
        default=True,
        metadata={
            "help": "Scan images at load time and skip (and list) those that cannot be decoded; false: a missing "
            "image is an error and the others are not decoded before training."
        },
    )
    scan_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the load-time scan's cache, one SQLite file per dataset keyed by path, size and "
            "modification time, so that a second run decodes only new and changed images (default: "
            "$PIM_CACHE/image_scan or ~/.cache/modeling_pim/image_scan)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation sets (debugging)."})

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not one of {', '.join(DATASETS)}.")
        if not 0 <= self.validation_split_percentage < 100:
            raise ValueError(
                f"validation_split_percentage={self.validation_split_percentage} must be in [0, 100) (0: no hold-out)."
            )


ARGUMENT_CLASSES = (PimArguments, ModelArguments, DataTrainingArguments, PimTrainingArguments)


def build_parser() -> HfArgumentParser:
    """The parser of every flag, whose `--help` starts with the recipe usage and the common flags."""
    return HfArgumentParser(
        ARGUMENT_CLASSES, prog="train_pim.py", usage=USAGE, description=DESCRIPTION, formatter_class=HelpFormatter
    )


def _checked_type(annotation: Any) -> type | None:
    """`bool`, `int`, `float` or `list` for a field annotated so (or `Optional`), else `None` (not checked)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    if annotation in (bool, int, float):
        return annotation
    return list if typing.get_origin(annotation) is list else None


def _has_type(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def read_recipe(path: Path) -> dict[str, Any]:
    """
    The values of a recipe (YAML mapping of flag names to values), `null` values left out so that they mean the
    flag's default.

    Raises:
        [`UserInputError`]: the file is missing, not a mapping, has a key that is not a flag, or a value of the wrong
        type (e.g. `learning_rate: 5e-4`, which YAML reads as text).
    """
    if not path.is_file():
        raise UserInputError(f"recipe {str(path)!r} does not exist: see the configuration/ folder for examples.")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise UserInputError(f"recipe {str(path)!r} is not a YAML mapping of flag names to values.")
    annotations = {name: hint for cls in ARGUMENT_CLASSES for name, hint in typing.get_type_hints(cls).items()}
    known = {field.name for cls in ARGUMENT_CLASSES for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(f"{path}: unknown keys {unknown}; every key must be a flag of train_pim.py (--help).")
    values = {key: value for key, value in values.items() if value is not None}
    for key, value in values.items():
        expected = _checked_type(annotations[key])
        if expected is not None and not _has_type(value, expected):
            hint = ""
            yaml_float = _yaml_float(value) if expected is float and isinstance(value, str) else None
            if yaml_float is not None:
                hint = f" (YAML reads {value} as text: write {yaml_float})"
            article = "an" if expected.__name__[0] in "aeiou" else "a"
            raise UserInputError(f"{path}: `{key}: {value!r}` is not {article} {expected.__name__}{hint}.")
    return values


def _yaml_float(text: str) -> str | None:
    """
    `text` written so that YAML reads it as a float, when it is a number in exponent notation that YAML reads as text
    (YAML 1.1 needs a dot and a signed exponent: `5e-4` → `5.0e-4`, `1.5e4` → `1.5e+4`); else `None`.
    """
    match = re.fullmatch(r"([-+]?(?:\d+\.?\d*|\.\d+))[eE]([-+]?)(\d+)", text.strip())
    if match is None:
        return None
    mantissa, sign, exponent = match.groups()
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign or '+'}{exponent}"


def _without_unset_flags(argv: list[str], names: set[str]) -> tuple[list[str], set[str]]:
    """`argv` without the flags given an `UNSET_VALUES` value (`--flag ''`, `--flag=null`), and the names of those."""
    kept, unset = [], set()
    index = 0
    while index < len(argv):
        name, equals, value = argv[index].removeprefix("--").partition("=")
        name = name.replace("-", "_")
        if argv[index].startswith("--") and name in names:
            if not equals and index + 1 < len(argv):
                value = argv[index + 1]
            if (equals or index + 1 < len(argv)) and value.strip().lower() in UNSET_VALUES:
                unset.add(name)
                index += 1 if equals else 2
                continue
        kept.append(argv[index])
        index += 1
    return kept, unset


def _given_flags(parser: HfArgumentParser, argv: list[str]) -> dict[str, Any]:
    """
    The flags given in `argv`, typed by the parser (a flag left out is absent, not its default); a flag given an
    `UNSET_VALUES` value is `None` (unset: its default, whatever a recipe says).
    """
    names = [field.name for cls in ARGUMENT_CLASSES for field in dataclasses.fields(cls) if field.init]
    argv, unset = _without_unset_flags(argv, set(names))
    parser.parse_args(argv)  # --help, and errors about the flags themselves, as argparse reports them
    not_given = object()
    parser.set_defaults(**dict.fromkeys(names, not_given))
    given = {name: value for name, value in vars(parser.parse_args(argv)).items() if value is not not_given}
    return {**given, **dict.fromkeys(unset)}


def _select_data(recipe: dict[str, Any], flags: dict[str, Any], recipe_path: Path | None) -> dict[str, Any]:
    """
    Recipe values overridden by the command-line flags, with the data the command line asks for: data-source flags
    given on the command line select their `--dataset` (and drop the recipe's keys of another source), a validation
    source given on the command line replaces the recipe's other one, and a data-source flag of another dataset than
    the one used is refused. A flag whose value is `None` in `flags` is unset (left to its default).
    """
    unset = {name for name, value in flags.items() if value is None}
    recipe = {key: value for key, value in recipe.items() if key not in unset}
    flags = {name: value for name, value in flags.items() if name not in unset}
    default = DataTrainingArguments.dataset
    recipe_dataset = recipe.get("dataset", default)
    dataset = flags.get("dataset")
    if dataset is None:
        if "data_dir" in flags and recipe_dataset not in ARCHIVES:
            raise UserInputError(
                f"--data_dir is the unpacked archive of a --dataset among {', '.join(ARCHIVES)}: add --dataset with "
                "its name (class folders: --train_dir, --validation_dir, --test_dir)."
            )
        # A flag of one source only (--train_dir, --dataset_name...) selects it; --dataset_config_name does not.
        sources_of_flag = Counter(flag for source_flags in DATA_SOURCE_FLAGS.values() for flag in source_flags)
        implied = {
            name
            for name, source_flags in DATA_SOURCE_FLAGS.items()
            if name not in ARCHIVES and any(flag in flags and sources_of_flag[flag] == 1 for flag in source_flags)
        }
        if len(implied) > 1:
            given = sorted(flag for name in implied for flag in DATA_SOURCE_FLAGS[name] if flag in flags)
            raise UserInputError(
                f"--{', --'.join(given)} are flags of different data sources ({', '.join(sorted(implied))}): give "
                "the flags of one, and --dataset."
            )
        dataset = implied.pop() if implied else recipe_dataset
    values = {**recipe, **flags, "dataset": dataset}
    for key, other in (VALIDATION_SOURCE_FLAGS, VALIDATION_SOURCE_FLAGS[::-1]):
        if key in flags and other not in flags:
            values.pop(other, None)
    if dataset != recipe_dataset and recipe_path is not None:
        unused = sorted(
            key for key in recipe if key not in flags and key in DATA_SOURCE_FLAGS[recipe_dataset]
        )
        for key in unused:
            values.pop(key)
        logger.warning(
            f"Data: --dataset {dataset} (selected on the command line) instead of the recipe's dataset: "
            f"{recipe_dataset}" + (f"; not used from the recipe: {', '.join(unused)}." if unused else ".")
        )
    for key in values:
        owners = [name for name, source_flags in DATA_SOURCE_FLAGS.items() if key in source_flags]
        if owners and dataset not in owners:
            where = f"recipe {recipe_path}" if key in recipe and key not in flags else "command line"
            raise UserInputError(
                f"--{key} (from the {where}) is a flag of --dataset {' or '.join(owners)}, but this run uses "
                f"--dataset {dataset}: remove --{key}, or use --dataset {owners[0]}."
            )
    return values


def parse_arguments(argv: list[str]) -> tuple:
    """
    Recipe (YAML) first if given, then command-line flags overriding it, built into the argument dataclasses with
    `HfArgumentParser.parse_dict`.

    Returns:
        `(pim_args, model_args, data_args, training_args, origins)`: the argument dataclasses, and where each flag the
        user set comes from (flag name → "the command line" or "the recipe <path>"); a flag not in `origins` has its
        default.

    Raises:
        [`UserInputError`]: a bad recipe, contradictory data flags, or values the argument dataclasses refuse.
    """
    parser = build_parser()
    if help_requested(argv):
        cache_help("train_pim.py", __file__, HELP_DISTRIBUTIONS, parser.format_help())
    recipe, recipe_path = {}, None
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe_path, argv = Path(argv[0]), argv[1:]
        recipe = read_recipe(recipe_path)
    flags = _given_flags(parser, argv)
    values = _select_data(recipe, flags, recipe_path)
    origins = {
        key: "the command line" if flags.get(key) is not None else f"the recipe {recipe_path}"
        for key in values
        if key in recipe or flags.get(key) is not None
    }
    try:
        return (*parser.parse_dict(values), origins)
    except ValueError as error:  # the checks of the argument dataclasses (TrainingArguments, ...) on the values
        raise UserInputError(str(error)) from error


def flag_value(value: Any) -> str:
    """A flag's value as it is written on the command line (`8 4 2 1`, `true`, a JSON object)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return " ".join(flag_value(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def describe_flag(name: str, value: Any, origins: dict[str, str], default: str = "default") -> str:
    """How an error names a flag: `--name VALUE (from <origin>)`, `(default)` for a flag the user did not set."""
    return f"--{name} {flag_value(value)} ({'from ' + origins[name] if name in origins else default})"


# Numbers that the argument dataclasses accept but a run cannot use: flag → (whether a value is usable, what it must
# be). `None` is an optional flag left unset.
NUMBER_BOUNDS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "per_device_train_batch_size": (lambda value: value >= 1, "at least 1"),
    "per_device_eval_batch_size": (lambda value: value >= 1, "at least 1"),
    "gradient_accumulation_steps": (lambda value: value >= 1, "at least 1"),
    "eval_accumulation_steps": (lambda value: value is None or value >= 1, "at least 1"),
    "learning_rate": (lambda value: value >= 0, "0 or more"),
    "weight_decay": (lambda value: value >= 0, "0 or more"),
    "max_grad_norm": (lambda value: value >= 0, "0 or more (0: no clipping)"),
    "adam_beta1": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "adam_beta2": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "adam_epsilon": (lambda value: value >= 0, "0 or more"),
    "save_steps": (lambda value: value > 0, "positive"),
    "eval_steps": (lambda value: value is None or value > 0, "positive"),
    "dataloader_num_workers": (lambda value: value >= 0, "0 or more"),
    "max_train_samples": (lambda value: value is None or value >= 1, "at least 1"),
    "max_eval_samples": (lambda value: value is None or value >= 1, "at least 1"),
    "synthetic_num_classes": (lambda value: 2 <= value <= MAX_NUM_CLASSES, f"between 2 and {MAX_NUM_CLASSES}"),
    "synthetic_train_per_class": (lambda value: value >= 1, "at least 1"),
    "resize_size": (lambda value: value is None or value >= 1, "at least 1"),
    "blur_probability": (lambda value: 0 <= value <= 1, "a probability in [0, 1]"),
    "sharpness_probability": (lambda value: 0 <= value <= 1, "a probability in [0, 1]"),
}


def check_numbers(data_args: DataTrainingArguments, training_args, origins: dict[str, str]) -> None:
    """Refuses the numbers of `NUMBER_BOUNDS` a run cannot use, and a training run of no epoch, by flag."""
    for name, (usable, requirement) in NUMBER_BOUNDS.items():
        value = getattr(data_args, name) if hasattr(data_args, name) else getattr(training_args, name)
        if not usable(value):
            raise UserInputError(f"{describe_flag(name, value, origins)} must be {requirement}.")
    if training_args.do_train and training_args.max_steps <= 0 and training_args.num_train_epochs <= 0:
        raise UserInputError(
            f"{describe_flag('num_train_epochs', training_args.num_train_epochs, origins)} trains no step: give a "
            "positive number of epochs, or --max_steps N."
        )


def check_arguments(
    pim_args, model_args: ModelArguments, data_args: DataTrainingArguments, training_args, origins: dict[str, str]
) -> None:
    """
    Refuses flags that would be ignored or would change the run silently, before any data is read; routes
    `--label_smoothing_factor` into PIM's loss (and its origin into `origins`) and sets what `train_pim.py` needs
    whatever the flags.
    """
    if model_args.backbone_weights:
        if model_args.model_name_or_path:
            raise UserInputError(
                f"--backbone_weights {model_args.backbone_weights} is not used with --model_name_or_path, whose "
                "checkpoint holds the backbone weights: remove --backbone_weights."
            )
        if not pim_args.backbone_pretrained:
            raise UserInputError(
                f"--backbone_weights {model_args.backbone_weights} would not be used: --backbone_pretrained is false "
                "(random initial weights). Set --backbone_pretrained true to start from that file, or remove "
                "--backbone_weights."
            )
        if not Path(model_args.backbone_weights).is_file():
            raise UserInputError(f"--backbone_weights {model_args.backbone_weights}: no such file.")
    if not training_args.do_train and not model_args.model_name_or_path:
        raise UserInputError(
            f"{describe_flag('do_train', False, origins)} evaluates a trained model, but no --model_name_or_path "
            "gives one (a new model would be evaluated with random weights): give the model with --model_name_or_path "
            "(a train_pim.py --output_dir, a checkpoint-* folder or a Hub id), or train it with --do_train true."
        )
    check_numbers(data_args, training_args, origins)
    if training_args.overwrite_output_dir and resume_checkpoint(training_args):
        raise UserInputError(
            f"--overwrite_output_dir starts over, --resume_from_checkpoint {training_args.resume_from_checkpoint} "
            "continues a run: give one of them."
        )
    smoothing = training_args.label_smoothing_factor
    if smoothing:
        if pim_args.label_smoothing not in (0, smoothing):
            raise UserInputError(
                f"--label_smoothing_factor {smoothing} and --label_smoothing {pim_args.label_smoothing} disagree: "
                "give only --label_smoothing (PIM's loss)."
            )
        pim_args.label_smoothing, training_args.label_smoothing_factor = smoothing, 0.0
        origins["label_smoothing"] = origins["label_smoothing_factor"]
        logger.info(
            f"--label_smoothing_factor {smoothing} is applied inside PIM's loss, to every cross-entropy term "
            "(--label_smoothing)."
        )
    try:
        check_training_arguments(training_args)
    except ValueError as error:
        raise UserInputError(str(error)) from error
    # The transforms read the `image` column, which Trainer would otherwise remove as unused by the model.
    training_args.remove_unused_columns = False
    if training_args.n_gpu > 1 and training_args.parallel_mode == ParallelMode.NOT_DISTRIBUTED:
        logger.warning(
            f"Trainer spreads each batch over the {training_args.n_gpu} GPUs with torch.nn.DataParallel; "
            f"`accelerate launch --multi_gpu --num_processes {training_args.n_gpu} train_pim.py ...` (one process "
            "per GPU, DistributedDataParallel) is faster."
        )
    check_data_arguments(data_args, training_args)
    check_output_outside_data(data_args, training_args.output_dir)


def check_output_outside_data(data_args: DataTrainingArguments, output_dir: str) -> None:
    """
    Refuses an `--output_dir` inside (or equal to) a folder the run reads data from (`DATA_FOLDER_FLAGS`, and
    `--dataset_name` when it is a local folder): the next run would read what this one writes there (model,
    checkpoints, `test_example.*`) as data, e.g. as a class folder named after it. Symbolic links are resolved.
    """
    output = Path(output_dir).expanduser().resolve()
    for flag in (*DATA_FOLDER_FLAGS, "dataset_name"):
        folder = getattr(data_args, flag)
        if folder is None or (flag == "dataset_name" and not Path(folder).expanduser().is_dir()):
            continue
        if output.is_relative_to(Path(folder).expanduser().resolve()):
            raise UserInputError(
                f"--output_dir {output_dir} is inside --{flag} {folder}: this run would write its model, checkpoints "
                "and test example among the data, which the next run would read as data (a class folder named after "
                "it, or more images): choose an --output_dir outside the data folders."
            )


def check_data_arguments(data_args: DataTrainingArguments, training_args) -> None:
    """Refuses validation flags that do not fit the dataset, and evaluation without validation data to evaluate on."""
    official_validation = data_args.dataset in ARCHIVES and "validation" in ARCHIVES[data_args.dataset].splits
    merge = data_args.merge_validation_into_train
    if merge and (data_args.dataset in ARCHIVES and not official_validation):
        raise UserInputError(
            f"--merge_validation_into_train: --dataset {data_args.dataset} has no validation split to merge into "
            f"train (only {' and '.join(name for name, archive in ARCHIVES.items() if 'validation' in archive.splits)}"
            " have one): remove the flag."
        )
    if merge and data_args.dataset == "folders" and data_args.validation_dir is None:
        raise UserInputError(
            "--merge_validation_into_train trains on the --validation_dir images too, but no --validation_dir is "
            "given: give it, or remove the flag."
        )
    if official_validation and data_args.validation_split_percentage > 0 and not merge:
        raise UserInputError(
            f"--validation_split_percentage {data_args.validation_split_percentage:g} carves a validation set from "
            f"train, but --dataset {data_args.dataset} has an official validation split: use it (no "
            "--validation_split_percentage), or train on both with --merge_validation_into_train true and hold out "
            "from them."
        )
    if data_args.dataset != "hub":  # a Hub dataset's splits are only known once it is loaded
        if data_args.validation_split_percentage > 0 or merge:
            has_validation = data_args.validation_split_percentage > 0
        else:
            has_validation = (
                official_validation
                or data_args.dataset == "synthetic"
                or (data_args.dataset == "folders" and data_args.validation_dir is not None)
            )
        check_validation_data(has_validation, data_args, training_args)


def check_validation_data(has_validation: bool, data_args: DataTrainingArguments, training_args) -> None:
    """Refuses an evaluation strategy without validation data to evaluate on."""
    if has_validation or training_args.eval_strategy == "no":
        return
    evaluates = f"--eval_strategy {training_args.eval_strategy.value} evaluates on validation data during training"
    if data_args.merge_validation_into_train:
        raise UserInputError(
            f"{evaluates}, but --merge_validation_into_train put the validation images into train: hold out some of "
            "them with --validation_split_percentage 10, or set --eval_strategy no."
        )
    raise UserInputError(
        f"{evaluates}, but there is none: give --validation_dir DIR (class folders), or --validation_split_percentage "
        "10 to hold out 10 % of the training images, or set --eval_strategy no."
    )


def _required(data_args: DataTrainingArguments, name: str) -> str:
    value = getattr(data_args, name)
    if not value:
        raise UserInputError(f"--dataset {data_args.dataset} needs --{name}.")
    return value


def _archive_dir(data_args: DataTrainingArguments) -> str:
    data_dir = _required(data_args, "data_dir")
    if not Path(data_dir).is_dir():
        raise UserInputError(
            f"--data_dir {data_dir} is not a directory: give the unpacked {data_args.dataset} archive with "
            "--data_dir, or class folders with --train_dir, --validation_dir and --test_dir (--dataset folders)."
        )
    return data_dir


def load_data(data_args: DataTrainingArguments, seed: int) -> FgvcDatasetDict:
    """
    The splits with `image` and `label` columns, where they come from (`source`) and the skipped images; `validation`
    is carved from train if asked. A split other than train, validation and test is left out (with a warning).

    Raises:
        [`UserInputError`]: missing data flags, or a dataset the loaders refuse (the loader's message).
    """
    scan = {"skip_unreadable": data_args.skip_unreadable, "scan_cache_dir": data_args.scan_cache_dir}
    try:
        if data_args.dataset in ARCHIVES:
            datasets = load_archive(data_args.dataset, _archive_dir(data_args), data_args.dataset_config_name, **scan)
        elif data_args.dataset == "hub":
            try:
                datasets = load_hub_dataset(
                    _required(data_args, "dataset_name"),
                    name=data_args.dataset_config_name,
                    image_column=data_args.image_column_name,
                    label_column=data_args.label_column_name,
                )
            except FileNotFoundError as error:  # the message starts with the name given
                raise UserInputError(f"--dataset_name {error}") from error
        elif data_args.dataset == "synthetic":
            try:
                root = generate_fine_grained_dataset(
                    data_args.synthetic_dir or default_cache_dir(),
                    num_classes=data_args.synthetic_num_classes,
                    train_per_class=data_args.synthetic_train_per_class,
                    validation_per_class=50,
                    test_per_class=50,
                    seed=0,
                )
            except FileExistsError as error:  # the message starts with the folder
                raise UserInputError(f"--synthetic_dir {error}") from error
            datasets = load_image_folders(root / "train", root / "validation", root / "test", **scan)
            datasets.source = f"the synthetic fine-grained demo set at {root}"
        else:
            datasets = load_image_folders(
                _required(data_args, "train_dir"), data_args.validation_dir, data_args.test_dir, **scan
            )
    except ValueError as error:  # the loaders' messages name the file or folder and the layout expected
        raise UserInputError(str(error)) from error
    if "train" not in datasets:
        raise UserInputError(f"{datasets.source} has no 'train' split (splits: {', '.join(datasets)}).")
    for split in sorted(set(datasets) - {"train", "validation", "test"}):
        logger.warning(f"The {split!r} split of {datasets.source} is not used (only train, validation and test are).")
        del datasets[split]
    if data_args.merge_validation_into_train:
        if "validation" not in datasets:
            raise UserInputError(
                f"--merge_validation_into_train: {datasets.source} has no validation split to merge into train: "
                "remove the flag."
            )
        datasets["train"] = concatenate_datasets([datasets["train"], datasets.pop("validation")])
    if data_args.validation_split_percentage > 0:
        if "validation" in datasets:
            raise UserInputError(
                "--validation_split_percentage carves a validation set from train, but the data already has one "
                "(--validation_dir, or the dataset's validation split): use one or the other, or train on both with "
                "--merge_validation_into_train true."
            )
        labels = datasets["train"].with_format(None)["label"]
        check_labeled(datasets.source, "train", sum(label < 0 for label in labels), len(labels))
        datasets["train"], datasets["validation"] = split_validation(
            datasets["train"], data_args.validation_split_percentage, seed
        )
        percentage = data_args.validation_split_percentage
        if percentage < 1:  # a fraction, as transformers' example's --train_val_split 0.15, would hold out 100× less
            logger.warning(
                f"--validation_split_percentage {percentage:g} is a percentage: {percentage:g} % of the training "
                f"images ({len(datasets['validation'])} images, at least one per class) are held out for validation; "
                f"for {percentage * 100:g} % write {percentage * 100:g}."
            )
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit is not None and split in datasets:
            subset = datasets[split].shuffle(seed=seed).select(range(min(limit, len(datasets[split]))))
            if split == "train":
                check_kept_classes(datasets[split], subset, limit)
            datasets[split] = subset
    return datasets


def check_kept_classes(train, subset, limit: int) -> None:
    """Refuses a `--max_train_samples` subset of `train` that leaves a class of `train` without training images."""
    names = train.features["label"].names
    classes = set(train.with_format(None)["label"]) - {-1}
    lost = sorted(classes - set(subset.with_format(None)["label"]))
    if lost:
        listed = ", ".join(repr(names[label]) for label in lost[:3]) + (", ..." if len(lost) > 3 else "")
        raise UserInputError(
            f"--max_train_samples {limit} keeps {len(subset)} of the {len(train)} training images, which leaves "
            f"{len(lost)} of the {len(classes)} classes without any ({listed}): a class without training images "
            f"cannot be learnt. Give a larger --max_train_samples (it draws images at random: several per class, e.g. "
            f"{5 * len(classes)} for {len(classes)} classes), or remove it."
        )


def read_checkpoint_config(model_name_or_path: str) -> PimConfig:
    """
    The configuration of the PIM model of `--model_name_or_path`, read before any data is loaded.

    Raises:
        [`UserInputError`]: not a model folder nor a Hub id ([`check_model_location`], as the tools check it), a Hub id
        that cannot be loaded, or a model that is not PIM.
    """
    flag = "--model_name_or_path"
    is_local = check_model_location(model_name_or_path, flag)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(model_name_or_path)
    except OSError as error:  # what transformers raises for missing or unreachable files
        raise model_loading_error(model_name_or_path, is_local, error, flag) from error
    if config_dict.get("model_type") != PimConfig.model_type:
        raise UserInputError(
            f"{flag} {model_name_or_path} is a model of type {config_dict.get('model_type')!r}, not PIM: give a model "
            "trained by train_pim.py (its --output_dir or a checkpoint-* folder) or converted by pim-convert."
        )
    return PimConfig.from_pretrained(model_name_or_path)


def _fine_tuning_config(checkpoint: PimConfig, given: dict[str, Any], path: str, origins: dict[str, str]) -> PimConfig:
    """The configuration of a run from the checkpoint `path`, given the model flags the user set."""
    result = fine_tuning_config(checkpoint, given)
    if result.conflicts:
        flags = " and ".join(describe_flag(name, given[name], origins) for name in result.conflicts)
        theirs = " and ".join(f"{name} {flag_value(value)}" for name, value in result.conflicts.items())
        first = next(iter(result.conflicts))
        raise UserInputError(
            f"{flags} would change the architecture of the model of --model_name_or_path {path}, which has {theirs}: "
            f"a run from a trained model keeps its architecture. Leave --{first} out (--{first} null overrides a "
            "recipe), or train a new model without --model_name_or_path."
        )
    taken = [name for name in PimConfig.__annotations__ if name not in given]
    taken = [f"{name} {flag_value(getattr(checkpoint, name))}" for name in taken]
    logger.info(f"Model: --model_name_or_path {path}; from the checkpoint (not set for this run): {', '.join(taken)}.")
    if result.applied:
        applied = [f"{name} {flag_value(value)} (the checkpoint's: {flag_value(getattr(checkpoint, name))})"
                   for name, value in result.applied.items()]  # fmt: skip
        logger.info(f"Model: set for this run instead of the checkpoint's: {', '.join(applied)}.")
    for name, value in result.unused.items():
        logger.warning(
            f"Model: {describe_flag(name, value, origins)} is not used: the checkpoint of --model_name_or_path {path} "
            "holds the backbone's weights."
        )
    return result.config


def build_config(pim_args, model_args: ModelArguments, origins: dict[str, str]) -> PimConfig:
    """
    The model's configuration, decided before any data is read (the classes are set once the data is loaded): the
    model flags, or with `--model_name_or_path` the checkpoint's configuration with the model flags the user set
    applied when the checkpoint's tensors allow ([`fine_tuning_config`]). The model is built on the meta device to
    check what only the model checks (e.g. `num_selects` against the tokens of each layer).

    Raises:
        [`UserInputError`]: a value `PimConfig` or the model refuses, naming the flags and where they come from; a
        `--model_name_or_path` that is not a PIM model; a flag that would change the architecture of its checkpoint.
    """
    values = dataclasses.asdict(pim_args)
    if isinstance(values["backbone_kwargs"], str):
        try:
            values["backbone_kwargs"] = json.loads(values["backbone_kwargs"])
        except json.JSONDecodeError as error:
            raise UserInputError(
                f"{describe_flag('backbone_kwargs', values['backbone_kwargs'], origins)} is not JSON ({error.msg}): "
                """write a JSON object, e.g. '{"drop_path_rate": 0.1}'."""
            ) from error
    default = "default"
    try:
        if model_args.model_name_or_path:
            checkpoint = read_checkpoint_config(model_args.model_name_or_path)
            default = f"from --model_name_or_path {model_args.model_name_or_path}"
            given = {name: value for name, value in values.items() if name in origins}
            values = {**{name: getattr(checkpoint, name) for name in values}, **given}
            config = _fine_tuning_config(checkpoint, given, model_args.model_name_or_path, origins)
        else:
            config = PimConfig(**values)
        with torch.device("meta"):
            PimForImageClassification(config)
    except PimConfigError as error:
        flags = " and ".join(describe_flag(name, values[name], origins, default) for name in error.fields)
        raise UserInputError(f"{flags}: {error}" if flags else str(error)) from error
    return config


def check_metric_for_best_model(config: PimConfig, training_args, origins: dict[str, str]) -> None:
    """
    Refuses a `--metric_for_best_model` that is not a metric of PIM's evaluation ([`evaluation_metric_names`], with or
    without the `eval_` prefix, as Trainer takes it), which Trainer would only find missing after the first evaluation.
    """
    metric = training_args.metric_for_best_model
    if metric is None:
        return
    with torch.device("meta"):
        token_classifiers = PimForImageClassification(config).pim.token_classifiers
    names = evaluation_metric_names(len(token_classifiers or ()))
    if metric.removeprefix("eval_") not in names:
        raise UserInputError(
            f"{describe_flag('metric_for_best_model', metric, origins)} is not a metric of PIM's evaluation: give one "
            f"of {', '.join(names)} (with or without the eval_ prefix)."
        )


def short_class_list(names: list[str]) -> str:
    """How an error names a list of classes: its length and its first three names, `3: blue, green, red`."""
    return f"{len(names)}: " + ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def check_evaluated_classes(config: PimConfig, model_args: ModelArguments, label_names: list[str]) -> None:
    """
    Refuses to evaluate (`--do_train false`) the model of `--model_name_or_path` on data of other classes than its
    own (names and order): its class-dependent layers would be re-initialised at random ([`load_for_labels`]) and
    that random head evaluated.
    """
    model_classes = list(config.id2label.values())
    if model_classes != label_names:
        raise UserInputError(
            f"--do_train false evaluates the model of --model_name_or_path {model_args.model_name_or_path} as it is, "
            f"but this data's classes ({short_class_list(label_names)}) are not its classes "
            f"({short_class_list(model_classes)}): give data of its classes, in its order (class folders are taken "
            "in sorted order); for images of some of its classes, use pim-infer; to train it on these classes, "
            "--do_train true."
        )


def build_model(config: PimConfig, model_args: ModelArguments, label_names: list[str]) -> PimForImageClassification:
    """
    The model of `config` ([`build_config`]) for the classes `label_names`: loaded from `--model_name_or_path`
    ([`load_for_labels`]), or new, with timm's pretrained backbone when `backbone_pretrained`.

    Raises:
        [`UserInputError`]: the checkpoint cannot be loaded, the backbone's pretrained weights are out of reach, or the
        `--backbone_weights` file does not fit the backbone (a tensor of another shape, or values for fewer than half
        of its tensors: [`check_backbone_weights`]).
    """
    id2label = dict(enumerate(label_names))
    if model_args.model_name_or_path:
        path = model_args.model_name_or_path
        try:
            return load_for_labels(path, id2label, config)[0]
        except OSError as error:  # what transformers raises for missing, damaged or unreachable files
            raise model_loading_error(path, Path(path).is_dir(), error, "--model_name_or_path") from error
    model = PimForImageClassification(with_labels(config, id2label))
    if config.backbone_pretrained:
        weights_file = model_args.backbone_weights
        try:
            model.load_pretrained_backbone(weights_file)
        except LocalEntryNotFoundError as error:
            raise UserInputError(
                f"the pretrained weights of --backbone {config.backbone} are not in the local Hugging Face cache and "
                "the Hub cannot be reached: give a local weights file with --backbone_weights FILE, or start from "
                "random weights with --backbone_pretrained false."
            ) from error
        except RuntimeError as error:  # torch's load_state_dict: a tensor of the file has another shape
            mismatch = re.search(r"size mismatch for [^\n]*[^.\n]", str(error))
            if weights_file is None or mismatch is None:
                raise
            raise UserInputError(
                f"--backbone_weights {weights_file} does not fit --backbone {config.backbone} ({mismatch.group(0)}): "
                f"give timm's weights of {config.backbone}."
            ) from error
        if weights_file is not None:
            logger.info(check_backbone_weights(model.base_model.backbone.model, weights_file, config.backbone))
    return model


def resume_checkpoint(training_args) -> str | None:
    """The checkpoint folder `--resume_from_checkpoint` names: `None` when the flag is not given, or is `false`/`no`."""
    value = training_args.resume_from_checkpoint
    return None if value is None or value.strip().lower() in NO_RESUME_VALUES else value


def _checkpoint_refusal(checkpoint: str, output_dir: Path, training_args) -> tuple[str, str]:
    """How an error names a checkpoint this run would resume from, and the fix."""
    if resume_checkpoint(training_args):
        return (
            f"--resume_from_checkpoint {checkpoint} is a checkpoint",
            "resume with the flags and data of the run that saved it, or start a new run without "
            "--resume_from_checkpoint",
        )
    return (
        f"--output_dir {output_dir} holds {Path(checkpoint).name}, a checkpoint",
        "use a new --output_dir, or --overwrite_output_dir true to start over in it (its checkpoints and results are "
        "removed)",
    )


def check_checkpoint(checkpoint: str, config: PimConfig, output_dir: Path, training_args) -> None:
    """
    Refuses to resume from a checkpoint that this run would not continue as the same run: a checkpoint of a model
    with another configuration than `config` (classes aside), or of a run whose optimizer, schedule, batch or data
    order was set otherwise ([`differing_training_arguments`]: the resumed optimizer and scheduler would keep the
    checkpoint's values while this run records its own).
    """
    if (Path(checkpoint) / "config.json").is_file():
        differences = differing_fields(PimConfig.from_pretrained(checkpoint), config)
        if differences:
            what, fix = _checkpoint_refusal(checkpoint, output_dir, training_args)
            listed = "; ".join(
                f"{name} {flag_value(saved)}, not {flag_value(new)}" for name, (saved, new) in differences.items()
            )
            raise UserInputError(f"{what} of another model ({listed}): {fix}.")
    try:
        saved_arguments = read_checkpoint_training_arguments(checkpoint)
    except ValueError as error:
        logger.warning(f"The training arguments of {checkpoint} are not compared with this run's: {error}.")
        return
    if saved_arguments is None:
        logger.warning(f"{checkpoint} has no training_args.bin: its training arguments are not compared with these")
        return
    differences = differing_training_arguments(saved_arguments, training_args)
    if differences:
        what, fix = _checkpoint_refusal(checkpoint, output_dir, training_args)
        listed = "; ".join(
            f"{name} {flag_value(new)} (the checkpoint's run: {flag_value(saved)})"
            for name, (saved, new) in differences.items()
        )
        raise UserInputError(
            f"{what} of a run with other training arguments ({listed}), which resuming would not apply (the "
            f"checkpoint's optimizer, schedule and data order continue): {fix}; to fine-tune its model with these "
            f"arguments, give --model_name_or_path {checkpoint} and a new --output_dir."
        )


def check_checkpoint_classes(checkpoint: str, label_names: list[str], output_dir: Path, training_args) -> None:
    """Refuses to resume from a checkpoint of a model trained on other classes than `label_names`."""
    saved_config = Path(checkpoint) / "config.json"
    if not saved_config.is_file():
        return
    saved = list(PimConfig.from_pretrained(checkpoint).id2label.values())
    if saved != label_names:
        what, fix = _checkpoint_refusal(checkpoint, output_dir, training_args)
        raise UserInputError(
            f"{what} of a model trained on other classes ({short_class_list(saved)}; this data has "
            f"{short_class_list(label_names)}): {fix}."
        )


def plan_output_directory(
    output_dir: Path, config: PimConfig, model_args: ModelArguments, training_args
) -> tuple[str | None, list[Path]]:
    """
    What this run does with its `--output_dir`, decided before any data is read, so that the model written there is
    never left beside another run's results:

    - `--resume_from_checkpoint DIR` resumes from `DIR`;
    - `--overwrite_output_dir true` removes the previous run's checkpoints, model and results, and resumes nothing;
    - else a training run resumes from the last checkpoint in `output_dir`, unless `--resume_from_checkpoint false`
      (or `no`) says not to: such a folder is then refused (the new run's checkpoints would mix with the old ones);
    - else an `output_dir` holding a previous run's model or results is refused, unless this run evaluates that very
      model (`--do_train false --model_name_or_path OUTPUT_DIR`).

    A run that resumes or evaluates in place removes the previous evaluation's results (it writes its own).

    Returns:
        `(checkpoint to resume from or None, the previous run's files to remove before training)`.

    Raises:
        [`UserInputError`]: a `--resume_from_checkpoint` that is not a checkpoint folder, a checkpoint of another
        model, or an `output_dir` holding a previous run without `--overwrite_output_dir`.
    """
    checkpoint = resume_checkpoint(training_args)
    if checkpoint:
        if not (Path(checkpoint) / TRAINER_STATE_NAME).is_file():
            raise UserInputError(
                f"--resume_from_checkpoint {checkpoint} is not a checkpoint folder (a checkpoint-<step> folder with "
                f"{TRAINER_STATE_NAME}, saved by a run in its --output_dir): give one, or `false` to start a new run."
            )
        check_checkpoint(checkpoint, config, output_dir, training_args)
        return checkpoint, evaluation_files(output_dir)
    if not output_dir.is_dir():
        return None, []
    if training_args.overwrite_output_dir:
        return None, checkpoint_folders(output_dir) + previous_run_files(output_dir)
    checkpoint = get_last_checkpoint(str(output_dir)) if training_args.do_train else None
    if checkpoint is not None and training_args.resume_from_checkpoint is not None:  # false or no
        raise UserInputError(
            f"--resume_from_checkpoint {training_args.resume_from_checkpoint} starts a new run, but --output_dir "
            f"{output_dir} holds {Path(checkpoint).name} of a previous run, whose checkpoints would mix with this "
            "run's: use a new --output_dir, or --overwrite_output_dir true to start over in it (its checkpoints and "
            "results are removed)."
        )
    if checkpoint is not None:
        check_checkpoint(checkpoint, config, output_dir, training_args)
        return checkpoint, evaluation_files(output_dir)
    previous = previous_run_files(output_dir)
    model = model_args.model_name_or_path
    evaluates_in_place = not training_args.do_train and model and Path(model).resolve() == output_dir.resolve()
    if previous and not evaluates_in_place:
        names = ", ".join(path.name for path in previous[:5]) + (", ..." if len(previous) > 5 else "")
        evaluate = f"; to evaluate the model there, add --model_name_or_path {output_dir}"
        evaluate = "" if training_args.do_train else evaluate
        raise UserInputError(
            f"--output_dir {output_dir} holds a previous run's model or results ({names}), which this run would leave "
            f"beside its own: use a new --output_dir, or --overwrite_output_dir true to replace them{evaluate}."
        )
    return None, evaluation_files(output_dir)


def _describe_processor(processor: PimImageProcessor) -> str:
    """A processor's sizes and normalisation, as the log gives them: `resize 64, crop 32, mean 0.5 0.5 0.5, std ...`."""
    mean, std = (" ".join(f"{value:.4g}" for value in values) for values in (processor.image_mean, processor.image_std))
    return f"resize {processor.size['height']}, crop {processor.crop_size['height']}, mean {mean}, std {std}"


def _checkpoint_processor(model_name_or_path: str) -> PimImageProcessor | None:
    """The image processor saved with the model of `--model_name_or_path` (`preprocessor_config.json`), or `None`."""
    try:
        return PimImageProcessor.from_pretrained(model_name_or_path)
    except OSError:  # what transformers raises when the folder (or Hub repository) has no processor
        return None


def build_processor(
    config: PimConfig, model_args: ModelArguments, data_args: DataTrainingArguments, origins: dict[str, str]
) -> PimImageProcessor:
    """
    The image processor of the run (evaluation transform, sizes and normalisation of the training augmentation, and
    the `preprocessor_config.json` saved with the model), decided before any data is read:

    - with `--model_name_or_path` whose model has a saved processor, that processor, so that a model is evaluated and
      fine-tuned on the inputs it was trained on: its normalisation is kept; its crop becomes `config.image_size` when
      the run changed it ([`fine_tuning_config`]), its resize becomes `--resize_size` when given, else is scaled with
      the crop (the checkpoint's ratio);
    - otherwise a processor for `config.image_size` ([`PimImageProcessor.for_image_size`]): resize `--resize_size`
      (default: the paper's `image_size` × 510 / 384), normalisation of timm's `pretrained_cfg` of the backbone.

    The log says which, with its sizes and normalisation.

    Raises:
        [`UserInputError`]: a resize smaller than the crop (`--resize_size` and `--image_size`, with their origins).
    """
    image_size, resize_size = config.image_size, data_args.resize_size
    path = model_args.model_name_or_path
    saved = _checkpoint_processor(path) if path else None
    if saved is not None:
        saved_resize, saved_crop = saved.size["height"], saved.crop_size["height"]
        default_resize = round(saved_resize * image_size / saved_crop)
        default = f"the processor of --model_name_or_path {path}: resize {saved_resize} for crop {saved_crop}"
    else:
        default_resize = round(image_size * RESIZE_RATIO)
        default = f"image_size × 510 / 384: {default_resize}"
    if resize_size is not None and resize_size < image_size:
        image_size_origin = f"from --model_name_or_path {path}" if path else "default"
        raise UserInputError(
            f"{describe_flag('resize_size', resize_size, origins)} is smaller than "
            f"{describe_flag('image_size', image_size, origins, image_size_origin)}: the image_size crop is taken from "
            f"the resized image. Give --resize_size {image_size} or more, or leave it out (default: {default})."
        )
    resize_size = resize_size or default_resize
    if saved is None:
        pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
        processor = PimImageProcessor.for_image_size(
            image_size,
            resize_size=resize_size,
            image_mean=pretrained_cfg.mean if pretrained_cfg else None,
            image_std=pretrained_cfg.std if pretrained_cfg else None,
        )
        normalisation = f"timm's of {config.backbone}" if pretrained_cfg else "ImageNet's"
        described = _describe_processor(processor)
        none_saved = f" (--model_name_or_path {path} has no saved processor)" if path else ""
        logger.info(
            f"Processor: built for image_size {image_size}{none_saved} ({described}; normalisation: {normalisation})."
        )
        return processor
    processor = PimImageProcessor.from_dict(
        saved.to_dict(),
        size={"height": resize_size, "width": resize_size},
        crop_size={"height": image_size, "width": image_size},
    )
    changed = [
        f"{name} {new} (the checkpoint's: {old})"
        for name, new, old in (("resize", resize_size, saved_resize), ("crop", image_size, saved_crop))
        if new != old
    ]
    logger.info(
        f"Processor: the one saved with --model_name_or_path {path} ({_describe_processor(processor)})"
        + (f"; set for this run: {', '.join(changed)}." if changed else ".")
    )
    return processor


def write_test_predictions(path: Path, dataset, heads, id2label: dict[int, str]) -> None:
    """`test_predictions.csv` for an unlabeled test split: each image (its file, else `#row`) and its top 5 classes."""
    from modeling_pim.tools.infer import ImageSet, write_predictions

    image_column = dataset.with_format("arrow")["image"]  # {bytes, path} structs, in row order, not decoded
    stored_paths = pyarrow.compute.struct_field(image_column, "path").to_pylist()
    paths = [path or f"#{index}" for index, path in enumerate(stored_paths)]
    images = ImageSet(root=path.parent, paths=paths)
    write_predictions(path, images, heads[:, 0], list(range(len(paths))), id2label, top_k=5)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    pim_args, model_args, data_args, training_args, origins = parse_arguments(sys.argv[1:] if argv is None else argv)
    if training_args.should_log:  # INFO on the main process unless --log_level says otherwise, as the HF examples
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=log_level,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity(log_level)
    check_arguments(pim_args, model_args, data_args, training_args, origins)
    output_dir = check_output_directory(training_args.output_dir, "--output_dir")
    config = build_config(pim_args, model_args, origins)
    processor = build_processor(config, model_args, data_args, origins)
    check_metric_for_best_model(config, training_args, origins)
    resume_from, previous_files = plan_output_directory(output_dir, config, model_args, training_args)
    set_seed(training_args.seed)

    # Distributed: the main process loads (and scans) first, the others then find the scan's cache filled.
    with training_args.main_process_first(desc="loading the data"):
        datasets = load_data(data_args, training_args.seed)
    report = build_data_report(datasets, datasets.source, datasets.skipped_images)
    log_data_report(report, logger)
    if training_args.process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / DATA_REPORT_FILENAME).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    check_data_report(report)
    check_validation_data("validation" in datasets, data_args, training_args)

    label_names = report["class_names"]
    if resume_from is not None:
        check_checkpoint_classes(resume_from, label_names, output_dir, training_args)
        logger.info(f"Resuming from {resume_from}; --overwrite_output_dir true starts over in {output_dir}.")
    if model_args.model_name_or_path and not training_args.do_train:
        check_evaluated_classes(config, model_args, label_names)
    model = build_model(config, model_args, label_names)
    train_transform = build_train_transform(
        processor, data_args.horizontal_flip, data_args.blur_probability, data_args.sharpness_probability
    )
    eval_transform = build_eval_transform(processor)
    test_is_unlabeled = "test" in datasets and is_unlabeled(report, "test")
    if test_is_unlabeled:
        datasets["test"] = datasets["test"].remove_columns("label")
    # Images are decoded by the transforms: one that cannot be decoded stops the run with an error naming its file.
    if data_args.skip_unreadable or data_args.dataset == "hub":
        unreadable_fix = DEFAULT_UNREADABLE_FIX
    else:
        unreadable_fix = "remove it, or run without --skip_unreadable false to skip unreadable images"
    datasets["train"] = with_image_transform(datasets["train"], train_transform, unreadable_fix)
    for split in ("validation", "test"):
        if split in datasets:
            datasets[split] = with_image_transform(datasets[split], eval_transform, unreadable_fix)

    if previous_files and training_args.process_index == 0:
        remove_paths(previous_files)
        logger.info(f"Removed the previous run's {', '.join(path.name for path in previous_files)} from {output_dir}.")
    trainer = PimTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets["train"] if training_args.do_train else None,
        eval_dataset=datasets.get("validation"),
        data_collator=collate_fn,
        processing_class=processor,
        compute_metrics=build_compute_metrics(),
        preprocess_logits_for_metrics=stack_heads,
    )
    results: dict[str, dict[str, float]] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results["train"] = train_result.metrics
        if trainer.is_world_process_zero():
            model_fields = {name: getattr(model.config, name) for name in PimConfig.__annotations__}
            recipe = {  # the model's fields as used (with --model_name_or_path, mostly its checkpoint's)
                "model_args": {**model_fields, **dataclasses.asdict(model_args)},
                "data_args": dataclasses.asdict(data_args),
                "training_args": training_args.to_sanitized_dict(),
            }
            (output_dir / "training_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    if "test" in datasets and trainer.is_world_process_zero():  # the example image of the model page (push_to_hub.py)
        save_test_example(datasets["test"], output_dir)
    if "validation" in datasets and training_args.do_eval:
        metrics = trainer.evaluate(datasets["validation"], metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results["eval"] = metrics
    if test_is_unlabeled:
        prediction = trainer.predict(datasets["test"], metric_key_prefix="test")
        if trainer.is_world_process_zero():
            path = output_dir / TEST_PREDICTIONS_FILENAME
            write_test_predictions(path, datasets["test"], prediction.predictions, model.config.id2label)
            logger.info(f"The test split has no labels: its predictions are in {path} (no accuracy).")
        results["test"] = prediction.metrics
    elif "test" in datasets:
        metrics = trainer.evaluate(datasets["test"], metric_key_prefix="test")
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        results["test"] = metrics
    return results


if __name__ == "__main__":
    sys.exit(run_command("train_pim.py", main))
