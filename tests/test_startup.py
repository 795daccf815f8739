"""
Start-up: `import modeling_pim` and the `--help` of every entry point import no heavy library (torch, transformers,
timm, datasets); the package's classes are still there, registered with the Auto classes, on first access; the help
text of `train_pim.py` (built from TrainingArguments) is served from its cache the second time. Timings are in
`benchmarks/benchmark_startup.py`; these tests check the behaviour that makes them fast.
"""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modeling_pim.utils import cli
from modeling_pim.utils.cli import cache_help, print_cached_help


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


def run_help(program: str, runner: str, target: str, cache: Path, columns: int = 100) -> tuple[str, str]:
    """Runs `program --help` in a fresh process; returns its help text and the heavy modules it imported."""
    code = PROBE.format(program=program, runner=runner, target=target, heavy=HEAVY)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PIM_CACHE": str(cache), "COLUMNS": str(columns)}
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


def test_make_help_cache_fills_the_cache_train_pim_help_reads(tmp_path):
    """`make install` runs `make help-cache`: the first `train_pim.py --help` of a user is then served from the cache."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PIM_CACHE": str(tmp_path)}
    subprocess.run(
        ["make", "--no-print-directory", "help-cache", f"BIN={Path(sys.executable).parent}"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        check=True,
        start_new_session=True,  # no terminal: the cache is built for 80 columns only
    )
    (cached_file,) = (tmp_path / "help").glob("train_pim.py-*.txt")

    text, heavy = run_help("train_pim.py", "run_path", str(ROOT / "train_pim.py"), tmp_path, columns=80)
    assert heavy == "HEAVY []"
    assert text + "\n" == cached_file.read_text() and "--per_device_train_batch_size" in text


def served_help(script: Path) -> str | None:
    """What `script --help` prints from the help cache, or `None` when it would build its help (a miss)."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        try:
            print_cached_help("program", script, ("transformers",), ["--help"])
        except SystemExit as exit:
            assert exit.code == 0
            return output.getvalue()
    return None


@pytest.fixture
def script(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")
    path = tmp_path / "program.py"
    path.write_text("print('version 1')\n")
    return path


def test_help_cache_is_a_new_entry_after_any_source_or_width_change(script, monkeypatch):
    assert served_help(script) is None
    cache_help("program", script, ("transformers",), "help of version 1\n")
    assert served_help(script) == "help of version 1\n"

    script.write_text("print('version 2')\n")  # stale: the entry of version 1 is not served
    assert served_help(script) is None
    cache_help("program", script, ("transformers",), "help of version 2\n")
    assert served_help(script) == "help of version 2\n"
    monkeypatch.setenv("COLUMNS", "120")  # argparse wraps to the terminal width
    assert served_help(script) is None
    entries = sorted(path.name for path in (script.parent / "cache" / "help").iterdir())
    assert len(entries) == 2 and all(name.startswith("program-") and name.endswith(".txt") for name in entries)


def test_unusable_help_cache_is_a_miss_never_a_crash(script, tmp_path, monkeypatch):
    # The cache folder is a file: nothing can be written or read.
    (tmp_path / "cache").write_text("not a folder")
    cache_help("program", script, ("transformers",), "help\n")
    assert served_help(script) is None

    # The entry cannot be read (a folder in its place), or is empty.
    (tmp_path / "cache").unlink()
    cache_help("program", script, ("transformers",), "help\n")
    (entry,) = (tmp_path / "cache" / "help").iterdir()
    entry.unlink()
    entry.mkdir()
    assert served_help(script) is None
    entry.rmdir()
    entry.write_text("")
    assert served_help(script) is None

    # Renaming the written file into place fails (e.g. a full disk): no entry, no temporary file left behind.
    entry.unlink()

    def fail(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", fail)
        cache_help("program", script, ("transformers",), "help\n")
    assert list((tmp_path / "cache" / "help").iterdir()) == []

    # No home folder to put the cache in.
    monkeypatch.delenv("PIM_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("no home"))))
    cache_help("program", script, ("transformers",), "help\n")
    assert served_help(script) is None


def test_concurrent_writers_never_expose_a_partly_written_help(script):
    """Many processes may build the help at once (e.g. `accelerate launch`): a reader sees a whole text or none."""
    texts = [letter * 2_000_000 for letter in "abcd"]
    path = cli._help_cache_file("program", script, ("transformers",))
    seen, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(path.read_text())
            except FileNotFoundError:
                pass

    def write(text: str) -> None:
        for _ in range(10):
            cache_help("program", script, ("transformers",), text)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(text,)) for text in texts]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()
    assert seen and all(text in texts for text in seen)
    assert path.read_text() in texts and [entry.name for entry in path.parent.iterdir()] == [path.name]
