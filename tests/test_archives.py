"""The readers of the official Stanford Cars, FGVC-Aircraft, Flowers-102, Stanford Dogs and iNaturalist archives."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from torchvision.datasets import FGVCAircraft, Flowers102, StanfordCars

from archive_trees import (
    STANFORD_CARS_CLASS_NAMES,
    _cars_annotations,
    make_fgvc_aircraft_tree,
    make_flowers102_tree,
    make_inaturalist_tree,
    make_stanford_cars_tree,
    make_stanford_dogs_tree,
)
from modeling_pim.data.archives import (
    read_fgvc_aircraft,
    read_flowers102,
    read_inaturalist,
    read_stanford_cars,
    read_stanford_dogs,
)


def samples(dataset) -> tuple[list[str], list[int]]:
    """The (path, label) samples of a torchvision dataset built with `loader=str`."""
    pairs = [dataset[index] for index in range(len(dataset))]
    return [str(path) for path, _ in pairs], [label for _, label in pairs]


def test_stanford_cars_matches_torchvision(tmp_path):
    archive = make_stanford_cars_tree(tmp_path)
    read = read_stanford_cars(archive)
    assert read.class_names == list(STANFORD_CARS_CLASS_NAMES)
    assert list(read.splits) == ["train", "test"]
    for split in ("train", "test"):
        reference = StanfordCars(tmp_path, split=split, loader=str)
        assert read.splits[split] == samples(reference)
        assert read.class_names == reference.classes
    assert read.splits["train"][1] == [0, 1, 2, 0, 1, 2]
    assert read_stanford_cars(tmp_path).splits == read.splits  # the folder holding stanford_cars/


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_fgvc_aircraft_matches_torchvision_at_every_annotation_level(tmp_path, level):
    archive = make_fgvc_aircraft_tree(tmp_path)
    read = read_fgvc_aircraft(archive, annotation_level=level)
    assert list(read.splits) == ["train", "validation", "test"]
    for split, official in (("train", "train"), ("validation", "val"), ("test", "test")):
        reference = FGVCAircraft(tmp_path, split=official, annotation_level=level, loader=str)
        assert read.splits[split] == samples(reference)
        assert read.class_names == reference.classes
    expected = {"variant": ["A320", "707-320", "727-200"], "family": ["A320", "Boeing 707", "Boeing 727"]}
    assert read.class_names == expected.get(level, ["Airbus", "Boeing"])
    for data_dir in (tmp_path, archive / "data"):
        assert read_fgvc_aircraft(data_dir, annotation_level=level).splits == read.splits


def test_flowers102_matches_torchvision(tmp_path, monkeypatch):
    archive = make_flowers102_tree(tmp_path)
    # torchvision checks the MD5 of the official .mat files, which a miniature archive cannot have.
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)
    read = read_flowers102(archive)
    assert list(read.splits) == ["train", "validation", "test"]
    for split, official in (("train", "train"), ("validation", "val"), ("test", "test")):
        assert read.splits[split] == samples(Flowers102(tmp_path, split=official, loader=str))
    assert read.class_names == Flowers102.classes and len(read.class_names) == 102
    assert read.splits["train"] == (
        [str(archive / "jpg" / f"image_{number:05d}.jpg") for number in (1, 4, 7)],
        [0, 9, 101],
    )
    assert read_flowers102(tmp_path).splits == read.splits


@pytest.mark.parametrize("lists", ["lists/.mat", ".mat", ".txt"])
def test_stanford_dogs_reads_every_list_format_alike(tmp_path, lists):
    archive = make_stanford_dogs_tree(tmp_path, images_per_split=2, lists=lists)
    read = read_stanford_dogs(archive)
    assert read.class_names == ["Chihuahua", "Japanese spaniel", "wire-haired fox terrier"]
    assert list(read.splits) == ["train", "test"]
    paths, labels = read.splits["test"]
    assert labels == [0, 0, 1, 1, 2, 2]
    assert [Path(path).parent.name for path in paths[::2]] == [
        "n02085620-Chihuahua",
        "n02085782-Japanese_spaniel",
        "n02095314-wire-haired_fox_terrier",
    ]
    assert all(Path(path).is_file() for path in paths)


def test_stanford_dogs_refuses_labels_that_do_not_follow_the_class_folders(tmp_path):
    archive = make_stanford_dogs_tree(tmp_path)
    path = archive / "lists" / "train_list.mat"
    contents = scipy.io.loadmat(path)
    contents["labels"] = contents["labels"][::-1]
    scipy.io.savemat(path, {name: value for name, value in contents.items() if not name.startswith("__")})
    with pytest.raises(ValueError, match=r"train_list\.mat: 'n02085620-Chihuahua/n02085620_1000\.jpg' has label 36"):
        read_stanford_dogs(archive)


def test_inaturalist_2021_labels_follow_sorted_category_ids(tmp_path):
    folder = make_inaturalist_tree(tmp_path, "2021")
    read = read_inaturalist(folder)
    assert read.name == "iNaturalist 2021"
    assert read.class_names == ["Bellis perennis", "Lumbricus terrestris", "Turdus migratorius"]
    assert list(read.splits) == ["train", "test"]  # the official validation set is what results are reported on
    paths, labels = read.splits["test"]
    assert labels == [1, 1, 0, 0, 2, 2]
    assert Path(paths[0]).relative_to(folder).parts[:2] == (
        "val",
        "00002_Animalia_Annelida_Clitellata_Haplotaxida_Lumbricidae_Lumbricus_terrestris",
    )


def test_inaturalist_2018_takes_the_names_of_categories_json(tmp_path):
    folder = make_inaturalist_tree(tmp_path, "2018")
    assert read_inaturalist(folder).class_names == ["Bellis perennis", "Lumbricus terrestris", "Turdus migratorius"]
    (folder / "categories.json").unlink()
    assert read_inaturalist(folder).class_names == ["0", "2", "7"]  # the obfuscated names of train2018.json


def test_inaturalist_names_shared_by_several_categories_get_their_id(tmp_path):
    folder = make_inaturalist_tree(tmp_path, "2021")
    train = json.loads((folder / "train.json").read_text())
    for category in train["categories"]:
        category["name"] = "Bellis perennis" if category["id"] != 7 else category["name"]
    (folder / "train.json").write_text(json.dumps(train))
    assert read_inaturalist(folder).class_names == [
        "Bellis perennis (category 0)",
        "Bellis perennis (category 2)",
        "Turdus migratorius",
    ]


def test_inaturalist_version_is_the_only_one_present_or_chosen(tmp_path):
    folder = make_inaturalist_tree(tmp_path, "2021")
    shutil.copytree(make_inaturalist_tree(tmp_path / "other", "2018"), folder, dirs_exist_ok=True)
    with pytest.raises(ValueError, match=r"several iNaturalist competitions \(2021, 2018\): choose one"):
        read_inaturalist(folder)
    assert read_inaturalist(folder, version="2018").name == "iNaturalist 2018"
    with pytest.raises(ValueError, match=rf"^{folder / 'train_mini.json'} not found: expected an iNaturalist"):
        read_inaturalist(folder, version="2021_mini")
    with pytest.raises(ValueError, match=r"'2020' is not an iNaturalist competition version: use one of 2021, "):
        read_inaturalist(folder, version="2020")


def _drop_annotation(folder: Path) -> None:
    val = json.loads((folder / "val.json").read_text())
    val["annotations"] = val["annotations"][1:]
    (folder / "val.json").write_text(json.dumps(val))


def _annotate_twice(folder: Path) -> None:
    val = json.loads((folder / "val.json").read_text())
    val["annotations"].append({"id": 1, "image_id": val["images"][0]["id"], "category_id": 7})
    (folder / "val.json").write_text(json.dumps(val))


def _unknown_variant(archive: Path) -> None:
    path = archive / "data" / "images_variant_test.txt"
    path.write_text(path.read_text() + "1234567 747-400\n")


def _test_labels_only_in_the_devkit(archive: Path) -> None:
    (archive / "cars_test_annos_withlabels.mat").unlink()


def _out_of_range_flower(archive: Path) -> None:
    scipy.io.savemat(archive / "setid.mat", {"trnid": np.array([[1, 99]]), "valid": [[2]], "tstid": [[3]]})


def _flower_label_zero(archive: Path) -> None:
    scipy.io.savemat(archive / "imagelabels.mat", {"labels": np.zeros((1, 9), dtype=np.uint8)})


def _car_class_zero(archive: Path) -> None:
    annotations = _cars_annotations([("00001.jpg", 0)], with_class=True)
    scipy.io.savemat(archive / "devkit" / "cars_train_annos.mat", {"annotations": annotations})


def _aircraft_classes_not_text(archive: Path) -> None:
    (archive / "data" / "variants.txt").write_bytes(b"\xff\xfe7\x003\x007\x00")


def _category_id_not_an_integer(folder: Path) -> None:
    val = json.loads((folder / "val.json").read_text())
    val["annotations"][0]["category_id"] = "seven"
    (folder / "val.json").write_text(json.dumps(val))


# (make the archive, read it, break it, the start of the error that must name the broken file)
BROKEN_ARCHIVES = {
    "cars meta missing": (
        make_stanford_cars_tree, read_stanford_cars, "devkit/cars_meta.mat",
        "{root}/devkit/cars_meta.mat not found: expected the Stanford Cars archive",
    ),
    "cars train annotations garbage": (
        make_stanford_cars_tree, read_stanford_cars, b"not a mat file" * 20,
        "{root}/devkit/cars_train_annos.mat is not a readable MATLAB .mat file (ValueError: Unknown mat file type",
    ),
    "cars test labels missing": (
        make_stanford_cars_tree, read_stanford_cars, _test_labels_only_in_the_devkit,
        "{root}/cars_test_annos_withlabels.mat not found: the devkit's cars_test_annos.mat has no class labels",
    ),
    "cars test images missing": (
        make_stanford_cars_tree, read_stanford_cars, "cars_test",
        "{root}/cars_test is not a directory: expected the Stanford Cars archive",
    ),
    "aircraft split missing": (
        make_fgvc_aircraft_tree, read_fgvc_aircraft, "data/images_variant_val.txt",
        "{root}/data/images_variant_val.txt not found: expected the fgvc-aircraft-2013b archive",
    ),
    "aircraft unknown class": (
        make_fgvc_aircraft_tree, read_fgvc_aircraft, _unknown_variant,
        "{root}/data/images_variant_test.txt, line 4: '747-400' is not a class of {root}/data/variants.txt",
    ),
    "flowers setid missing": (
        make_flowers102_tree, read_flowers102, "setid.mat",
        "{root}/setid.mat not found: expected the Oxford Flowers-102 files",
    ),
    "flowers labels variable missing": (
        make_flowers102_tree, read_flowers102, {"imagelabels.mat": {"label": np.ones((1, 9))}},
        "{root}/imagelabels.mat has no variable labels (it has ['label']): expected the Oxford Flowers-102 files",
    ),
    "flowers image number out of range": (
        make_flowers102_tree, read_flowers102, _out_of_range_flower,
        "{root}/setid.mat: 'trnid' holds image numbers [99] outside 1..9, the images labelled by "
        "{root}/imagelabels.mat",
    ),
    "flowers label out of range": (  # a plain number and the image, never NumPy's np.uint8(0)
        make_flowers102_tree, read_flowers102, _flower_label_zero,
        "{root}/imagelabels.mat: the label of image 1 (jpg/image_00001.jpg) is 0, not a class number between 1 and "
        "102: restore the file from the archive.",
    ),
    "cars class out of range": (
        make_stanford_cars_tree, read_stanford_cars, _car_class_zero,
        "{root}/devkit/cars_train_annos.mat: the class of 00001.jpg is 0, not a class number between 1 and 3: restore "
        "the file from the archive.",
    ),
    "aircraft class file not text": (
        make_fgvc_aircraft_tree, read_fgvc_aircraft, _aircraft_classes_not_text,
        "{root}/data/variants.txt is not a UTF-8 text file (invalid start byte at byte 0): restore it from the "
        "archive; expected the fgvc-aircraft-2013b archive",
    ),
    "dogs test list missing": (
        make_stanford_dogs_tree, read_stanford_dogs, "lists/test_list.mat",
        "{root}/lists/test_list.mat not found: expected the Stanford Dogs archive",
    ),
    "dogs images missing": (
        make_stanford_dogs_tree, read_stanford_dogs, "Images",
        "{root}/Images is not a directory: expected the Stanford Dogs archive",
    ),
    "inaturalist validation missing": (
        make_inaturalist_tree, read_inaturalist, "val.json",
        "{root}/val.json not found: expected an iNaturalist competition folder",
    ),
    "inaturalist invalid json": (
        make_inaturalist_tree, read_inaturalist, b"{\"images\": [",
        "{root}/val.json is not valid JSON (Expecting value: line 1 column 13",
    ),
    "inaturalist category id not an integer": (
        make_inaturalist_tree, read_inaturalist, _category_id_not_an_integer,
        "{root}/val.json: an entry of 'annotations' has a 'category_id' that is not an integer: ",
    ),
    "inaturalist image without annotation": (
        make_inaturalist_tree, read_inaturalist, _drop_annotation,
        "{root}/val.json: 1 images have no annotation, e.g. image",
    ),
    "inaturalist image with two categories": (
        make_inaturalist_tree, read_inaturalist, _annotate_twice,
        "{root}/val.json: image 106 is annotated with several categories; expected one.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BROKEN_ARCHIVES)
def test_broken_archives_give_an_error_that_names_the_file_and_the_layout(tmp_path, case):
    make, read, breakage, message = BROKEN_ARCHIVES[case]
    root = make(tmp_path)
    if callable(breakage):
        breakage(root)
    elif isinstance(breakage, dict):
        for name, variables in breakage.items():
            scipy.io.savemat(root / name, variables)
    elif isinstance(breakage, bytes):
        target = {read_stanford_cars: "devkit/cars_train_annos.mat", read_inaturalist: "val.json"}[read]
        (root / target).write_bytes(breakage)
    elif (root / breakage).is_dir():
        shutil.rmtree(root / breakage)
    else:
        (root / breakage).unlink()
    with pytest.raises(ValueError) as error:
        read(root)
    assert str(error.value).startswith(message.format(root=root)), str(error.value)


def test_aircraft_refuses_an_unknown_annotation_level(tmp_path):
    with pytest.raises(ValueError, match=r"^annotation_level='model' is not an FGVC-Aircraft annotation level: "):
        read_fgvc_aircraft(make_fgvc_aircraft_tree(tmp_path), annotation_level="model")


def test_a_missing_data_dir_is_named(tmp_path):
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'nowhere'} is not a directory: expected the Stanford Dogs"):
        read_stanford_dogs(tmp_path / "nowhere")
