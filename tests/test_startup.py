"""
Start-up: `import modeling_pim` and the `--help` of every entry point import no heavy library (torch, transformers,
timm, datasets); the package's classes are still there, registered with the Auto classes, on first access; the help
text of `train_pim.py` (built from TrainingArguments) is served from its cache the second time. Timings are in
`benchmarks/benchmark_startup.py`; these tests check the behaviour that makes them fast.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("datasets", "timm", "torch", "transformers")
PROBE = """
import runpy, sys
sys.argv = [{program!r}, "--help"]
try:
    runpy.{runner}({target!r}, run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print("HEAVY", sorted(name for name in {heavy!r} if name in sys.modules))
"""


def run_help(program: str, runner: str, target: str, cache: Path) -> tuple[str, str]:
    """Runs `program --help` in a fresh process; returns its help text and the heavy modules it imported."""
    code = PROBE.format(program=program, runner=runner, target=target, heavy=HEAVY)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PIM_CACHE": str(cache), "COLUMNS": "100"}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    )
    text, _, last_line = completed.stdout.rstrip("\n").rpartition("\n")
    return text, last_line


@pytest.mark.parametrize(
    "program, runner, target",
    [
        ("pim-infer", "run_module", "modeling_pim.tools.pim_infer"),
        ("pim-heatmap", "run_module", "modeling_pim.tools.pim_heatmap"),
        ("pim-convert", "run_module", "modeling_pim.tools.pim_convert"),
        ("pim-export", "run_module", "modeling_pim.tools.pim_export"),
        ("push_to_hub.py", "run_path", str(ROOT / "push_to_hub.py")),
    ],
)
def test_help_imports_no_heavy_library(program, runner, target, tmp_path):
    text, heavy = run_help(program, runner, target, tmp_path)
    assert text.startswith("usage: ") and "--debug" in text
    assert heavy == "HEAVY []"


def test_train_pim_help_is_served_from_its_cache_the_second_time(tmp_path):
    built, heavy = run_help("train_pim.py", "run_path", str(ROOT / "train_pim.py"), tmp_path)
    assert "torch" in heavy  # the parser is built from TrainingArguments
    assert "--backbone" in built and "--per_device_train_batch_size" in built
    assert len(list((tmp_path / "help").glob("train_pim.py-*.txt"))) == 1

    cached, heavy = run_help("train_pim.py", "run_path", str(ROOT / "train_pim.py"), tmp_path)
    assert heavy == "HEAVY []"
    assert cached == built


def test_import_is_light_and_classes_register_on_first_access():
    code = """
import sys
import modeling_pim
print(sorted(name for name in {heavy!r} if name in sys.modules))
from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
config = AutoConfig.for_model("pim", backbone="test_resnet", image_size=64, num_labels=2)
print(type(config) is PimConfig, AutoModelForImageClassification._model_mapping[PimConfig] is PimForImageClassification)
print(PimConfig._auto_class, PimForImageClassification._auto_class, PimImageProcessor._auto_class)
print(sorted(set(modeling_pim.__all__) - set(dir(modeling_pim))))
""".format(heavy=HEAVY)
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert completed.stdout.splitlines() == [
        "[]",
        "True True",
        "AutoConfig AutoModelForImageClassification AutoImageProcessor",
        "[]",
    ]
