"""
The data report of a training run: what was loaded (source, images and classes per split, smallest and largest class,
the images skipped and why), logged line by line and saved as `data_report.json`, then the checks that refuse data on
which training or evaluation would silently give wrong numbers.
"""

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import DatasetDict

from ..utils.cli import UserInputError
from .fgvc_datasets import SkippedImage


# Class names that are split names: class folders named so mean the folder given was the dataset root.
SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation"})
# How many class names a log line lists before "and N more" (the JSON report lists them all).
NUM_LISTED_CLASSES = 10


def _class_count(names: Sequence[str], counts: np.ndarray, index: int) -> dict[str, Any]:
    return {"name": names[index], "num_images": int(counts[index])}


def _split_report(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Images, labeled images and classes of one split, from its labels (-1: no label)."""
    counts = np.bincount(labels[labels >= 0], minlength=len(class_names))
    present = np.flatnonzero(counts)
    report = {
        "num_images": int(len(labels)),
        "num_unlabeled": int((labels < 0).sum()),
        "num_classes": int(len(present)),
        "smallest_class": None,
        "largest_class": None,
        "absent_classes": [class_names[index] for index in np.flatnonzero(counts == 0)],
    }
    if len(present):
        # The first class in label order among those of equal size.
        report["smallest_class"] = _class_count(class_names, counts, present[np.argmin(counts[present])])
        report["largest_class"] = _class_count(class_names, counts, present[np.argmax(counts[present])])
    return report


def build_data_report(
    datasets: DatasetDict, source: str, skipped_images: Sequence[SkippedImage] = ()
) -> dict[str, Any]:
    """
    Describes the data of a run before training.

    Args:
        datasets (`datasets.DatasetDict`):
            The splits, each with a `label` `ClassLabel` column (the same names in every split; -1 marks an image
            without a label); "train" is required.
        source (`str`):
            Where the data was read from (e.g. `FgvcDatasetDict.source`).
        skipped_images (`Sequence[SkippedImage]`, *optional*):
            The images the loader left out (`FgvcDatasetDict.skipped_images`).

    Returns:
        `dict`: JSON-serialisable, with `source`, `num_classes`, `class_names`, `splits` (per split: `num_images`,
        `num_unlabeled`, `num_classes` with images, `smallest_class` and `largest_class` as `{"name", "num_images"}`,
        `absent_classes`) and `skipped_images` (per image: `path`, `split`, `label`, `reason`).
    """
    class_names = list(datasets["train"].features["label"].names)
    splits = {}
    for split, dataset in datasets.items():
        labels = np.asarray(list(dataset.with_format(None)["label"]), dtype=np.int64)
        splits[split] = _split_report(labels, class_names)
    return {
        "source": source,
        "num_classes": len(class_names),
        "class_names": class_names,
        "splits": splits,
        "skipped_images": [dataclasses.asdict(image) for image in skipped_images],
    }


def _listing(names: Sequence[str], limit: int = NUM_LISTED_CLASSES) -> str:
    listing = ", ".join(repr(name) for name in names[:limit])
    return listing + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def log_data_report(report: dict[str, Any], logger: logging.Logger) -> None:
    """Logs the report at INFO level, one line per split and one per skipped image (WARNING)."""
    logger.info(f"Data: {report['source']}; {_plural(report['num_classes'], 'class', 'classes')}.")
    for split, counts in report["splits"].items():
        if is_unlabeled(report, split):
            logger.info(f"{split}: {_plural(counts['num_images'], 'image')} without labels (-1): predictions only.")
            continue
        classes = _plural(counts["num_classes"], "class", "classes")
        line = f"{split}: {_plural(counts['num_images'], 'image')} of {classes}"
        smallest, largest = counts["smallest_class"], counts["largest_class"]
        line += (
            f" (smallest: {smallest['name']!r}, {_plural(smallest['num_images'], 'image')}; largest: "
            f"{largest['name']!r}, {_plural(largest['num_images'], 'image')})"
        )
        if counts["absent_classes"] and split != "train":
            line += f"; no images of {_listing(counts['absent_classes'])}"
        logger.info(line + ".")
    skipped = report["skipped_images"]
    if skipped:
        logger.warning(f"Skipped {_plural(len(skipped), 'unreadable image')}:")
        for image in skipped:
            logger.warning(f"skipped {image['path']} ({image['split']}, class {image['label']!r}): {image['reason']}")


def check_data_report(report: dict[str, Any]) -> None:
    """
    Refuses data on which training or evaluation would give wrong numbers without a word.

    Raises:
        [`UserInputError`]: a single class (a 1-class model is always "right"); class names that are split names
        (the training folder given is the dataset root); a class without a readable training image (named with its
        unreadable files); training or validation images without a label (-1); a test split with only some images
        labeled. The message says how to fix the data.
    """
    source, class_names, splits = report["source"], report["class_names"], report["splits"]
    if len(class_names) == 1:
        raise UserInputError(
            f"{source} has a single class ({class_names[0]!r}): a 1-class model is always right (100 % accuracy) "
            "and learns nothing. Give at least 2 classes (class folders: one sub-folder per class in --train_dir)."
        )
    split_like = sorted(name for name in class_names if name.casefold() in SPLIT_NAMES)
    if len(split_like) >= 2:
        raise UserInputError(
            f"{source}: the classes {_listing(split_like)} are named like dataset splits, so --train_dir points at "
            "the dataset root, not at its training folder: give --train_dir ROOT/train (and --validation_dir "
            "ROOT/validation, --test_dir ROOT/test)."
        )
    untrainable = splits["train"]["absent_classes"]
    if untrainable:
        descriptions = []
        for name in untrainable[:NUM_LISTED_CLASSES]:
            files = [
                f"{image['path']} ({image['reason']})"
                for image in report["skipped_images"]
                if image["split"] == "train" and image["label"] == name
            ]
            descriptions.append(f"{name!r}: {', '.join(files)}" if files else f"{name!r}: no training images listed")
        more = f"; and {len(untrainable) - NUM_LISTED_CLASSES} more" if len(untrainable) > NUM_LISTED_CLASSES else ""
        raise UserInputError(
            f"{source}: no readable training image for {_plural(len(untrainable), 'class', 'classes')} "
            f"({'; '.join(descriptions)}{more}): a class without training images cannot be learnt, and its test "
            "images can never be right. Replace the unreadable files or remove these classes."
        )
    for split in ("train", "validation"):
        if split in splits:
            check_labeled(source, split, splits[split]["num_unlabeled"], splits[split]["num_images"])
    test = splits.get("test")
    if test and 0 < test["num_unlabeled"] < test["num_images"]:
        raise UserInputError(
            f"{source}: the test split has {test['num_unlabeled']:,} of its {test['num_images']:,} images without a "
            "label (-1): an accuracy over the labeled ones only would not be the test accuracy. Label them all, or "
            "none (then the run writes predictions only)."
        )


def check_labeled(source: str, split: str, num_unlabeled: int, num_images: int) -> None:
    """
    Refuses images without a label (-1) in the "train" or "validation" split of `source`: training and model selection
    need labeled images. `train_pim.py` checks the training split before holding out a validation set from it too.

    Raises:
        [`UserInputError`]: `num_unlabeled` is not 0; the message gives the count and the fix.
    """
    if num_unlabeled:
        use = "training" if split == "train" else "model selection"
        raise UserInputError(
            f"{source}: the {split} split has {num_unlabeled:,} of its {num_images:,} images without a label (-1), and "
            f"{use} needs labeled images: remove them from the {split} split."
        )


def is_unlabeled(report: dict[str, Any], split: str) -> bool:
    """Whether every image of `split` has the label -1 (hidden labels: predictions only, no accuracy)."""
    counts = report["splits"][split]
    return counts["num_unlabeled"] == counts["num_images"]


__all__ = [
    "SPLIT_NAMES",
    "build_data_report",
    "check_data_report",
    "check_labeled",
    "is_unlabeled",
    "log_data_report",
]
