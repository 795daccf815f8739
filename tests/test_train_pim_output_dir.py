"""
train_pim.py and its --output_dir: a checkpoint of another model is never resumed, and a new run never leaves a
previous run's results beside its model (refused without --overwrite_output_dir, removed with it).
"""

import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from fgvc_trees import FOLDER_CLASS_NAMES, make_image_folders


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim import PimForImageClassification  # noqa: E402
from modeling_pim.training.run_folder import results_older_than_model  # noqa: E402
from modeling_pim.training.transfer import with_labels  # noqa: E402
from modeling_pim.utils.cli import UserInputError  # noqa: E402
from test_train_pim import TINY_RUN, user_error  # noqa: E402


def save_checkpoint(folder: Path, *flags: str, labels: tuple[str, ...] = FOLDER_CLASS_NAMES) -> Path:
    """
    A `checkpoint-<step>` folder as Trainer saves it, of the model TINY_RUN (+ `flags`) builds, on `labels`, with the
    run's training arguments.
    """
    pim_args, model_args, _, training_args, origins = train_pim.parse_arguments([*TINY_RUN, *flags])
    config = train_pim.build_config(pim_args, model_args, origins)
    PimForImageClassification(with_labels(config, dict(enumerate(labels)))).save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    torch.save(training_args, folder / "training_args.bin")
    return folder


def resumed_checkpoint(output_dir: Path, *flags: str) -> str | None:
    """The checkpoint a TINY_RUN (+ `flags`) training run in `output_dir` resumes from; raises its refusal."""
    pim_args, model_args, data_args, training_args, origins = train_pim.parse_arguments(
        [*TINY_RUN, "--output_dir", str(output_dir), *flags]
    )
    train_pim.check_arguments(pim_args, model_args, data_args, training_args, origins)
    config = train_pim.build_config(pim_args, model_args, origins)
    return train_pim.plan_output_directory(output_dir, config, model_args, training_args)[0]


def test_a_checkpoint_of_another_model_is_not_resumed(tmp_path):
    output_dir = tmp_path / "run"
    checkpoint = save_checkpoint(output_dir / "checkpoint-4")
    save_checkpoint(output_dir / "checkpoint-2", "--fpn_size", "32")  # not the last one
    never_read = ["--train_dir", str(tmp_path / "never_read")]
    other_model = ["--fpn_size", "32", "--lambda_b", "2"]
    message = user_error([*TINY_RUN, *other_model, *never_read, "--output_dir", str(output_dir)])
    assert message == (
        f"--output_dir {output_dir} holds checkpoint-4, a checkpoint of another model (fpn_size 16, not 32; lambda_b "
        "0.5, not 2.0): use a new --output_dir, or --overwrite_output_dir true to start over in it (its checkpoints "
        "and results are removed)."
    )
    resume = ["--resume_from_checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "other")]
    assert user_error([*TINY_RUN, "--fpn_size", "32", *never_read, *resume]) == (
        f"--resume_from_checkpoint {checkpoint} is a checkpoint of another model (fpn_size 16, not 32): resume with "
        "the flags and data of the run that saved it, or start a new run without --resume_from_checkpoint."
    )
    missing = tmp_path / "checkpoint-7"
    elsewhere = ["--output_dir", str(tmp_path / "other")]
    message = user_error([*TINY_RUN, *never_read, "--resume_from_checkpoint", str(missing), *elsewhere])
    assert message == (
        f"--resume_from_checkpoint {missing} is not a checkpoint folder (a checkpoint-<step> folder with "
        "trainer_state.json, saved by a run in its --output_dir): give one, or `false` to start a new run."
    )
    assert user_error([*TINY_RUN, *never_read, *resume, "--overwrite_output_dir", "true"]) == (
        f"--overwrite_output_dir starts over, --resume_from_checkpoint {checkpoint} continues a run: give one of them."
    )


def test_a_checkpoint_of_a_run_with_other_training_arguments_is_not_resumed(tmp_path):
    output_dir = tmp_path / "run"
    checkpoint = save_checkpoint(output_dir / "checkpoint-4", "--lr_scheduler_type", "constant")
    never_read = ["--train_dir", str(tmp_path / "never_read")]
    constant = ["--lr_scheduler_type", "constant"]
    new_values = ["--learning_rate", "0.5", "--weight_decay", "0.3", "--per_device_train_batch_size", "2"]
    assert user_error([*TINY_RUN, *constant, *new_values, *never_read, "--output_dir", str(output_dir)]) == (
        f"--output_dir {output_dir} holds checkpoint-4, a checkpoint of a run with other training arguments "
        "(--learning_rate 0.5 (the checkpoint's run: 0.01); --weight_decay 0.3 (the checkpoint's run: 0.0); "
        "--per_device_train_batch_size × --gradient_accumulation_steps × processes 2 (2 × 1 × 1) (the checkpoint's "
        "run: 4 (4 × 1 × 1))), which resuming would not apply (the checkpoint's optimizer, schedule and data order "
        "continue): use a new --output_dir, or --overwrite_output_dir true to start over in it (its checkpoints and "
        "results are removed); to fine-tune its model with these arguments, give --model_name_or_path "
        f"{checkpoint} and a new --output_dir."
    )
    resume = ["--resume_from_checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "other")]
    with pytest.raises(UserInputError) as refusal:
        resumed_checkpoint(tmp_path / "other", *resume, "--seed", "1")  # linear, over 3 epochs
    assert str(refusal.value) == (
        f"--resume_from_checkpoint {checkpoint} is a checkpoint of a run with other training arguments "
        "(--lr_scheduler_type linear (the checkpoint's run: constant); --seed 1 (the checkpoint's run: 0)), which "
        "resuming would not apply (the checkpoint's optimizer, schedule and data order continue): resume with the "
        "flags and data of the run that saved it, or start a new run without --resume_from_checkpoint; to fine-tune "
        f"its model with these arguments, give --model_name_or_path {checkpoint} and a new --output_dir."
    )
    # The same run: a constant schedule trained longer, the same images per step in smaller batches, other logging.
    same_run = [*constant, "--num_train_epochs", "9", "--per_device_train_batch_size", "2",
                "--gradient_accumulation_steps", "2", "--logging_steps", "1", "--max_grad_norm", "5"]  # fmt: skip
    assert resumed_checkpoint(output_dir, *same_run) == str(checkpoint)

    linear = save_checkpoint(tmp_path / "linear" / "checkpoint-4")  # linear decay to 0 over the training steps
    for longer, listed in ((["--num_train_epochs", "9"], "--num_train_epochs 9.0 (the checkpoint's run: 3.0)"),
                           (["--max_steps", "10"], "--num_train_epochs / --max_steps max_steps 10 (the checkpoint's "
                            "run: num_train_epochs 3.0)")):  # fmt: skip
        with pytest.raises(UserInputError) as refusal:
            resumed_checkpoint(linear.parent, *longer)
        assert f"a checkpoint of a run with other training arguments ({listed}), " in str(refusal.value)


def test_a_checkpoint_of_other_classes_is_not_resumed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=train_pim.logger.name)
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=2)
    output_dir = tmp_path / "run"
    save_checkpoint(output_dir / "checkpoint-4", labels=("Mallard", "Wood Duck"))
    assert user_error([*TINY_RUN, "--train_dir", str(data_dir / "train"), "--output_dir", str(output_dir)]) == (
        f"--output_dir {output_dir} holds checkpoint-4, a checkpoint of a model trained on other classes (2: Mallard, "
        "Wood Duck; this data has 3: Acadian Flycatcher, Barn Swallow, Cape May Warbler): use a new --output_dir, or "
        "--overwrite_output_dir true to start over in it (its checkpoints and results are removed)."
    )
    assert "Resuming from" not in caplog.text  # said only of a checkpoint that is resumed


def test_a_new_run_in_a_folder_holding_a_previous_model_or_results_is_refused(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    for name in ("config.json", "model.safetensors", "test_results.json"):
        (output_dir / name).write_text("{}")
    flags = [*TINY_RUN, "--train_dir", str(tmp_path / "never_read"), "--output_dir", str(output_dir)]
    refusal = (
        f"--output_dir {output_dir} holds a previous run's model or results (config.json, model.safetensors, "
        "test_results.json), which this run would leave beside its own: use a new --output_dir, or "
        "--overwrite_output_dir true to replace them"
    )
    assert user_error(flags) == refusal + "."
    another_model = ["--model_name_or_path", str(save_checkpoint(tmp_path / "model"))]
    assert user_error([*flags, "--do_train", "false", *another_model]) == (
        f"{refusal}; to evaluate the model there, add --model_name_or_path {output_dir}."
    )


def test_an_output_dir_inside_a_data_folder_is_refused(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "test"), images_per_class=1)
    (tmp_path / "link").symlink_to(data_dir / "test")
    folders = ["--train_dir", str(data_dir / "train"), "--test_dir", str(tmp_path / "link")]
    for flag, folder, output_dir in (("train_dir", data_dir / "train", data_dir / "train" / "run1"),
                                     ("test_dir", tmp_path / "link", data_dir / "test"),
                                     ("train_dir", data_dir / "train", data_dir / "train" / ".." / "train" / "x")):
        assert user_error([*TINY_RUN, *folders, "--output_dir", str(output_dir)]) == (
            f"--output_dir {output_dir} is inside --{flag} {folder}: this run would write its model, checkpoints and "
            "test example among the data, which the next run would read as data (a class folder named after it, or "
            "more images): choose an --output_dir outside the data folders."
        )  # fmt: skip
    synthetic = ["--dataset", "synthetic", "--synthetic_dir", str(tmp_path / "synthetic")]
    assert user_error([*TINY_RUN, *synthetic, "--output_dir", str(tmp_path / "synthetic" / "run")]).startswith(
        f"--output_dir {tmp_path / 'synthetic' / 'run'} is inside --synthetic_dir {tmp_path / 'synthetic'}: "
    )
    assert not (data_dir / "train" / "run1").exists()


def test_evaluating_without_a_model_is_refused(tmp_path):
    never_read = ["--train_dir", str(tmp_path / "never_read"), "--output_dir", str(tmp_path / "run")]
    assert user_error([*TINY_RUN, *never_read, "--do_train", "false"]) == (
        "--do_train false (from the command line) evaluates a trained model, but no --model_name_or_path gives one (a "
        "new model would be evaluated with random weights): give the model with --model_name_or_path (a train_pim.py "
        "--output_dir, a checkpoint-* folder or a Hub id), or train it with --do_train true."
    )
    assert not (tmp_path / "run").exists()


def test_overwrite_output_dir_removes_the_previous_run_and_evaluating_in_place_replaces_its_results(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "test"), images_per_class=2)
    output_dir = tmp_path / "run"
    save_checkpoint(output_dir / "checkpoint-9", "--fpn_size", "32")  # another model's: neither resumed nor kept
    stale = ["test_results.json", "eval_results.json", "test_predictions.csv", "test_example.png"]
    for name in [*stale, "all_results.json", "notes.txt"]:
        (output_dir / name).write_text('{"test_accuracy": 0.99}')
    train = [*TINY_RUN, "--train_dir", str(data_dir / "train"), "--output_dir", str(output_dir)]

    train_pim.main([*train, "--max_steps", "1", "--save_strategy", "no", "--do_eval", "false",
                    "--overwrite_output_dir", "true"])  # fmt: skip

    assert not any((output_dir / name).exists() for name in [*stale, "checkpoint-9"])
    assert (output_dir / "notes.txt").is_file()  # not a file of a run
    assert not any(key.startswith("test_") for key in json.loads((output_dir / "all_results.json").read_text()))
    model_saved = (output_dir / "model.safetensors").stat().st_mtime_ns
    os.utime(output_dir / "model.safetensors", ns=(model_saved - 10**12, model_saved - 10**12))  # 1000 s ago

    results = train_pim.main([*train, "--test_dir", str(data_dir / "test"), "--do_train", "false",
                              "--model_name_or_path", str(output_dir)])  # fmt: skip

    assert results["test"]["test_num_samples"] == 6
    assert json.loads((output_dir / "test_results.json").read_text())["test_num_samples"] == 6
    assert (output_dir / "training_recipe.json").is_file() and (output_dir / "test_example.jpg").is_file()
    assert results_older_than_model(output_dir) == []


def test_resume_from_checkpoint_false_starts_a_new_run_and_never_mixes_two_runs_checkpoints(tmp_path):
    never_read = [*TINY_RUN, "--train_dir", str(tmp_path / "never_read")]
    output_dir = tmp_path / "run"
    save_checkpoint(output_dir / "checkpoint-4")
    for value in ("false", "no", "False"):
        assert user_error([*never_read, "--resume_from_checkpoint", value, "--output_dir", str(output_dir)]) == (
            f"--resume_from_checkpoint {value} starts a new run, but --output_dir {output_dir} holds checkpoint-4 of a "
            "previous run, whose checkpoints would mix with this run's: use a new --output_dir, or "
            "--overwrite_output_dir true to start over in it (its checkpoints and results are removed)."
        )
    for new_run in (["--output_dir", str(tmp_path / "new")], ["--output_dir", str(output_dir), "--overwrite_output_dir",
                                                                "true"]):  # fmt: skip
        pim_args, model_args, data_args, training_args, origins = train_pim.parse_arguments(
            [*never_read, "--resume_from_checkpoint", "false", *new_run]
        )
        train_pim.check_arguments(pim_args, model_args, data_args, training_args, origins)
        config = train_pim.build_config(pim_args, model_args, origins)
        resume_from, _ = train_pim.plan_output_directory(Path(new_run[1]), config, model_args, training_args)
        assert resume_from is None
