"""`pim-infer`: predictions on flat and class folders, final-head accuracy, unreadable files and input errors."""

import csv
import json
import logging
import shutil
import unicodedata

import numpy as np
import pytest
import torch
from huggingface_hub import is_offline_mode
from PIL import Image

from tiny_models import tiny_pim_config

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.data.image_files import load_image
from modeling_pim.tools.pim_infer import main
from modeling_pim.tools.infer import (
    UserInputError,
    evaluation_report,
    font_with_glyphs,
    match_class_folders,
    plot_confusion_matrix,
    resolve_device,
)


LABELS = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
FOLDERS = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = tiny_pim_config(LABELS)
    model = PimForImageClassification(config)
    processor = PimImageProcessor.for_image_size(64)
    # Make the untrained model's predictions vary between the test images: BatchNorm statistics of these images,
    # then a final bias that centres their logits.
    calibration = tmp_path_factory.mktemp("calibration")
    for i, folder in enumerate(FOLDERS):
        write_images(calibration / folder, 3, seed=i)
    pixel_values = torch.cat(
        [processor(images=load_image(path), return_tensors="pt")["pixel_values"] for path in calibration.glob("*/*")]
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # a cumulative average over the calibration batch
                module.reset_running_stats()
        model.train()(pixel_values=pixel_values)
        model.eval()
        model.classifier.bias -= model(pixel_values=pixel_values).logits.mean(0)
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def write_images(folder, count, seed):
    """Writes `count` random colour-block images of varied sizes and modes (RGB JPEG, RGBA PNG, grayscale JPEG)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)  # coarse colour blocks survive the resizing
        image = Image.fromarray(blocks).resize((80, 48 + 16 * i), Image.Resampling.NEAREST)
        if i % 3 == 1:
            image.convert("RGBA").save(folder / f"image{i}.png")
        elif i % 3 == 2:
            image.convert("L").save(folder / f"image{i}.jpg")
        else:
            image.save(folder / f"image{i}.jpg")


def write_unreadable_files(folder):
    (folder / "not_an_image.jpg").write_bytes(b"this is text, not a JPEG")
    good = folder / "image0.jpg"
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])


@pytest.fixture
def class_folders(tmp_path):
    root = tmp_path / "images"
    for i, folder in enumerate(FOLDERS):
        write_images(root / folder, 3, seed=i)
    write_unreadable_files(root / FOLDERS[0])
    (root / "README.txt").write_text("not an image")
    return root


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def run(*args):
    return main([str(arg) for arg in args] + ["--num_workers", "0", "--device", "cpu"])


def test_flat_folder_of_unlabeled_images(model_dir, tmp_path, caplog):
    images = tmp_path / "flat"
    write_images(images, 3, seed=5)
    write_unreadable_files(images)
    model_without_processor = tmp_path / "model"
    shutil.copytree(model_dir, model_without_processor, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    output = tmp_path / "out"

    with caplog.at_level(logging.WARNING, logger="modeling_pim.tools.infer"):
        assert run(model_without_processor, images, "--output_dir", output, "--top_k", "2") == 0

    assert "no preprocessor_config.json" in caplog.text
    rows = read_csv(output / "predictions.csv")
    assert list(rows[0]) == ["path", "top1_label", "top1_probability", "top2_label", "top2_probability"]
    assert sorted(row["path"] for row in rows) == ["image0.jpg", "image1.png", "image2.jpg"]
    for row in rows:
        assert row["top1_label"] in LABELS
        assert 1 >= float(row["top1_probability"]) >= float(row["top2_probability"]) >= 0
    results = json.loads((output / "infer_results.json").read_text())
    assert results["num_predicted"] == 3
    assert sorted(entry["path"] for entry in results["skipped_files"]) == ["not_an_image.jpg", "truncated.jpg"]
    assert "accuracy" not in results
    assert not (output / "confusion_matrix.png").exists()


def test_class_folders_accuracy_is_the_final_head_on_the_model_logits(model_dir, class_folders, tmp_path, capsys):
    output = tmp_path / "out"

    assert run(model_dir, class_folders, "--output_dir", output, "--batch_size", "4") == 0

    model = PimForImageClassification.from_pretrained(model_dir).eval()
    processor = PimImageProcessor.from_pretrained(model_dir)
    probability_of_path, labels = {}, []
    for class_id, folder in enumerate(FOLDERS):
        for path in sorted((class_folders / folder).glob("image*")):
            pixel_values = processor(images=load_image(path), return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                probabilities = model(pixel_values=pixel_values).logits.softmax(-1)[0].numpy()
            probability_of_path[f"{folder}/{path.name}"] = probabilities
            labels.append(class_id)
    probabilities, labels = np.stack(list(probability_of_path.values())), np.array(labels)
    predictions = probabilities.argmax(1)
    per_class = [(predictions[labels == c] == c).mean() for c in range(len(LABELS))]

    results = json.loads((output / "infer_results.json").read_text())
    assert results["count"] == results["num_predicted"] == 9
    assert results["accuracy"] == pytest.approx((predictions == labels).mean())
    assert results["mean_per_class_accuracy"] == pytest.approx(np.mean(per_class))
    assert results["top5_accuracy"] == 1.0  # 3 classes: the top 5 always hold the truth
    assert len(set(predictions)) > 1, "the test model should not predict a single class"
    for class_id, label in enumerate(LABELS):
        assert results["per_class_accuracy"][label] == {"accuracy": pytest.approx(per_class[class_id]), "count": 3}
    assert sorted(entry["path"] for entry in results["skipped_files"]) == [
        f"{FOLDERS[0]}/not_an_image.jpg",
        f"{FOLDERS[0]}/truncated.jpg",
    ]
    assert results["num_skipped"] == 2 and results["ignored_files"] == ["README.txt"]
    for pair in results["most_confused_pairs"]:
        true_id, predicted_id = LABELS.index(pair["true_label"]), LABELS.index(pair["predicted_label"])
        assert pair["count"] == np.sum((labels == true_id) & (predictions == predicted_id)) > 0

    rows = read_csv(output / "predictions.csv")
    assert list(rows[0])[:4] == ["path", "label", "top1_label", "top1_probability"]
    assert {row["label"] for row in rows} == set(LABELS)
    for row in rows:
        expected = probability_of_path[row["path"]]
        assert row["top1_label"] == LABELS[expected.argmax()]
        assert float(row["top1_probability"]) == pytest.approx(expected.max(), abs=1e-5)
    with Image.open(output / "confusion_matrix.png") as image:
        image.verify()
    assert "Final head: top-1" in capsys.readouterr().out


def test_loose_images_next_to_class_folders_are_predicted_without_a_label(model_dir, class_folders, tmp_path, capsys):
    write_images(class_folders, 2, seed=7)  # image0.jpg and image1.png directly in the root
    output = tmp_path / "out"

    assert run(model_dir, class_folders, "--output_dir", output) == 0

    results = json.loads((output / "infer_results.json").read_text())
    assert results["num_images"] == 13 and results["num_predicted"] == 11 and results["num_unlabeled"] == 2
    assert results["count"] == 9  # every labeled image, and only those, in the accuracy
    assert {name: entry["count"] for name, entry in results["per_class_accuracy"].items()} == dict.fromkeys(LABELS, 3)
    label_of_path = {row["path"]: row["label"] for row in read_csv(output / "predictions.csv")}
    assert label_of_path["image0.jpg"] == label_of_path["image1.png"] == ""
    assert label_of_path[f"{FOLDERS[1]}/image2.jpg"] == LABELS[1]
    assert "2 images outside the class folders were predicted without a label" in capsys.readouterr().out


def test_evaluation_report_by_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.5, 2.0, 1.0], [3.0, 1.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 1, 1, 2])

    report = evaluation_report(logits, labels, dict(enumerate("abc")))

    assert report["accuracy"] == 0.5 and report["count"] == 4
    assert report["mean_per_class_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert report["per_class_accuracy"]["b"] == {"accuracy": 0.5, "count": 2}
    assert [(pair["true_label"], pair["predicted_label"]) for pair in report["most_confused_pairs"]] == [
        ("b", "c"),
        ("c", "a"),
    ]
    assert report["confusion_matrix"].tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]


def test_class_folders_are_matched_by_exact_or_normalised_name():
    label2id = {label: i for i, label in enumerate(LABELS)}

    assert match_class_folders(["Laysan Albatross", "003.Sooty_Albatross"], label2id) == {
        "Laysan Albatross": 1,
        "003.Sooty_Albatross": 2,
    }


def test_class_folders_are_matched_in_unicode_nfc_as_training_matches_them():
    nfc, nfd = unicodedata.normalize("NFC", "Café Albatross"), unicodedata.normalize("NFD", "Café Albatross")
    label2id = {"Laysan Albatross": 0, nfc: 1}

    cub_style = unicodedata.normalize("NFD", "002.Café_Albatross")
    assert match_class_folders([nfd, cub_style], label2id) == {nfd: 1, cub_style: 1}
    assert match_class_folders(["Laysan Albatross"], {"Laysan Albatross": 0, nfd: 1}) == {"Laysan Albatross": 0}
    assert match_class_folders([nfc], {nfd: 3}) == {nfc: 3}  # a model whose names were stored in NFD


def test_a_rerun_removes_the_previous_runs_outputs_only(model_dir, class_folders, tmp_path, capsys):
    """An unlabeled run into the folder of a labeled one leaves no stale confusion matrix; other files stay."""
    output = tmp_path / "out"
    assert run(model_dir, class_folders, "--output_dir", output) == 0
    (output / "confusion_matrix_classes.csv").write_text("class_id,name\n")  # as written when no font has the names
    (output / "notes.txt").write_text("mine")
    capsys.readouterr()

    assert run(model_dir, class_folders, "--output_dir", output, "--ignore_labels") == 0

    assert (
        f"Removed the previous run's predictions.csv, infer_results.json, confusion_matrix.png, "
        f"confusion_matrix_classes.csv from {output}.\n"
    ) in capsys.readouterr().out
    assert sorted(path.name for path in output.iterdir()) == ["infer_results.json", "notes.txt", "predictions.csv"]
    assert "accuracy" not in json.loads((output / "infer_results.json").read_text())


def test_unknown_class_folder_is_an_error_naming_it(model_dir, class_folders, tmp_path, capsys):
    write_images(class_folders / "004.Rhinoceros_Auklet", 1, seed=9)
    write_images(class_folders / "Sooty Albatros", 1, seed=9)

    assert run(model_dir, class_folders, "--output_dir", tmp_path / "out") == 2

    error = capsys.readouterr().err
    assert "Traceback" not in error and error.count(": error: ") == 1
    assert error.splitlines()[-1] == (
        "pim-infer: error: 2 class folders match no class of the model: '004.Rhinoceros_Auklet'; 'Sooty Albatros' "
        "(closest classes: 'Sooty Albatross', 'Laysan Albatross', 'Black footed Albatross'). The model knows 3 "
        "classes (`id2label` in its config.json): rename the folders to those names, or pass --ignore_labels to "
        "predict without computing accuracy."
    )
    assert run(model_dir, class_folders, "--output_dir", tmp_path / "out", "--ignore_labels") == 0
    assert "accuracy" not in json.loads((tmp_path / "out" / "infer_results.json").read_text())


@pytest.mark.parametrize(
    "model, expected",
    [
        ("{tmp}/no_such_model", "does not exist"),
        pytest.param(
            "pim-tests/not-a-cached-model",
            "HF_HUB_OFFLINE",
            marks=pytest.mark.skipif(not is_offline_mode(), reason="needs HF_HUB_OFFLINE=1"),
        ),
    ],
    ids=["missing folder", "offline hub id"],
)
def test_bad_model_is_a_clear_error(model, expected, class_folders, tmp_path, capsys):
    model = model.format(tmp=tmp_path)

    assert run(model, class_folders, "--output_dir", tmp_path / "out") == 2

    error = capsys.readouterr().err
    assert model in error and expected in error and "Traceback" not in error


def test_bad_image_folders_are_clear_errors(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "fake.png").write_bytes(b"not a png")

    assert run(model_dir, tmp_path / "missing", "--output_dir", tmp_path / "out") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run(model_dir, empty, "--output_dir", tmp_path / "out") == 2
    assert "contains no image file" in capsys.readouterr().err
    assert run(model_dir, unreadable, "--output_dir", tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert "fake.png" in captured.out and "none of the 1 image files could be read" in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(UserInputError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_broken_model_folder_is_a_clear_error(model_dir, class_folders, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "config.json").write_text("{not json")

    assert run(broken, class_folders, "--output_dir", tmp_path / "out") == 2

    error = capsys.readouterr().err
    assert str(broken) in error and "Traceback" not in error


def test_confusion_matrix_names_in_a_script_no_installed_font_draws_get_an_id_table(tmp_path):
    names = {0: "Black footed Albatross", 1: "麻雀", 2: "カワセミ"}
    matrix = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 4]])

    table = plot_confusion_matrix(matrix, names, tmp_path / "confusion_matrix.png", "title")

    with Image.open(tmp_path / "confusion_matrix.png") as image:
        image.verify()
    font = font_with_glyphs("".join(names.values()))
    if font is None:  # no CJK font on this machine: class ids on the axes and the table beside the PNG
        assert table == tmp_path / "confusion_matrix_classes.csv"
        assert table.read_text(encoding="utf-8").splitlines() == [
            "class_id,name",
            "0,Black footed Albatross",
            "1,麻雀",
            "2,カワセミ",
        ]
    else:
        assert table is None and not (tmp_path / "confusion_matrix_classes.csv").exists()
    assert font_with_glyphs("Black footed Albatross") is not None  # Latin: matplotlib's default font has it
    assert plot_confusion_matrix(matrix, {0: "a", 1: "b", 2: "c"}, tmp_path / "latin.png", "title") is None
