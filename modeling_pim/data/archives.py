"""
Readers of the official archives of fine-grained benchmarks — CUB-200-2011, NABirds, Stanford Cars, FGVC-Aircraft,
Oxford Flowers-102, Stanford Dogs and iNaturalist — as their users unpack them. Each reader returns, per official
split, the absolute image paths and 0-based labels, and the human class names of labels 0..K-1; it reads nothing but
the annotation files (images are checked later, by the load-time scan). Where torchvision has a loader for the same
layout (`StanfordCars`, `FGVCAircraft`, `Flowers102`), the reader gives exactly its samples, labels and classes.
[`read_archive`] reads any of them by name (`ARCHIVES`).

`.mat` files are read with `scipy.io.loadmat`. Every error names the file that is missing or wrong and the layout
expected.
"""

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)

CUB200_LAYOUT = (
    "the official CUB_200_2011 archive layout: <data_dir>/images/<NNN.Class_Name>/<file>.jpg, <data_dir>/images.txt "
    "('<image id> <path under images/>'), <data_dir>/image_class_labels.txt ('<image id> <class id>'), "
    "<data_dir>/train_test_split.txt ('<image id> <1 for train, 0 for test>') and <data_dir>/classes.txt "
    "('<class id> <NNN.Class_Name>')"
)
NABIRDS_LAYOUT = (
    "the official NABirds archive layout: <data_dir>/images/<4-digit class id>/<file>.jpg, <data_dir>/images.txt "
    "('<image uuid> <path under images/>'), <data_dir>/image_class_labels.txt ('<image uuid> <class id>'), "
    "<data_dir>/train_test_split.txt ('<image uuid> <1 for train, 0 for test>') and <data_dir>/classes.txt "
    "('<class id> <class name>')"
)
STANFORD_CARS_LAYOUT = (
    "the Stanford Cars archive as torchvision's StanfordCars reads it: <data_dir>/devkit/cars_meta.mat "
    "('class_names'), <data_dir>/devkit/cars_train_annos.mat and <data_dir>/cars_test_annos_withlabels.mat "
    "('annotations' structs with 'fname' and 1-based 'class' fields), images in <data_dir>/cars_train/ and "
    "<data_dir>/cars_test/; <data_dir> may also be the folder holding stanford_cars/"
)
FGVC_AIRCRAFT_LAYOUT = (
    "the fgvc-aircraft-2013b archive: <data_dir>/data/images/<image id>.jpg, <data_dir>/data/variants.txt, "
    "families.txt and manufacturers.txt (one class name a line) and <data_dir>/data/images_<level>_<split>.txt "
    "('<image id> <class name>' lines, level variant/family/manufacturer, split train/val/test); <data_dir> may also "
    "be the folder holding fgvc-aircraft-2013b/, or its data/ folder"
)
FLOWERS102_LAYOUT = (
    "the Oxford Flowers-102 files: <data_dir>/jpg/image_<5-digit number>.jpg (102flowers.tgz), "
    "<data_dir>/imagelabels.mat ('labels': the 1-based class of each image) and <data_dir>/setid.mat ('trnid', "
    "'valid', 'tstid': 1-based image numbers); <data_dir> may also be the folder holding flowers-102/ (torchvision's "
    "Flowers102 layout)"
)
STANFORD_DOGS_LAYOUT = (
    "the Stanford Dogs archive: <data_dir>/Images/<wnid>-<breed>/<image>.jpg (images.tar) and the split lists of "
    "lists.tar, train_list.mat and test_list.mat ('file_list': paths under Images/, 'labels': 1-based classes), in "
    "<data_dir> or <data_dir>/lists/; instead of the .mat files, train_list.txt and test_list.txt with one path under "
    "Images/ a line (labels then follow the sorted class folders, as the official ones do)"
)
INATURALIST_LAYOUT = (
    "an iNaturalist competition folder: the COCO-style annotation files ('images' with 'id' and 'file_name', "
    "'annotations' with 'image_id' and 'category_id', 'categories' with 'id' and 'name') of the training and "
    "validation sets — 2021: train.json (or train_mini.json) and val.json; 2017, 2018, 2019: train<year>.json and "
    "val<year>.json, with the un-obfuscated categories.json of 2018/2019 if you have it — all in <data_dir>, and the "
    "image folders their 'file_name's point to under <data_dir> (train/ and val/, train_val_images/, train_val2018/...)"
)

FGVC_AIRCRAFT_CLASS_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
# Version -> (training annotations, validation annotations), in the order the version is guessed when not given.
INATURALIST_VERSIONS = {
    "2021": ("train.json", "val.json"),
    "2021_mini": ("train_mini.json", "val.json"),
    "2019": ("train2019.json", "val2019.json"),
    "2018": ("train2018.json", "val2018.json"),
    "2017": ("train2017.json", "val2017.json"),
}


@dataclass
class ArchiveSplits:
    """
    What an official archive says about its images.

    Attributes:
        name (`str`):
            The dataset's name, e.g. `"Stanford Cars"`.
        root (`Path`):
            The folder the annotation files were read from.
        splits (`dict[str, tuple[list[str], list[int]]]`):
            Per split (`"train"`, `"validation"`, `"test"`), the absolute image paths and their labels in 0..K-1, in the
            order of the annotation files.
        class_names (`list[str]`):
            The human name of each label, unique.
    """

    name: str
    root: Path
    splits: dict[str, tuple[list[str], list[int]]]
    class_names: list[str]

    @property
    def source(self) -> str:
        """`"<name> at <root>"`, for messages."""
        return f"{self.name} at {self.root}"


def format_examples(items: Iterable[str], limit: int = 5) -> str:
    """A short, readable listing of `items` for an error message."""
    items = sorted(items)
    listing = ", ".join(repr(item) for item in items[:limit])
    return listing + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _archive_root(data_dir: str | os.PathLike, marker: str, subfolders: Sequence[str], layout: str) -> Path:
    """
    The first of `data_dir / subfolder` that holds `marker` (a file or folder of the archive), else the first one (the
    reader then names the file it misses there).
    """
    data_dir = Path(data_dir).expanduser().absolute()
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a directory: expected {layout}.")
    candidates = [data_dir / subfolder for subfolder in subfolders]
    return next((candidate for candidate in candidates if (candidate / marker).exists()), candidates[0])


def _require_dir(path: Path, layout: str) -> None:
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory: expected {layout}.")


def _load_mat(path: Path, variables: Sequence[str], layout: str) -> dict[str, np.ndarray]:
    """The `variables` of a MATLAB file, squeezed (`scipy.io.loadmat(..., squeeze_me=True)`), as 1-D arrays."""
    import scipy.io  # only the archives with .mat files need it (1-2 s to import)

    if not path.is_file():
        raise ValueError(f"{path} not found: expected {layout}.")
    try:
        contents = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as error:  # Whatever scipy raises, the file is not the MATLAB file of the archive.
        raise ValueError(
            f"{path} is not a readable MATLAB .mat file ({type(error).__name__}: {error}): restore it from the "
            f"archive; expected {layout}."
        ) from None
    missing = [name for name in variables if name not in contents]
    if missing:
        found = sorted(name for name in contents if not name.startswith("__"))
        raise ValueError(f"{path} has no variable {', '.join(missing)} (it has {found}): expected {layout}.")
    return {name: np.asarray(contents[name]).reshape(-1) for name in variables}


def _integer(value: Any) -> int | None:
    """`value` of an annotation file as a Python `int` when it is a whole number (`np.float64(3.0)`: 3), else `None`."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number == value else None


def _plain(value: Any) -> Any:
    """`value` for a message: a NumPy scalar as the Python number it holds (`0`, not `np.int64(0)`)."""
    return value.item() if isinstance(value, np.generic) else value


def _zero_based(
    values: Sequence, num_classes: int | None, path: Path, what: str, image: Callable[[int], str]
) -> list[int]:
    """
    1-based class numbers of an annotation file as 0-based labels, checked to be whole numbers in 1..`num_classes`
    (if given); `image(index)` names the image of the `index`-th value, for the error message.
    """
    labels = []
    for index, value in enumerate(values):
        number = _integer(value)
        if number is None or number < 1 or (num_classes is not None and number > num_classes):
            upper = "" if num_classes is None else f" between 1 and {num_classes}"
            raise ValueError(
                f"{path}: the {what} of {image(index)} is {_plain(value)!r}, not a class number{upper}: restore the "
                "file from the archive."
            )
        labels.append(number - 1)
    return labels


def _check_unique(class_names: Sequence[str], path: Path) -> list[str]:
    """`class_names`, checked to be unique (they become a `ClassLabel`'s names); `path` is the file they come from."""
    duplicates = [name for name, count in Counter(class_names).items() if count > 1]
    if duplicates:
        raise ValueError(f"{path}: several classes are named {format_examples(duplicates)}; names must be unique.")
    return list(class_names)


def _read_text(path: Path, layout: str) -> str:
    """The text of a UTF-8 text file of the archive, with errors that name the file."""
    if not path.is_file():
        raise ValueError(f"{path} not found: expected {layout}.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not a UTF-8 text file ({error.reason} at byte {error.start}): restore it from the archive; "
            f"expected {layout}."
        ) from None


def _read_lines(path: Path, layout: str) -> list[str]:
    """The non-blank lines of a text file of the archive, stripped."""
    return [line.strip() for line in _read_text(path, layout).splitlines() if line.strip()]


def _read_table(path: Path, layout: str) -> dict[str, str]:
    """Reads a '<key> <value>' text file of an archive into an ordered dict, with errors that name the file."""
    table = {}
    for line_number, line in enumerate(_read_text(path, layout).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f"{path}, line {line_number}: expected '<id> <value>', got {line!r}.")
        key, value = fields
        if key in table:
            raise ValueError(f"{path}, line {line_number}: id {key!r} appears twice.")
        table[key] = value.strip()
    if not table:
        raise ValueError(f"{path} is empty: expected {layout}.")
    return table


def _check_same_ids(reference_path: Path, reference: dict[str, str], path: Path, table: dict[str, str]):
    """Raises when the image ids of `table` (read from `path`) differ from those of `reference`."""
    missing = reference.keys() - table.keys()
    extra = table.keys() - reference.keys()
    if missing or extra:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} image ids of {reference_path.name} are missing from it ({format_examples(missing)})"
            )
        if extra:
            problems.append(f"{len(extra)} of its ids are not in {reference_path.name} ({format_examples(extra)})")
        raise ValueError(
            f"{path} does not list the same images as {reference_path}: {'; '.join(problems)}. Every image id must "
            "appear once in each of images.txt, image_class_labels.txt and train_test_split.txt."
        )


def _parse_int(value: str, path: Path, what: str) -> int:
    """Parses an integer field of an archive file."""
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{path}: {what} {value!r} is not an integer.") from None


def _read_archive(
    root: Path, layout: str, class_name: Callable[[str], str], only_classes_with_images: bool
) -> tuple[dict[str, tuple[list[str], list[int]]], list[str]]:
    """
    Reads the four text files shared by the CUB-200-2011 and NABirds archives.

    Returns:
        The "train" and "test" splits as (absolute image paths, labels) in `images.txt` order, and the class names of
        labels 0..K-1 (classes sorted by their integer id).
    """
    images_path = root / "images.txt"
    labels_path = root / "image_class_labels.txt"
    split_path = root / "train_test_split.txt"
    classes_path = root / "classes.txt"
    images = _read_table(images_path, layout)
    image_classes = _read_table(labels_path, layout)
    is_train = _read_table(split_path, layout)
    classes = {
        _parse_int(key, classes_path, "class id"): value for key, value in _read_table(classes_path, layout).items()
    }
    _check_same_ids(images_path, images, labels_path, image_classes)
    _check_same_ids(images_path, images, split_path, is_train)

    image_class_ids = {
        image_id: _parse_int(value, labels_path, "class id") for image_id, value in image_classes.items()
    }
    unknown = set(image_class_ids.values()) - classes.keys()
    if unknown:
        raise ValueError(
            f"{labels_path} uses class ids that are not in {classes_path}: {format_examples(map(str, unknown))}."
        )
    bad_flags = {value for value in is_train.values() if value not in ("0", "1")}
    if bad_flags:
        raise ValueError(
            f"{split_path}: expected 1 (train) or 0 (test) after each image id, got {format_examples(bad_flags)}."
        )

    class_ids = sorted(set(image_class_ids.values()) if only_classes_with_images else classes)
    class_names = _check_unique([class_name(classes[class_id]) for class_id in class_ids], classes_path)
    label_of_class = {class_id: label for label, class_id in enumerate(class_ids)}

    splits = {"train": ([], []), "test": ([], [])}
    for image_id, relative_path in images.items():
        paths, labels = splits["train" if is_train[image_id] == "1" else "test"]
        paths.append(str(root / "images" / relative_path))
        labels.append(label_of_class[image_class_ids[image_id]])
    return splits, class_names


def _cub200_class_name(name: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    return re.sub(r"^\d+\.", "", name).replace("_", " ").strip()


def read_cub200(data_dir: str | os.PathLike) -> ArchiveSplits:
    """
    Reads CUB-200-2011 (Wah et al., 2011): the official "train" and "test" splits of `train_test_split.txt` (5,994 and
    5,794 images), labels 0..199 following the class ids of `classes.txt`, named without their `NNN.` prefix and with
    spaces (`"Black footed Albatross"`).

    Args:
        data_dir (`str` or `os.PathLike`):
            The `CUB_200_2011` folder, or the folder the archive was unpacked into.
    """
    root = _archive_root(data_dir, "images.txt", ("", "CUB_200_2011"), CUB200_LAYOUT)
    _require_dir(root / "images", CUB200_LAYOUT)
    splits, class_names = _read_archive(root, CUB200_LAYOUT, _cub200_class_name, only_classes_with_images=False)
    return ArchiveSplits(ARCHIVES["cub200"].display_name(), root, splits, class_names)


def read_nabirds(data_dir: str | os.PathLike) -> ArchiveSplits:
    """
    Reads NABirds (Van Horn et al., CVPR 2015): the official "train" and "test" splits (23,929 and 24,633 images). Only
    the classes that have images (the 555 leaves of the full archive) are used: sorted by their integer id and
    numbered 0..K-1, named as in `classes.txt` (e.g. `"Mallard (Male)"`). `classes.txt` also lists the parent classes
    of `hierarchy.txt`, which has no images and is not read.

    Args:
        data_dir (`str` or `os.PathLike`):
            The `nabirds` folder, or the folder the archive was unpacked into.
    """
    root = _archive_root(data_dir, "images.txt", ("", "nabirds"), NABIRDS_LAYOUT)
    _require_dir(root / "images", NABIRDS_LAYOUT)
    splits, class_names = _read_archive(root, NABIRDS_LAYOUT, str.strip, only_classes_with_images=True)
    return ArchiveSplits(ARCHIVES["nabirds"].display_name(), root, splits, class_names)


def read_stanford_cars(data_dir: str | os.PathLike) -> ArchiveSplits:
    """
    Reads the Stanford Cars archive (Krause et al., 3DRR 2013) as torchvision's `StanfordCars` does: the official
    "train" and "test" splits (8,144 and 8,041 images), labels `class - 1`, the 196 names of `cars_meta.mat` (e.g.
    `"AM General Hummer SUV 2000"`). The devkit's `cars_test_annos.mat` has no labels: the test labels come from
    `cars_test_annos_withlabels.mat`, looked for in the archive folder, then in `devkit/`.

    Raises:
        `ValueError`: a file or folder of `STANFORD_CARS_LAYOUT` is missing or malformed (the message names it).
    """
    root = _archive_root(data_dir, "devkit/cars_meta.mat", ("", "stanford_cars"), STANFORD_CARS_LAYOUT)
    meta_path = root / "devkit" / "cars_meta.mat"
    class_names = _check_unique(
        [str(name) for name in _load_mat(meta_path, ["class_names"], STANFORD_CARS_LAYOUT)["class_names"]], meta_path
    )
    test_annotations = root / "cars_test_annos_withlabels.mat"
    if not test_annotations.is_file() and (root / "devkit" / test_annotations.name).is_file():
        test_annotations = root / "devkit" / test_annotations.name
    if not test_annotations.is_file() and (root / "devkit" / "cars_test_annos.mat").is_file():
        raise ValueError(
            f"{test_annotations} not found: the devkit's cars_test_annos.mat has no class labels; put the labelled "
            f"cars_test_annos_withlabels.mat (published with the devkit) there. Expected {STANFORD_CARS_LAYOUT}."
        )
    splits = {}
    for split, annotations_path, images in (
        ("train", root / "devkit" / "cars_train_annos.mat", root / "cars_train"),
        ("test", test_annotations, root / "cars_test"),
    ):
        annotations = _load_mat(annotations_path, ["annotations"], STANFORD_CARS_LAYOUT)["annotations"]
        missing = {"fname", "class"} - set(annotations.dtype.names or ())
        if missing:
            raise ValueError(
                f"{annotations_path}: the 'annotations' struct has no {' and '.join(sorted(missing))} field (its "
                f"fields: {list(annotations.dtype.names or ())}): expected {STANFORD_CARS_LAYOUT}."
            )
        _require_dir(images, STANFORD_CARS_LAYOUT)
        file_names = [str(annotation["fname"]) for annotation in annotations]
        labels = _zero_based(
            annotations["class"], len(class_names), annotations_path, "class", lambda index: file_names[index]
        )
        paths = [str(images / file_name) for file_name in file_names]
        splits[split] = (paths, labels)
    return ArchiveSplits(ARCHIVES["stanford_cars"].display_name(), root, splits, class_names)


def read_fgvc_aircraft(data_dir: str | os.PathLike, annotation_level: str = "variant") -> ArchiveSplits:
    """
    Reads the FGVC-Aircraft archive (Maji et al., arXiv 1306.5151, `fgvc-aircraft-2013b`) as torchvision's
    `FGVCAircraft` does: the official "train", "validation" (`val`) and "test" splits (3,334, 3,333 and 3,333 images;
    "train" + "validation" is the usual `trainval` training set), labels in the line order of the level's class file.
    The images keep the 20-pixel copyright banner at their bottom, as in torchvision.

    Args:
        data_dir (`str` or `os.PathLike`):
            The `fgvc-aircraft-2013b` folder, the folder holding it, or its `data/` folder.
        annotation_level (`str`, *optional*, defaults to `"variant"`):
            `"variant"` (100 classes, e.g. `"737-700"`), `"family"` (70, `"Boeing 737"`) or `"manufacturer"` (30,
            `"Boeing"`).

    Raises:
        `ValueError`: an unknown `annotation_level`, or a file of `FGVC_AIRCRAFT_LAYOUT` missing or malformed.
    """
    if annotation_level not in FGVC_AIRCRAFT_CLASS_FILES:
        raise ValueError(
            f"annotation_level={annotation_level!r} is not an FGVC-Aircraft annotation level: use one of "
            f"{', '.join(FGVC_AIRCRAFT_CLASS_FILES)}."
        )
    classes_file = FGVC_AIRCRAFT_CLASS_FILES[annotation_level]
    root = _archive_root(data_dir, classes_file, ("data", "fgvc-aircraft-2013b/data", ""), FGVC_AIRCRAFT_LAYOUT)
    class_names = _check_unique(_read_lines(root / classes_file, FGVC_AIRCRAFT_LAYOUT), root / classes_file)
    label_of_name = {name: label for label, name in enumerate(class_names)}
    _require_dir(root / "images", FGVC_AIRCRAFT_LAYOUT)
    splits = {}
    for split, official in (("train", "train"), ("validation", "val"), ("test", "test")):
        path = root / f"images_{annotation_level}_{official}.txt"
        paths, labels = [], []
        for line_number, line in enumerate(_read_lines(path, FGVC_AIRCRAFT_LAYOUT), start=1):
            image_id, _, name = line.partition(" ")
            if name not in label_of_name:
                raise ValueError(
                    f"{path}, line {line_number}: {name!r} is not a class of {root / classes_file} (expected "
                    "'<image id> <class name>')."
                )
            paths.append(str(root / "images" / f"{image_id}.jpg"))
            labels.append(label_of_name[name])
        splits[split] = (paths, labels)
    return ArchiveSplits(ARCHIVES["fgvc_aircraft"].display_name(annotation_level), root, splits, class_names)


def _flowers102_file_name(number: int) -> str:
    """The file of the Flowers-102 image numbered `number` (1-based): `image_00001.jpg`."""
    return f"image_{number:05d}.jpg"


def read_flowers102(data_dir: str | os.PathLike) -> ArchiveSplits:
    """
    Reads Oxford Flowers-102 (Nilsback & Zisserman, ICVGIP 2008) as torchvision's `Flowers102` does: the official
    "train" (`trnid`), "validation" (`valid`) and "test" (`tstid`) splits (1,020, 1,020 and 6,149 images: 10 per class
    in train and validation), labels `labels - 1`, and the 102 class names of `torchvision.datasets.Flowers102.classes`
    (the archive itself ships none).

    Raises:
        `ValueError`: a file of `FLOWERS102_LAYOUT` is missing or malformed.
    """
    from torchvision.datasets import Flowers102

    root = _archive_root(data_dir, "imagelabels.mat", ("", "flowers-102"), FLOWERS102_LAYOUT)
    image_labels = _load_mat(root / "imagelabels.mat", ["labels"], FLOWERS102_LAYOUT)["labels"]
    labels_of_image = _zero_based(
        image_labels,
        len(Flowers102.classes),
        root / "imagelabels.mat",
        "label",
        lambda index: f"image {index + 1} (jpg/{_flowers102_file_name(index + 1)})",
    )
    set_ids = _load_mat(root / "setid.mat", ["trnid", "valid", "tstid"], FLOWERS102_LAYOUT)
    _require_dir(root / "jpg", FLOWERS102_LAYOUT)
    splits = {}
    for split, variable in (("train", "trnid"), ("validation", "valid"), ("test", "tstid")):
        numbers = [_integer(number) for number in set_ids[variable]]
        wrong = [
            _plain(value)
            for value, number in zip(set_ids[variable], numbers, strict=True)
            if number is None or not 1 <= number <= len(labels_of_image)
        ]
        if wrong:
            raise ValueError(
                f"{root / 'setid.mat'}: '{variable}' holds image numbers {wrong[:5]} outside "
                f"1..{len(labels_of_image)}, the images labelled by {root / 'imagelabels.mat'}: restore it from the "
                "archive."
            )
        paths = [str(root / "jpg" / _flowers102_file_name(number)) for number in numbers]
        splits[split] = (paths, [labels_of_image[number - 1] for number in numbers])
    return ArchiveSplits(ARCHIVES["flowers102"].display_name(), root, splits, list(Flowers102.classes))


def _stanford_dogs_breed(folder: str) -> str:
    """'n02085782-Japanese_spaniel' -> 'Japanese spaniel', 'n02095314-wire-haired_fox_terrier' -> 'wire-haired ...'."""
    return folder.split("-", 1)[-1].replace("_", " ")


def read_stanford_dogs(data_dir: str | os.PathLike) -> ArchiveSplits:
    """
    Reads the Stanford Dogs archive (Khosla et al., FGVC workshop 2011): the official "train" and "test" splits (12,000
    and 8,580 images) of `train_list.mat` / `test_list.mat`, or of `train_list.txt` / `test_list.txt`. Labels follow
    the sorted class folders, which is how the official `labels` of the `.mat` lists number them (checked: for the
    full archive, label = `labels - 1`); the 120 breed names come from the class folders (`n02085620-Chihuahua` ->
    `"Chihuahua"`, underscores as spaces).

    Raises:
        `ValueError`: a file of `STANFORD_DOGS_LAYOUT` is missing or malformed, or the labels of the lists do not
        match their class folders one to one.
    """
    root = _archive_root(data_dir, "Images", ("",), STANFORD_DOGS_LAYOUT)
    _require_dir(root / "Images", STANFORD_DOGS_LAYOUT)
    candidates = [root / folder / f"train_list{suffix}" for suffix in (".mat", ".txt") for folder in ("", "lists")]
    train_list = next((path for path in candidates if path.is_file()), candidates[0])
    lists = {"train": train_list, "test": train_list.with_name(f"test_list{train_list.suffix}")}
    listed: dict[str, tuple[list[str], list[int] | None]] = {}
    for split, path in lists.items():
        if path.suffix == ".mat":
            variables = _load_mat(path, ["file_list", "labels"], STANFORD_DOGS_LAYOUT)
            files = [str(name) for name in variables["file_list"]]
            numbers = _zero_based(variables["labels"], None, path, "label", lambda index: repr(files[index]))
            listed[split] = (files, numbers)
        else:
            listed[split] = (_read_lines(path, STANFORD_DOGS_LAYOUT), None)
        malformed = [name for name in listed[split][0] if name.count("/") != 1]
        if malformed:
            raise ValueError(
                f"{path}: {malformed[0]!r} is not '<class folder>/<image file>': expected {STANFORD_DOGS_LAYOUT}."
            )

    folders = sorted({name.split("/")[0] for files, _ in listed.values() for name in files})
    label_of_folder = {folder: label for label, folder in enumerate(folders)}
    official_numbers = sorted({number for _, numbers in listed.values() if numbers is not None for number in numbers})
    rank_of_number = {number: rank for rank, number in enumerate(official_numbers)}
    splits = {}
    for split, (files, numbers) in listed.items():
        labels = [label_of_folder[name.split("/")[0]] for name in files]
        if numbers is not None:
            for name, label, number in zip(files, labels, numbers, strict=True):
                if rank_of_number[number] != label:
                    raise ValueError(
                        f"{lists[split]}: {name!r} has label {number + 1}, but the labels of the lists do not follow "
                        "their sorted class folders one to one, as the official labels do: restore the file from "
                        "lists.tar."
                    )
        splits[split] = ([str(root / "Images" / name) for name in files], labels)
    class_names = _check_unique([_stanford_dogs_breed(folder) for folder in folders], lists["train"])
    return ArchiveSplits(ARCHIVES["stanford_dogs"].display_name(), root, splits, class_names)


def _is_image_id(value: Any) -> bool:
    """Whether `value` can be a COCO image id (a number or a string; JSON `true` is neither)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _read_coco_annotations(path: Path) -> dict:
    """An iNaturalist annotation file, checked to have the COCO fields the loader uses."""
    if not path.is_file():
        raise ValueError(f"{path} not found: expected {INATURALIST_LAYOUT}.")
    try:
        with path.open(encoding="utf-8") as file:
            annotations = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): restore it from the iNaturalist archive.") from None
    fields = {"images": ("id", "file_name"), "annotations": ("image_id", "category_id"), "categories": ("id", "name")}
    for key, keys in fields.items():
        entries = annotations.get(key) if isinstance(annotations, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path} has no '{key}' list: expected {INATURALIST_LAYOUT}.")
        incomplete = next((entry for entry in entries if not isinstance(entry, dict) or set(keys) - entry.keys()), None)
        if incomplete is not None:
            raise ValueError(f"{path}: an entry of '{key}' lacks {' or '.join(keys)}: {str(incomplete)[:200]}.")
    checks = (
        ("images", "id", _is_image_id, "a number"),
        ("images", "file_name", lambda value: isinstance(value, str), "a path"),
        ("annotations", "image_id", _is_image_id, "a number"),
        ("annotations", "category_id", lambda value: _integer(value) is not None, "an integer"),
        ("categories", "id", lambda value: _integer(value) is not None, "an integer"),
    )
    for key, field, is_valid, expected in checks:
        wrong = next((entry for entry in annotations[key] if not is_valid(entry[field])), None)
        if wrong is not None:
            raise ValueError(
                f"{path}: an entry of '{key}' has a '{field}' that is not {expected}: {str(wrong)[:200]}. Restore it "
                "from the iNaturalist archive."
            )
    return annotations


def _inaturalist_version(data_dir: Path, version: str | None) -> str:
    """`version`, checked, or the only competition whose training annotations are in `data_dir`."""
    if version is not None:
        if version not in INATURALIST_VERSIONS:
            raise ValueError(
                f"{version!r} is not an iNaturalist competition version: use one of {', '.join(INATURALIST_VERSIONS)}."
            )
        return version
    present = [
        name
        for name, (train, _) in INATURALIST_VERSIONS.items()
        if name != "2021_mini" and (data_dir / train).is_file()
    ]
    if not present:
        raise ValueError(
            f"{data_dir} has no iNaturalist training annotations "
            f"({', '.join(train for train, _ in INATURALIST_VERSIONS.values())}): expected {INATURALIST_LAYOUT}."
        )
    if len(present) > 1:
        raise ValueError(
            f"{data_dir} holds the annotations of several iNaturalist competitions ({', '.join(present)}): choose one "
            f"(version, or --dataset_config_name in train_pim.py)."
        )
    return present[0]


def _read_coco_categories(path: Path) -> dict[int, str]:
    """Category id -> name of a `categories.json` (a list of categories with 'id' and 'name')."""
    try:
        with path.open(encoding="utf-8") as file:
            categories = json.load(file)
        return {int(category["id"]): str(category["name"]) for category in categories}
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as error:
        raise ValueError(
            f"{path} is not a list of categories with 'id' and 'name' ({type(error).__name__}: {error}): restore it "
            "from the competition's categories.json.tar.gz."
        ) from None


def read_inaturalist(data_dir: str | os.PathLike, version: str | None = None) -> ArchiveSplits:
    """
    Reads an iNaturalist competition (Van Horn et al., CVPR 2018; github.com/visipedia/inat_comp) from its COCO-style
    annotation files: "train" and, as "test", the official validation set (the test labels were never released, so
    the validation set is what iNaturalist results are reported on; model selection should use a hold-out of "train").
    Labels follow the sorted category ids; class names are the categories' `name`s (species), taken from
    `categories.json` when it is in `data_dir` (the un-obfuscated names of 2018 and 2019); names shared by several
    categories get their id appended.

    Args:
        data_dir (`str` or `os.PathLike`):
            The folder holding the annotation files; image `file_name`s are relative to it.
        version (`str`, *optional*):
            One of `INATURALIST_VERSIONS` (`"2021_mini"`: 2021's `train_mini.json`); by default the only competition
            whose training annotations are in `data_dir`.

    Raises:
        `ValueError`: no (or several) competitions in `data_dir`, or an annotation file missing or malformed.
    """
    root = Path(data_dir).expanduser().absolute()
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory: expected {INATURALIST_LAYOUT}.")
    version = _inaturalist_version(root, version)
    train_file, validation_file = INATURALIST_VERSIONS[version]
    train = _read_coco_annotations(root / train_file)
    categories = {int(category["id"]): str(category["name"]) for category in train["categories"]}
    if (root / "categories.json").is_file():
        renamed = _read_coco_categories(root / "categories.json")
        missing = categories.keys() - renamed.keys()
        if missing:
            raise ValueError(f"{root / 'categories.json'} lacks the categories {sorted(missing)[:5]} of {train_file}.")
        categories = {category_id: renamed[category_id] for category_id in categories}
    elif version in ("2018", "2019"):
        logger.warning(
            f"{train_file} has obfuscated category names: put the un-obfuscated categories.json of the {version} "
            f"competition in {root} to name the classes."
        )
    category_ids = sorted(categories)
    counts = Counter(categories.values())
    class_names = []
    for category_id in category_ids:
        name = categories[category_id]
        class_names.append(f"{name} (category {category_id})" if counts[name] > 1 else name)
    label_of_category = {category_id: label for label, category_id in enumerate(category_ids)}
    splits = {}
    for split, path, annotations in (
        ("train", root / train_file, train),
        ("test", root / validation_file, _read_coco_annotations(root / validation_file)),
    ):
        category_of_image = {}
        for annotation in annotations["annotations"]:
            image_id, category_id = annotation["image_id"], int(annotation["category_id"])
            if category_id not in label_of_category:
                raise ValueError(
                    f"{path}: category {category_id} of image {image_id} is not a category of {train_file}."
                )
            if category_of_image.setdefault(image_id, category_id) != category_id:
                raise ValueError(f"{path}: image {image_id} is annotated with several categories; expected one.")
        unlabelled = [image["id"] for image in annotations["images"] if image["id"] not in category_of_image]
        if unlabelled:
            raise ValueError(f"{path}: {len(unlabelled)} images have no annotation, e.g. image {unlabelled[0]}.")
        splits[split] = (
            [str(root / image["file_name"]) for image in annotations["images"]],
            [label_of_category[category_of_image[image["id"]]] for image in annotations["images"]],
        )
    return ArchiveSplits(ARCHIVES["inaturalist"].display_name(version), root, splits, class_names)


@dataclass(frozen=True)
class ArchiveFormat:
    """
    One dataset with an official archive: how [`read_archive`] reads it, and what it is (its name in messages and
    model cards, where it comes from, what to cite).

    Attributes:
        name (`str`):
            The dataset's name, e.g. `"Stanford Cars"`.
        reader (`Callable[..., ArchiveSplits]`):
            The reader, called with the data folder (and the configuration, if any).
        splits (`tuple[str, ...]`):
            The splits it returns.
        homepage (`str`):
            The dataset's official page (where the archive is downloaded, or was).
        reference (`str`):
            The publication that describes the dataset, to cite with a model trained on it.
        configuration (`str`, *optional*):
            The reader's argument that a configuration name sets (`annotation_level`, `version`), if it has one.
        configurations (`tuple[str, ...]`):
            The configuration names, if it has some.
        configured_name (`str`):
            The name with a configuration, formatted with `name` and `configuration`.
        hub_dataset (`str`, *optional*):
            A copy of the dataset on the Hugging Face Hub with the official splits, linked from model cards.
    """

    name: str
    reader: Callable[..., ArchiveSplits]
    splits: tuple[str, ...]
    homepage: str
    reference: str
    configuration: str | None = None
    configurations: tuple[str, ...] = ()
    configured_name: str = "{name} ({configuration})"
    hub_dataset: str | None = None

    def display_name(self, configuration: str | None = None) -> str:
        """The name, with the configuration when given: `"FGVC-Aircraft (family)"`, `"iNaturalist 2021"`."""
        if configuration is None:
            return self.name
        return self.configured_name.format(name=self.name, configuration=configuration)


ARCHIVES = {
    "cub200": ArchiveFormat(
        "CUB-200-2011",
        read_cub200,
        ("train", "test"),
        "https://www.vision.caltech.edu/datasets/cub_200_2011/",
        "C. Wah, S. Branson, P. Welinder, P. Perona and S. Belongie, The Caltech-UCSD Birds-200-2011 Dataset, "
        "Technical Report CNS-TR-2011-001, California Institute of Technology, 2011",
        hub_dataset="bentrevett/caltech-ucsd-birds-200-2011",
    ),
    "nabirds": ArchiveFormat(
        "NABirds",
        read_nabirds,
        ("train", "test"),
        "https://dl.allaboutbirds.org/nabirds",
        "G. Van Horn et al., Building a Bird Recognition App and Large Scale Dataset With Citizen Scientists: The Fine "
        "Print in Fine-Grained Dataset Collection, CVPR 2015",
    ),
    "stanford_cars": ArchiveFormat(
        "Stanford Cars",
        read_stanford_cars,
        ("train", "test"),
        "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        "J. Krause, M. Stark, J. Deng and L. Fei-Fei, 3D Object Representations for Fine-Grained Categorization, "
        "4th IEEE Workshop on 3D Representation and Recognition (3dRR-13), ICCV 2013",
    ),
    "fgvc_aircraft": ArchiveFormat(
        "FGVC-Aircraft",
        read_fgvc_aircraft,
        ("train", "validation", "test"),
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        "S. Maji, E. Rahtu, J. Kannala, M. Blaschko and A. Vedaldi, Fine-Grained Visual Classification of Aircraft, "
        "arXiv 1306.5151, 2013",
        "annotation_level",
        tuple(FGVC_AIRCRAFT_CLASS_FILES),
    ),
    "flowers102": ArchiveFormat(
        "Oxford Flowers-102",
        read_flowers102,
        ("train", "validation", "test"),
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        "M.-E. Nilsback and A. Zisserman, Automated Flower Classification over a Large Number of Classes, ICVGIP 2008",
    ),
    "stanford_dogs": ArchiveFormat(
        "Stanford Dogs",
        read_stanford_dogs,
        ("train", "test"),
        "http://vision.stanford.edu/aditya86/ImageNetDogs/",
        "A. Khosla, N. Jayadevaprakash, B. Yao and L. Fei-Fei, Novel Dataset for Fine-Grained Image Categorization, "
        "First Workshop on Fine-Grained Visual Categorization (FGVC), CVPR 2011",
    ),
    "inaturalist": ArchiveFormat(
        "iNaturalist",
        read_inaturalist,
        ("train", "test"),
        "https://github.com/visipedia/inat_comp",
        "G. Van Horn et al., The iNaturalist Species Classification and Detection Dataset, CVPR 2018; for the 2021 "
        "version, G. Van Horn et al., Benchmarking Representation Learning for Natural World Image Collections, CVPR "
        "2021",
        "version",
        tuple(INATURALIST_VERSIONS),
        configured_name="{name} {configuration}",
    ),
}


def read_archive(dataset: str, data_dir: str | os.PathLike, configuration: str | None = None) -> ArchiveSplits:
    """
    Reads the official archive of `dataset` (a key of `ARCHIVES`) in `data_dir`.

    Args:
        dataset (`str`):
            `"cub200"`, `"nabirds"`, `"stanford_cars"`, `"fgvc_aircraft"`, `"flowers102"`, `"stanford_dogs"` or
            `"inaturalist"`.
        data_dir (`str` or `os.PathLike`):
            The archive's folder, or the folder it was unpacked into (see each reader).
        configuration (`str`, *optional*):
            FGVC-Aircraft's annotation level (`"variant"`, `"family"`, `"manufacturer"`) or the iNaturalist version
            (`INATURALIST_VERSIONS`); the other datasets have none.

    Raises:
        `ValueError`: an unknown dataset, a configuration for a dataset without any, or the reader's errors.
    """
    if dataset not in ARCHIVES:
        raise ValueError(f"{dataset!r} is not a dataset with an archive reader: use one of {', '.join(ARCHIVES)}.")
    archive = ARCHIVES[dataset]
    if configuration is None:
        return archive.reader(data_dir)
    if archive.configuration is None:
        raise ValueError(f"{dataset} has no configurations: remove the configuration name {configuration!r}.")
    return archive.reader(data_dir, **{archive.configuration: configuration})


__all__ = [
    "ARCHIVES",
    "FGVC_AIRCRAFT_CLASS_FILES",
    "INATURALIST_VERSIONS",
    "ArchiveFormat",
    "ArchiveSplits",
    "format_examples",
    "read_archive",
    "read_cub200",
    "read_fgvc_aircraft",
    "read_flowers102",
    "read_inaturalist",
    "read_nabirds",
    "read_stanford_cars",
    "read_stanford_dogs",
]
