"""
Every name the repository's Python code uses exists (pyflakes' undefined-name checks over every `.py` file): most of
all for the code this suite cannot run — the CUDA tests (`tests/test_gpu.py`, skipped without a GPU) and the GPU
kit (`benchmarks/gpu/`) — where a renamed import would otherwise be found only on the next GPU machine.
"""

import ast
from pathlib import Path

from pyflakes.checker import Checker
from pyflakes.messages import UndefinedExport, UndefinedLocal, UndefinedName


REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("modeling_pim", "tests", "benchmarks")
UNDEFINED = (UndefinedName, UndefinedExport, UndefinedLocal)


def python_files() -> list[Path]:
    files = [REPO / "train_pim.py", REPO / "push_to_hub.py"]
    for folder in SOURCE_FOLDERS:
        files += sorted((REPO / folder).rglob("*.py"))
    return files


def test_every_name_used_is_defined():
    undefined = []
    for path in python_files():
        checker = Checker(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), filename=str(path))
        undefined += [
            f"{path.relative_to(REPO)}:{message.lineno}: {message.message % message.message_args}"
            for message in checker.messages
            if isinstance(message, UNDEFINED)
        ]
    assert len(python_files()) > 80 and not undefined, "\n".join(undefined)
