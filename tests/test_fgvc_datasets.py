"""Tests of `modeling_pim.data.fgvc_datasets` on miniature archives written by `fgvc_trees`."""

import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from fgvc_trees import (
    FOLDER_CLASS_NAMES,
    class_color,
    make_hub_parquet_dataset,
    make_image_folders,
    make_nabirds_tree,
)

from modeling_pim.data import fgvc_datasets
from modeling_pim.data.fgvc_datasets import (
    FgvcDatasetDict,
    load_archive,
    load_hub_dataset,
    load_image_folders,
    split_validation,
)


def image_paths(dataset: Dataset) -> list[str]:
    """The file path behind each row, without decoding the images."""
    return [row["path"] for row in dataset.cast_column("image", Image(decode=False))["image"]]


def assert_colors_match_labels(dataset: Dataset) -> None:
    """
    Every decoded image has the colour of its label (see `fgvc_trees.class_color`; its luminance for grayscale
    images), up to JPEG and CMYK conversion error.
    """
    for row in dataset:
        pixels = np.asarray(row["image"].convert("RGB"), dtype=np.float64)
        observed = np.median(pixels.reshape(-1, 3), axis=0)
        expected = np.asarray(class_color(row["label"]), dtype=np.float64)
        if row["image"].mode == "L":
            expected = np.full(3, expected @ [0.299, 0.587, 0.114])
        assert np.abs(observed - expected).max() < 40, (row["image"].filename, row["label"], observed)


def test_cub200_splits_names_and_labels(cub_dir):
    dataset = load_archive("cub200", cub_dir)
    assert isinstance(dataset, FgvcDatasetDict) and isinstance(dataset, DatasetDict)
    assert set(dataset) == {"train", "test"}
    # 3 classes x 4 images split 2/2, minus the corrupt (train) and truncated (test) files.
    assert dataset["train"].num_rows == 6 and dataset["test"].num_rows == 6
    for split in dataset.values():
        assert split.features["image"] == Image()
        assert split.features["label"] == ClassLabel(
            names=["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
        )
    # The label files list ids in reverse order: labels are joined by id and stay in images.txt order.
    train_paths = image_paths(dataset["train"])
    sooty = str(cub_dir / "images" / "003.Sooty_Albatross" / "Sooty_Albatross_0002.jpg")
    assert dataset["train"][train_paths.index(sooty)]["label"] == 2
    folders = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    for split in dataset.values():
        assert [Path(path).parent.name for path in image_paths(split)] == [folders[label] for label in split["label"]]
    assert {row["image"].mode for split in dataset.values() for row in split} == {"RGB", "L", "CMYK", "RGBA"}
    assert_colors_match_labels(dataset["train"])
    assert_colors_match_labels(dataset["test"])


def test_cub200_accepts_the_folder_the_archive_was_unpacked_into(cub_dir):
    dataset = load_archive("cub200", cub_dir.parent)
    assert dataset["test"].num_rows == 6


def test_cub200_skips_and_reports_unreadable_images(cub_dir, caplog):
    bad = [
        str(cub_dir / "images" / "001.Black_footed_Albatross" / "corrupt.jpg"),
        str(cub_dir / "images" / "002.Laysan_Albatross" / "truncated.jpg"),
    ]
    with caplog.at_level(logging.WARNING):
        dataset = load_archive("cub200", cub_dir)
    assert [(image.path, image.split, image.label) for image in dataset.skipped_images] == [
        (bad[0], "train", "Black footed Albatross"),
        (bad[1], "test", "Laysan Albatross"),
    ]
    assert all(image.reason.startswith(("UnidentifiedImageError: ", "OSError: ")) for image in dataset.skipped_images)
    assert "Skipped 2 unreadable images of CUB-200-2011 at" in caplog.text
    assert not set(bad) & set(image_paths(dataset["train"]) + image_paths(dataset["test"]))


def test_cub200_without_the_scan_keeps_every_listed_image(cub_dir):
    dataset = load_archive("cub200", cub_dir, skip_unreadable=False)
    assert dataset.skipped_images == []
    assert dataset["train"].num_rows == 7 and dataset["test"].num_rows == 7


def test_missing_image_is_skipped_or_an_error(cub_dir):
    missing = cub_dir / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0001.jpg"
    missing.unlink()
    skipped = load_archive("cub200", cub_dir).skipped_images
    assert str(missing) in [image.path for image in skipped]
    with pytest.raises(ValueError, match="do not exist.*Laysan_Albatross_0001.jpg"):
        load_archive("cub200", cub_dir, skip_unreadable=False)


@pytest.mark.parametrize("file_name", ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"])
def test_cub200_missing_file_names_path_and_layout(cub_dir, file_name):
    (cub_dir / file_name).unlink()
    with pytest.raises(ValueError, match=f"{cub_dir / file_name} not found: expected the official CUB_200_2011"):
        load_archive("cub200", cub_dir)


def test_cub200_missing_images_folder(cub_dir):
    (cub_dir / "images").rename(cub_dir / "pictures")
    with pytest.raises(ValueError, match=f"{cub_dir / 'images'} is not a directory: expected the official CUB_200"):
        load_archive("cub200", cub_dir)


def test_cub200_id_missing_from_one_file(cub_dir):
    labels_file = cub_dir / "image_class_labels.txt"
    labels_file.write_text("".join(line + "\n" for line in labels_file.read_text().splitlines() if line[:2] != "7 "))
    with pytest.raises(ValueError, match=r"image_class_labels.txt does not list the same images.*'7'"):
        load_archive("cub200", cub_dir)


def test_cub200_unknown_class_id(cub_dir):
    classes_file = cub_dir / "classes.txt"
    classes_file.write_text(classes_file.read_text().replace("3 003.Sooty_Albatross\n", ""))
    with pytest.raises(ValueError, match="class ids that are not in .*classes.txt: '3'"):
        load_archive("cub200", cub_dir)


def test_nabirds_sparse_class_ids(nabirds_dir):
    dataset = load_archive("nabirds", nabirds_dir)
    assert dataset.skipped_images == []
    assert dataset["train"].num_rows == 6 and dataset["test"].num_rows == 6
    # Leaf classes only, sorted by integer id (295 < 313 < 1010), names from classes.txt.
    names = ["Mallard (Male)", "Wood Duck (Female/Immature)", "Northern Cardinal (Adult Male)"]
    assert dataset["train"].features["label"].names == names
    for split in dataset.values():
        for path, label in zip(image_paths(split), split["label"], strict=True):
            assert Path(path).parent.name == {0: "0295", 1: "0313", 2: "1010"}[label]
        assert_colors_match_labels(split)


def test_nabirds_skips_unreadable_images(tmp_path):
    dataset = load_archive("nabirds", make_nabirds_tree(tmp_path, with_bad_files=True))
    assert [Path(image.path).name for image in dataset.skipped_images] == ["corrupt.jpg"]
    assert dataset["train"].num_rows == 6


def test_nabirds_missing_split_file(nabirds_dir):
    (nabirds_dir / "train_test_split.txt").unlink()
    with pytest.raises(ValueError, match="train_test_split.txt not found: expected the official NABirds archive"):
        load_archive("nabirds", nabirds_dir)


def test_image_folders(image_folders):
    dataset = load_image_folders(image_folders / "train", image_folders / "validation")
    assert set(dataset) == {"train", "validation"}
    assert dataset["train"].num_rows == 9 and dataset["validation"].num_rows == 9
    assert dataset["validation"].features["label"].names == list(FOLDER_CLASS_NAMES)
    for split in dataset.values():
        for path, label in zip(image_paths(split), split["label"], strict=True):
            assert Path(path).parent.name == FOLDER_CLASS_NAMES[label]
        assert_colors_match_labels(split)


def test_image_folders_test_class_without_training_folder_is_refused(tmp_path):
    make_image_folders(tmp_path, splits=("train",))
    make_image_folders(tmp_path, splits=("test",), class_names=("Acadian Flycatcher", "Barn Swallow", "Blue Jay"))
    with pytest.raises(ValueError) as error:
        load_image_folders(tmp_path / "train", test_dir=tmp_path / "test")
    assert str(error.value) == (
        f"The class folders 'Blue Jay' of test_dir={str(tmp_path / 'test')!r} are not class folders of "
        f"train_dir={str(tmp_path / 'train')!r}: a class the model is not trained on can never be predicted. Add its "
        "training images, or remove the folders (folder names are compared after Unicode NFC normalisation)."
    )


def test_image_folders_test_covering_some_classes_maps_them_by_name(tmp_path):
    make_image_folders(tmp_path, splits=("train",))
    make_image_folders(tmp_path, splits=("test",), class_names=("Barn Swallow",), images_per_class=2)
    (tmp_path / "test" / "Cape May Warbler").mkdir()  # an empty class folder: the class has no test images
    dataset = load_image_folders(tmp_path / "train", test_dir=tmp_path / "test")
    assert dataset["test"].features["label"].names == list(FOLDER_CLASS_NAMES)
    assert list(dataset["test"]["label"]) == [1, 1]


def test_image_folders_match_class_names_after_nfc_normalisation(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café crème"), unicodedata.normalize("NFD", "café crème")
    make_image_folders(tmp_path, splits=("train",), class_names=(nfc, "thé"), images_per_class=1)
    make_image_folders(tmp_path, splits=("test",), class_names=(nfd,), images_per_class=1)  # as macOS may write it
    dataset = load_image_folders(tmp_path / "train", test_dir=tmp_path / "test")
    assert dataset["train"].features["label"].names == [nfc, "thé"]
    assert list(dataset["test"]["label"]) == [0]


def test_image_folders_empty_training_class_folder(image_folders):
    (image_folders / "train" / "Dark-eyed Junco").mkdir()
    with pytest.raises(ValueError) as error:
        load_image_folders(image_folders / "train")
    assert str(error.value) == (
        f"Class folder {image_folders / 'train' / 'Dark-eyed Junco'} contains no image files (e.g. .jpg, .png, .webp: "
        f"any image file Pillow opens): every class folder of train_dir={str(image_folders / 'train')!r} needs at "
        "least one image; remove the folder or add its images."
    )


def test_image_folders_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="train_dir=.*nowhere.* is not a directory"):
        load_image_folders(tmp_path / "nowhere")


def test_image_folders_with_special_characters_in_file_names(tmp_path):
    make_image_folders(tmp_path, splits=("train",), class_names=("Acadian [Flycatcher]*",), images_per_class=2)
    dataset = load_image_folders(tmp_path / "train")
    assert dataset["train"].num_rows == 2


def label_dataset(counts: list[int]) -> Dataset:
    """A dataset with only a `label` column: `counts[c]` rows of class c, classes interleaved."""
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    labels = [labels[i] for i in np.random.default_rng(0).permutation(len(labels))]
    names = [f"class {label}" for label in range(len(counts))]
    return Dataset.from_dict({"label": labels}, features=Features({"label": ClassLabel(names=names)}))


def test_split_validation_is_stratified_seeded_and_disjoint():
    dataset = label_dataset([30, 20, 10, 3, 2]).add_column("row", list(range(65)))
    train, validation = split_validation(dataset, percentage=10, seed=0)
    assert set(train["row"]).isdisjoint(validation["row"]) and len(train) + len(validation) == len(dataset)
    # round(10% of each class), at least one per class: 3, 2, 1, 1, 1.
    assert np.bincount(list(validation["label"])).tolist() == [3, 2, 1, 1, 1]
    assert set(train["label"]) == set(range(5))
    assert validation.features == dataset.features
    again_train, again_validation = split_validation(dataset, percentage=10, seed=0)
    assert list(again_validation["row"]) == list(validation["row"]) and list(again_train["row"]) == list(train["row"])
    assert list(split_validation(dataset, percentage=10, seed=1)[1]["row"]) != list(validation["row"])


def test_split_validation_single_image_class_stays_in_train(caplog):
    with caplog.at_level(logging.WARNING):
        train, validation = split_validation(label_dataset([4, 1]), percentage=50, seed=0)
    assert sorted(train["label"]) == [0, 0, 1] and list(validation["label"]) == [0, 0]
    assert "'class 1'" in caplog.text


@pytest.mark.parametrize("percentage", [0, 100, -5, 150])
def test_split_validation_rejects_bad_percentage(percentage):
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        split_validation(label_dataset([4, 4]), percentage=percentage, seed=0)


def test_split_validation_needs_class_label():
    with pytest.raises(ValueError, match="'label' ClassLabel"):
        split_validation(Dataset.from_dict({"label": [0, 1, 0, 1]}), percentage=50, seed=0)


def hub_like(monkeypatch, dataset_dict: DatasetDict) -> None:
    """Makes `load_hub_dataset` receive `dataset_dict` from `load_dataset`, offline."""
    monkeypatch.setattr(fgvc_datasets, "load_dataset", lambda path, **kwargs: dataset_dict)


def test_load_hub_dataset_renames_columns(monkeypatch):
    features = Features(
        {
            "img": Image(),
            "fine_label": ClassLabel(names=["apple", "bear"]),
            "coarse_label": ClassLabel(names=["fruit", "mammal", "other"]),
        }
    )
    split = Dataset.from_dict({"img": [None, None], "fine_label": [1, 0], "coarse_label": [1, 0]}, features=features)
    hub_like(monkeypatch, DatasetDict({"train": split, "test": split}))
    dataset = load_hub_dataset("uoft-cs/cifar100")
    assert dataset["train"].column_names == ["image", "label"]
    assert dataset["test"].features["label"].names == ["apple", "bear"]
    assert list(dataset["train"]["label"]) == [1, 0]


def test_load_hub_dataset_encodes_string_labels_consistently(monkeypatch):
    features = Features({"image": Image(), "labels": Value("string")})
    train = Dataset.from_dict({"image": [None, None], "labels": ["wren", "crow"]}, features=features)
    test = Dataset.from_dict({"image": [None], "labels": ["owl"]}, features=features)
    hub_like(monkeypatch, DatasetDict({"train": train, "test": test}))
    dataset = load_hub_dataset("some/birds")
    assert dataset["test"].features["label"].names == ["crow", "owl", "wren"]
    assert list(dataset["train"]["label"]) == [2, 0] and list(dataset["test"]["label"]) == [1]


def test_load_hub_dataset_ambiguous_columns(monkeypatch):
    features = Features({"photo_a": Image(), "photo_b": Image(), "label": ClassLabel(names=["a"])})
    split = Dataset.from_dict({"photo_a": [None], "photo_b": [None], "label": [0]}, features=features)
    hub_like(monkeypatch, DatasetDict({"train": split}))
    with pytest.raises(ValueError, match="pass image_column="):
        load_hub_dataset("some/ambiguous")
    assert load_hub_dataset("some/ambiguous", image_column="photo_b")["train"].column_names == ["image", "label"]


def test_load_hub_dataset_names_classes_in_nfc_and_merges_the_two_forms_of_a_name(tmp_path, datasets_cache):
    nfc, nfd = unicodedata.normalize("NFC", "café crème"), unicodedata.normalize("NFD", "café crème")
    make_image_folders(tmp_path / "birds", splits=("train",), class_names=(nfd, "thé"), images_per_class=2)
    make_image_folders(tmp_path / "birds", splits=("test",), class_names=(nfc, "thé"), images_per_class=1)

    # The imagefolder builder names the classes after the folders of every split: 'café crème' twice, 'thé'.
    dataset = load_hub_dataset(str(tmp_path / "birds"), cache_dir=str(datasets_cache))

    assert dataset["train"].features["label"].names == dataset["test"].features["label"].names == [nfc, "thé"]
    assert sorted(dataset["train"]["label"]) == [0, 0, 1, 1] and sorted(dataset["test"]["label"]) == [0, 1]


def test_load_hub_dataset_names_string_labels_in_nfc(monkeypatch):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    features = Features({"image": Image(), "label": Value("string")})
    train = Dataset.from_dict({"image": [None, None], "label": [nfd, "thé"]}, features=features)
    test = Dataset.from_dict({"image": [None], "label": [nfc]}, features=features)
    hub_like(monkeypatch, DatasetDict({"train": train, "test": test}))
    dataset = load_hub_dataset("some/drinks")
    assert dataset["test"].features["label"].names == [nfc, "thé"]
    assert list(dataset["train"]["label"]) == [0, 1] and list(dataset["test"]["label"]) == [0]


FOLDER_OF_DATA_FILES = (
    "a folder of data files (such as the data/<split>-*.parquet shards Dataset.push_to_hub writes, or "
    "<split>/<class name>/<image> folders)"
)


def test_load_hub_dataset_says_why_a_dataset_is_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fgvc_datasets.datasets_config, "HF_HUB_OFFLINE", True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a dataset")
    expected = {
        str(tmp_path / "nowhere"): f"{str(tmp_path / 'nowhere')!r}: no such folder: check the path, or give "
        f"{FOLDER_OF_DATA_FILES}.",
        "someone/birds": "'someone/birds': no such folder, and no Hub dataset of that id in the local cache (the Hub "
        f"is off: HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1): give {FOLDER_OF_DATA_FILES}, or unset HF_DATASETS_OFFLINE "
        "and HF_HUB_OFFLINE to download it.",
        str(tmp_path / "notes.txt"): f"{str(tmp_path / 'notes.txt')!r} is a file, not a dataset folder: give "
        f"{FOLDER_OF_DATA_FILES}.",
        str(tmp_path / "empty"): f"{str(tmp_path / 'empty')!r} is a folder without data files that "
        f"datasets.load_dataset reads (The directory at {tmp_path / 'empty'} doesn't contain any data files): give "
        f"{FOLDER_OF_DATA_FILES}.",
    }
    for path, message in expected.items():
        with pytest.raises(FileNotFoundError) as error:
            load_hub_dataset(path)
        assert str(error.value) == message


def test_split_validation_leaves_unlabeled_images_in_train():
    features = Features({"label": ClassLabel(names=["a", "b"])})
    dataset = Dataset.from_dict({"label": [0, 0, 0, 1, 1, 1, -1]}, features=features)
    train, validation = split_validation(dataset, percentage=34, seed=0)
    assert sorted(validation["label"]) == [0, 1] and sorted(train["label"]) == [-1, 0, 0, 1, 1]


def test_load_hub_dataset_never_reads_a_local_folder_from_a_stale_cache(tmp_path, datasets_cache):
    """datasets keys the cache of a folder with README `configs` by its name: a namesake or new export must miss it."""
    first = make_hub_parquet_dataset(tmp_path / "one" / "birds", images_per_class={"train": 1}, unlabeled_splits=())
    second = make_hub_parquet_dataset(tmp_path / "two" / "birds", images_per_class={"train": 2}, unlabeled_splits=())
    assert load_hub_dataset(str(first), cache_dir=str(datasets_cache))["train"].num_rows == 3
    assert load_hub_dataset(str(second), cache_dir=str(datasets_cache))["train"].num_rows == 6
    make_hub_parquet_dataset(first, images_per_class={"train": 1}, unlabeled_splits=("train",))  # exported again
    assert list(load_hub_dataset(str(first), cache_dir=str(datasets_cache))["train"]["label"]) == [-1, -1, -1]


def test_image_folders_reaching_the_training_images_by_another_path_are_refused(tmp_path):
    """A test or validation folder that is the training folder under another name: a link, a '..' path, itself."""
    make_image_folders(tmp_path, splits=("train", "validation"))
    (tmp_path / "trainlink").symlink_to(tmp_path / "train", target_is_directory=True)
    first = str(tmp_path / "train" / "Acadian Flycatcher" / "Acadian Flycatcher_0.jpg")
    for given in (tmp_path / "trainlink", tmp_path / "validation" / ".." / "train", tmp_path / "train"):
        for argument in ("validation_dir", "test_dir"):
            with pytest.raises(ValueError) as error:
                load_image_folders(tmp_path / "train", **{argument: given})
            split = argument.removesuffix("_dir")
            other = str(given / "Acadian Flycatcher" / "Acadian Flycatcher_0.jpg")
            example = " twice" if other == first else f" is also {other!r}"
            assert str(error.value) == (
                f"the image folders train_dir={tmp_path / 'train'}, {argument}={given} lists 9 images more than once "
                f"(compared as files, with links and '..' resolved): 9 in the train and {split} splits, e.g. "
                f"{first!r}{example}. Give each split its own images."
            )


def test_an_image_linked_twice_within_one_split_is_kept_with_a_warning(tmp_path, caplog):
    make_image_folders(tmp_path, splits=("train",))
    first = tmp_path / "train" / "Acadian Flycatcher" / "Acadian Flycatcher_0.jpg"
    (tmp_path / "train" / "Barn Swallow" / "linked.jpg").symlink_to(first)
    with caplog.at_level(logging.WARNING):
        dataset = load_image_folders(tmp_path / "train")
    assert dataset["train"].num_rows == 10
    assert (
        f"the image folders train_dir={tmp_path / 'train'} lists 1 image more than once (compared as files, with "
        f"links and '..' resolved): 1 in the train split, e.g. {str(first)!r} is also "
        f"{str(tmp_path / 'train' / 'Barn Swallow' / 'linked.jpg')!r}: each listing is used." in caplog.messages
    )


def test_cub200_image_listed_in_train_and_in_test_is_refused(cub_dir):
    """The archive readers go through the same guard: one image listed under two ids, train and test."""
    train_image = "001.Black_footed_Albatross/Black_footed_Albatross_0001.jpg"
    with (cub_dir / "images.txt").open("a") as file:
        file.write(f"99 001.Black_footed_Albatross/../{train_image}\n")
    with (cub_dir / "image_class_labels.txt").open("a") as file:
        file.write("99 1\n")
    with (cub_dir / "train_test_split.txt").open("a") as file:
        file.write("99 0\n")
    with pytest.raises(ValueError) as error:
        load_archive("cub200", cub_dir)
    assert str(error.value) == (
        f"CUB-200-2011 at {cub_dir} lists 1 image more than once (compared as files, with links and '..' resolved): "
        f"1 in the train and test splits, e.g. {str(cub_dir / 'images' / train_image)!r} is also "
        f"{str(cub_dir / 'images' / '001.Black_footed_Albatross' / '..' / train_image)!r}. Give each split its own "
        "images."
    )


def test_load_hub_dataset_refuses_a_shard_stored_with_other_class_label_names(tmp_path, datasets_cache):
    """datasets reads every shard with the first one's ClassLabel and keeps the numbers: red test images as 'bleu'."""
    root = make_hub_parquet_dataset(
        tmp_path / "colours",
        class_names=("rouge", "vert", "bleu"),
        images_per_class={"train": 1, "test": 1},
        unlabeled_splits=(),
        split_class_names={"test": ("bleu", "vert", "rouge")},
    )
    with pytest.raises(ValueError) as error:
        load_hub_dataset(str(root), cache_dir=str(datasets_cache))
    assert str(error.value) == (
        f"The data file {root / 'data' / 'test-00000-of-00001.parquet'} (test split of {str(root)!r}) stores its "
        "'label' ClassLabel with the names ['bleu', 'vert', 'rouge'], but datasets.load_dataset reads every file of "
        "the folder with the names ['rouge', 'vert', 'bleu'] and keeps the label numbers, so that its labels would "
        "mean other classes: encode every split's labels with one ClassLabel (e.g. class_encode_column on the whole "
        "dataset before splitting it, or Dataset.align_labels_with_mapping on each split)."
    )


def test_load_hub_dataset_refuses_an_arrow_split_stored_with_other_class_label_names(tmp_path, datasets_cache):
    """The same for the arrow files `DatasetDict.save_to_disk` writes, which datasets.load_dataset also reads."""
    features = {names: Features({"label": ClassLabel(names=list(names))}) for names in (("a", "b"), ("b", "a"))}
    DatasetDict(
        {
            "train": Dataset.from_dict({"label": [0, 1]}, features=features["a", "b"]),
            "test": Dataset.from_dict({"label": [0, 1]}, features=features["b", "a"]),
        }
    ).save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"^The data file .*test/data-00000-of-00001\.arrow \(test split of .*\) "):
        load_hub_dataset(str(tmp_path / "saved"), cache_dir=str(datasets_cache))


def test_load_hub_dataset_refuses_a_data_file_linked_into_two_splits(tmp_path, datasets_cache):
    root = make_hub_parquet_dataset(tmp_path / "birds", images_per_class={"train": 1}, unlabeled_splits=())
    (root / "data" / "test-00000-of-00001.parquet").symlink_to(root / "data" / "train-00000-of-00001.parquet")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
        "  - split: test\n    path: data/test-*\n---\n"
    )
    with pytest.raises(ValueError) as error:
        load_hub_dataset(str(root), cache_dir=str(datasets_cache))
    assert str(error.value) == (
        f"the dataset {str(root)!r} read by datasets.load_dataset lists 1 data file more than once (compared as "
        f"files, with links and '..' resolved): 1 in the train and test splits, e.g. "
        f"{str(root / 'data' / 'train-00000-of-00001.parquet')!r} is also "
        f"{str(root / 'data' / 'test-00000-of-00001.parquet')!r}. Give each split its own data files."
    )
