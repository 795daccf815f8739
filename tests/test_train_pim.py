"""End-to-end behaviour of train_pim.py on miniature datasets (tiny timm backbone, 32 px, CPU)."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from fgvc_trees import CUB_CLASS_NAMES, make_cub_tree, make_image_folders, make_nabirds_tree


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim import PimConfig, PimForImageClassification  # noqa: E402


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
    "--remove_unused_columns", "false",
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

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copytree(uninterrupted / "checkpoint-3", interrupted / "checkpoint-3")  # as if stopped after step 3
    run(interrupted, *flags)

    expected = load_file(uninterrupted / "model.safetensors")
    resumed = load_file(interrupted / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)


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
    pim_args, model_args, data_args, training_args = train_pim.parse_arguments(
        [str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    )
    values = vars(pim_args)
    config = PimConfig(num_labels=200, **{**values, "backbone_kwargs": json.loads(values["backbone_kwargs"] or "{}")})
    with torch.device("meta"):
        model = PimForImageClassification(config)
    assert len(model.pim.backbone.token_counts) == len(config.num_selects)
    assert training_args.remove_unused_columns is False


def test_command_line_flags_override_the_recipe(tmp_path):
    pim_args, _, data_args, training_args = train_pim.parse_arguments(
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
    with pytest.raises(ValueError, match=r"unknown keys \['num_select'\]"):
        train_pim.parse_arguments([str(recipe)])
