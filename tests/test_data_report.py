"""The data report: counts per split, and the refusals of labels that would give wrong numbers (in memory, fast)."""

import logging

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features

from modeling_pim.data.fgvc_datasets import SkippedImage
from modeling_pim.data.report import build_data_report, check_data_report, is_unlabeled, log_data_report
from modeling_pim.utils.cli import UserInputError


NAMES = ["crow", "owl", "wren"]


def splits(**labels: list[int]) -> DatasetDict:
    features = Features({"label": ClassLabel(names=NAMES)})
    return DatasetDict({split: Dataset.from_dict({"label": value}, features=features) for split, value in labels.items()})


def test_counts_smallest_and_largest_class_and_absent_classes():
    skipped = [SkippedImage("/d/owl/x.jpg", "train", "owl", "OSError: truncated")]
    report = build_data_report(splits(train=[0, 0, 1, 2, 2, 2], test=[2, 2, 0]), "the birds", skipped)
    assert report["num_classes"] == 3 and report["class_names"] == NAMES
    assert report["splits"]["train"]["smallest_class"] == {"name": "owl", "num_images": 1}
    assert report["splits"]["train"]["largest_class"] == {"name": "wren", "num_images": 3}
    assert report["splits"]["test"] == {
        "num_images": 3,
        "num_unlabeled": 0,
        "num_classes": 2,
        "smallest_class": {"name": "crow", "num_images": 1},
        "largest_class": {"name": "wren", "num_images": 2},
        "absent_classes": ["owl"],
    }
    assert report["skipped_images"] == [
        {"path": "/d/owl/x.jpg", "split": "train", "label": "owl", "reason": "OSError: truncated"}
    ]
    check_data_report(report)  # a test split covering some classes is allowed


def test_an_unlabeled_test_split_is_allowed_and_logged_as_predictions_only(caplog):
    report = build_data_report(splits(train=[0, 1, 2], test=[-1, -1]), "the birds")
    check_data_report(report)
    assert is_unlabeled(report, "test") and not is_unlabeled(report, "train")
    with caplog.at_level(logging.INFO):
        log_data_report(report, logging.getLogger("report"))
    assert [record.getMessage() for record in caplog.records] == [
        "Data: the birds; 3 classes.",
        "train: 3 images of 3 classes (smallest: 'crow', 1 image; largest: 'crow', 1 image).",
        "test: 2 images without labels (-1): predictions only.",
    ]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {"train": [0, 1, -1, 2]},
            "the birds: the train split has 1 of its 4 images without a label (-1), and training needs labeled "
            "images: remove them from the train split.",
        ),
        (
            {"train": [0, 1, 2], "validation": [-1, 0]},
            "the birds: the validation split has 1 of its 2 images without a label (-1), and model selection needs "
            "labeled images: remove them from the validation split.",
        ),
        (
            {"train": [0, 1, 2], "test": [-1, 0, -1]},
            "the birds: the test split has 2 of its 3 images without a label (-1): an accuracy over the labeled ones "
            "only would not be the test accuracy. Label them all, or none (then the run writes predictions only).",
        ),
        (
            {"train": [0, 1, 1]},
            "the birds: no readable training image for 1 class ('wren': no training images listed): a class without "
            "training images cannot be learnt, and its test images can never be right. Replace the unreadable files "
            "or remove these classes.",
        ),
    ],
    ids=["unlabeled training images", "unlabeled validation images", "partly labeled test", "class without images"],
)
def test_labels_that_would_give_wrong_numbers_are_refused(labels, message):
    with pytest.raises(UserInputError) as error:
        check_data_report(build_data_report(splits(**labels), "the birds"))
    assert str(error.value) == message


def test_one_class_named_like_a_split_is_a_class():
    features = Features({"label": ClassLabel(names=["bus", "train", "tram"])})  # as CIFAR-100's "train"
    report = build_data_report(DatasetDict({"train": Dataset.from_dict({"label": [0, 1, 2]}, features=features)}), "x")
    check_data_report(report)
