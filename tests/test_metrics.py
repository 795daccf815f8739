"""Tests of `modeling_pim.training.metrics` and the bundled `evaluate` accuracy module (offline)."""

import time

import evaluate
import numpy as np
import pytest
import torch

from modeling_pim.training import metrics
from modeling_pim.training.metrics import (
    BUNDLED_ACCURACY_PATH,
    classification_metrics,
    embedding_retrieval_metrics,
    load_accuracy_metric,
    mean_per_class_accuracy,
    top_k_accuracy,
)


# 4 samples, 4 classes. Ranks of the true class: sample 0 → 1st, 1 → 2nd, 2 → 3rd, 3 → 4th.
LOGITS = np.array(
    [
        [5.0, 1.0, 0.0, -1.0],
        [2.0, 1.0, 3.0, 0.0],
        [0.2, 0.5, 0.1, 0.9],
        [4.0, 3.0, 2.0, 1.0],
    ]
)
LABELS = np.array([0, 0, 0, 3])


@pytest.mark.parametrize(("k", "expected"), [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (10, 1.0)])
def test_top_k_accuracy(k, expected):
    assert top_k_accuracy(LOGITS, LABELS, k) == expected


def test_top_k_accuracy_breaks_ties_like_argmax():
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    labels = np.array([1, 2])
    assert top_k_accuracy(logits, labels, 1) == float((logits.argmax(-1) == labels).mean()) == 0.0
    assert top_k_accuracy(logits, labels, 2) == 1.0


def test_mean_per_class_accuracy():
    labels = np.array([0, 0, 0, 1, 2, 2])
    predictions = np.array([0, 0, 1, 1, 0, 2])
    # Recalls 2/3, 1/1, 1/2; class 3 (absent from labels) does not count.
    assert mean_per_class_accuracy(predictions, labels, num_classes=4) == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert mean_per_class_accuracy(predictions, labels) == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: top_k_accuracy(LOGITS, LABELS[:3], 1), r"got \(4, 4\) and \(3,\)"),
        (lambda: top_k_accuracy(LOGITS, np.array([0, 0, 0, 4]), 1), r"labels must lie in \[0, 4\)"),
        (lambda: top_k_accuracy(np.full((4, 4), np.nan), LABELS, 1), "contain NaN"),
        (lambda: top_k_accuracy(LOGITS, LABELS, 0), "k=0 must be at least 1"),
        (lambda: top_k_accuracy(LOGITS, LABELS.astype(float), 1), "integer class indices"),
        (lambda: mean_per_class_accuracy(np.array([0, 5]), np.array([0, 1]), 3), r"predictions must lie in \[0, 3\)"),
        (lambda: mean_per_class_accuracy(np.array([], dtype=int), np.array([], dtype=int)), "num_samples > 0"),
    ],
)
def test_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bundled_module_matches_plain_computation():
    accuracy = evaluate.load(str(BUNDLED_ACCURACY_PATH), keep_in_memory=True)
    references = [0, 1, 2, 0, 1, 2]
    predictions = [0, 1, 1, 2, 1, 0]
    assert accuracy.compute(predictions=predictions, references=references) == {"accuracy": 0.5}
    assert accuracy.compute(predictions=predictions, references=references, normalize=False) == {"accuracy": 3.0}
    weights = [0.5, 2, 0, 1, 1, 0.5]
    assert accuracy.compute(predictions=predictions, references=references, sample_weight=weights) == {
        "accuracy": pytest.approx(3.5 / 5)
    }
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(500, 7)), rng.integers(0, 7, 500)
    computed = accuracy.compute(predictions=logits.argmax(-1), references=labels)["accuracy"]
    assert computed == top_k_accuracy(logits, labels, 1)


def test_bundled_module_multilabel_configuration():
    accuracy = evaluate.load(str(BUNDLED_ACCURACY_PATH), "multilabel", keep_in_memory=True)
    result = accuracy.compute(predictions=[[0, 1], [1, 1], [0, 0]], references=[[0, 1], [1, 0], [0, 0]])
    assert result == {"accuracy": pytest.approx(2 / 3)}


def test_load_accuracy_metric_offline_uses_the_bundled_module_without_the_hub(monkeypatch):
    requested = []
    real_load = evaluate.load

    def spy(path, *args, **kwargs):
        requested.append(path)
        if path == "accuracy":
            raise AssertionError("the Hub must not be asked for 'accuracy' offline")
        return real_load(path, *args, **kwargs)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate, "load", spy)
    start = time.perf_counter()
    metric = load_accuracy_metric(keep_in_memory=True)
    assert time.perf_counter() - start < 5
    assert requested == [str(BUNDLED_ACCURACY_PATH)]
    assert metric.compute(predictions=[1, 0], references=[1, 1]) == {"accuracy": 0.5}


def test_load_accuracy_metric_falls_back_when_the_hub_fails(monkeypatch):
    for name in metrics.OFFLINE_ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(metrics.hub_constants, "HF_HUB_OFFLINE", False)
    real_load = evaluate.load

    def unreachable_hub(path, *args, **kwargs):
        if path == "accuracy":
            raise ConnectionError("huggingface.co unreachable")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(evaluate, "load", unreachable_hub)
    metric = load_accuracy_metric(keep_in_memory=True)
    assert metric.compute(predictions=[2, 2], references=[2, 2]) == {"accuracy": 1.0}


def test_classification_metrics():
    result = classification_metrics(LOGITS, LABELS, top_k=2)
    # argmax predictions [0, 2, 3, 0]: only sample 0 is right; per class: class 0 → 1/3, class 3 → 0/1.
    assert result == {"accuracy": 0.25, "top2_accuracy": 0.5, "mean_per_class_accuracy": pytest.approx(1 / 6)}


def test_classification_metrics_clamps_k_and_keeps_the_requested_name():
    result = classification_metrics(LOGITS[:, :3], np.array([0, 0, 1, 2]))
    assert set(result) == {"accuracy", "top5_accuracy", "mean_per_class_accuracy"}
    assert result["top5_accuracy"] == 1.0


def test_embedding_retrieval_metrics():
    # Class 0: (1, 0) and (3, 0), same direction. Class 1: (0, 2) and (2, 1), whose nearest neighbour is class 0's.
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [2.0, 1.0]])
    result = embedding_retrieval_metrics(embeddings, torch.tensor([0, 0, 1, 1]))
    # Same-class pairs: cos 1 (twice) and 1/sqrt(5) (twice); other-class pairs: 0 (4 times), 2/sqrt(5) (4 times).
    assert result == {
        "same_class_cosine": pytest.approx((1 + 5**-0.5) / 2),
        "other_class_cosine": pytest.approx(5**-0.5),
        "recall_at_1": 0.75,
    }


@pytest.mark.parametrize(
    ("embeddings", "labels"),
    [(torch.ones(3), torch.zeros(3)), (torch.ones(3, 2), torch.zeros(2)), (torch.ones(1, 2), torch.zeros(1))],
)
def test_embedding_retrieval_metrics_refuses_wrong_shapes(embeddings, labels):
    with pytest.raises(ValueError, match="Expected embeddings of shape"):
        embedding_retrieval_metrics(embeddings, labels)
