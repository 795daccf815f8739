"""
One image discovery (`modeling_pim.data.image_files.find_image_files`) for training and `pim-infer`: extensions in any
case, hidden files and folders skipped at any depth, symbolic links followed with a loop guard, other files counted.
"""

import json
import os
import unicodedata
from pathlib import Path

import pytest
import torch
from datasets import Image as ImageFeature
from PIL import Image

from tiny_models import tiny_pim_config

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.data.fgvc_datasets import load_image_folders
from modeling_pim.data.image_files import (
    UnreadableImageError,
    find_class_folders,
    find_image_files,
    image_extensions,
    load_dataset_image,
)
from modeling_pim.tools import pim_infer


CLASSES = ["cardinal", "jay", "sparrow"]
# The images of `make_tree`, relative to its root, in the sorted order every tool must list them.
EXPECTED_IMAGES = [
    "cardinal/a.JPG",
    "cardinal/deeper/b.jpeg",
    "cardinal/deeper/c.Png",
    "jay/d.jpg",
    "jay/e.png",
    "sparrow/linked.png",
]


def write_image(path: Path, colour=(120, 30, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")


def make_tree(tmp_path: Path) -> Path:
    """
    A folder with everything discovery must handle: mixed-case extensions, nested folders, hidden files and hidden
    folders at two depths (`.ipynb_checkpoints/`, `.git/`, `._*`, `.DS_Store`), a class folder that is a link to a
    folder elsewhere, a link back to its own parent (a loop), a linked image file and files that are not images.
    """
    root = tmp_path / "images"
    write_image(root / "cardinal" / "a.JPG")
    write_image(root / "cardinal" / "deeper" / "b.jpeg")
    write_image(root / "cardinal" / "deeper" / "c.Png")
    write_image(root / "cardinal" / ".ipynb_checkpoints" / "a-checkpoint.jpg")
    write_image(root / "cardinal" / "deeper" / ".git" / "objects.png")
    write_image(root / "cardinal" / "._a.JPG")
    (root / "cardinal" / "notes.txt").write_text("field notes")
    (root / "cardinal" / "deeper" / "labels.csv").write_text("b,c")
    elsewhere = tmp_path / "elsewhere" / "jay_images"
    write_image(elsewhere / "d.jpg")
    write_image(elsewhere / "e.png")
    (elsewhere / "back_to_top").symlink_to(elsewhere, target_is_directory=True)
    (root / "jay").symlink_to(elsewhere, target_is_directory=True)
    write_image(tmp_path / "elsewhere" / "photo.png")
    (root / "sparrow").mkdir()
    (root / "sparrow" / "linked.png").symlink_to(tmp_path / "elsewhere" / "photo.png")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def test_find_image_files_lists_every_kind_of_entry(tmp_path):
    root = make_tree(tmp_path)

    found = find_image_files(root)

    assert [path.as_posix() for path in found.images] == EXPECTED_IMAGES
    assert [path.as_posix() for path in found.other_files] == ["cardinal/deeper/labels.csv", "cardinal/notes.txt"]
    assert [path.as_posix() for path in found.hidden] == [
        ".DS_Store",
        "cardinal/._a.JPG",
        "cardinal/.ipynb_checkpoints",
        "cardinal/deeper/.git",
    ]
    assert [path.as_posix() for path in found.symlink_loops] == ["jay/back_to_top"]
    assert found.describe_skipped() == (
        "2 other files (cardinal/deeper/labels.csv, cardinal/notes.txt), 4 hidden files or folders (.DS_Store, "
        "cardinal/._a.JPG, cardinal/.ipynb_checkpoints, ...), 1 symbolic link loop (jay/back_to_top)"
    )


def test_two_links_to_one_folder_are_both_listed(tmp_path):
    shared = tmp_path / "shared"
    write_image(shared / "x.jpg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "first").symlink_to(shared, target_is_directory=True)
    (root / "second").symlink_to(shared, target_is_directory=True)

    assert [path.as_posix() for path in find_image_files(root).images] == ["first/x.jpg", "second/x.jpg"]


def test_image_extensions_are_those_pil_opens_and_imagefolder_loads():
    extensions = image_extensions()
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"} <= extensions
    assert ".txt" not in extensions and ".qoi" not in extensions  # PIL opens .qoi but imagefolder drops it
    assert all(extension == extension.lower() and extension.startswith(".") for extension in extensions)


def test_training_and_pim_infer_see_the_same_images(tmp_path, caplog):
    root = make_tree(tmp_path)
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    PimForImageClassification(tiny_pim_config(CLASSES)).save_pretrained(model_dir)
    PimImageProcessor.for_image_size(64).save_pretrained(model_dir)

    dataset = load_image_folders(root)["train"]
    files = dataset.cast_column("image", ImageFeature(decode=False))["image"]
    trained_on = sorted(Path(os.path.relpath(file["path"], root)).as_posix() for file in files)
    assert trained_on == EXPECTED_IMAGES
    assert dataset.features["label"].names == CLASSES
    assert [CLASSES[label] for label in dataset["label"]] == [path.split("/")[0] for path in EXPECTED_IMAGES]
    assert "2 other files" in caplog.text and "4 hidden files or folders" in caplog.text

    output = tmp_path / "out"
    assert pim_infer.main([str(model_dir), str(root), "--output_dir", str(output), "--num_workers", "0"]) == 0
    results = json.loads((output / "infer_results.json").read_text())
    assert results["num_images"] == results["num_predicted"] == results["count"] == len(EXPECTED_IMAGES)
    assert results["ignored_files"] == ["cardinal/deeper/labels.csv", "cardinal/notes.txt"]
    assert results["symlink_loops"] == ["jay/back_to_top"]
    assert {name: entry["count"] for name, entry in results["per_class_accuracy"].items()} == {
        "cardinal": 3,
        "jay": 2,
        "sparrow": 1,
    }


def test_training_refuses_a_macos_metadata_folder_by_name(tmp_path):
    root = tmp_path / "train"
    write_image(root / "cardinal" / "a.jpg")
    write_image(root / "__MACOSX" / "cardinal" / "._a.jpg")

    with pytest.raises(ValueError, match=r"__MACOSX \(a macOS archive metadata folder: delete it\) contains no image"):
        load_image_folders(root)


def test_class_folders_are_named_in_nfc_and_two_forms_of_one_name_are_refused(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café crème"), unicodedata.normalize("NFD", "café crème")
    root = tmp_path / "train"
    write_image(root / nfd / "a.jpg")  # as macOS may write it
    write_image(root / "thé" / "b.jpg")
    (root / "empty").mkdir()
    write_image(root / "loose.png")

    found = find_class_folders(root)

    assert found.classes == {nfc: [Path(nfd, "a.jpg")], "empty": [], "thé": [Path("thé", "b.jpg")]}
    assert found.folders == {nfc: nfd, "empty": "empty", "thé": "thé"}
    assert found.loose_images == [Path("loose.png")]
    write_image(root / nfc / "c.jpg")
    with pytest.raises(ValueError) as error:
        find_class_folders(root)
    assert str(error.value) == (
        f"{str(root)!r} has two class folders named {nfc!r} (one in Unicode NFC, one in NFD form, as macOS may write "
        "it): merge them into one folder."
    )


def test_an_image_that_cannot_be_decoded_while_training_names_its_file_and_the_fix(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    write_image(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])

    with pytest.raises(UnreadableImageError) as error:
        load_dataset_image({"bytes": None, "path": str(truncated)}, "remove it")
    assert str(error.value) == f"{truncated} cannot be decoded (OSError: Truncated File Read): remove it."
    with pytest.raises(UnreadableImageError) as error:
        load_dataset_image({"bytes": b"not an image", "path": "birds/x.jpg"}, "remove it")
    assert str(error.value) == (
        "the image 'birds/x.jpg' stored in the dataset cannot be decoded (UnidentifiedImageError: cannot identify "
        "image file 'birds/x.jpg'): remove it."
    )
    write_image(tmp_path / "ok.png")
    image = load_dataset_image({"bytes": None, "path": str(tmp_path / "ok.png")}, "remove it")
    assert image.mode == "RGB" and image.size == (40, 30)


def test_pim_infer_scores_the_nfd_class_folders_training_was_given(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café crème"), unicodedata.normalize("NFD", "café crème")
    root = tmp_path / "train"
    for index in range(2):
        write_image(root / nfd / f"{index}.jpg")  # as macOS writes it
        write_image(root / "thé" / f"{index}.jpg", colour=(20, 200, 40))
    class_names = load_image_folders(root)["train"].features["label"].names
    assert class_names == [nfc, "thé"]
    model_dir = tmp_path / "model"
    PimForImageClassification(tiny_pim_config(class_names)).save_pretrained(model_dir)
    PimImageProcessor.for_image_size(64).save_pretrained(model_dir)

    output = tmp_path / "out"
    assert pim_infer.main([str(model_dir), str(root), "--output_dir", str(output), "--num_workers", "0"]) == 0
    results = json.loads((output / "infer_results.json").read_text())
    assert {name: entry["count"] for name, entry in results["per_class_accuracy"].items()} == {nfc: 2, "thé": 2}
