#!/usr/bin/env python
"""
Train PIM (Chou et al., arXiv 2202.03822) with `transformers.Trainer`.

    python train_pim.py configuration/cub200_swin_large_384.yaml --data_dir /data/CUB_200_2011
    accelerate launch --multi_gpu train_pim.py configuration/cub200_swin_large_384.yaml --data_dir ...

The optional first argument is a recipe (YAML) whose keys are the flags below; flags given after it override it.
"""

import dataclasses
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import transformers
import yaml
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
from modeling_pim.data.fgvc_datasets import load_cub200, load_hub_dataset, load_image_folders, load_nabirds, split_validation
from modeling_pim.data.synthetic import default_cache_dir, generate_fine_grained_dataset
from modeling_pim.data.transforms import build_eval_transform, build_train_transform, collate_fn, make_transform_fn
from modeling_pim.hub.widget import save_test_example
from modeling_pim.training.trainer import PimTrainer, build_compute_metrics, stack_heads
from modeling_pim.training.transfer import load_for_labels
from modeling_pim.utils.cli import run_command


logger = logging.getLogger(__name__)
DATASETS = ("cub200", "nabirds", "folders", "hub", "synthetic")


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
            annotation, default = str | None, None
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
            "help": "A PIM checkpoint (folder or Hub id) to fine-tune instead of building a new model (the model flags "
            "are then read from it). On other classes than its own, its class-dependent tensors (token classifiers' "
            "last layer, final classifier) are re-initialised and named in the log; the rest is kept."
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
            "help": "cub200 / nabirds: the official archive in --data_dir; folders: --train_dir/--validation_dir/"
            "--test_dir with one sub-folder per class; hub: --dataset_name; synthetic: the generated fine-grained "
            "demo set.",
            "choices": DATASETS,
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "The unpacked CUB_200_2011 or nabirds folder."})
    train_dir: str | None = field(default=None, metadata={"help": "Training images, <class>/<image> (folders)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation images (folders)."})
    test_dir: str | None = field(default=None, metadata={"help": "Test images (folders)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub image-classification dataset id."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, if any."})
    validation_split_percentage: float = field(
        default=0.0,
        metadata={
            "help": "Hold out this percentage of the training set (stratified, seeded) as the validation set used "
            "for model selection, so that the test set is only evaluated once, at the end. 0: no hold-out."
        },
    )
    synthetic_num_classes: int = field(default=8, metadata={"help": "Classes of the synthetic demo set."})
    synthetic_train_per_class: int = field(
        default=400, metadata={"help": "Training images per class of the synthetic demo set (50 for validation and test)."}
    )
    synthetic_dir: str | None = field(
        default=None, metadata={"help": "Where the synthetic demo set is generated (default: a cache folder)."}
    )
    resize_size: int | None = field(
        default=None,
        metadata={"help": "Resize side before cropping image_size (default: image_size × 510 / 384, the paper's)."},
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips in training."})
    blur_probability: float = field(default=0.1, metadata={"help": "Probability of the Gaussian blur (k=5)."})
    sharpness_probability: float = field(default=0.1, metadata={"help": "Probability of the sharpness ×1.5."})
    skip_unreadable: bool = field(
        default=True, metadata={"help": "Scan images at load time and skip (and list) those that cannot be decoded."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation sets (debugging)."})


def parse_arguments(argv: list[str]) -> tuple:
    """Recipe (YAML) first if given, then command-line flags overriding it."""
    argument_classes = (PimArguments, ModelArguments, DataTrainingArguments, TrainingArguments)
    parser = HfArgumentParser(argument_classes)
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe = Path(argv[0])
        if not recipe.is_file():
            raise FileNotFoundError(f"Recipe {recipe} does not exist: see the configuration/ folder for examples.")
        values = yaml.safe_load(recipe.read_text()) or {}
        known = {field.name for cls in argument_classes for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{recipe}: unknown keys {unknown}; every key must be a flag of train_pim.py (--help).")
        flags = []
        for key, value in values.items():
            if isinstance(value, dict):
                value = json.dumps(value)
            if isinstance(value, list):
                flags += [f"--{key}", *map(str, value)]
            else:
                flags += [f"--{key}", str(value)]
        argv = flags + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


def load_data(data_args: DataTrainingArguments, seed: int):
    """The splits as a DatasetDict with `image` and `label` columns; `validation` is carved from train if asked."""
    if data_args.dataset == "cub200":
        datasets = load_cub200(_required(data_args, "data_dir"), skip_unreadable=data_args.skip_unreadable)
    elif data_args.dataset == "nabirds":
        datasets = load_nabirds(_required(data_args, "data_dir"), skip_unreadable=data_args.skip_unreadable)
    elif data_args.dataset == "hub":
        datasets = load_hub_dataset(_required(data_args, "dataset_name"), name=data_args.dataset_config_name)
    elif data_args.dataset == "synthetic":
        root = generate_fine_grained_dataset(
            data_args.synthetic_dir or default_cache_dir(),
            num_classes=data_args.synthetic_num_classes,
            train_per_class=data_args.synthetic_train_per_class,
            validation_per_class=50,
            test_per_class=50,
            seed=0,
        )
        datasets = load_image_folders(root / "train", root / "validation", root / "test")
    else:
        datasets = load_image_folders(
            _required(data_args, "train_dir"),
            data_args.validation_dir,
            data_args.test_dir,
            skip_unreadable=data_args.skip_unreadable,
        )
    if data_args.validation_split_percentage > 0:
        if "validation" in datasets:
            raise ValueError(
                "validation_split_percentage carves a validation set from train, but the data already has one "
                "(--validation_dir): use one or the other."
            )
        datasets["train"], datasets["validation"] = split_validation(
            datasets["train"], data_args.validation_split_percentage, seed
        )
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit is not None and split in datasets:
            datasets[split] = datasets[split].shuffle(seed=seed).select(range(min(limit, len(datasets[split]))))
    return datasets


def _required(data_args: DataTrainingArguments, name: str) -> str:
    value = getattr(data_args, name)
    if not value:
        raise ValueError(f"--dataset {data_args.dataset} needs --{name}.")
    return value


def build_model(pim_args, model_args: ModelArguments, label_names: list[str]) -> PimForImageClassification:
    labels = {"id2label": dict(enumerate(label_names)), "label2id": {name: i for i, name in enumerate(label_names)}}
    if model_args.model_name_or_path:
        return load_for_labels(model_args.model_name_or_path, labels["id2label"])[0]
    values = dataclasses.asdict(pim_args)
    if isinstance(values["backbone_kwargs"], str):
        values["backbone_kwargs"] = json.loads(values["backbone_kwargs"])
    config = PimConfig(num_labels=len(label_names), **labels, **values)
    model = PimForImageClassification(config)
    if config.backbone_pretrained:
        model.load_pretrained_backbone(model_args.backbone_weights)
    return model


def build_processor(model: PimForImageClassification, data_args: DataTrainingArguments) -> PimImageProcessor:
    pretrained_cfg = timm.models.get_pretrained_cfg(model.config.backbone)
    return PimImageProcessor.for_image_size(
        model.config.image_size,
        resize_size=data_args.resize_size,
        image_mean=pretrained_cfg.mean if pretrained_cfg else None,
        image_std=pretrained_cfg.std if pretrained_cfg else None,
    )


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    pim_args, model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=training_args.get_process_log_level(),
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    datasets = load_data(data_args, training_args.seed)
    label_names = datasets["train"].features["label"].names
    model = build_model(pim_args, model_args, label_names)
    processor = build_processor(model, data_args)
    train_transform = build_train_transform(
        processor, data_args.horizontal_flip, data_args.blur_probability, data_args.sharpness_probability
    )
    eval_transform = build_eval_transform(processor)
    datasets["train"].set_transform(make_transform_fn(train_transform))
    for split in ("validation", "test"):
        if split in datasets:
            datasets[split].set_transform(make_transform_fn(eval_transform))

    output_dir = Path(training_args.output_dir)
    last_checkpoint = None
    if training_args.resume_from_checkpoint is None and output_dir.is_dir() and training_args.do_train:
        last_checkpoint = get_last_checkpoint(str(output_dir))
        if last_checkpoint is not None:
            logger.info(f"Resuming from {last_checkpoint} (found in {output_dir}); use a new --output_dir to restart.")

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
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results["train"] = train_result.metrics
        if trainer.is_world_process_zero():
            recipe = {
                "model_args": {**dataclasses.asdict(pim_args), **dataclasses.asdict(model_args)},
                "data_args": dataclasses.asdict(data_args),
                "training_args": training_args.to_sanitized_dict(),
            }
            (output_dir / "training_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
            if "test" in datasets:  # the example image of the model page (push_to_hub.py)
                save_test_example(datasets["test"], output_dir)
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in datasets and (training_args.do_eval or split == "test"):
            metrics = trainer.evaluate(datasets[split], metric_key_prefix=prefix)
            trainer.log_metrics(prefix, metrics)
            trainer.save_metrics(prefix, metrics)
            results[prefix] = metrics
    return results


if __name__ == "__main__":
    sys.exit(run_command("train_pim.py", main))
