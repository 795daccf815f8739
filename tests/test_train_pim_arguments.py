"""
train_pim.py's flags mean what they say: values PimConfig, the model or a run cannot use are refused by flag (and by
recipe file) before any image is read, a flag can be unset on the command line, and with --model_name_or_path the
model flags set for the run are applied to the checkpoint's configuration or refused, never silently ignored.
"""

import json
import logging
import sys
from pathlib import Path

import pytest

from fgvc_trees import FOLDER_CLASS_NAMES, make_image_folders


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim import PimForImageClassification, PimImageProcessor  # noqa: E402
from modeling_pim.training.transfer import with_labels  # noqa: E402
from modeling_pim.utils.cli import UserInputError, run_command  # noqa: E402
from test_train_pim import TINY_RUN, user_error  # noqa: E402


def tiny_run_without(*names: str) -> list[str]:
    """TINY_RUN without the flags `names` (and their values)."""
    flags, skipping = [], False
    for argument in TINY_RUN:
        if argument.startswith("--"):
            skipping = argument.removeprefix("--") in names
        if not skipping:
            flags.append(argument)
    return flags


def refused_before_reading_images(tmp_path: Path, *flags: str) -> str:
    """The error line of a run whose --train_dir does not exist: it is refused before the data is read."""
    return user_error([*flags, "--train_dir", str(tmp_path / "never_read"), "--output_dir", str(tmp_path / "run")])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--num_selects", "8", "4"],
            "--num_selects 8 4 (from the command line) and --out_indices -4 -3 -2 -1 (default): `num_selects` has 2 "
            "entries but the backbone gives 4 layers: give one number of selected tokens per layer.",
        ),
        (
            ["--num_selects", "800", "4", "2", "1"],
            "--num_selects 800 4 2 1 (from the command line) and --image_size 32 (from the command line): "
            "num_selects[0]=800 but layer 0 of 'test_resnet' has only 64 tokens at image_size=32 (8²): select at most "
            "that many tokens.",
        ),
        (
            ["--tokens_per_graph_node", "32"],
            "--num_selects 8 4 2 1 (from the command line) and --tokens_per_graph_node 32 (from the command line): The "
            "combiner pools sum(num_selects)=15 tokens into graph nodes of tokens_per_graph_node=32: select more "
            "tokens or lower `tokens_per_graph_node`.",
        ),
        (
            ["--lambda_b", "-1"],
            "--lambda_b -1.0 (from the command line): `lambda_b` must be 0 or more (a loss weight), got -1.0.",
        ),
        (
            ["--backbone_kwargs", '{"no_such_argument": 1}'],
            '--backbone_kwargs {"no_such_argument": 1} (from the command line): backbone_kwargs={\'no_such_argument\': '
            "1} are not arguments 'test_resnet' accepts (ResNet.__init__() got an unexpected keyword argument "
            "'no_such_argument'): see the timm model's class for its arguments.",
        ),
        (
            ["--backbone_kwargs", "{drop_path_rate: 0.1}"],
            "--backbone_kwargs {drop_path_rate: 0.1} (from the command line) is not JSON (Expecting property name "
            """enclosed in double quotes): write a JSON object, e.g. '{"drop_path_rate": 0.1}'.""",
        ),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0 (from the command line) must be at "
                                                 "least 1."),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0 (from the command line) must be at "
                                                 "least 1."),
        (["--learning_rate", "-0.1"], "--learning_rate -0.1 (from the command line) must be 0 or more."),
        (["--adam_beta1", "1.5"], "--adam_beta1 1.5 (from the command line) must be in [0, 1)."),
        (
            ["--num_train_epochs", "0"],
            "--num_train_epochs 0.0 (from the command line) trains no step: give a positive number of epochs, or "
            "--max_steps N.",
        ),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)  # fmt: skip
def test_unusable_model_and_trainer_values_are_refused_by_flag_before_reading_images(tmp_path, flags, expected):
    assert refused_before_reading_images(tmp_path, *TINY_RUN, *flags) == expected


def test_a_refused_value_from_a_recipe_names_the_recipe(tmp_path):
    recipe = tmp_path / "two_layers.yaml"
    recipe.write_text("num_selects: [8, 4]\nper_device_train_batch_size: 4\n")
    assert refused_before_reading_images(tmp_path, str(recipe), *tiny_run_without("num_selects")) == (
        f"--num_selects 8 4 (from the recipe {recipe}) and --out_indices -4 -3 -2 -1 (default): `num_selects` has 2 "
        "entries but the backbone gives 4 layers: give one number of selected tokens per layer."
    )
    recipe.write_text("per_device_train_batch_size: 0\n")
    assert refused_before_reading_images(tmp_path, str(recipe), *tiny_run_without("per_device_train_batch_size")) == (
        f"--per_device_train_batch_size 0 (from the recipe {recipe}) must be at least 1."
    )


def test_a_value_error_that_is_not_the_users_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(self, config):
        raise ValueError("a bug")

    monkeypatch.setattr(PimForImageClassification, "__init__", bug)
    with pytest.raises(ValueError, match="^a bug$"):
        run_command("train_pim.py", train_pim.main, [*TINY_RUN, "--train_dir", "D", "--output_dir", str(tmp_path)])


@pytest.mark.parametrize(
    ("recipe_line", "expected"),
    [
        ("num_train_epochs: two", "`num_train_epochs: 'two'` is not a float."),
        ("learning_rate: 5e-4", "`learning_rate: '5e-4'` is not a float (YAML reads 5e-4 as text: write 5.0e-4)."),
        ("learning_rate: 1.5e4", "`learning_rate: '1.5e4'` is not a float (YAML reads 1.5e4 as text: write 1.5e+4)."),
        ("image_size: 32.5", "`image_size: 32.5` is not an int."),
        ("fpn_size: [16]", "`fpn_size: [16]` is not an int."),
        ("do_train: 'yes please'", "`do_train: 'yes please'` is not a bool."),
    ],
)
def test_a_recipe_value_of_the_wrong_type_is_named_with_the_right_hint(tmp_path, recipe_line, expected):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(recipe_line + "\n")
    with pytest.raises(UserInputError) as error:
        train_pim.parse_arguments([str(recipe)])
    assert str(error.value) == f"{recipe}: {expected}"


@pytest.mark.parametrize("unset", ["", "null", "none", "None"])
def test_an_empty_null_or_none_flag_value_is_unset_as_a_recipes_null(tmp_path, unset):
    recipe = tmp_path / "folders.yaml"
    recipe.write_text("train_dir: D/train\nvalidation_dir: D/val\nresize_size: 48\nlearning_rate: 0.1\n")
    *_, data_args, training_args, origins = train_pim.parse_arguments(
        [str(recipe), "--validation_dir", unset, "--validation_split_percentage", "20", f"--resize_size={unset}",
         "--learning_rate", unset]
    )  # fmt: skip
    assert (data_args.validation_dir, data_args.validation_split_percentage, data_args.resize_size) == (None, 20, None)
    assert data_args.train_dir == "D/train" and training_args.learning_rate == 5e-5  # the default, not the recipe's
    assert "validation_dir" not in origins and origins["train_dir"] == f"the recipe {recipe}"


def test_unsetting_a_data_flag_does_not_select_its_dataset(tmp_path):
    recipe = REPO / "configuration/demo_cpu.yaml"
    *_, data_args, _, _ = train_pim.parse_arguments([str(recipe), "--train_dir", "", "--output_dir", str(tmp_path)])
    assert (data_args.dataset, data_args.train_dir) == ("synthetic", None)


def test_help_says_how_to_unset_a_flag(capsys):
    with pytest.raises(SystemExit):
        train_pim.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "`key: null` in a recipe, and '', null or none as a flag's value (--validation_dir ''), mean the flag's" in (
        help_text
    )
    assert "--overwrite_output_dir true start over in an --output_dir holding a previous run" in help_text


def test_merging_validation_into_train_with_class_folders(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "validation"), images_per_class=4)
    folders = [*TINY_RUN, "--train_dir", str(data_dir / "train"), "--output_dir", str(tmp_path / "run")]
    merge = ["--merge_validation_into_train", "true"]
    assert refused_before_reading_images(tmp_path, *TINY_RUN, *merge) == (
        "--merge_validation_into_train trains on the --validation_dir images too, but no --validation_dir is given: "
        "give it, or remove the flag."
    )
    with_validation = [*folders, "--validation_dir", str(data_dir / "validation"), *merge]
    assert user_error([*with_validation, "--eval_strategy", "epoch"]) == (
        "--eval_strategy epoch evaluates on validation data during training, but --merge_validation_into_train put "
        "the validation images into train: hold out some of them with --validation_split_percentage 10, or set "
        "--eval_strategy no."
    )
    arguments = train_pim.parse_arguments([*with_validation, "--validation_split_percentage", "25"])
    train_pim.check_arguments(*arguments)
    datasets = train_pim.load_data(arguments[2], seed=0)
    assert (len(datasets["train"]), len(datasets["validation"])) == (18, 6)  # 3 classes × (4 + 4), 25 % held out


def save_tiny_checkpoint(folder: Path, *flags: str) -> Path:
    """A (random) PIM model saved as train_pim.py would save the model TINY_RUN (+ `flags`) builds."""
    pim_args, model_args, _, _, origins = train_pim.parse_arguments([*TINY_RUN, *flags])
    config = train_pim.build_config(pim_args, model_args, origins)
    PimForImageClassification(with_labels(config, dict(enumerate(FOLDER_CLASS_NAMES)))).save_pretrained(folder)
    return folder


def test_model_flags_that_would_change_the_checkpoints_architecture_are_refused_by_name(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "trained")
    start = [*TINY_RUN, "--model_name_or_path", str(checkpoint)]
    assert refused_before_reading_images(tmp_path, *start, "--num_selects", "16", "8", "4", "1") == (
        f"--num_selects 16 8 4 1 (from the command line) would change the architecture of the model of "
        f"--model_name_or_path {checkpoint}, which has num_selects 8 4 2 1: a run from a trained model keeps its "
        "architecture. Leave --num_selects out (--num_selects null overrides a recipe), or train a new model without "
        "--model_name_or_path."
    )
    assert refused_before_reading_images(tmp_path, *start, "--use_fpn", "false", "--image_size", "64").startswith(
        "--use_fpn false (from the command line) would change the architecture of the model of --model_name_or_path "
        f"{checkpoint}, which has use_fpn true: "
    )
    recipe = tmp_path / "wider.yaml"
    recipe.write_text("fpn_size: 64\n")
    tiny_run = tiny_run_without("fpn_size")
    message = refused_before_reading_images(tmp_path, str(recipe), *tiny_run, "--model_name_or_path", str(checkpoint))
    assert message.startswith(f"--fpn_size 64 (from the recipe {recipe}) would change the architecture")
    # Unset on the command line, the recipe's value gives way to the checkpoint's.
    flags = [str(recipe), *tiny_run, "--model_name_or_path", str(checkpoint), "--fpn_size", "null"]
    arguments = train_pim.parse_arguments(flags)
    assert train_pim.build_config(arguments[0], arguments[1], arguments[4]).fpn_size == 16


def test_model_flags_that_keep_the_checkpoints_tensors_are_applied_and_logged(tmp_path, caplog):
    checkpoint = save_tiny_checkpoint(tmp_path / "trained", "--lambda_n", "2.5")
    flags = ["--image_size", "64", "--lambda_b", "7", "--label_smoothing", "0.2", "--combiner_dropout", "0.3",
             "--backbone_pretrained", "true", "--model_name_or_path", str(checkpoint)]  # fmt: skip
    pim_args, model_args, _, _, origins = train_pim.parse_arguments([*TINY_RUN, *flags])
    with caplog.at_level(logging.INFO):
        config = train_pim.build_config(pim_args, model_args, origins)
    assert (config.image_size, config.lambda_b, config.label_smoothing, config.combiner_dropout) == (64, 7, 0.2, 0.3)
    assert (config.lambda_n, config.backbone_pretrained, config.fpn_size) == (2.5, False, 16)  # the checkpoint's
    assert (
        "Model: set for this run instead of the checkpoint's: image_size 64 (the checkpoint's: 32), combiner_dropout "
        "0.3 (the checkpoint's: 0.1), lambda_b 7.0 (the checkpoint's: 0.5), label_smoothing 0.2 (the checkpoint's: "
        "0.0)."
    ) in caplog.text
    assert "from the checkpoint (not set for this run): backbone_kwargs {}, feature_taps stages, " in caplog.text
    assert "lambda_n 2.5" in caplog.text
    assert (
        "Model: --backbone_pretrained true (from the command line) is not used: the checkpoint of --model_name_or_path "
        f"{checkpoint} holds the backbone's weights."
    ) in caplog.text


def test_a_run_from_a_checkpoint_records_the_configuration_it_used(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "trained")
    PimImageProcessor.for_image_size(32, resize_size=40, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(
        checkpoint
    )
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=2)
    output_dir = tmp_path / "run"
    train_pim.main([*TINY_RUN, "--model_name_or_path", str(checkpoint), "--lambda_b", "7", "--image_size", "64",
                    "--train_dir", str(data_dir / "train"), "--max_steps", "1", "--do_eval", "false",
                    "--save_strategy", "no", "--output_dir", str(output_dir)])  # fmt: skip
    config = json.loads((output_dir / "config.json").read_text())
    recipe = json.loads((output_dir / "training_recipe.json").read_text())["model_args"]
    assert (config["lambda_b"], config["image_size"]) == (7.0, 64)
    assert all(recipe[name] == config[name] for name in recipe if name in config)
    assert {"image_size", "lambda_b", "num_selects", "fpn_size"} <= set(recipe)
    assert recipe["model_name_or_path"] == str(checkpoint)
    # The checkpoint's processor, its crop set to the new image_size and its resize scaled with it.
    processor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert (processor["size"], processor["crop_size"]) == ({"height": 80, "width": 80}, {"height": 64, "width": 64})
    assert (processor["image_mean"], processor["image_std"]) == ([0.5] * 3, [0.25] * 3)


def processor_of(*flags: str) -> PimImageProcessor:
    """The processor train_pim.py builds for TINY_RUN + `flags`."""
    pim_args, model_args, data_args, _, origins = train_pim.parse_arguments([*TINY_RUN, *flags])
    return train_pim.build_processor(train_pim.build_config(pim_args, model_args, origins), model_args, data_args,
                                     origins)  # fmt: skip


def sizes(processor: PimImageProcessor) -> tuple:
    return processor.size["height"], processor.crop_size["height"], processor.image_mean, processor.image_std


def test_a_run_from_a_checkpoint_uses_its_saved_processor_with_the_sizes_set_for_the_run(tmp_path, caplog):
    checkpoint = save_tiny_checkpoint(tmp_path / "trained")
    timm_normalisation = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # test_resnet's pretrained_cfg
    saved_normalisation = (0.25, 0.25, 0.25), (0.125, 0.125, 0.125)
    start = ["--model_name_or_path", str(checkpoint)]
    # A checkpoint without a processor: one is built as for a new model.
    assert sizes(processor_of(*start)) == (42, 32, *timm_normalisation)
    saved = PimImageProcessor.for_image_size(32, resize_size=64, image_mean=[0.25] * 3, image_std=[0.125] * 3)
    saved.save_pretrained(checkpoint)
    with caplog.at_level(logging.INFO):
        assert sizes(processor_of(*start)) == (64, 32, *saved_normalisation)
    assert (
        f"Processor: the one saved with --model_name_or_path {checkpoint} (resize 64, crop 32, mean 0.25 0.25 0.25, "
        "std 0.125 0.125 0.125)."
    ) in caplog.text
    assert sizes(processor_of(*start, "--resize_size", "48")) == (48, 32, *saved_normalisation)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert sizes(processor_of(*start, "--image_size", "64")) == (128, 64, *saved_normalisation)
    assert "; set for this run: resize 128 (the checkpoint's: 64), crop 64 (the checkpoint's: 32)." in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert sizes(processor_of()) == (42, 32, *timm_normalisation)
    assert (
        "Processor: built for image_size 32 (resize 42, crop 32, mean 0.5 0.5 0.5, std 0.5 0.5 0.5; "
        "normalisation: timm's of test_resnet)."
    ) in caplog.text


def test_a_resize_smaller_than_the_crop_is_refused_by_flag_before_reading_images(tmp_path):
    assert refused_before_reading_images(tmp_path, *TINY_RUN, "--resize_size", "16") == (
        "--resize_size 16 (from the command line) is smaller than --image_size 32 (from the command line): the "
        "image_size crop is taken from the resized image. Give --resize_size 32 or more, or leave it out (default: "
        "image_size × 510 / 384: 42)."
    )
    checkpoint = save_tiny_checkpoint(tmp_path / "trained", "--image_size", "64")
    PimImageProcessor.for_image_size(64, resize_size=70).save_pretrained(checkpoint)
    recipe = tmp_path / "resize.yaml"
    recipe.write_text("resize_size: 48\n")
    flags = [str(recipe), *tiny_run_without("image_size"), "--model_name_or_path", str(checkpoint)]
    assert refused_before_reading_images(tmp_path, *flags) == (
        f"--resize_size 48 (from the recipe {recipe}) is smaller than --image_size 64 (from --model_name_or_path "
        f"{checkpoint}): the image_size crop is taken from the resized image. Give --resize_size 64 or more, or leave "
        f"it out (default: the processor of --model_name_or_path {checkpoint}: resize 70 for crop 64)."
    )


def test_a_metric_for_best_model_that_evaluation_does_not_give_is_refused_before_reading_images(tmp_path):
    assert refused_before_reading_images(tmp_path, *TINY_RUN, "--metric_for_best_model", "acc") == (
        "--metric_for_best_model acc (from the command line) is not a metric of PIM's evaluation: give one of loss, "
        "accuracy, top5_accuracy, mean_per_class_accuracy, layer1_accuracy, layer2_accuracy, layer3_accuracy, "
        "layer4_accuracy (with or without the eval_ prefix)."
    )
    assert refused_before_reading_images(tmp_path, *TINY_RUN, "--metric_for_best_model", "layer5_accuracy").startswith(
        "--metric_for_best_model layer5_accuracy (from the command line) is not a metric of PIM's evaluation: "
    )
    for metric in ("eval_layer4_accuracy", "mean_per_class_accuracy", "loss"):
        pim_args, model_args, _, training_args, origins = train_pim.parse_arguments(
            [*TINY_RUN, "--metric_for_best_model", metric]
        )
        train_pim.check_metric_for_best_model(train_pim.build_config(pim_args, model_args, origins), training_args,
                                              origins)  # fmt: skip


def test_evaluating_a_model_on_data_of_other_classes_is_refused_and_writes_nothing(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "trained")
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "test"), class_names=("blue", "green", "red"),
                                  images_per_class=1)  # fmt: skip
    flags = [*TINY_RUN, "--model_name_or_path", str(checkpoint), "--do_train", "false", "--output_dir",
             str(checkpoint), "--train_dir", str(data_dir / "train"), "--test_dir", str(data_dir / "test")]  # fmt: skip
    assert user_error(flags) == (
        f"--do_train false evaluates the model of --model_name_or_path {checkpoint} as it is, but this data's classes "
        "(3: blue, green, red) are not its classes (3: Acadian Flycatcher, Barn Swallow, Cape May Warbler): give data "
        "of its classes, in its order (class folders are taken in sorted order); for images of some of its classes, "
        "use pim-infer; to train it on these classes, --do_train true."
    )
    assert not (checkpoint / "test_results.json").exists()


def test_a_model_name_or_path_that_is_not_a_pim_model_folder_is_refused_before_reading_images(tmp_path):
    start = [*TINY_RUN, "--model_name_or_path"]
    missing = tmp_path / "no_such_model"
    assert refused_before_reading_images(tmp_path, *start, str(missing)) == (
        f"--model_name_or_path {str(missing)!r} does not exist: check the path (it should hold config.json and "
        "model.safetensors), or give a Hub model id such as 'user/pim-cub200'."
    )
    assert refused_before_reading_images(tmp_path, *start, "someone/not-cached") == (
        "--model_name_or_path 'someone/not-cached' is not a local folder, and the Hub is disabled (HF_HUB_OFFLINE=1) "
        "and this model is not in the local cache: unset HF_HUB_OFFLINE, download it first (`hf download "
        "someone/not-cached`), or give the path of a model folder."
    )
    folder = tmp_path / "config_only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert refused_before_reading_images(tmp_path, *start, str(folder)) == (
        f"--model_name_or_path {str(folder)!r} has a config.json but no model weights (model.safetensors): copy the "
        "whole folder written by `model.save_pretrained` (or train_pim.py), or give one of its checkpoint-* folders."
    )
    (folder / "model.safetensors").touch()
    assert refused_before_reading_images(tmp_path, *start, str(folder)) == (
        f"--model_name_or_path {folder} is a model of type 'vit', not PIM: give a model trained by train_pim.py (its "
        "--output_dir or a checkpoint-* folder) or converted by pim-convert."
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--synthetic_num_classes", "1"], "--synthetic_num_classes 1 (from the command line) must be between 2 and "
                                           "12."),
        (["--synthetic_num_classes", "13"], "--synthetic_num_classes 13 (from the command line) must be between 2 and "
                                            "12."),
        (["--synthetic_train_per_class", "0"], "--synthetic_train_per_class 0 (from the command line) must be at "
                                               "least 1."),
    ],
)  # fmt: skip
def test_synthetic_set_sizes_are_refused_by_flag_before_generating_it(tmp_path, flags, expected):
    synthetic_dir = tmp_path / "synthetic"
    flags = [*TINY_RUN, "--dataset", "synthetic", "--synthetic_dir", str(synthetic_dir), *flags]
    assert user_error([*flags, "--output_dir", str(tmp_path / "run")]) == expected
    assert not synthetic_dir.exists()


def test_max_train_samples_that_leaves_a_class_without_images_is_named(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train",), images_per_class=2)
    flags = [*TINY_RUN, "--train_dir", str(data_dir / "train"), "--output_dir", str(tmp_path / "run")]
    assert user_error([*flags, "--max_train_samples", "1"]) == (
        "--max_train_samples 1 keeps 1 of the 6 training images, which leaves 2 of the 3 classes without any "
        "('Acadian Flycatcher', 'Cape May Warbler'): a class without training images cannot be learnt. Give a larger "
        "--max_train_samples (it draws images at random: several per class, e.g. 15 for 3 classes), or remove it."
    )
    arguments = train_pim.parse_arguments([*flags, "--max_train_samples", "5"])
    assert len(train_pim.load_data(arguments[2], seed=0)["train"]) == 5  # every class kept
