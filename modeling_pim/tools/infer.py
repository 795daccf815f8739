"""
Batch inference with a trained PIM model on a folder of images: the work of `pim-infer MODEL IMAGES_DIR --output_dir
OUT` (its command line is [`modeling_pim.tools.pim_infer`]).

`MODEL` is a folder written by `save_pretrained` (a training `output_dir` or a `checkpoint-*` folder) or a Hub model
id. A PIM model is built with this package's classes, whatever version of the code was saved beside it
([`load_pretrained`]); another image classifier is loaded with `trust_remote_code=True`: its own code is run, so only
give Hub ids you trust. `IMAGES_DIR` is either

- a flat folder of unlabeled images (`IMAGES_DIR/*.jpg`): predictions only, or
- a folder of class folders (`IMAGES_DIR/<class name>/**/*.jpg`): predictions plus the accuracy of the model's final
  head. Images lying directly in `IMAGES_DIR` next to class folders are predicted without a label (an empty `label`
  in `predictions.csv`), counted and reported, and left out of the accuracy. A class folder matches a class of the
  model when its name equals a name of `config.id2label` (both in Unicode NFC, as training compares class folders),
  or equals it after dropping a leading number (`001.`) and underscores, case insensitively (the CUB-200-2011 folder
  `001.Black_footed_Albatross` matches the class `Black footed Albatross`). A class folder that matches no class is
  an error naming the folder: an unknown class would silently count as a wrong prediction. `--ignore_labels`
  predicts without labels instead.

Images and class folders are found as training finds them ([`modeling_pim.data.image_files.find_class_folders`]:
hidden files and folders skipped, symbolic links followed, class folder names in Unicode NFC); the other files are
ignored, counted and listed. Image files that cannot be decoded (not an image, corrupt, truncated) are skipped,
listed and counted, never a crash.

Outputs in `--output_dir`:

- `predictions.csv`: `path` (relative to `IMAGES_DIR`), `label` (class folders only; empty for a loose image), then
  `top1_label, top1_probability, ..., topK_label, topK_probability`.
- `infer_results.json`: counts and skipped files; with class folders also top-1, top-5 and mean per-class accuracy,
  per-class accuracy and the most confused pairs. Accuracy is that of `logits`, the final head, never a maximum over
  heads.
- `confusion_matrix.png` (class folders only): row-normalised, classes sorted by id, readable at 200 classes; when
  its axes carry class ids instead of names (many classes, or names no installed font can draw),
  `confusion_matrix_classes.csv` beside it maps the ids to the names.

These four names are pim-infer's own: a run first deletes the ones an earlier run left in `--output_dir` (and says
so), so that the folder never pairs new predictions with another run's confusion matrix. Other files are left alone.
"""

import argparse
import csv
import difflib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import font_manager, ft2font
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ImageProcessingMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import cached_file, logging

from ..configuration_pim import PimConfig
from ..data.image_files import (
    IMAGE_EXTENSION_EXAMPLES,
    ClassFolders,
    find_class_folders,
    load_image,
    normalize_class_name,
)
from ..image_processing_pim import PimImageProcessor
from ..modeling_pim import PimForImageClassification
from ..training.metrics import classification_metrics
from ..utils.cli import UserInputError, check_output_directory
from ..utils.model_location import check_model_location, model_loading_error


logger = logging.get_logger(__name__)

PREDICTIONS_FILENAME = "predictions.csv"
RESULTS_FILENAME = "infer_results.json"
CONFUSION_MATRIX_FILENAME = "confusion_matrix.png"
# Above this many classes the confusion matrix has class indices instead of names on its axes.
MAX_NAMED_CLASSES = 60
NUM_CONFUSED_PAIRS = 10
TOP5 = 5


@dataclass
class ImageSet:
    """
    The images to classify: paths relative to `root` and, with class folders, each image's class id (`None` for an
    image outside the class folders); `ignored_files` are the other files under `root`, `hidden` the hidden files and
    folders skipped, `symlink_loops` the links not followed.
    """

    root: Path
    paths: list[str]
    labels: list[int | None] | None = None
    ignored_files: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    symlink_loops: list[str] = field(default_factory=list)

    @property
    def num_unlabeled(self) -> int:
        """Images without a label in a labeled set (loose images next to the class folders)."""
        return 0 if self.labels is None else sum(label is None for label in self.labels)


def resolve_device(device: str) -> torch.device:
    """`"auto"` → CUDA when available, else CPU; `"cuda"` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {device} was asked for but no CUDA GPU is available: use --device cpu or auto.")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`"auto"` → bfloat16 on a GPU that supports it, else float32."""
    if dtype == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def load_pretrained(model_name_or_path: str, revision: str | None = None) -> tuple[PreTrainedModel, Any | None]:
    """
    The model of a folder or Hub id and its image processor (`None` without `preprocessor_config.json`), as saved.

    A PIM model (`config.json` `model_type` `"pim"`) is loaded with this package's classes, not with the copy of the
    model code saved beside it: a folder saved by an older version holds older code, which the tools (e.g.
    `pim-heatmap` reading `model.pim`) do not match, while this package reads every layout PIM was saved in
    ([`PimPreTrainedModel.from_pretrained`]). Its processor is [`PimImageProcessor`] when `preprocessor_config.json`
    names it. Any other model or processor is loaded with transformers' Auto classes and `trust_remote_code=True`.

    Raises:
        What transformers raises for missing, unreachable or invalid files (`OSError`, `ValueError`).
    """
    config, _ = PretrainedConfig.get_config_dict(model_name_or_path, revision=revision)
    if config.get("model_type") == PimConfig.model_type:
        model = PimForImageClassification.from_pretrained(model_name_or_path, revision=revision)
    else:
        model = AutoModelForImageClassification.from_pretrained(
            model_name_or_path, revision=revision, trust_remote_code=True
        )
    processor_file = cached_file(
        model_name_or_path, "preprocessor_config.json", revision=revision, _raise_exceptions_for_missing_entries=False
    )
    if processor_file is None:
        return model, None
    processor, _ = ImageProcessingMixin.get_image_processor_dict(model_name_or_path, revision=revision)
    if processor.get("image_processor_type") == PimImageProcessor.__name__:
        return model, PimImageProcessor.from_pretrained(model_name_or_path, revision=revision)
    return model, AutoImageProcessor.from_pretrained(model_name_or_path, revision=revision, trust_remote_code=True)


def load_model_and_processor(
    model_name_or_path: str, device: torch.device, revision: str | None = None
) -> tuple[PreTrainedModel, Any]:
    """
    Loads a trained model ([`load_pretrained`]) in eval mode on `device`, and its image processor. A model without
    `preprocessor_config.json` gets the paper's evaluation transform for its `config.image_size`
    ([`PimImageProcessor.for_image_size`]), with a warning.

    Raises:
        `UserInputError`: the folder does not exist or is not a model folder, or the Hub id cannot be loaded (e.g.
        offline and not in the cache); the message names the path or id and the fix.
    """
    is_local = check_model_location(model_name_or_path)
    try:
        model, processor = load_pretrained(model_name_or_path, revision=revision)
    except (OSError, ValueError) as error:  # what transformers raises for missing, unreachable or invalid files
        raise model_loading_error(model_name_or_path, is_local, error) from error
    if processor is None:
        image_size = getattr(model.config, "image_size", None)
        if not isinstance(image_size, int):
            raise UserInputError(
                f"{model_name_or_path!r} has no preprocessor_config.json and its config has no `image_size`: save the "
                "model's image processor next to it (`processor.save_pretrained`)."
            )
        logger.warning(
            f"{model_name_or_path!r} has no preprocessor_config.json: using PimImageProcessor.for_image_size"
            f"({image_size}) (resize to {image_size}×510/384, center crop, ImageNet normalisation). If the model was "
            "trained with other statistics, save its processor next to it."
        )
        processor = PimImageProcessor.for_image_size(image_size)
    _check_processor_size(processor, model.config, model_name_or_path, is_local)
    return model.to(device).eval(), processor


def _processed_size(processor: Any) -> tuple[int, int] | None:
    """The `(height, width)` of the images `processor` outputs, when fixed: its crop size, else its resize size."""
    value = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    value = value or getattr(processor, "size", None)
    height, width = (value.get("height"), value.get("width")) if hasattr(value, "get") else (None, None)
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def _check_processor_size(processor: Any, config: Any, model_name_or_path: str, is_local: bool) -> None:
    """
    Raises a `UserInputError` pointing at the model's `preprocessor_config.json` when its processor makes images of
    another size than the model's `config.image_size` (a PIM model takes one size only).
    """
    image_size = getattr(config, "image_size", None)
    processed = _processed_size(processor)
    if not isinstance(image_size, int) or processed is None or processed == (image_size, image_size):
        return
    where = (
        str(Path(model_name_or_path) / "preprocessor_config.json")
        if is_local
        else f"preprocessor_config.json of {model_name_or_path!r}"
    )
    raise UserInputError(
        f"{where} makes {processed[0]}×{processed[1]} images but the model takes {image_size}×{image_size} "
        f"(config.json image_size): set its crop_size (and size) to {image_size}, e.g. with "
        f"PimImageProcessor.for_image_size({image_size}).save_pretrained(...), or delete the file to use that default."
    )


def _loose_class_name(name: str) -> str:
    """'001.Black_footed_Albatross' and 'Black footed Albatross' → 'black footed albatross' (in Unicode NFC)."""
    return re.sub(r"^\d+[.\-_ ]", "", normalize_class_name(name)).replace("_", " ").strip().casefold()


def match_class_folders(folder_names: Sequence[str], label2id: dict[str, int]) -> dict[str, int]:
    """
    Maps class folder names to the model's class ids. Names are compared in Unicode NFC ([`normalize_class_name`], as
    training compares them: a folder written in NFD by macOS matches): the exact name first, then the loose name
    (leading number and underscores dropped, case-insensitive) when it identifies one class.

    Raises:
        `UserInputError`: some folders match no class; the one-line message names them (up to 5) with the closest
        class names.
    """
    exact = {normalize_class_name(name): int(class_id) for name, class_id in label2id.items()}
    loose: dict[str, list[int]] = {}
    for name, class_id in label2id.items():
        loose.setdefault(_loose_class_name(name), []).append(int(class_id))
    mapping, unknown = {}, []
    for folder in folder_names:
        candidates = loose.get(_loose_class_name(folder), [])
        if normalize_class_name(folder) in exact:
            mapping[folder] = exact[normalize_class_name(folder)]
        elif len(candidates) == 1:
            mapping[folder] = candidates[0]
        else:
            unknown.append(folder)
    if unknown:
        hints = []
        for folder in unknown[:5]:
            close = difflib.get_close_matches(normalize_class_name(folder), list(exact), n=3, cutoff=0.5)
            hints.append(f"{folder!r}" + (f" (closest classes: {', '.join(map(repr, close))})" if close else ""))
        more = f"; and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UserInputError(
            f"{len(unknown)} class folder{'s' if len(unknown) > 1 else ''} match no class of the model: "
            f"{'; '.join(hints)}{more}. The model knows {len(label2id)} classes (`id2label` in its config.json): "
            "rename the folders to those names, or pass --ignore_labels to predict without computing accuracy."
        )
    return mapping


def list_image_folder(images_dir: str | os.PathLike) -> ClassFolders:
    """
    Checks that `images_dir` is a folder with at least one image file (at any depth) and lists it by class folder
    ([`find_class_folders`], as training lists class folders).

    Raises:
        `UserInputError`: the folder does not exist, is a file, holds no image file, or has two class folders whose
        names differ only in Unicode normalisation.
    """
    root = Path(images_dir).expanduser()
    if not root.exists():
        raise UserInputError(f"Image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise UserInputError(
            f"{str(root)!r} is a file, not a folder of images: put the images in a folder (use pim-heatmap for a "
            "single image)."
        )
    try:
        found = find_class_folders(root)
    except ValueError as error:
        raise UserInputError(str(error)) from error
    if not found.files.images:
        skipped = found.files.describe_skipped() or "nothing"
        raise UserInputError(
            f"Image folder {str(root)!r} contains no image file ({IMAGE_EXTENSION_EXAMPLES}): found {skipped}."
        )
    return found


def collect_images(found: ClassFolders, label2id: dict[str, int] | None) -> ImageSet:
    """
    Chooses the labels of the images of [`list_image_folder`]. Class folders decide: when some images are in
    class folders, each class folder is matched to `label2id` by [`match_class_folders`], and the images directly in
    the root have no label (`None`); otherwise, or with `label2id=None`, every image is unlabeled (`labels=None`).

    Raises:
        `UserInputError`: some class folders match no class of the model.
    """
    files = found.files
    paths = [path.as_posix() for path in files.images]
    listing = {
        "ignored_files": [path.as_posix() for path in files.other_files],
        "hidden": [path.as_posix() for path in files.hidden],
        "symlink_loops": [path.as_posix() for path in files.symlink_loops],
    }
    class_of_folder = {folder: name for name, folder in found.folders.items()}
    classes = [class_of_folder[path.parts[0]] if len(path.parts) > 1 else None for path in files.images]
    if label2id is None or not any(classes):
        return ImageSet(files.root, paths, None, **listing)
    class_id = match_class_folders([name for name, images in found.classes.items() if images], label2id)
    labels = [class_id[name] if name else None for name in classes]
    return ImageSet(files.root, paths, labels, **listing)


class ImageFileDataset(Dataset):
    """Decodes and preprocesses one image per item; an unreadable image gives its error instead of pixel values."""

    def __init__(self, root: Path, paths: Sequence[str], processor: Any):
        self.root = root
        self.paths = list(paths)
        self.processor = processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = load_image(self.root / self.paths[index])
            pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        except Exception as error:  # Whatever PIL plugin or conversion fails, the file is unusable: skip it.
            return {"index": index, "pixel_values": None, "error": f"{type(error).__name__}: {error}"}
        return {"index": index, "pixel_values": pixel_values, "error": None}


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks the readable images of a batch and keeps the errors of the others."""
    readable = [item for item in items if item["error"] is None]
    return {
        "indices": [item["index"] for item in readable],
        "pixel_values": torch.stack([item["pixel_values"] for item in readable]) if readable else None,
        "errors": [(item["index"], item["error"]) for item in items if item["error"] is not None],
    }


@torch.inference_mode()
def predict(
    model: PreTrainedModel,
    processor: Any,
    images: ImageSet,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """
    Classifies `images` in batches.

    Returns:
        `(logits, indices, errors)`: the final head's `logits` as a float32 array `(M, K)` for the `M` readable
        images, their indices in `images.paths`, and the error of every unreadable image by index.
    """
    device = model.device
    loader = DataLoader(
        ImageFileDataset(images.root, images.paths, processor),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    all_logits, indices, errors = [], [], {}
    for batch in tqdm(loader, desc="Classifying", unit="batch", disable=None):
        errors.update(batch["errors"])
        if batch["pixel_values"] is None:
            continue
        pixel_values = batch["pixel_values"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(pixel_values=pixel_values).logits
        all_logits.append(logits.float().cpu().numpy())
        indices.extend(batch["indices"])
    num_labels = model.config.num_labels
    return np.concatenate(all_logits) if all_logits else np.zeros((0, num_labels), np.float32), indices, errors


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> np.ndarray:
    """`(K, K)` counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def evaluation_report(logits: np.ndarray, labels: np.ndarray, id2label: dict[int, str]) -> dict[str, Any]:
    """
    Accuracy of the final head's `logits` as training reports it ([`modeling_pim.training.metrics.classification_metrics`]:
    top-1, top-5 and mean per-class accuracy over the classes that have images), plus each class's accuracy and
    count, the most confused (true, predicted) pairs and the confusion matrix.
    """
    num_labels = logits.shape[1]
    predictions = logits.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, num_labels)
    counts = matrix.sum(axis=1)
    present = np.flatnonzero(counts)
    per_class = {
        id2label[int(class_id)]: {
            "accuracy": float(matrix[class_id, class_id] / counts[class_id]),
            "count": int(counts[class_id]),
        }
        for class_id in present
    }
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    true_ids, predicted_ids = np.nonzero(errors)
    order = sorted(zip(true_ids, predicted_ids), key=lambda pair: (-errors[pair], pair))[:NUM_CONFUSED_PAIRS]
    return {
        "count": int(len(labels)),
        **classification_metrics(logits, labels, top_k=TOP5),
        "per_class_accuracy": per_class,
        "most_confused_pairs": [
            {
                "true_label": id2label[int(true_id)],
                "predicted_label": id2label[int(predicted_id)],
                "count": int(errors[true_id, predicted_id]),
                "fraction_of_true_class": float(errors[true_id, predicted_id] / counts[true_id]),
            }
            for true_id, predicted_id in order
        ],
        "confusion_matrix": matrix,
    }


def font_with_glyphs(text: str) -> str | None:
    """
    The file of an installed font that has a glyph for every character of `text` (spaces aside): matplotlib's default
    font when it has them, else the first other installed font that does (matplotlib's "Last Resort" font is skipped:
    its glyphs are boxes). `None` when no font has them all, e.g. CJK class names without a CJK font installed.
    """
    needed = {ord(character) for character in text if not character.isspace()}
    default = font_manager.findfont(font_manager.FontProperties())
    installed = sorted(
        {entry.fname for entry in font_manager.fontManager.ttflist if not entry.name.startswith("Last Resort")}
    )
    for path in [default, *installed]:
        try:
            charmap = ft2font.FT2Font(path).get_charmap()
        except (OSError, RuntimeError):  # a font file matplotlib listed but FreeType cannot read
            continue
        if needed <= charmap.keys():
            return path
    return None


def classes_table_path(path: str | os.PathLike) -> Path:
    """The id → name table written beside the confusion matrix `path` when its axes carry class ids."""
    return Path(path).with_name(Path(path).stem + "_classes.csv")


OUTPUT_FILENAMES = (
    PREDICTIONS_FILENAME,
    RESULTS_FILENAME,
    CONFUSION_MATRIX_FILENAME,
    classes_table_path(CONFUSION_MATRIX_FILENAME).name,
)


def remove_previous_outputs(output_dir: Path) -> list[str]:
    """
    Deletes the files of `OUTPUT_FILENAMES` (pim-infer's own outputs) that an earlier run left in `output_dir`, so
    that none of them survives beside this run's; returns the names deleted. Nothing else in the folder is touched.
    """
    removed = [name for name in OUTPUT_FILENAMES if (output_dir / name).is_file()]
    for name in removed:
        (output_dir / name).unlink()
    return removed


def plot_confusion_matrix(
    matrix: np.ndarray, id2label: dict[int, str], path: str | os.PathLike, title: str
) -> Path | None:
    """
    Saves the row-normalised confusion matrix of the classes that occur (as truth or prediction), sorted by class id,
    on a square-root colour scale.

    Up to `MAX_NAMED_CLASSES` classes the axes carry the class names, in a font that has their glyphs
    ([`font_with_glyphs`]: names in CJK scripts need an installed CJK font). Beyond that many classes, or when no
    installed font can draw the names, the axes carry class ids (every few rows for large matrices, so that 200
    classes stay readable) and the id → name table of the classes shown is written beside the PNG
    (`<name>_classes.csv`, columns `class_id,name`, UTF-8).

    Returns:
        `Path | None`: the id → name table written, or `None` when the axes carry the names.
    """
    shown = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))
    counts = matrix[np.ix_(shown, shown)].astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    num_shown = len(shown)
    names = [id2label[int(class_id)] for class_id in shown]
    font = font_with_glyphs("".join(names)) if num_shown <= MAX_NAMED_CLASSES else None
    side = float(np.clip(4 + 0.09 * num_shown, 6, 24))
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    # A square-root colour scale keeps the rare confusions of a large matrix visible next to its diagonal.
    scale = PowerNorm(gamma=0.5, vmin=0, vmax=1)
    image = axes.imshow(normalised, cmap="Blues", norm=scale, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class (square-root scale)")
    table = None
    if font is not None:
        properties = font_manager.FontProperties(fname=font, size=9 if num_shown <= 20 else 6)
        axes.set_xticks(range(num_shown), names, rotation=90, fontproperties=properties)
        axes.set_yticks(range(num_shown), names, fontproperties=properties)
        what = "class"
    else:
        ticks = range(0, num_shown, max(1, num_shown // 20))
        axes.set_xticks(ticks, [str(shown[tick]) for tick in ticks], rotation=90, fontsize=7)
        axes.set_yticks(ticks, [str(shown[tick]) for tick in ticks], fontsize=7)
        table = classes_table_path(path)
        with open(table, "w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows([("class_id", "name"), *zip(shown.tolist(), names)])
        what = f"class id (names in {table.name})"
    if num_shown <= 15:
        for row in range(num_shown):
            for column in range(num_shown):
                if counts[row, column]:
                    colour = "white" if normalised[row, column] > 0.5 else "black"
                    value = f"{normalised[row, column]:.2f}"
                    axes.text(column, row, value, ha="center", va="center", fontsize=8, color=colour)
    axes.set_xlabel(f"predicted {what}")
    axes.set_ylabel(f"true {what}")
    axes.set_title(title)
    figure.savefig(path, dpi=100)
    return table


def write_predictions(
    path: Path, images: ImageSet, logits: np.ndarray, indices: list[int], id2label: dict[int, str], top_k: int
) -> None:
    """
    Writes `predictions.csv`: one row per readable image, its true label (when labeled) and its top-k classes with
    their softmax probabilities.
    """
    probabilities = torch.from_numpy(logits).softmax(dim=-1).numpy()
    top_k = min(top_k, probabilities.shape[1])
    header = ["path"] + (["label"] if images.labels is not None else [])
    for rank in range(1, top_k + 1):
        header += [f"top{rank}_label", f"top{rank}_probability"]
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row, index in enumerate(indices):
            label = [] if images.labels is None else [images.labels[index]]
            values = [images.paths[index]] + [id2label[class_id] if class_id is not None else "" for class_id in label]
            for class_id in ranked[row]:
                values += [id2label[int(class_id)], f"{probabilities[row, class_id]:.6f}"]
            writer.writerow(values)


def run_inference(args: argparse.Namespace) -> dict[str, Any]:
    """Runs `pim-infer` with parsed arguments; returns what it wrote to `infer_results.json`."""
    device = resolve_device(args.device)
    # Bad inputs and outputs fail before the model is loaded.
    found = list_image_folder(args.images_dir)
    output_dir = check_output_directory(args.output_dir, "--output_dir")
    model, processor = load_model_and_processor(args.model, device, revision=args.revision)
    id2label = {int(class_id): name for class_id, name in model.config.id2label.items()}
    label2id = None if args.ignore_labels else {name: class_id for class_id, name in id2label.items()}
    images = collect_images(found, label2id)
    labeled = images.labels is not None
    print(
        f"Classifying {len(images.paths)} images of {images.root} ({'class folders' if labeled else 'unlabeled'}) "
        f"with {args.model} on {device}."
    )
    if images.num_unlabeled:
        print(
            f"{images.num_unlabeled} images lie directly in {images.root}, outside the class folders: they are "
            "predicted without a label (empty label in predictions.csv) and left out of the accuracy."
        )
    dtype = resolve_dtype(args.dtype, device)
    logits, indices, errors = predict(model, processor, images, args.batch_size, args.num_workers, dtype)
    output_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_previous_outputs(output_dir)
    if removed:
        print(f"Removed the previous run's {', '.join(removed)} from {output_dir}.")
    write_predictions(output_dir / PREDICTIONS_FILENAME, images, logits, indices, id2label, args.top_k)
    results: dict[str, Any] = {
        "model": args.model,
        "images_dir": str(images.root),
        "head": "final (logits)",
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "num_images": len(images.paths),
        "num_predicted": len(indices),
        "num_skipped": len(errors),
        "skipped_files": [{"path": images.paths[index], "reason": errors[index]} for index in sorted(errors)],
        "num_unlabeled": images.num_unlabeled,
        "ignored_files": images.ignored_files,
        "hidden_files_and_folders": images.hidden,
        "symlink_loops": images.symlink_loops,
    }
    rows = [row for row, index in enumerate(indices) if labeled and images.labels[index] is not None]
    if rows:
        labels = np.asarray([images.labels[indices[row]] for row in rows])
        metrics = evaluation_report(logits[rows], labels, id2label)
        table = plot_confusion_matrix(
            metrics.pop("confusion_matrix"),
            id2label,
            output_dir / CONFUSION_MATRIX_FILENAME,
            f"{Path(str(args.model)).name}: top-1 {metrics['accuracy']:.2%} on {len(labels)} images (final head)",
        )
        results.update(metrics, confusion_matrix_png=CONFUSION_MATRIX_FILENAME)
        if table is not None:
            results["confusion_matrix_classes"] = table.name
    with open(output_dir / RESULTS_FILENAME, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2, ensure_ascii=False)
    return results


def print_summary(results: dict[str, Any], output_dir: str) -> None:
    """Prints the counts, skipped files, accuracy and most confused pairs of a run."""
    print(f"Predicted {results['num_predicted']} of {results['num_images']} images; skipped {results['num_skipped']}.")
    for skipped in results["skipped_files"]:
        print(f"  skipped {skipped['path']}: {skipped['reason']}")
    for what, key in (
        ("other files", "ignored_files"),
        ("hidden files and folders", "hidden_files_and_folders"),
        ("symbolic link loops", "symlink_loops"),
    ):
        if results[key]:
            print(f"  ignored {len(results[key])} {what} (listed in {RESULTS_FILENAME}).")
    if results["num_unlabeled"]:
        print(f"  {results['num_unlabeled']} images outside the class folders were predicted without a label.")
    if "accuracy" in results:
        print(
            f"Final head: top-1 {results['accuracy']:.2%}, top-5 {results['top5_accuracy']:.2%}, "
            f"mean per-class {results['mean_per_class_accuracy']:.2%} ({results['count']} images)."
        )
        if results["most_confused_pairs"]:
            print("Most confused (true → predicted: count, fraction of the true class):")
        for pair in results["most_confused_pairs"]:
            print(
                f"  {pair['true_label']} → {pair['predicted_label']}: {pair['count']} "
                f"({pair['fraction_of_true_class']:.0%})"
            )
    written = [PREDICTIONS_FILENAME, RESULTS_FILENAME]
    written += [results[key] for key in ("confusion_matrix_png", "confusion_matrix_classes") if key in results]
    print(f"Wrote {', '.join(str(Path(output_dir) / name) for name in written)}.")


__all__ = [
    "collect_images",
    "evaluation_report",
    "font_with_glyphs",
    "list_image_folder",
    "load_model_and_processor",
    "load_pretrained",
    "match_class_folders",
    "plot_confusion_matrix",
    "predict",
    "print_summary",
    "remove_previous_outputs",
    "resolve_device",
    "resolve_dtype",
    "run_inference",
]
