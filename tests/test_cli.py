"""
The one error path of every entry point (`modeling_pim.utils.cli`): a user error is one `<program>: error:` line with
exit code 2 and no traceback (`--debug` / `PIM_DEBUG=1` show it), a bug keeps its traceback, known library errors name
the damaged file, and output paths are checked before any model is loaded.
"""

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from fgvc_trees import make_image_folders
from tiny_models import tiny_pim_config

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.tools import pim_convert, pim_heatmap, pim_infer
from modeling_pim.utils.cli import UserInputError, check_output_file, run_command


ROOT = Path(__file__).resolve().parents[1]
LABELS = ["cardinal", "blue jay", "house sparrow"]
SAFETENSORS_FIX = "download it again, or re-save the model with `save_pretrained`."
JSON_FIX = "fix the file, or download the model again or re-save it with `save_pretrained`."
CONFIG_FIX = "Fix the file, or download the model again or re-save it with `save_pretrained`."


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    PimForImageClassification(tiny_pim_config(LABELS)).save_pretrained(path)
    PimImageProcessor.for_image_size(64).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "bird.png"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(path)
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def damaged_copy(model_dir: Path, tmp_path: Path, filename: str, damage) -> Path:
    """A copy of the model folder whose `filename` is replaced by `damage(original bytes)`."""
    copy = tmp_path / "damaged"
    shutil.copytree(model_dir, copy)
    (copy / filename).write_bytes(damage((model_dir / filename).read_bytes()))
    return copy


def with_config_field(field: str, value) -> Callable[[bytes], bytes]:
    """A damage of config.json: `field` set to `value`."""
    return lambda data: json.dumps({**json.loads(data), field: value}, indent=2).encode()


# (file, damage, expected message after "<file> ")
DAMAGED_FILES = {
    "empty weights": (
        "model.safetensors",
        lambda data: b"",
        f"is not a valid safetensors file (an empty file): {SAFETENSORS_FIX}",
    ),
    "truncated weights": (
        "model.safetensors",
        lambda data: data[: len(data) // 2],
        "is not a valid safetensors file ({size:,} bytes, incomplete metadata, file not fully covered): "
        + SAFETENSORS_FIX,
    ),
    "not a safetensors file": (
        "model.safetensors",
        lambda data: b"<html>Not Found</html>",
        f"is not a valid safetensors file (22 bytes, header too large): {SAFETENSORS_FIX}",
    ),
    "invalid config.json": (
        "config.json",
        lambda data: b'{"model_type": "pim",\n  "num_labels": 3\n',
        f"is not valid JSON (Expecting ',' delimiter at line 3, column 1): {JSON_FIX}",
    ),
    "empty preprocessor_config.json": (
        "preprocessor_config.json",
        lambda data: b"",
        f"is not valid JSON (Expecting value at line 1, column 1): {JSON_FIX}",
    ),
    "config.json field of the wrong type": (
        "config.json",
        with_config_field("fpn_size", "abc"),
        f"is not a valid PimConfig: `fpn_size` must be an integer, got 'abc' (str). {CONFIG_FIX}",
    ),
    "config.json list field of the wrong type": (
        "config.json",
        with_config_field("num_selects", 3),
        f"is not a valid PimConfig: `num_selects` must be a list of integers, got 3 (int). {CONFIG_FIX}",
    ),
}


def expected_damage_line(program: str, path: Path, template: str) -> str:
    return f"{program}: error: {path} {template.format(size=path.stat().st_size)}"


@pytest.mark.parametrize("case", list(DAMAGED_FILES))
@pytest.mark.parametrize("program", ["pim-infer", "pim-heatmap"])
def test_damaged_model_file_is_one_error_line_naming_it(program, case, model_dir, image_file, tmp_path, capsys):
    filename, damage, template = DAMAGED_FILES[case]
    damaged = damaged_copy(model_dir, tmp_path, filename, damage)
    if program == "pim-infer":
        status = pim_infer.main([str(damaged), str(image_file.parent), "--output_dir", str(tmp_path / "out")])
    else:
        status = pim_heatmap.main([str(damaged), str(image_file), "--output", str(tmp_path / "heatmap.png")])

    stderr = capsys.readouterr().err
    assert status == 2
    assert error_lines(stderr) == [expected_damage_line(program, damaged / filename, template)]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", ["empty weights", "config.json list field of the wrong type"])
def test_push_to_hub_and_train_pim_name_a_damaged_model_file(case, model_dir, tmp_path, capsys):
    filename, damage, template = DAMAGED_FILES[case]
    model = damaged_copy(model_dir, tmp_path, filename, damage)
    push_to_hub = load_script("push_to_hub")
    arguments = ["--model_dir", str(model), "--repo_id", "user/pim", "--dry_run", "--local_dir", str(tmp_path / "s")]
    assert push_to_hub.main(arguments) == 2
    assert error_lines(capsys.readouterr().err) == [expected_damage_line("push_to_hub.py", model / filename, template)]

    sys.path.insert(0, str(ROOT))
    import train_pim

    folders = make_image_folders(tmp_path / "data")
    arguments = [
        "--dataset", "folders", "--train_dir", str(folders / "train"), "--model_name_or_path", str(model),
        "--output_dir", str(tmp_path / "run"), "--do_train", "true", "--use_cpu", "true", "--report_to", "none",
    ]  # fmt: skip
    assert run_command("train_pim.py", train_pim.main, arguments) == 2
    stderr = capsys.readouterr().err
    assert error_lines(stderr) == [expected_damage_line("train_pim.py", model / filename, template)]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("program", ["pim-infer", "pim-heatmap"])
def test_processor_of_another_image_size_points_at_its_file(program, model_dir, image_file, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    PimImageProcessor.for_image_size(96).save_pretrained(model)
    if program == "pim-infer":
        status = pim_infer.main([str(model), str(image_file.parent), "--output_dir", str(tmp_path / "out")])
    else:
        status = pim_heatmap.main([str(model), str(image_file), "--output", str(tmp_path / "heatmap.png")])

    assert status == 2
    assert error_lines(capsys.readouterr().err) == [
        f"{program}: error: {model / 'preprocessor_config.json'} makes 96×96 images but the model takes 64×64 "
        "(config.json image_size): set its crop_size (and size) to 64, e.g. with "
        "PimImageProcessor.for_image_size(64).save_pretrained(...), or delete the file to use that default."
    ]


def test_output_paths_are_checked_before_the_model_is_loaded(image_file, tmp_path, capsys):
    missing_model = str(tmp_path / "no_model")  # never reached: the output error comes first
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")

    assert pim_heatmap.main([missing_model, str(image_file), "--output", str(tmp_path / "new" / "x.xyz")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"pim-heatmap: error: --output {str(tmp_path / 'new' / 'x.xyz')!r}: '.xyz' is not a supported format; use "
        "one of .png, .jpg, .jpeg, .webp, .tif, .tiff, .pdf, .svg, .eps, .ps (a name without an extension gets .png)."
    ]
    assert pim_heatmap.main([missing_model, str(image_file), "--output", str(a_file / "x.png")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"pim-heatmap: error: --output {str(a_file / 'x.png')!r}: {str(a_file)!r} is a file, not a folder: choose "
        "another path."
    ]
    assert pim_infer.main([missing_model, str(image_file.parent), "--output_dir", str(a_file / "out")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"pim-infer: error: --output_dir {str(a_file / 'out')!r}: {str(a_file)!r} is a file, not a folder: choose "
        "another path."
    ]
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": {}}, checkpoint)
    assert pim_convert.main([str(checkpoint), "--backbone", "resnet50", "--output_dir", str(a_file)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"pim-convert: error: --output_dir {str(a_file)!r}: {str(a_file)!r} is a file, not a folder: choose another "
        "path."
    ]
    assert not (tmp_path / "new").exists()


def test_heatmap_output_without_extension_writes_and_reports_the_png(model_dir, image_file, tmp_path, capsys):
    output = tmp_path / "figures" / "bird"

    assert pim_heatmap.main([str(model_dir), str(image_file), "--output", str(output)]) == 0

    written = output.with_name("bird.png")
    assert capsys.readouterr().out.splitlines()[-1] == f"Wrote {written}."
    assert not output.exists() and written.read_bytes().startswith(b"\x89PNG")


def test_output_file_check():
    assert check_output_file("out/figure", "--output", (".png", ".pdf"), ".png") == Path("out/figure.png")
    assert check_output_file("out/figure.PDF", "--output", (".png", ".pdf"), ".png") == Path("out/figure.PDF")


def failing(error: Exception):
    def command(argv: list[str]) -> int:
        raise error

    return command


def test_debug_flag_or_environment_shows_the_traceback(monkeypatch, capsys):
    assert run_command("pim-x", failing(UserInputError("--flag 'v' is wrong: use 'w'.")), []) == 2
    stderr = capsys.readouterr().err
    assert stderr == "pim-x: error: --flag 'v' is wrong: use 'w'.\n"

    assert run_command("pim-x", failing(UserInputError("--flag 'v' is wrong: use 'w'.")), ["--debug"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("Traceback") and stderr.endswith("pim-x: error: --flag 'v' is wrong: use 'w'.\n")

    monkeypatch.setenv("PIM_DEBUG", "1")
    assert run_command("pim-x", failing(UserInputError("bad")), []) == 2
    assert capsys.readouterr().err.startswith("Traceback")


def test_a_bug_keeps_its_traceback(capsys):
    with pytest.raises(ZeroDivisionError):
        run_command("pim-x", failing(ZeroDivisionError("division by zero")), [])
    assert capsys.readouterr().err == ""
    assert run_command("pim-x", lambda argv: {"train": {}}, []) == 0
    assert run_command("pim-x", lambda argv: 3, []) == 3


def test_every_tool_has_a_debug_flag(capsys):
    for main in (pim_infer.main, pim_heatmap.main, pim_convert.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "--debug" in capsys.readouterr().out


def read_json(path: str) -> None:
    """Reads a JSON file as libraries do (its path in a local variable)."""
    with open(path, encoding="utf-8") as file:
        json.load(file)


def test_a_damaged_json_file_gets_the_fix_of_its_kind(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "preprocessor_config.json").write_text("{")
    annotations = tmp_path / "annotations.json"
    annotations.write_text("{")

    assert run_command("pim-x", lambda argv: read_json(str(model / "preprocessor_config.json")), []) == 2
    assert capsys.readouterr().err == (
        f"pim-x: error: {model / 'preprocessor_config.json'} is not valid JSON (Expecting property name enclosed in "
        f"double quotes at line 1, column 2): {JSON_FIX}\n"
    )
    assert run_command("pim-x", lambda argv: read_json(str(annotations)), []) == 2
    assert capsys.readouterr().err == (
        f"pim-x: error: {annotations} is not valid JSON (Expecting property name enclosed in double quotes at line 1, "
        "column 2): fix the file, or restore it from where it came from.\n"
    )


def test_a_message_written_from_a_library_error_is_kept(tmp_path, capsys):
    """A reader that explains a JSON error itself (`raise ... from None`), wrapped as train_pim.py wraps loaders."""
    annotations = tmp_path / "train.json"
    annotations.write_text("{")

    def load(argv: list[str]) -> None:
        try:
            try:
                read_json(str(annotations))
            except json.JSONDecodeError:
                raise ValueError(f"{annotations} is not valid JSON: restore it from the iNaturalist archive.") from None
        except ValueError as error:
            raise UserInputError(str(error)) from error

    assert run_command("train_pim.py", load, []) == 2
    assert capsys.readouterr().err == (
        f"train_pim.py: error: {annotations} is not valid JSON: restore it from the iNaturalist archive.\n"
    )
