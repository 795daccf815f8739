"""End-to-end behaviour of train_pim.py on miniature datasets (tiny timm backbone, 32 px, CPU)."""

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from fgvc_trees import (
    CUB_CLASS_NAMES,
    FOLDER_CLASS_NAMES,
    make_cub_tree,
    make_hub_parquet_dataset,
    make_image_folders,
    make_nabirds_tree,
)


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim import PimConfig, PimForImageClassification  # noqa: E402
from modeling_pim.utils.cli import UserInputError, run_command  # noqa: E402


TINY_RUN = [
    "--backbone", "test_resnet",
    "--backbone_pretrained", "false",
    "--image_size", "32",
    "--fpn_size", "16",
    "--num_selects", "8", "4", "2", "1",
    "--tokens_per_graph_node", "3",
    "--per_device_train_batch_size", "4",
    "--per_device_eval_batch_size", "2",
    "--optim", "sgd",
    "--optim_args", "momentum=0.9,nesterov=True",
    "--learning_rate", "0.01",
    "--use_cpu", "true",
    "--report_to", "none",
    "--disable_tqdm", "true",
    "--dataloader_num_workers", "0",
    "--do_train", "true",
    "--do_eval", "true",
    "--seed", "0",
]  # fmt: skip


def run(output_dir: Path, *flags: str) -> dict:
    return train_pim.main([*TINY_RUN, "--output_dir", str(output_dir), *flags])


def test_cub200_run_trains_evaluates_once_on_test_and_saves_a_reloadable_model(tmp_path):
    data_dir = make_cub_tree(tmp_path / "data", num_classes=3, images_per_class=4)
    output_dir = tmp_path / "run"
    results = run(output_dir, "--dataset", "cub200", "--data_dir", str(data_dir), "--max_steps", "2")

    assert results["train"]["train_loss"] > 0
    test_results = json.loads((output_dir / "test_results.json").read_text())
    assert 0 <= test_results["test_accuracy"] <= 1
    assert "test_layer1_accuracy" in test_results and "test_top5_accuracy" in test_results
    model = AutoModelForImageClassification.from_pretrained(output_dir, trust_remote_code=True)
    assert list(model.config.id2label.values()) == [name.replace("_", " ") for name in CUB_CLASS_NAMES[:3]]
    assert (output_dir / "preprocessor_config.json").exists()
    assert (output_dir / "training_recipe.json").exists()
    # The model page's example (push_to_hub.py): a test image (the second half of each class), bytes untouched.
    test_images = {path.read_bytes() for path in (data_dir / "images").glob("*/*_000[34].jpg")}
    assert (output_dir / "test_example.jpg").read_bytes() in test_images


def test_nabirds_run_maps_sparse_class_ids_and_saves_a_reloadable_model(tmp_path):
    data_dir = make_nabirds_tree(tmp_path / "data")
    output_dir = tmp_path / "run"
    results = run(output_dir, "--dataset", "nabirds", "--data_dir", str(data_dir), "--max_steps", "2")
    assert results["test"]["test_num_samples"] > 0
    model = AutoModelForImageClassification.from_pretrained(output_dir, trust_remote_code=True)
    assert model.config.num_labels == 3


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_zero(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=4)
    output_dir = tmp_path / "run"
    run(
        output_dir,
        "--train_dir", str(data_dir / "train"),
        "--max_steps", "12",
        "--warmup_steps", "4",
        "--learning_rate", "0.1",
        "--lr_scheduler_type", "cosine",
        "--logging_steps", "1",
        "--save_strategy", "steps",
        "--save_steps", "12",
        "--do_eval", "false",
    )  # fmt: skip
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]

    def paper_schedule(step: int) -> float:  # the learning rate of optimizer step `step` (0-based)
        if step < 4:
            return 0.1 * step / 4
        return 0.1 * 0.5 * (1 + math.cos(math.pi * (step - 4) / 8))

    assert rates == pytest.approx([paper_schedule(step) for step in range(12)], abs=1e-9)
    scheduler_state = torch.load(output_dir / "checkpoint-12" / "scheduler.pt", weights_only=True)
    final_rates = scheduler_state["_last_lr"]  # one per parameter group (with and without weight decay)
    assert final_rates == pytest.approx([0.0] * len(final_rates), abs=1e-12)  # cosine ends at 0 after the last step
    assert {"loss_layers", "loss_dropped", "loss_combiner"} <= set(history[0])


def resume_from(uninterrupted: Path, checkpoint: str, output_dir: Path, *flags: str) -> None:
    """Runs `flags` again in `output_dir` holding only `uninterrupted`'s `checkpoint` (as if stopped there), and checks
    that the resumed run ends with exactly the uninterrupted run's weights."""
    output_dir.mkdir()
    shutil.copytree(uninterrupted / checkpoint, output_dir / checkpoint)
    run(output_dir, *flags)
    expected = load_file(uninterrupted / "model.safetensors")
    resumed = load_file(output_dir / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)


def test_resuming_after_a_checkpoint_gives_the_same_final_weights(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=4)
    flags = [
        "--train_dir", str(data_dir / "train"),
        "--max_steps", "6",
        "--save_strategy", "steps",
        "--save_steps", "3",
        "--do_eval", "false",
    ]  # fmt: skip
    uninterrupted = tmp_path / "uninterrupted"
    run(uninterrupted, *flags)
    resume_from(uninterrupted, "checkpoint-3", tmp_path / "interrupted", *flags)  # as if stopped after step 3


def test_herbs_temperature_halves_by_epoch_and_resuming_restores_it(tmp_path):
    """12 images, batch 4: 3 steps per epoch; T halves every epoch (64, 32, 16); resumed after epoch 2, it stays 16."""
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=4)
    flags = [
        "--train_dir", str(data_dir / "train"),
        "--use_bottom_up_fpn", "true",
        "--selection_rule", "predicted_class",
        "--lambda_b0", "1.375",
        "--refinement_temperature", "64",
        "--refinement_temperature_halving_epochs", "1",
        "--num_train_epochs", "3",
        "--logging_steps", "1",
        "--save_strategy", "epoch",
        "--do_eval", "false",
    ]  # fmt: skip

    def logged_temperatures(output_dir: Path) -> list[tuple[int, float]]:
        history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
        return [(entry["step"], entry["refinement_temperature"]) for entry in history if "loss" in entry]

    uninterrupted = tmp_path / "uninterrupted"
    run(uninterrupted, *flags)
    assert logged_temperatures(uninterrupted) == [(step, 64.0 / 2 ** ((step - 1) // 3)) for step in range(1, 10)]

    resume_from(uninterrupted, "checkpoint-6", tmp_path / "interrupted", *flags)  # as if stopped after epoch 2
    assert logged_temperatures(tmp_path / "interrupted")[-3:] == [(7, 16.0), (8, 16.0), (9, 16.0)]


def test_validation_split_is_carved_from_train_and_test_is_evaluated_with_the_selected_model(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "test"), images_per_class=4)
    output_dir = tmp_path / "run"
    results = run(
        output_dir,
        "--train_dir", str(data_dir / "train"),
        "--test_dir", str(data_dir / "test"),
        "--validation_split_percentage", "25",
        "--per_device_train_batch_size", "3",  # 9 training images: no batch of 1 for the backbone's BatchNorm
        "--num_train_epochs", "2",
        "--eval_strategy", "epoch",
        "--save_strategy", "epoch",
        "--load_best_model_at_end", "true",
        "--metric_for_best_model", "accuracy",
    )  # fmt: skip
    assert results["eval"]["eval_num_samples"] == 3  # one image of each of the 3 classes
    assert results["test"]["test_num_samples"] == 12


def test_a_validation_split_percentage_below_1_is_taken_as_a_percentage_with_a_warning(tmp_path, caplog):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=4)
    for percentage, warned in (("0.15", True), ("25", False)):
        caplog.clear()
        _, _, data_args, _, _ = train_pim.parse_arguments(
            ["--train_dir", str(data_dir / "train"), "--validation_split_percentage", percentage]
        )
        datasets = train_pim.load_data(data_args, seed=0)
        assert len(datasets["validation"]) == 3  # 0.15 % or 25 % of 12 images: one per class
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert warnings == (["--validation_split_percentage 0.15 is a percentage: 0.15 % of the training images (3 "
                             "images, at least one per class) are held out for validation; for 15 % write 15."]
                            if warned else [])  # fmt: skip


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "validation"), images_per_class=3)
    results = run(
        tmp_path / "run",
        "--train_dir", str(data_dir / "train"),
        "--validation_dir", str(data_dir / "validation"),
        "--max_steps", "2",
        "--bf16", "true",
    )  # fmt: skip
    assert math.isfinite(results["train"]["train_loss"])
    assert results["eval"]["eval_num_samples"] == 9


def test_ddp_with_two_processes_counts_every_evaluation_sample_once(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "validation"), images_per_class=3)
    output_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "train_pim.py"), *TINY_RUN,
        "--train_dir", str(data_dir / "train"),
        "--validation_dir", str(data_dir / "validation"),
        "--max_steps", "2",
        "--output_dir", str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    eval_results = json.loads((output_dir / "eval_results.json").read_text())
    assert eval_results["eval_num_samples"] == 9  # 9 images over 2 processes with batch 2: padding is dropped
    train_state = json.loads((output_dir / "trainer_state.json").read_text())
    assert train_state["global_step"] == 2


@pytest.mark.parametrize("recipe", sorted((REPO / "configuration").glob("*.yaml")), ids=lambda path: path.name)
def test_every_recipe_parses_and_builds_its_model(recipe, tmp_path):
    pim_args, model_args, data_args, training_args, _ = train_pim.parse_arguments(
        [str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    )
    config = PimConfig(num_labels=200, **vars(pim_args))
    with torch.device("meta"):
        model = PimForImageClassification(config)
    assert len(model.pim.backbone.token_counts) == len(config.num_selects)


def test_command_line_flags_override_the_recipe(tmp_path):
    pim_args, _, data_args, training_args, _ = train_pim.parse_arguments(
        [
            str(REPO / "configuration/cub200_swin_large_384.yaml"),
            *("--fpn_size", "64", "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"),
        ]
    )
    assert pim_args.fpn_size == 64 and pim_args.num_selects == [2048, 512, 128, 32]
    assert data_args.dataset == "cub200" and training_args.optim_args == "momentum=0.9,nesterov=True"


def test_a_recipe_with_an_unknown_key_is_refused_by_name(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("backbone: resnet50\nnum_select: [1, 2]\n")
    with pytest.raises(UserInputError) as error:
        train_pim.parse_arguments([str(recipe)])
    expected = f"{recipe}: unknown keys ['num_select']; every key must be a flag of train_pim.py (--help)."
    assert str(error.value) == expected


def user_error(argv: list[str]) -> str:
    """
    The message of the `error:` line that `train_pim.py argv` refuses `argv` with: exit code 2, no traceback, one
    line (after any progress bars).
    """
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert run_command("train_pim.py", train_pim.main, argv) == 2
    assert "Traceback" not in stderr.getvalue()
    *_, last_line = stderr.getvalue().splitlines()
    assert last_line.startswith("train_pim.py: error: ") and stderr.getvalue().count(" error: ") == 1
    return last_line.removeprefix("train_pim.py: error: ")


def test_help_starts_with_the_recipe_usage_and_the_common_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_pim.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: train_pim.py [RECIPE.yaml] [--flag VALUE ...]\n\nTrain PIM")
    assert help_text.index("Common flags:") < help_text.index("--train_dir, --validation_dir, --test_dir DIR")
    assert help_text.index("--eval_strategy no|epoch|steps") < help_text.index("options:")
    assert "--adam_beta1" in help_text[help_text.index("options:") :]


def test_folder_flags_on_the_command_line_select_the_folder_data_whatever_the_recipe_says(tmp_path, caplog):
    recipe = REPO / "configuration/demo_cpu.yaml"
    folders = ["--train_dir", "D/train", "--validation_dir", "D/val", "--test_dir", "D/test"]
    _, _, data_args, _, _ = train_pim.parse_arguments([str(recipe), *folders, "--output_dir", str(tmp_path)])
    assert (data_args.dataset, data_args.train_dir, data_args.test_dir) == ("folders", "D/train", "D/test")
    assert (data_args.synthetic_num_classes, data_args.synthetic_train_per_class) == (8, 400)  # the defaults
    assert (
        "Data: --dataset folders (selected on the command line) instead of the recipe's dataset: synthetic; not used "
        "from the recipe: synthetic_num_classes, synthetic_train_per_class." in caplog.text
    )

    cub_recipe = [str(REPO / "configuration/cub200_resnet50_448.yaml"), "--use_cpu", "true", "--bf16", "false"]
    _, _, data_args, _, _ = train_pim.parse_arguments([*cub_recipe, *folders, "--output_dir", str(tmp_path)])
    assert (data_args.dataset, data_args.data_dir) == ("folders", None)
    assert data_args.validation_split_percentage == 0  # --validation_dir replaces the recipe's hold-out
    _, _, data_args, _, _ = train_pim.parse_arguments([*cub_recipe, "--train_dir", "D/train"])
    assert (data_args.dataset, data_args.validation_split_percentage) == ("folders", 10)


def test_a_data_flag_of_another_dataset_is_refused(tmp_path):
    message = user_error(["--dataset", "cub200", "--data_dir", str(tmp_path), "--train_dir", str(tmp_path)])
    assert message == (
        "--train_dir (from the command line) is a flag of --dataset folders, but this run uses --dataset cub200: "
        "remove --train_dir, or use --dataset folders."
    )
    assert user_error(["--data_dir", str(tmp_path)]) == (
        "--data_dir is the unpacked archive of a --dataset among cub200, nabirds, stanford_cars, fgvc_aircraft, "
        "flowers102, stanford_dogs, inaturalist: add --dataset with its name (class folders: --train_dir, "
        "--validation_dir, --test_dir)."
    )


def test_a_missing_archive_folder_points_at_the_folder_flags(tmp_path):
    recipe = REPO / "configuration/cub200_resnet50_448.yaml"
    message = user_error([str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"])
    assert message == (
        "--data_dir data/CUB_200_2011 is not a directory: give the unpacked cub200 archive with --data_dir, or class "
        "folders with --train_dir, --validation_dir and --test_dir (--dataset folders)."
    )


def test_null_in_a_recipe_means_the_default(tmp_path):
    recipe = tmp_path / "nulls.yaml"
    recipe.write_text("resize_size: null\nvalidation_dir: null\nlearning_rate: null\nbackbone_kwargs: null\n")
    pim_args, _, data_args, training_args, _ = train_pim.parse_arguments([str(recipe), "--train_dir", "D"])
    assert (data_args.resize_size, data_args.validation_dir) == (None, None)
    assert training_args.learning_rate == 5e-5 and pim_args.backbone_kwargs is None


def test_a_recipe_value_of_the_wrong_type_is_refused(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("learning_rate: 5e-4\n")
    with pytest.raises(UserInputError) as error:
        train_pim.parse_arguments([str(recipe)])
    assert str(error.value) == (
        f"{recipe}: `learning_rate: '5e-4'` is not a float (YAML reads 5e-4 as text: write 5.0e-4)."
    )


def parsed_and_checked(*flags: str) -> tuple:
    arguments = train_pim.parse_arguments([*TINY_RUN, "--train_dir", "D", *flags])
    train_pim.check_arguments(*arguments)
    return arguments


def test_label_smoothing_factor_is_routed_into_pims_loss():
    pim_args, _, _, training_args, _ = parsed_and_checked("--label_smoothing_factor", "0.1")
    assert (pim_args.label_smoothing, training_args.label_smoothing_factor) == (0.1, 0.0)
    with pytest.raises(UserInputError, match=r"^--label_smoothing_factor 0.1 and --label_smoothing 0.2 disagree"):
        parsed_and_checked("--label_smoothing_factor", "0.1", "--label_smoothing", "0.2")


def test_train_pim_sets_remove_unused_columns_false_whatever_the_flag():
    _, _, _, training_args, _ = parsed_and_checked("--remove_unused_columns", "true")
    assert training_args.remove_unused_columns is False


def test_trainer_flags_that_drop_the_labels_or_the_accuracy_are_refused():
    with pytest.raises(UserInputError, match=r"^label_names=\['label'\]: PIM's batches hold their class indices"):
        parsed_and_checked("--label_names", "label")
    with pytest.raises(UserInputError, match=r"^prediction_loss_only=True: evaluation would compute the loss only"):
        parsed_and_checked("--prediction_loss_only", "true")


def test_backbone_weights_that_would_not_be_used_are_refused(tmp_path):
    weights = tmp_path / "resnet.safetensors"
    weights.touch()
    with pytest.raises(UserInputError) as error:
        parsed_and_checked("--backbone_weights", str(weights))  # TINY_RUN has --backbone_pretrained false
    assert str(error.value) == (
        f"--backbone_weights {weights} would not be used: --backbone_pretrained is false (random initial weights). "
        "Set --backbone_pretrained true to start from that file, or remove --backbone_weights."
    )


def test_offline_without_the_backbone_weights_names_the_flags_to_use(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    pim_args, model_args, _, _, origins = parsed_and_checked("--backbone_pretrained", "true")
    config = train_pim.build_config(pim_args, model_args, origins)
    with pytest.raises(UserInputError) as error:
        train_pim.build_model(config, model_args, ["a", "b"])
    assert str(error.value) == (
        "the pretrained weights of --backbone test_resnet are not in the local Hugging Face cache and the Hub cannot "
        "be reached: give a local weights file with --backbone_weights FILE, or start from random weights with "
        "--backbone_pretrained false."
    )


def test_evaluation_during_training_without_validation_data_is_refused_before_reading_images(tmp_path):
    message = user_error([*TINY_RUN, "--train_dir", str(tmp_path / "never_read"), "--eval_strategy", "epoch",
                          "--output_dir", str(tmp_path / "run")])  # fmt: skip
    assert message == (
        "--eval_strategy epoch evaluates on validation data during training, but there is none: give "
        "--validation_dir DIR (class folders), or --validation_split_percentage 10 to hold out 10 % of the training "
        "images, or set --eval_strategy no."
    )


def test_a_run_with_label_smoothing_and_drop_last_keeps_pims_loss_parts_and_tests_every_image(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "test"), images_per_class=3)
    output_dir = tmp_path / "run"
    results = run(
        output_dir,
        "--train_dir", str(data_dir / "train"),
        "--test_dir", str(data_dir / "test"),
        "--label_smoothing_factor", "0.1",
        "--dataloader_drop_last", "true",
        "--max_steps", "2",
        "--logging_steps", "1",
        "--do_eval", "false",
    )  # fmt: skip
    assert results["test"]["test_num_samples"] == 9  # 9 test images in batches of 2: the last batch of 1 is kept
    assert json.loads((output_dir / "config.json").read_text())["label_smoothing"] == 0.1
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert {"loss", "loss_layers", "loss_selected", "loss_dropped", "loss_combiner"} <= set(history[0])


def test_the_data_report_lists_splits_classes_and_skipped_files_and_a_partial_test_set_is_evaluated(tmp_path, caplog):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=3)
    make_image_folders(data_dir, splits=("test",), class_names=("Barn Swallow",), images_per_class=2)
    (data_dir / "test" / "Cape May Warbler").mkdir()  # an empty class folder; no Acadian Flycatcher folder at all
    corrupt = data_dir / "train" / FOLDER_CLASS_NAMES[0] / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    output_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="train_pim"):
        results = run(
            output_dir,
            "--train_dir", str(data_dir / "train"),
            "--test_dir", str(data_dir / "test"),
            "--max_steps", "1",
            "--per_device_train_batch_size", "3",
            "--do_eval", "false",
        )  # fmt: skip
    report = json.loads((output_dir / "data_report.json").read_text())
    assert report["source"] == f"the image folders train_dir={data_dir / 'train'}, test_dir={data_dir / 'test'}"
    assert report["class_names"] == list(FOLDER_CLASS_NAMES)
    assert report["splits"]["train"] == {
        "num_images": 9,
        "num_unlabeled": 0,
        "num_classes": 3,
        "smallest_class": {"name": "Acadian Flycatcher", "num_images": 3},
        "largest_class": {"name": "Acadian Flycatcher", "num_images": 3},
        "absent_classes": [],
    }
    assert report["splits"]["test"]["num_images"] == 2
    assert report["splits"]["test"]["absent_classes"] == ["Acadian Flycatcher", "Cape May Warbler"]
    assert [(image["path"], image["split"], image["label"]) for image in report["skipped_images"]] == [
        (str(corrupt), "train", "Acadian Flycatcher")
    ]
    reason = report["skipped_images"][0]["reason"]
    assert reason.startswith("UnidentifiedImageError: cannot identify image file")
    logged = [record.getMessage() for record in caplog.records]
    assert f"skipped {corrupt} (train, class 'Acadian Flycatcher'): {reason}" in logged
    assert (
        "test: 2 images of 1 class (smallest: 'Barn Swallow', 2 images; largest: 'Barn Swallow', 2 images); no images "
        "of 'Acadian Flycatcher', 'Cape May Warbler'." in logged
    )
    assert results["test"]["test_num_samples"] == 2 and 0 <= results["test"]["test_accuracy"] <= 1


def test_a_hub_dataset_in_the_hubs_parquet_format_trains_and_predicts_its_unlabeled_test_split(tmp_path):
    dataset_dir = make_hub_parquet_dataset(tmp_path / "birds")
    output_dir = tmp_path / "run"
    results = run(
        output_dir,
        "--dataset_name", str(dataset_dir),  # selects --dataset hub
        "--max_steps", "2",
        "--per_device_train_batch_size", "3",
    )  # fmt: skip
    assert results["eval"]["eval_num_samples"] == 6
    assert "test_accuracy" not in results["test"]
    report = json.loads((output_dir / "data_report.json").read_text())
    assert report["splits"]["test"]["num_unlabeled"] == 6
    with open(output_dir / "test_predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["path"] for row in rows] == [f"{name}_{index}.jpg" for name in FOLDER_CLASS_NAMES for index in (0, 1)]
    assert {row["top1_label"] for row in rows} <= set(FOLDER_CLASS_NAMES)
    assert not (output_dir / "test_results.json").exists()


def refused_data(tmp_path, *flags: str) -> tuple[str, dict]:
    """The refusal of `train_pim.main` for the data of `flags`, and the data report it wrote before refusing."""
    output_dir = tmp_path / "run"
    message = user_error([*TINY_RUN, *flags, "--output_dir", str(output_dir)])
    return message, json.loads((output_dir / "data_report.json").read_text())


def test_a_single_class_is_refused(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), class_names=("Barn Swallow",))
    message, report = refused_data(tmp_path, "--train_dir", str(data_dir / "train"))
    assert message == (
        f"the image folders train_dir={data_dir / 'train'} has a single class ('Barn Swallow'): a 1-class model is "
        "always right (100 % accuracy) and learns nothing. Give at least 2 classes (class folders: one sub-folder "
        "per class in --train_dir)."
    )
    assert report["splits"]["train"]["num_images"] == 3


def test_class_folders_named_like_splits_are_refused(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "test"), images_per_class=1)
    message, _ = refused_data(tmp_path, "--train_dir", str(data_dir))  # the dataset root, not its train folder
    assert message == (
        f"the image folders train_dir={data_dir}: the classes 'test', 'train' are named like dataset splits, so "
        "--train_dir points at the dataset root, not at its training folder: give --train_dir ROOT/train (and "
        "--validation_dir ROOT/validation, --test_dir ROOT/test)."
    )


def test_a_class_whose_training_images_are_all_unreadable_is_refused_with_its_files(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=2)
    broken = sorted((data_dir / "train" / "Barn Swallow").iterdir())
    for path in broken:
        path.write_bytes(b"")
    message, report = refused_data(tmp_path, "--train_dir", str(data_dir / "train"))
    reasons = [image["reason"] for image in report["skipped_images"]]
    assert message == (
        f"the image folders train_dir={data_dir / 'train'}: no readable training image for 1 class ('Barn Swallow': "
        f"{broken[0]} ({reasons[0]}), {broken[1]} ({reasons[1]})): a class without training images cannot be learnt, "
        "and its test images can never be right. Replace the unreadable files or remove these classes."
    )
    assert report["splits"]["train"]["absent_classes"] == ["Barn Swallow"]


@pytest.mark.parametrize(
    ("dataset_name", "message"),
    [
        (
            "{tmp}/nowhere",
            "--dataset_name '{tmp}/nowhere': no such folder: check the path, or give a folder of data files (such as "
            "the data/<split>-*.parquet shards Dataset.push_to_hub writes, or <split>/<class name>/<image> folders).",
        ),
        (
            "someone/birds",
            "--dataset_name 'someone/birds': no such folder, and no Hub dataset of that id in the local cache (the Hub "
            "is off: HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1): give a folder of data files (such as the "
            "data/<split>-*.parquet shards Dataset.push_to_hub writes, or <split>/<class name>/<image> folders), or "
            "unset HF_DATASETS_OFFLINE and HF_HUB_OFFLINE to download it.",
        ),
    ],
    ids=["missing folder", "offline hub id"],
)
def test_a_dataset_name_that_is_not_there_is_one_error_line(dataset_name, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    flags = ["--dataset_name", dataset_name.format(tmp=tmp_path), "--eval_strategy", "no"]
    assert user_error([*TINY_RUN, *flags, "--output_dir", str(tmp_path / "run")]) == message.format(tmp=tmp_path)


def test_a_damaged_annotation_file_is_told_to_be_restored_from_its_archive(tmp_path):
    from archive_trees import make_inaturalist_tree

    data_dir = make_inaturalist_tree(tmp_path)
    (data_dir / "val.json").write_text("{\n")
    flags = ["--dataset", "inaturalist", "--data_dir", str(data_dir), "--eval_strategy", "no"]
    assert user_error([*TINY_RUN, *flags, "--output_dir", str(tmp_path / "run")]) == (
        f"{data_dir / 'val.json'} is not valid JSON (Expecting property name enclosed in double quotes: line 2 column "
        "1 (char 2)): restore it from the iNaturalist archive."
    )


def test_an_unreadable_image_met_while_training_is_one_error_line_naming_it(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=2)
    truncated = data_dir / "train" / "Barn Swallow" / "truncated.jpg"
    good = (data_dir / "train" / "Barn Swallow" / "Barn Swallow_0.jpg").read_bytes()
    truncated.write_bytes(good[: len(good) * 3 // 4])
    flags = ["--train_dir", str(data_dir / "train"), "--skip_unreadable", "false", "--eval_strategy", "no"]
    assert user_error([*TINY_RUN, *flags, "--max_steps", "2", "--output_dir", str(tmp_path / "run")]) == (
        f"{truncated} cannot be decoded (OSError: Truncated File Read): remove it, or run without --skip_unreadable "
        "false to skip unreadable images."
    )


def test_unlabeled_training_images_are_refused_with_or_without_a_hold_out(tmp_path):
    dataset_dir = make_hub_parquet_dataset(tmp_path / "birds", images_per_class={"train": 4, "test": 1})
    shard = dataset_dir / "data" / "train-00000-of-00001.parquet"
    table = pyarrow.parquet.read_table(shard)
    labels = pyarrow.array([-1, *table.column("label").to_pylist()[1:]], type=table.schema.field("label").type)
    pyarrow.parquet.write_table(table.set_column(1, "label", labels), shard)  # keeps the ClassLabel metadata
    expected = (
        f"the dataset {str(dataset_dir)!r} read by datasets.load_dataset: the train split has 1 of its 12 images "
        "without a label (-1), and training needs labeled images: remove them from the train split."
    )
    flags = ["--dataset_name", str(dataset_dir), "--output_dir", str(tmp_path / "run")]
    assert user_error([*TINY_RUN, *flags, "--eval_strategy", "no"]) == expected
    assert user_error([*TINY_RUN, *flags, "--validation_split_percentage", "25"]) == expected
