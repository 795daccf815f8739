"""The official archives through train_pim.py, as users run it: `--dataset NAME --data_dir DIR` (tiny CPU runs)."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForImageClassification

from archive_trees import (
    FGVC_AIRCRAFT_CLASSES,
    FLOWERS102_CLASS_NUMBERS,
    STANFORD_CARS_CLASS_NAMES,
    make_fgvc_aircraft_tree,
    make_flowers102_tree,
    make_inaturalist_tree,
    make_stanford_cars_tree,
    make_stanford_dogs_tree,
)
from fgvc_trees import class_color


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim.utils.cli import run_command  # noqa: E402


# (make the archive, the folder to give --data_dir: the archive or its parent, splits and sizes, the class names, the
# colour index of each label's images: see archive_trees)
ARCHIVES = {
    "stanford_cars": (
        make_stanford_cars_tree, "archive", {"train": 6, "test": 6}, list(STANFORD_CARS_CLASS_NAMES), {0: 0, 1: 1, 2: 2}
    ),
    "fgvc_aircraft": (
        make_fgvc_aircraft_tree, "parent", {"train": 3, "validation": 3, "test": 3},
        [variant for variant, _, _ in FGVC_AIRCRAFT_CLASSES], {0: 0, 1: 1, 2: 2},
    ),
    "flowers102": (
        make_flowers102_tree, "archive", {"train": 3, "validation": 3, "test": 3}, None,
        {number - 1: index for index, number in enumerate(FLOWERS102_CLASS_NUMBERS)},
    ),
    "stanford_dogs": (
        make_stanford_dogs_tree, "archive", {"train": 3, "test": 3},
        ["Chihuahua", "Japanese spaniel", "wire-haired fox terrier"], {0: 0, 1: 1, 2: 2},
    ),
    "inaturalist": (
        make_inaturalist_tree, "archive", {"train": 6, "test": 6},
        ["Bellis perennis", "Lumbricus terrestris", "Turdus migratorius"], {0: 0, 1: 1, 2: 2},
    ),
}  # fmt: skip


def load(*flags: str):
    """The data `train_pim.py` trains on for these flags (its own parsing, checks and loading)."""
    arguments = train_pim.parse_arguments([*flags, "--output_dir", "unused", "--use_cpu", "true", "--do_train", "true"])
    train_pim.check_arguments(*arguments)
    _, _, data_args, training_args, _ = arguments
    return train_pim.load_data(data_args, training_args.seed)


def error_line(capsys, *flags: str) -> str:
    """The one `train_pim.py: error:` line of a run refused with exit code 2."""
    argv = [*flags, "--output_dir", "unused", "--use_cpu", "true", "--do_train", "true"]
    assert run_command("train_pim.py", train_pim.main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_pim.py: error: "), lines
    return lines[0].removeprefix("train_pim.py: error: ")


@pytest.mark.parametrize("dataset", ARCHIVES)
def test_each_archive_loads_with_its_official_splits_names_and_labels(tmp_path, dataset):
    make, data_dir, sizes, class_names, colour_of_label = ARCHIVES[dataset]
    archive = make(tmp_path / "data")
    datasets = load("--dataset", dataset, "--data_dir", str(archive if data_dir == "archive" else archive.parent))
    assert {split: len(rows) for split, rows in datasets.items()} == sizes
    names = datasets["train"].features["label"].names
    assert names == (class_names or names) and len(names) == (102 if dataset == "flowers102" else 3)
    assert datasets.skipped_images == [] and str(archive) in datasets.source
    for split in datasets.values():
        for row in split:
            observed = np.median(np.asarray(row["image"]).reshape(-1, 3), axis=0)
            assert np.abs(observed - class_color(colour_of_label[row["label"]])).max() < 40


def test_unreadable_images_are_skipped_with_their_reason_or_kept_unchecked(tmp_path, caplog):
    archive = make_stanford_cars_tree(tmp_path, corrupt=True)
    with caplog.at_level(logging.INFO):
        datasets = load("--dataset", "stanford_cars", "--data_dir", str(archive), "--scan_cache_dir", str(tmp_path))
    [skipped] = datasets.skipped_images
    assert (skipped.path, skipped.split, skipped.label) == (
        str(archive / "cars_train" / "00006.jpg"),
        "train",
        "Ram C/V Cargo Van Minivan 2012",
    )
    assert skipped.reason.startswith("UnidentifiedImageError: cannot identify image file")
    assert len(datasets["train"]) == 5 and "12 decoded" in caplog.text
    [cache_file] = tmp_path.glob("*.sqlite")
    assert cache_file.name.startswith("Stanford_Cars_at_") and "stanford_cars-" in cache_file.name

    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = load("--dataset", "stanford_cars", "--data_dir", str(archive), "--scan_cache_dir", str(tmp_path))
    assert "0 decoded, 12 unchanged since their cached check" in caplog.text
    assert again.skipped_images == datasets.skipped_images

    unchecked = load("--dataset", "stanford_cars", "--data_dir", str(archive), "--skip_unreadable", "false")
    assert unchecked.skipped_images == [] and len(unchecked["train"]) == 6


def test_without_the_scan_a_missing_image_is_an_error_that_names_it(tmp_path, capsys):
    archive = make_flowers102_tree(tmp_path)
    (archive / "jpg" / "image_00005.jpg").unlink()
    message = error_line(capsys, "--dataset", "flowers102", "--data_dir", str(archive), "--skip_unreadable", "false")
    assert message.startswith(f"1 images listed by Oxford Flowers-102 at {archive} do not exist: ")
    assert str(archive / "jpg" / "image_00005.jpg") in message


def test_a_missing_annotation_file_is_one_error_line_naming_it(tmp_path, capsys):
    archive = make_flowers102_tree(tmp_path)
    (archive / "setid.mat").unlink()
    assert error_line(capsys, "--dataset", "flowers102", "--data_dir", str(tmp_path)).startswith(
        f"{archive / 'setid.mat'} not found: expected the Oxford Flowers-102 files: <data_dir>/jpg/"
    )


def test_official_validation_merged_into_train_then_held_out(tmp_path):
    archive = make_fgvc_aircraft_tree(tmp_path, images_per_split=2)
    flags = ("--dataset", "fgvc_aircraft", "--data_dir", str(archive))
    datasets = load(*flags, "--merge_validation_into_train", "true", "--validation_split_percentage", "25")
    assert {split: len(rows) for split, rows in datasets.items()} == {"train": 9, "validation": 3, "test": 6}
    assert sorted(datasets["validation"]["label"]) == [0, 1, 2]


def test_a_hold_out_beside_an_official_validation_split_is_refused(tmp_path, capsys):
    archive = make_fgvc_aircraft_tree(tmp_path)
    message = error_line(
        capsys, "--dataset", "fgvc_aircraft", "--data_dir", str(archive), "--validation_split_percentage", "10"
    )
    assert message.startswith(
        "--validation_split_percentage 10 carves a validation set from train, but --dataset fgvc_aircraft has an "
        "official validation split: use it"
    )
    message = error_line(
        capsys, "--dataset", "stanford_dogs", "--data_dir", str(tmp_path), "--merge_validation_into_train", "true"
    )
    assert message.startswith("--merge_validation_into_train: --dataset stanford_dogs has no validation split")


def test_the_configuration_name_selects_the_annotation_level_or_the_competition(tmp_path, capsys):
    archive = make_fgvc_aircraft_tree(tmp_path)
    families = load("--dataset", "fgvc_aircraft", "--data_dir", str(archive), "--dataset_config_name", "family")
    assert families["test"].features["label"].names == ["A320", "Boeing 707", "Boeing 727"]
    assert error_line(
        capsys, "--dataset", "fgvc_aircraft", "--data_dir", str(archive), "--dataset_config_name", "model"
    ).startswith("annotation_level='model' is not an FGVC-Aircraft annotation level: use one of variant, family")

    folder = make_inaturalist_tree(tmp_path, "2018")
    assert load("--dataset", "inaturalist", "--data_dir", str(folder), "--dataset_config_name", "2018").source == (
        f"iNaturalist 2018 at {folder}"
    )
    assert error_line(
        capsys, "--dataset", "stanford_dogs", "--data_dir", str(tmp_path), "--dataset_config_name", "2018"
    ).startswith("--dataset_config_name (from the command line) is a flag of --dataset fgvc_aircraft or inaturalist")


def test_stanford_cars_trains_one_step_and_saves_its_class_names(tmp_path):
    archive = make_stanford_cars_tree(tmp_path / "data")
    output_dir = tmp_path / "run"
    results = train_pim.main(
        [
            *("--dataset", "stanford_cars", "--data_dir", str(archive.parent), "--validation_split_percentage", "50"),
            *("--backbone", "test_resnet", "--backbone_pretrained", "false", "--image_size", "32", "--fpn_size", "16"),
            *("--num_selects", "8", "4", "2", "1", "--tokens_per_graph_node", "3", "--max_steps", "1"),
            *("--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--use_cpu", "true"),
            *("--dataloader_num_workers", "0", "--disable_tqdm", "true", "--do_train", "true", "--seed", "0"),
            *("--output_dir", str(output_dir)),
        ]
    )  # fmt: skip
    assert results["test"]["test_num_samples"] == 6
    report = json.loads((output_dir / "data_report.json").read_text())
    assert report["source"] == f"Stanford Cars at {archive}"
    model = AutoModelForImageClassification.from_pretrained(output_dir, trust_remote_code=True)
    assert list(model.config.id2label.values()) == list(STANFORD_CARS_CLASS_NAMES)
