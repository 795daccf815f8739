"""
Fine-grained image classification datasets as `datasets.DatasetDict`s with an `image` column (a lazily decoded
`datasets.Image`) and a `label` column (a `datasets.ClassLabel` with human-readable names).

Supported sources: the official archives of CUB-200-2011, NABirds, Stanford Cars, FGVC-Aircraft, Oxford Flowers-102,
Stanford Dogs and iNaturalist as unpacked (read by `archives`), `<split>/<class name>/<image>` folders and any image
classification dataset of the Hugging Face Hub. The local loaders build each split from its image paths and labels
(`Dataset.from_dict`: images are referenced by path, never copied, and decoded when read) and by default decode every
image once at load time (`image_scan`, cached per file) so that an unreadable, corrupt or truncated file is reported
and dropped before training rather than crashing it.
"""

import hashlib
import inspect
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_dataset, load_dataset_builder
from datasets import config as datasets_config
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.utils import logging

from .archives import format_examples, read_archive
from .image_files import IMAGE_EXTENSION_EXAMPLES, find_class_folders, normalize_class_name
from .image_scan import default_scan_cache_dir, scan_cache_file, scan_images


logger = logging.get_logger(__name__)

IMAGE_FOLDERS_LAYOUT = "<split dir>/<class name>/<image files>, one folder per class"

# Column names that `load_hub_dataset` recognises, in order of preference, when the features do not decide.
IMAGE_COLUMN_CANDIDATES = ("image", "img", "images", "picture", "photo")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "class", "category", "target")
# The environment variables that switch the Hub off for `datasets.load_dataset`.
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
# The arguments of `datasets.load_dataset` that `datasets.load_dataset_builder` does not take.
LOAD_DATASET_ONLY_ARGUMENTS = frozenset(inspect.signature(load_dataset).parameters) - frozenset(
    inspect.signature(load_dataset_builder).parameters
)


@dataclass(frozen=True)
class SkippedImage:
    """
    An image listed by a dataset but left out because it is missing or cannot be decoded.

    Attributes:
        path (`str`): its absolute path.
        split (`str`): the split that listed it ("train", "validation", "test").
        label (`str`): the name of its class.
        reason (`str`): why it cannot be used (the decoding error, e.g. `"UnidentifiedImageError: cannot identify
            image file ..."`).
    """

    path: str
    split: str
    label: str
    reason: str


class FgvcDatasetDict(DatasetDict):
    """
    A `DatasetDict` whose splits have an `image` column (`datasets.Image`, decoded lazily into a `PIL.Image.Image`)
    and a `label` column (`datasets.ClassLabel`, the same class names in every split), returned by the local loaders
    of this module together with where it was read from and the report of their load-time image scan.

    Attributes:
        source (`str`):
            What was loaded, for reports (e.g. `"CUB-200-2011 at /data/CUB_200_2011"`).
        skipped_images (`list[SkippedImage]`):
            The images that were listed by the dataset but dropped because they are missing or cannot be decoded (in
            listing order, all splits together). Empty when every image is readable or when the scan was disabled
            with `skip_unreadable=False`. Operations that build a new dict (`map`, `filter`, ...) return a plain
            `DatasetDict` without this report.
    """

    def __init__(self, *args, source: str = "", skipped_images: Sequence[SkippedImage] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source
        self.skipped_images = list(skipped_images)


def _scan_class_folders(directory: Path, argument: str, allow_empty: bool = False) -> dict[str, list[str]]:
    """
    Maps each class of `directory` ([`find_class_folders`]: class folders named in Unicode NFC, images found
    recursively, sorted, hidden entries skipped, links followed) to the absolute paths of its images; what is not an
    image of a class folder is logged. A class folder without images is an error unless `allow_empty` (then its list
    is empty: a validation or test folder may lack some classes).
    """
    if not directory.is_dir():
        raise ValueError(f"{argument}={str(directory)!r} is not a directory: expected {IMAGE_FOLDERS_LAYOUT}.")
    try:
        found = find_class_folders(directory)
    except ValueError as error:
        raise ValueError(f"{argument}={error}") from None
    if not found.classes:
        raise ValueError(f"{argument}={str(directory)!r} has no class folders: expected {IMAGE_FOLDERS_LAYOUT}.")
    for name, images in found.classes.items():
        if not images and not allow_empty:
            folder = found.folders[name]
            hint = " (a macOS archive metadata folder: delete it)" if folder == "__MACOSX" else ""
            raise ValueError(
                f"Class folder {directory / folder}{hint} contains no image files ({IMAGE_EXTENSION_EXAMPLES}): every "
                f"class folder of {argument}={str(directory)!r} needs at least one image; remove the folder or add "
                "its images."
            )
    if found.loose_images:
        logger.warning(
            f"Ignored {len(found.loose_images)} images of {directory} that are not in a class folder (so have no "
            f"label): {format_examples(path.as_posix() for path in found.loose_images)}."
        )
    skipped = found.files.describe_skipped()
    if skipped:
        logger.warning(f"Ignored under {directory}: {skipped}.")
    return {name: [str(directory / path) for path in images] for name, images in found.classes.items()}


def _describe_repeated_files(repeated: list[list[tuple[str, str]]], source: str, kind: str) -> str:
    """
    "`source` lists N `kind` more than once (...): how many in which splits, e.g. one file and its other spellings",
    for the listings (split, path as listed) of each file listed more than once.
    """
    where = Counter(tuple(dict.fromkeys(split for split, _ in listings)) for listings in repeated)
    counts = ", ".join(
        f"{count} in the {' and '.join(splits)} split{'s' if len(splits) > 1 else ''}" for splits, count in where.items()
    )
    spellings = list(dict.fromkeys(path for _, path in repeated[0]))
    example = " twice" if len(spellings) == 1 else " is also " + ", ".join(repr(path) for path in spellings[1:])
    noun = kind.removesuffix("s") if len(repeated) == 1 else kind
    return (
        f"{source} lists {len(repeated)} {noun} more than once (compared as files, with links and '..' resolved): "
        f"{counts}, e.g. {spellings[0]!r}{example}"
    )


def _check_each_file_in_one_split(files: dict[str, Sequence[str]], source: str, kind: str) -> None:
    """
    Refuses a file that `files` (split -> paths) lists in more than one split, comparing the files the paths reach
    rather than how they are written: a folder given through a symbolic link or a `..` path (e.g. a test folder that is
    the training folder) lists the same files under other names, and the test would be measured on training images. A
    file listed more than once within one split (two links to one image) is kept as listed, with a warning.

    Raises:
        `ValueError`: one line naming `source`, how many `kind` ("images", "data files") are listed in several splits,
        in which splits, and one such file with each of its spellings.
    """
    real_folders: dict[str, str] = {}
    listings: dict[str, list[tuple[str, str]]] = {}
    for split, paths in files.items():
        for path in paths:
            folder, name = os.path.split(path)
            if folder not in real_folders:
                real_folders[folder] = os.path.realpath(folder)
            real = os.path.join(real_folders[folder], name)
            listings.setdefault(os.path.realpath(real) if os.path.islink(real) else real, []).append((split, path))
    repeated = sorted((entries for entries in listings.values() if len(entries) > 1), key=lambda entries: entries[0])
    shared = [entries for entries in repeated if len({split for split, _ in entries}) > 1]
    if shared:
        raise ValueError(f"{_describe_repeated_files(shared, source, kind)}. Give each split its own {kind}.")
    if repeated:
        logger.warning(f"{_describe_repeated_files(repeated, source, kind)}: each listing is used.")


def _build_dataset_dict(
    splits: dict[str, tuple[list[str], list[int]]],
    class_names: list[str],
    source: str,
    skip_unreadable: bool,
    num_workers: int | None,
    scan_cache_dir: str | os.PathLike | None,
) -> FgvcDatasetDict:
    """
    Builds the splits from their absolute image paths and labels (`Dataset.from_dict`: the `image` column holds the
    paths, decoded lazily), after the load-time scan ([`scan_images`], cached in `scan_cache_dir`) left out the images
    that cannot be decoded, reported in `skipped_images`.
    """
    _check_each_file_in_one_split({split: paths for split, (paths, _) in splits.items()}, source, "images")
    all_paths = [path for paths, _ in splits.values() for path in paths]
    if skip_unreadable:
        cache_file = scan_cache_file(scan_cache_dir or default_scan_cache_dir(), source)
        errors = scan_images(all_paths, cache_file, num_workers).errors
    else:
        errors = {}
        missing = [path for path in all_paths if not os.path.isfile(path)]
        if missing:
            raise ValueError(
                f"{len(missing)} images listed by {source} do not exist: {format_examples(missing)}. Restore them or "
                "load with skip_unreadable=True to skip them."
            )
    skipped = [
        SkippedImage(path, split, class_names[label], errors[path])
        for split, (paths, labels) in splits.items()
        for path, label in zip(paths, labels, strict=True)
        if path in errors
    ]
    if skipped:
        logger.warning(
            f"Skipped {len(skipped)} unreadable images of {source} (listed with the reasons in the data report)."
        )

    features = Features({"image": Image(), "label": ClassLabel(names=class_names)})
    dataset_dict = FgvcDatasetDict(source=source, skipped_images=skipped)
    for split, (paths, labels) in splits.items():
        kept = [(path, label) for path, label in zip(paths, labels, strict=True) if path not in errors]
        if not kept:
            raise ValueError(f"The {split!r} split of {source} has no readable images.")
        columns = {"image": [path for path, _ in kept], "label": [label for _, label in kept]}
        dataset_dict[split] = Dataset.from_dict(columns, features=features, split=split)
    return dataset_dict


def load_archive(
    dataset: str,
    data_dir: str | os.PathLike,
    configuration: str | None = None,
    skip_unreadable: bool = True,
    num_workers: int | None = None,
    scan_cache_dir: str | os.PathLike | None = None,
) -> FgvcDatasetDict:
    """
    Loads a dataset from its official archive as unpacked ([`read_archive`]: CUB-200-2011, NABirds, Stanford Cars,
    FGVC-Aircraft, Oxford Flowers-102, Stanford Dogs, iNaturalist), with its official splits and class names.

    Args:
        dataset (`str`):
            A key of `ARCHIVES` (`"cub200"`, `"nabirds"`, `"stanford_cars"`, `"fgvc_aircraft"`, `"flowers102"`,
            `"stanford_dogs"`, `"inaturalist"`).
        data_dir (`str` or `os.PathLike`):
            The archive's folder, or the folder it was unpacked into.
        configuration (`str`, *optional*):
            FGVC-Aircraft's annotation level or the iNaturalist version (see [`read_archive`]).
        skip_unreadable (`bool`, *optional*, defaults to `True`):
            Decode every image once and drop (and report) those that fail; otherwise a missing image is an error and
            corrupt images are not looked for.
        num_workers (`int`, *optional*):
            Threads for the image scan (see [`scan_images`]).
        scan_cache_dir (`str` or `os.PathLike`, *optional*):
            Folder of the image scan's cache (one SQLite file per dataset: a file unchanged since it was checked is not
            decoded again); defaults to `$PIM_CACHE/image_scan` or `~/.cache/modeling_pim/image_scan`.

    Returns:
        [`FgvcDatasetDict`]: the official splits ("train", "test", and "validation" where the archive has one).

    Raises:
        `ValueError`: a file of the archive is missing or malformed (the message names it and the layout expected), or
        an image is listed in two splits.
    """
    archive = read_archive(dataset, data_dir, configuration)
    return _build_dataset_dict(
        archive.splits, archive.class_names, archive.source, skip_unreadable, num_workers, scan_cache_dir
    )


def load_image_folders(
    train_dir: str | os.PathLike,
    validation_dir: str | os.PathLike | None = None,
    test_dir: str | os.PathLike | None = None,
    skip_unreadable: bool = True,
    num_workers: int | None = None,
    scan_cache_dir: str | os.PathLike | None = None,
) -> FgvcDatasetDict:
    """
    Loads pre-split `<split dir>/<class name>/<image files>` folders (images may sit in sub-folders of a class
    folder; hidden files and folders are ignored).

    Args:
        train_dir (`str` or `os.PathLike`):
            Folder of the "train" split.
        validation_dir (`str` or `os.PathLike`, *optional*):
            Folder of the "validation" split.
        test_dir (`str` or `os.PathLike`, *optional*):
            Folder of the "test" split.
        skip_unreadable (`bool`, *optional*, defaults to `True`):
            Decode every image once and drop (and report) those that fail.
        num_workers (`int`, *optional*):
            Threads for the image scan (see [`scan_images`]).
        scan_cache_dir (`str` or `os.PathLike`, *optional*):
            Folder of the image scan's cache (one SQLite file per dataset: a file unchanged since it was checked is not
            decoded again); defaults to `$PIM_CACHE/image_scan` or `~/.cache/modeling_pim/image_scan`.

    Returns:
        [`FgvcDatasetDict`]: one split per given folder. The classes are the class folders of `train_dir`, named after
        their folders in Unicode NFC, sorted, labels 0..K-1 in that order; the class folders of the other splits are
        matched to them by name (after NFC normalisation) and may cover only some of them (a missing or empty folder:
        the class has no images in that split).

    Raises:
        `ValueError`: a folder is missing or has no class folders, a class folder of `train_dir` has no images, or a
        class folder of another split has no counterpart in `train_dir`, or an image is in two splits (the files are
        compared, so a folder reached through a symbolic link or a `..` path is the folder it leads to).
    """
    arguments = {"train": ("train_dir", train_dir), "validation": ("validation_dir", validation_dir)}
    arguments["test"] = ("test_dir", test_dir)
    directories = {
        split: (argument, Path(directory).expanduser().absolute())
        for split, (argument, directory) in arguments.items()
        if directory is not None
    }
    files = {
        split: _scan_class_folders(directory, argument, allow_empty=split != "train")
        for split, (argument, directory) in directories.items()
    }
    class_names = sorted(files["train"])
    train_directory = directories["train"][1]
    for split, classes in files.items():
        unknown = set(classes) - set(class_names)
        if unknown:
            argument, directory = directories[split]
            raise ValueError(
                f"The class folders {format_examples(unknown)} of {argument}={str(directory)!r} are not class folders "
                f"of train_dir={str(train_directory)!r}: a class the model is not trained on can never be predicted. "
                "Add its training images, or remove the folders (folder names are compared after Unicode NFC "
                "normalisation)."
            )
    label_of_class = {name: label for label, name in enumerate(class_names)}
    splits = {
        split: (
            [path for name in sorted(classes) for path in classes[name]],
            [label_of_class[name] for name in sorted(classes) for _ in classes[name]],
        )
        for split, classes in files.items()
    }
    source = "the image folders " + ", ".join(f"{argument}={directory}" for argument, directory in directories.values())
    return _build_dataset_dict(splits, class_names, source, skip_unreadable, num_workers, scan_cache_dir)


def _pick_column(
    dataset: Dataset, given: str | None, argument: str, feature_type: type, candidates: Sequence[str]
) -> str:
    """The column to use as image or label: `given`, the only column of `feature_type`, or the first candidate name."""
    columns = dataset.column_names
    if given is not None:
        if given not in columns:
            raise ValueError(f"{argument}={given!r} is not a column of the dataset (columns: {columns}).")
        return given
    typed = [name for name in columns if isinstance(dataset.features[name], feature_type)]
    if len(typed) == 1:
        return typed[0]
    for name in candidates:
        if name in (typed or columns):
            return name
    raise ValueError(
        f"Cannot tell which column to use among {columns} ({len(typed)} of type {feature_type.__name__}): pass "
        f"{argument}=<column name>."
    )


def _normalize_label_names(dataset: Dataset, split: str) -> Dataset:
    """
    `dataset` with the names of its `label` `ClassLabel` in Unicode NFC ([`normalize_class_name`]), as class folders
    are named in training: a class whose name is stored in both forms (e.g. an `imagefolder` dataset whose train
    folder is `café` in NFD, as macOS writes it, and its test folder the same name in NFC) becomes one class, its
    labels merged into the first of them (-1, no label, stays -1).
    """
    names = dataset.features["label"].names
    normalized = [normalize_class_name(name) for name in names]
    if normalized == names:
        return dataset
    unique = list(dict.fromkeys(normalized))
    features = dataset.features.copy()
    features["label"] = ClassLabel(names=unique)
    if len(unique) == len(names):
        return dataset.cast(features)
    new_label = [unique.index(name) for name in normalized]
    return dataset.map(
        lambda labels: {"label": [new_label[label] if label >= 0 else label for label in labels]},
        input_columns="label",
        batched=True,
        features=features,
        desc=f"Merging the {split} classes named in both Unicode NFC and NFD",
    )


def _standardize_columns(
    dataset_dict: DatasetDict, image_column: str | None = None, label_column: str | None = None
) -> DatasetDict:
    """
    Renames the image and label columns of an image classification `DatasetDict` to `image` and `label`, drops the
    other columns and makes `label` a `ClassLabel` with the same names in every split: string labels get their sorted
    distinct values as names, non-negative integer labels the names "0".."max". Class names are put in Unicode NFC
    ([`normalize_class_name`]), as class folders are in training: two names that differ only in that form are one class.
    """
    first = next(iter(dataset_dict.values()))
    image_column = _pick_column(first, image_column, "image_column", Image, IMAGE_COLUMN_CANDIDATES)
    label_column = _pick_column(first, label_column, "label_column", ClassLabel, LABEL_COLUMN_CANDIDATES)
    if image_column == label_column:
        raise ValueError(f"image_column and label_column are both {image_column!r}.")
    standardized = {}
    for split, dataset in dataset_dict.items():
        if not isinstance(dataset.features.get(image_column), Image):
            raise ValueError(
                f"Column {image_column!r} of split {split!r} is {dataset.features.get(image_column)}, not a "
                "datasets.Image: pass image_column=<the image column>."
            )
        dataset = dataset.select_columns([image_column, label_column])
        standardized[split] = dataset.rename_columns({image_column: "image", label_column: "label"})

    label_features = [dataset.features["label"] for dataset in standardized.values()]
    if all(isinstance(feature, ClassLabel) for feature in label_features):
        standardized = {split: _normalize_label_names(dataset, split) for split, dataset in standardized.items()}
        names = [dataset.features["label"].names for dataset in standardized.values()]
        if any(split_names != names[0] for split_names in names):
            raise ValueError(f"The {label_column!r} ClassLabel names differ between splits {list(standardized)}.")
        return DatasetDict(standardized)
    if not all(isinstance(feature, Value) for feature in label_features):
        raise ValueError(
            f"Column {label_column!r} is {label_features[0]}: expected a ClassLabel, string or integer column; pass "
            "label_column=<the label column>."
        )
    values = {value for dataset in standardized.values() for value in dataset.unique("label")}
    if all(isinstance(value, str) for value in values):
        if any(normalize_class_name(value) != value for value in values):
            standardized = {
                split: dataset.map(
                    lambda labels: {"label": [normalize_class_name(label) for label in labels]},
                    input_columns="label",
                    batched=True,
                    desc="Class names in Unicode NFC",
                )
                for split, dataset in standardized.items()
            }
            values = {normalize_class_name(value) for value in values}
        class_label = ClassLabel(names=sorted(values))
    elif all(isinstance(value, (int, np.integer)) and value >= -1 for value in values) and max(values) >= 0:
        class_label = ClassLabel(names=[str(label) for label in range(max(values) + 1)])
    else:
        raise ValueError(
            f"Column {label_column!r} holds {format_examples(map(repr, values))}: expected class names or non-negative "
            "integer labels (-1 for an image without a label)."
        )
    return DatasetDict({split: dataset.cast_column("label", class_label) for split, dataset in standardized.items()})


def _local_folder_cache_dir(folder: Path, cache_dir: str | os.PathLike | None) -> str:
    """
    A `datasets` cache folder for the local dataset `folder`, named by a digest of its absolute path and of the path,
    size and modification time of each of its files.

    `datasets` names the cache of a local folder whose README lists its `configs` (as `push_to_hub` and `hf download`
    write them) after the folder's name and that README alone: another folder of the same name, or this one exported
    again with other images or labels, would silently be loaded from the data cached first (or fail its split-size
    check). With this folder, the cache is reused exactly while the files are unchanged.
    """
    digest = hashlib.sha256(str(folder.absolute()).encode())
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            status = os.stat(os.path.join(root, name))
            relative = os.path.relpath(os.path.join(root, name), folder)
            digest.update(f"\n{relative}\t{status.st_size}\t{status.st_mtime_ns}".encode())
    return os.path.join(cache_dir or datasets_config.HF_DATASETS_CACHE, "local_folders", digest.hexdigest()[:16])


def _dataset_not_found_message(path: str, error: OSError) -> str:
    """
    Why `datasets.load_dataset(path)` found no dataset (`error`: a `FileNotFoundError` or `ConnectionError`), and the
    fix: `path` names no folder, and the Hub has no such dataset, cannot be reached, or is switched off.
    """
    local = Path(path).expanduser()
    folder = (
        "a folder of data files (such as the data/<split>-*.parquet shards Dataset.push_to_hub writes, or "
        "<split>/<class name>/<image> folders)"
    )
    if local.is_dir():
        return f"{path!r} is a folder without data files that datasets.load_dataset reads ({error}): give {folder}."
    if local.exists():
        return f"{path!r} is a file, not a dataset folder: give {folder}."
    try:
        validate_repo_id(path)
        is_repo_id = not path.startswith((".", "~", os.sep))
    except HFValidationError:
        is_repo_id = False
    if not is_repo_id:
        return f"{path!r}: no such folder: check the path, or give {folder}."
    switches = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]
    if switches or datasets_config.HF_HUB_OFFLINE:
        switched = ", ".join(f"{name}=1" for name in switches) or "offline mode"
        return (
            f"{path!r}: no such folder, and no Hub dataset of that id in the local cache (the Hub is off: {switched}): "
            f"give {folder}, or unset {' and '.join(switches) or 'offline mode'} to download it."
        )
    if isinstance(error, ConnectionError):
        return (
            f"{path!r}: no such folder, and the Hub cannot be reached to look for a dataset of that id ({error}): "
            f"check your connection, or give {folder}."
        )
    return (
        f"{path!r}: no such folder, and no Hub dataset of that id ({error}): check the id (a private or gated dataset "
        f"needs `hf auth login`), or give {folder}."
    )


def _file_features(path: str) -> Features | None:
    """
    The features a parquet or arrow data file stores in its own schema (`datasets` writes them there, as
    `Dataset.to_parquet`, `push_to_hub` and `save_to_disk` do), read as `datasets`' parquet and arrow loaders read
    them; `None` for another kind of file.
    """
    if path.endswith(".parquet"):
        schema = pq.read_schema(path)
    elif path.endswith(".arrow"):
        with open(path, "rb") as file:
            try:
                schema = pa.ipc.open_stream(file).schema
            except pa.lib.ArrowInvalid:
                schema = pa.ipc.open_file(file).schema
    else:
        return None
    return Features.from_arrow_schema(schema)


def _check_local_data_files(
    loaded: DatasetDict, path: str, name: str | None, load_arguments: dict, source: str
) -> None:
    """
    Checks what `datasets.load_dataset` made of the data files of the local folder `path` (as its builder lists them
    per split): no file in two splits ([`_check_each_file_in_one_split`]), and every parquet or arrow file stored with
    the `ClassLabel` names it was read with. `datasets` reads every file of a folder with one set of features (its
    first file's, or its README's) and keeps each file's label numbers, so a split exported with its own `ClassLabel`
    order (e.g. `class_encode_column` run on each split, a class missing from one of them) would have its labels
    silently mean other classes.

    Raises:
        `ValueError`: one line naming the file, the column, its own names, the names it was read with and the fix.
    """
    builder_arguments = {key: value for key, value in load_arguments.items() if key not in LOAD_DATASET_ONLY_ARGUMENTS}
    data_files = load_dataset_builder(path, name=name, **builder_arguments).config.data_files or {}
    files = {str(split): [str(file) for file in split_files] for split, split_files in data_files.items()}
    _check_each_file_in_one_split(files, source, "data files")
    for split, split_files in files.items():
        if split not in loaded:
            continue
        read_with = loaded[split].features
        for file in split_files:
            own = _file_features(file) if os.path.isfile(file) else None
            for column, feature in (own or {}).items():
                if not isinstance(feature, ClassLabel) or not isinstance(read_with.get(column), ClassLabel):
                    continue
                own_names = [normalize_class_name(class_name) for class_name in feature.names]
                names = [normalize_class_name(class_name) for class_name in read_with[column].names]
                if own_names != names:
                    raise ValueError(
                        f"The data file {file} ({split} split of {path!r}) stores its {column!r} ClassLabel with the "
                        f"names {feature.names}, but datasets.load_dataset reads every file of the folder with the "
                        f"names {read_with[column].names} and keeps the label numbers, so that its labels would mean "
                        "other classes: encode every split's labels with one ClassLabel (e.g. class_encode_column on "
                        "the whole dataset before splitting it, or Dataset.align_labels_with_mapping on each split)."
                    )


def load_hub_dataset(
    path: str,
    name: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    **kwargs,
) -> FgvcDatasetDict:
    """
    Loads an image classification dataset of the Hugging Face Hub (or any `datasets.load_dataset` source, such as a
    local folder of the parquet shards `Dataset.push_to_hub` writes) with its image and label columns renamed to
    `image` and `label` (e.g. from `img` and `fine_label`) and its other columns dropped. `label` becomes a
    `ClassLabel` when it is a string or integer column. A label of -1 marks an image without a label, as in the test
    split of datasets whose test labels are hidden.

    Args:
        path (`str`):
            Dataset id or path for `datasets.load_dataset`.
        name (`str`, *optional*):
            The dataset's configuration, if it has several.
        image_column (`str`, *optional*):
            The image column; by default the only `datasets.Image` column, else the first of
            `IMAGE_COLUMN_CANDIDATES`.
        label_column (`str`, *optional*):
            The label column; by default the only `ClassLabel` column, else the first of `LABEL_COLUMN_CANDIDATES`
            (so CIFAR-100's `fine_label` wins over `coarse_label`).
        kwargs:
            Passed to `datasets.load_dataset` (e.g. `revision=`, `cache_dir=`). All splits are loaded: `split` and
            `streaming` are not supported. A local folder is cached in a sub-folder of `cache_dir` named by its
            files (see `_local_folder_cache_dir`), so that a folder of the same name is never read from another's
            cache.

    Returns:
        [`FgvcDatasetDict`]: the dataset's splits. The images are not scanned for decoding errors.

    Raises:
        `FileNotFoundError`: `path` is neither a folder of data files nor a Hub dataset that can be reached; the
        message says which, whether the Hub is switched off (`HF_DATASETS_OFFLINE`, `HF_HUB_OFFLINE`), and the fix.
        `ValueError`: the columns or labels are not those of an image classification dataset; or, for a local folder,
        a data file is listed in two splits, or a parquet or arrow file stores a `ClassLabel` with other names than
        those `datasets` reads it with (see `_check_local_data_files`).
    """
    for unsupported in ("split", "streaming"):
        if kwargs.get(unsupported):
            raise ValueError(
                f"load_hub_dataset loads every split of {path!r} into a DatasetDict: {unsupported}= is not supported; "
                "pick a split from the result instead."
            )
    is_local_folder = Path(path).expanduser().is_dir()
    if is_local_folder:
        kwargs["cache_dir"] = _local_folder_cache_dir(Path(path).expanduser(), kwargs.get("cache_dir"))
    try:
        loaded = load_dataset(path, name=name, **kwargs)
    except (FileNotFoundError, ConnectionError) as error:  # what datasets raises for a path or id it cannot find
        raise FileNotFoundError(_dataset_not_found_message(path, error)) from error
    source = f"the dataset {path!r}" + (f" (configuration {name!r})" if name else "") + " read by datasets.load_dataset"
    if is_local_folder:
        _check_local_data_files(loaded, path, name, kwargs, source)
    dataset_dict = _standardize_columns(loaded, image_column, label_column)
    return FgvcDatasetDict(dataset_dict, source=source)


def split_validation(dataset: Dataset, percentage: float, seed: int) -> tuple[Dataset, Dataset]:
    """
    Holds out a stratified, seeded validation set from a training set, so that model selection never sees the test
    set.

    Every class with at least 2 images gives `round(percentage% of its images)` of them, but at least one and never
    all, to the validation set; a class with a single image stays in training (with a warning). The validation set is
    therefore about, not exactly, `percentage`% of `dataset`, and covers every class that can be covered. Images
    without a label (-1) cannot be stratified: they stay in training, whose data report then refuses them.

    Args:
        dataset (`datasets.Dataset`):
            A split with a `label` `ClassLabel` column.
        percentage (`float`):
            Share of each class to hold out, in percent, strictly between 0 and 100.
        seed (`int`):
            Seed of the draw: the same dataset and seed always give the same split.

    Returns:
        `tuple[Dataset, Dataset]`: the remaining training set and the validation set, both in `dataset`'s order.
    """
    if not 0 < percentage < 100:
        raise ValueError(f"percentage={percentage} must be strictly between 0 and 100 (a share of the training set).")
    if not isinstance(dataset.features.get("label"), ClassLabel):
        raise ValueError(
            f"split_validation needs a 'label' ClassLabel column to stratify on; the dataset has {dataset.features}."
        )
    labels = np.asarray(list(dataset.with_format(None)["label"]), dtype=np.int64)
    rng = np.random.default_rng(seed)
    validation_indices = []
    single_image_classes = []
    for label in np.unique(labels[labels >= 0]):
        indices = np.flatnonzero(labels == label)
        if len(indices) < 2:
            single_image_classes.append(dataset.features["label"].int2str(int(label)))
            continue
        count = min(max(int(len(indices) * percentage / 100 + 0.5), 1), len(indices) - 1)
        validation_indices.extend(rng.permutation(indices)[:count].tolist())
    if not validation_indices:
        raise ValueError("split_validation: no class has 2 images or more, so none can give a validation image.")
    if single_image_classes:
        logger.warning(
            f"{len(single_image_classes)} classes have a single training image and are left out of the validation "
            f"set: {format_examples(single_image_classes)}."
        )
    validation_indices = sorted(validation_indices)
    train_indices = sorted(set(range(len(labels))) - set(validation_indices))
    return dataset.select(train_indices), dataset.select(validation_indices)


__all__ = [
    "FgvcDatasetDict",
    "SkippedImage",
    "load_archive",
    "load_hub_dataset",
    "load_image_folders",
    "split_validation",
]
