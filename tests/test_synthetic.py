import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_pim.data.synthetic import (
    DETAIL_PATTERNS,
    MAX_NUM_CLASSES,
    SPLITS,
    class_names,
    default_cache_dir,
    generate_fine_grained_dataset,
    main,
)

SMALL = {"num_classes": 3, "train_per_class": 3, "validation_per_class": 2, "test_per_class": 1}


def png_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.png"))}


def png_mtimes(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in sorted(root.rglob("*.png"))}


def load_split(root: Path, splits: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Returns the images, labels and detail boxes of `splits` as arrays."""
    annotations = json.loads((root / "annotations.json").read_text())
    paths = sorted(path for path in annotations if path.split("/")[0] in splits)
    images = np.stack([np.asarray(Image.open(root / path), dtype=np.float64) for path in paths])
    labels = np.array([annotations[path]["label"] for path in paths])
    return images, labels, [annotations[path]["detail_box"] for path in paths]


def nearest_centroid_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray, features: np.ndarray, labels: np.ndarray
) -> float:
    classes = np.unique(train_labels)
    centroids = np.stack([train_features[train_labels == label].mean(axis=0) for label in classes])
    distances = ((features[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((classes[distances.argmin(axis=1)] == labels).mean())


def colour_histograms(images: np.ndarray, bins: int = 4) -> np.ndarray:
    quantised = (images // (256 / bins)).astype(np.int64)
    codes = (quantised[..., 0] * bins + quantised[..., 1]) * bins + quantised[..., 2]
    codes = codes.reshape(len(images), -1)
    histograms = np.stack([np.bincount(row, minlength=bins**3) for row in codes]).astype(np.float64)
    return histograms / histograms.sum(axis=1, keepdims=True)


def detail_crops(images: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    return np.stack([image[y0:y1, x0:x1] for image, (x0, y0, x1, y1) in zip(images, boxes)])


def binarised_details(images: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    """Crops the detail of every image and thresholds its brightness at the crop's mean."""
    crops = detail_crops(images, boxes).mean(axis=-1)
    return (crops < crops.mean(axis=(1, 2), keepdims=True)).reshape(len(images), -1).astype(np.float64)


@pytest.fixture(scope="module")
def shortcut_dataset(tmp_path_factory) -> Path:
    counts = {"train_per_class": 60, "validation_per_class": 30, "test_per_class": 30}
    return generate_fine_grained_dataset(tmp_path_factory.mktemp("shortcut"), num_classes=8, **counts)


def test_patterns_have_equal_ink_and_survive_horizontal_flips():
    patterns = list(DETAIL_PATTERNS.values())
    assert len({pattern.tobytes() for pattern in patterns}) == MAX_NUM_CLASSES
    for pattern in patterns:
        assert pattern.shape == patterns[0].shape
        assert pattern.sum() == patterns[0].sum()
        np.testing.assert_array_equal(pattern, pattern[:, ::-1])


def test_layout_counts_and_info(tmp_path):
    root = generate_fine_grained_dataset(tmp_path, image_size=64, seed=3, **SMALL)
    names = class_names(3)
    assert names[0] == "class_00_horizontal_bar"
    per_split = {"train": 3, "validation": 2, "test": 1}
    for split in SPLITS:
        assert sorted(path.name for path in (root / split).iterdir()) == names
        for name in names:
            files = sorted((root / split / name).iterdir())
            assert [path.name for path in files] == [f"{index:04d}.png" for index in range(per_split[split])]
            with Image.open(files[0]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
    info = json.loads((root / "dataset_info.json").read_text())
    assert info["class_names"] == names
    assert info["counts"] == {split: 3 * count for split, count in per_split.items()}
    assert info["parameters"]["seed"] == 3
    annotations = json.loads((root / "annotations.json").read_text())
    assert len(annotations) == 18
    for path, annotation in annotations.items():
        assert path.split("/")[1] == names[annotation["label"]]
        x0, y0, x1, y1 = annotation["detail_box"]
        ox0, oy0, ox1, oy1 = annotation["object_box"]
        assert ox0 <= x0 < x1 <= ox1 and oy0 <= y0 < y1 <= oy1
        for dx0, dy0, dx1, dy1 in annotation["distractor_boxes"]:
            assert dx1 <= ox0 or dx0 >= ox1 or dy1 <= oy0 or dy0 >= oy1


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    first = png_bytes(generate_fine_grained_dataset(tmp_path / "first", seed=1, **SMALL))
    again = png_bytes(generate_fine_grained_dataset(tmp_path / "again", seed=1, **SMALL))
    other = png_bytes(generate_fine_grained_dataset(tmp_path / "other", seed=2, **SMALL))
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[path] != other[path] for path in first)


def test_complete_dataset_is_not_rewritten(tmp_path):
    root = generate_fine_grained_dataset(tmp_path, **SMALL)
    mtimes = png_mtimes(root)
    generate_fine_grained_dataset(tmp_path, **SMALL)
    assert png_mtimes(root) == mtimes


def test_changed_parameters_or_missing_files_regenerate(tmp_path):
    root = generate_fine_grained_dataset(tmp_path, **SMALL)
    generate_fine_grained_dataset(tmp_path, **{**SMALL, "num_classes": 2, "train_per_class": 1})
    assert len(list((root / "train").rglob("*.png"))) == 2
    assert len(list((root / "validation").iterdir())) == 2
    assert json.loads((root / "dataset_info.json").read_text())["counts"]["train"] == 2

    generate_fine_grained_dataset(tmp_path, **SMALL)
    missing = root / "test" / class_names(3)[2] / "0000.png"
    expected = missing.read_bytes()
    missing.unlink()
    generate_fine_grained_dataset(tmp_path, **SMALL)
    assert missing.read_bytes() == expected


def test_split_folders_of_other_files_are_refused_and_kept(tmp_path):
    (tmp_path / "test" / "mydata").mkdir(parents=True)
    (tmp_path / "test" / "mydata" / "notes.txt").write_text("precious")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError) as error:
        generate_fine_grained_dataset(tmp_path, **SMALL)
    assert str(error.value) == (
        f"{tmp_path} holds train/, test/ folders that are not a synthetic set (2 files or folders the generator did "
        "not write: train/keep.txt, test/mydata), which generating the set there would delete: give an empty or new "
        "folder."
    )
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "test", "test/mydata", "test/mydata/notes.txt", "train", "train/keep.txt"
    ]  # fmt: skip
    # A file among the generator's own class folders is the user's too.
    root = generate_fine_grained_dataset(tmp_path / "set", **SMALL)
    (root / "validation" / class_names(3)[0] / "mine.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"\(1 files or folders the generator did not write: validation/"):
        generate_fine_grained_dataset(root, **{**SMALL, "test_per_class": 2})
    assert (root / "validation" / class_names(3)[0] / "mine.jpg").read_bytes() == b"precious"


def test_an_interrupted_generation_is_regenerated(tmp_path):
    root = generate_fine_grained_dataset(tmp_path, **SMALL)
    expected = png_bytes(root)
    (root / "dataset_info.json").unlink()  # as when a generation stops before its end
    (root / "test" / class_names(3)[2] / "0000.png").unlink()
    generate_fine_grained_dataset(tmp_path, **SMALL)
    assert png_bytes(root) == expected


def test_global_colour_statistics_do_not_give_the_class_away(shortcut_dataset):
    train_images, train_labels, _ = load_split(shortcut_dataset, ("train",))
    images, labels, _ = load_split(shortcut_dataset, ("validation", "test"))
    chance = 1 / 8
    histogram_accuracy = nearest_centroid_accuracy(
        colour_histograms(train_images), train_labels, colour_histograms(images), labels
    )
    mean_colour_accuracy = nearest_centroid_accuracy(
        train_images.mean(axis=(1, 2)), train_labels, images.mean(axis=(1, 2)), labels
    )
    assert histogram_accuracy < 1.5 * chance
    assert mean_colour_accuracy < 1.5 * chance


def test_class_is_encoded_by_the_detail(shortcut_dataset):
    train_images, train_labels, train_boxes = load_split(shortcut_dataset, ("train",))
    images, labels, boxes = load_split(shortcut_dataset, ("validation", "test"))
    detail_accuracy = nearest_centroid_accuracy(
        binarised_details(train_images, train_boxes), train_labels, binarised_details(images, boxes), labels
    )
    detail_colour_accuracy = nearest_centroid_accuracy(
        colour_histograms(detail_crops(train_images, train_boxes)),
        train_labels,
        colour_histograms(detail_crops(images, boxes)),
        labels,
    )
    assert detail_accuracy > 0.95
    assert detail_colour_accuracy < 1.5 / 8


def test_default_cache_dir_follows_pim_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PIM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "synthetic"
    monkeypatch.delenv("PIM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "modeling_pim" / "synthetic"


def test_command_line_writes_the_dataset(tmp_path, capsys):
    counts = ["--train_per_class", "1", "--validation_per_class", "1", "--test_per_class", "1"]
    main([str(tmp_path), "--num_classes", "2", *counts])
    assert "2 train, 2 validation, 2 test images" in capsys.readouterr().out
    assert len(list(tmp_path.rglob("*.png"))) == 6


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        generate_fine_grained_dataset(tmp_path, num_classes=MAX_NUM_CLASSES + 1)
    with pytest.raises(ValueError, match="image_size"):
        generate_fine_grained_dataset(tmp_path, image_size=16)
    with pytest.raises(ValueError, match="negative"):
        generate_fine_grained_dataset(tmp_path, test_per_class=-1)
    assert not any(tmp_path.iterdir())
