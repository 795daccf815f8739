"""
Miniature official archives of Stanford Cars, FGVC-Aircraft, Oxford Flowers-102, Stanford Dogs and iNaturalist, with
the real file names and the real `.mat` / `.json` structures (the `.mat` files written by `scipy.io.savemat` with the
variables, struct fields and shapes of the official files, as torchvision's loaders parse them). Images are coloured
with `class_color(k)`, `k` being the position of their class in the constants below.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import scipy.io

from fgvc_trees import _image, _save, _write_corrupt, _write_lines


STANFORD_CARS_CLASS_NAMES = (
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Ram C/V Cargo Van Minivan 2012",
)
# (variant, family, manufacturer), in the line order of variants.txt; families.txt and manufacturers.txt list theirs
# in order of first appearance, so that line order differs from sorted order.
FGVC_AIRCRAFT_CLASSES = (
    ("A320", "A320", "Airbus"),
    ("707-320", "Boeing 707", "Boeing"),
    ("727-200", "Boeing 727", "Boeing"),
)
# Flowers-102 class numbers (1-based) of the miniature archive: "pink primrose", "globe thistle", "blackberry lily".
FLOWERS102_CLASS_NUMBERS = (1, 10, 102)
# Stanford Dogs class folders with their official 1-based label.
STANFORD_DOGS_FOLDERS = {
    "n02085620-Chihuahua": 1,
    "n02085782-Japanese_spaniel": 2,
    "n02095314-wire-haired_fox_terrier": 36,
}


def _cell_column(strings: list[str]) -> np.ndarray:
    """An N x 1 MATLAB cell array of strings."""
    cells = np.empty((len(strings), 1), dtype=object)
    for index, string in enumerate(strings):
        cells[index, 0] = string
    return cells


def _cars_annotations(rows: list[tuple[str, int]], with_class: bool) -> np.ndarray:
    """The 1 x N 'annotations' struct of the Stanford Cars devkit (uint8/uint16 scalars, as in the official files)."""
    names = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", *(["class"] if with_class else []), "fname"]
    annotations = np.empty((1, len(rows)), dtype=[(name, object) for name in names])
    for index, (fname, class_number) in enumerate(rows):
        box = [np.array([[value]], dtype=np.uint16) for value in (2, 3, 30, 31)]
        label = [np.array([[class_number]], dtype=np.uint8)] if with_class else []
        annotations[0, index] = (*box, *label, fname)
    return annotations


def make_stanford_cars_tree(root: str | Path, images_per_class: int = 2, size: int = 40, corrupt: bool = False) -> Path:
    """
    Writes `root/stanford_cars` as torchvision's `StanfordCars` expects it and returns that folder: the devkit's
    `cars_meta.mat`, `cars_train_annos.mat` and label-less `cars_test_annos.mat`, `cars_test_annos_withlabels.mat` at
    the top, `images_per_class` train and test images per class named `00001.jpg`... (numbered per folder, classes
    interleaved). With `corrupt`, the last training image is random bytes.
    """
    archive = Path(root) / "stanford_cars"
    (archive / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        archive / "devkit" / "cars_meta.mat",
        {"class_names": np.array(STANFORD_CARS_CLASS_NAMES, dtype=object).reshape(1, -1)},
    )
    for folder, annotations_files in (
        ("cars_train", [(archive / "devkit" / "cars_train_annos.mat", True)]),
        (
            "cars_test",
            [(archive / "devkit" / "cars_test_annos.mat", False), (archive / "cars_test_annos_withlabels.mat", True)],
        ),
    ):
        rows = []
        for index in range(images_per_class * len(STANFORD_CARS_CLASS_NAMES)):
            label, image_index = index % len(STANFORD_CARS_CLASS_NAMES), index // len(STANFORD_CARS_CLASS_NAMES)
            fname = f"{index + 1:05d}.jpg"
            _save(_image(label, image_index, size), archive / folder / fname, None)
            rows.append((fname, label + 1))
        if corrupt and folder == "cars_train":
            _write_corrupt(archive / folder / rows[-1][0], seed=2)
        for path, with_class in annotations_files:
            scipy.io.savemat(path, {"annotations": _cars_annotations(rows, with_class)})
    return archive


def make_fgvc_aircraft_tree(root: str | Path, images_per_split: int = 1, size: int = 40) -> Path:
    """
    Writes `root/fgvc-aircraft-2013b` and returns that folder: `data/images/<7-digit id>.jpg`, `variants.txt`,
    `families.txt`, `manufacturers.txt` and `images_<level>_<split>.txt` for every level and for train, val, trainval
    and test, with `images_per_split` images per variant and split. Images are coloured by variant.
    """
    data = Path(root) / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for classes_file, column in (("variants.txt", 0), ("families.txt", 1), ("manufacturers.txt", 2)):
        _write_lines(data / classes_file, list(dict.fromkeys(classes[column] for classes in FGVC_AIRCRAFT_CLASSES)))
    rows = {"train": [], "val": [], "test": []}
    image_id = 1025794
    for label, classes in enumerate(FGVC_AIRCRAFT_CLASSES):
        for split in rows:
            for index in range(images_per_split):
                _save(_image(label, index, size), data / "images" / f"{image_id:07d}.jpg", None)
                rows[split].append((f"{image_id:07d}", classes))
                image_id += 17
    rows["trainval"] = rows["train"] + rows["val"]
    for split, split_rows in rows.items():
        for level, column in (("variant", 0), ("family", 1), ("manufacturer", 2)):
            lines = [f"{name} {classes[column]}" for name, classes in split_rows]
            _write_lines(data / f"images_{level}_{split}.txt", lines)
        _write_lines(data / f"images_{split}.txt", [name for name, _ in split_rows])
    return data.parent


def make_flowers102_tree(root: str | Path, images_per_split: int = 1, size: int = 40) -> Path:
    """
    Writes `root/flowers-102` as torchvision's `Flowers102` expects it and returns that folder: `jpg/image_NNNNN.jpg`,
    `imagelabels.mat` ('labels', 1 x N) and `setid.mat` ('trnid', 'valid', 'tstid', 1 x n), with `images_per_split`
    images per class of `FLOWERS102_CLASS_NUMBERS` and split, image numbers interleaved across splits.
    """
    archive = Path(root) / "flowers-102"
    labels, split_numbers = [], {"trnid": [], "valid": [], "tstid": []}
    for label, class_number in enumerate(FLOWERS102_CLASS_NUMBERS):
        for index in range(images_per_split):
            for split in split_numbers:
                labels.append(class_number)
                split_numbers[split].append(len(labels))
                _save(_image(label, index, size), archive / "jpg" / f"image_{len(labels):05d}.jpg", None)
    scipy.io.savemat(archive / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(
        archive / "setid.mat", {split: np.array([numbers], dtype=np.uint16) for split, numbers in split_numbers.items()}
    )
    return archive


def make_stanford_dogs_tree(
    root: str | Path, images_per_split: int = 1, size: int = 40, lists: str = "lists/.mat"
) -> Path:
    """
    Writes a Stanford Dogs archive under `root/stanford_dogs` and returns that folder: `Images/<wnid>-<breed>/
    <wnid>_<n>.jpg` for `STANFORD_DOGS_FOLDERS` (with their official labels) and the split lists as `lists` says:
    `"lists/.mat"` (lists.tar unpacked into lists/: `train_list.mat`, `test_list.mat`, `file_list.mat` with
    'file_list' and 'annotation_list' N x 1 cells and 'labels' N x 1 doubles), `".mat"` (the same at the top) or
    `".txt"` (`train_list.txt`, `test_list.txt`: one path under Images/ a line).
    """
    archive = Path(root) / "stanford_dogs"
    folder, suffix = lists.split("/") if "/" in lists else ("", lists)
    rows = {"train": [], "test": []}
    serial = itertools.count(1000, step=7)
    for label, (breed, number) in enumerate(STANFORD_DOGS_FOLDERS.items()):
        wnid = breed.split("-")[0]
        for split in rows:
            for index in range(images_per_split):
                name = f"{breed}/{wnid}_{next(serial)}.jpg"
                _save(_image(label, index, size), archive / "Images" / name, None)
                rows[split].append((name, number))
    rows["file"] = rows["train"] + rows["test"]
    (archive / folder).mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        if suffix == ".mat":
            names = [name for name, _ in split_rows]
            scipy.io.savemat(
                archive / folder / f"{split}_list.mat",
                {
                    "file_list": _cell_column(names),
                    "annotation_list": _cell_column([name.removesuffix(".jpg") for name in names]),
                    "labels": np.array([[float(number)] for _, number in split_rows]),
                },
            )
        elif split != "file":
            _write_lines(archive / folder / f"{split}_list.txt", [name for name, _ in split_rows])
    return archive


def make_inaturalist_tree(root: str | Path, version: str = "2021", images_per_split: int = 2, size: int = 40) -> Path:
    """
    Writes an iNaturalist competition folder under `root/inat<version>` and returns it: the COCO-style annotation files
    of `version` ("2021": `train.json`, `val.json`, images in `train/<image_dir_name>/` and `val/...`; "2018":
    `train2018.json`, `val2018.json` with obfuscated category names, images in `train_val2018/<supercategory>/<id>/`,
    and the un-obfuscated `categories.json`). Three categories with sparse ids; annotations listed in reverse order.
    """
    folder = Path(root) / f"inat{version}"
    categories = [
        {"id": 2, "name": "Lumbricus terrestris", "common_name": "Common Earthworm", "supercategory": "Animalia",
         "image_dir_name": "00002_Animalia_Annelida_Clitellata_Haplotaxida_Lumbricidae_Lumbricus_terrestris"},
        {"id": 0, "name": "Bellis perennis", "common_name": "Common Daisy", "supercategory": "Plants",
         "image_dir_name": "00000_Plantae_Tracheophyta_Magnoliopsida_Asterales_Asteraceae_Bellis_perennis"},
        {"id": 7, "name": "Turdus migratorius", "common_name": "American Robin", "supercategory": "Birds",
         "image_dir_name": "00007_Animalia_Chordata_Aves_Passeriformes_Turdidae_Turdus_migratorius"},
    ]  # fmt: skip
    label_of_id = {category_id: label for label, category_id in enumerate(sorted(c["id"] for c in categories))}
    files = {"2021": ("train.json", "val.json"), "2018": ("train2018.json", "val2018.json")}[version]
    image_id = 100
    for split, annotation_file in zip(("train", "val"), files, strict=True):
        images, annotations = [], []
        for category in categories:
            for index in range(images_per_split):
                if version == "2021":
                    file_name = f"{split}/{category['image_dir_name']}/{image_id:08x}-aaaa.jpg"
                else:
                    file_name = f"train_val2018/{category['supercategory']}/{category['id']}/{image_id:032x}.jpg"
                _save(_image(label_of_id[category["id"]], index, size), folder / file_name, None)
                images.append({"id": image_id, "width": size, "height": size, "file_name": file_name, "license": 1})
                annotations.append({"id": image_id + 5000, "image_id": image_id, "category_id": category["id"]})
                image_id += 1
        if version == "2021":
            listed = categories
        else:
            listed = [{"id": c["id"], "name": str(c["id"]), "supercategory": c["supercategory"]} for c in categories]
        content = {"info": {"year": int(version)}, "images": images, "annotations": annotations[::-1]}
        (folder / annotation_file).write_text(json.dumps({**content, "categories": listed}), encoding="utf-8")
    if version == "2018":
        (folder / "categories.json").write_text(json.dumps(categories), encoding="utf-8")
    return folder
