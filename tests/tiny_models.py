"""
The tiny PIM configuration shared by the tests of the tools that run a trained model (CPU, 64 px), and the way the
tests run a saved model as remote code.
"""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from modeling_pim import PimConfig


def tiny_pim_config(labels: Sequence[str], **overrides) -> PimConfig:
    """A `test_resnet` PIM at 64 px with every module on and named classes."""
    return PimConfig(
        **{
            "backbone": "test_resnet",
            "image_size": 64,
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "fpn_size": 32,
            "num_selects": [16, 8, 4, 2],
            "tokens_per_graph_node": 2,
            **overrides,
        }
    )


def run_as_remote_code(script: str, folder: Path, *args: str) -> str:
    """
    Runs `python -c script folder *args` in `folder` as a user of the Hub would: offline, `PYTHONPATH` empty, a
    private transformers modules cache (so the code copied beside the saved model is what runs). The script itself
    blocks this package (`sys.modules["modeling_pim"] = None`). Returns its standard output; fails the test with its
    standard error if it exits with an error.
    """
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_MODULES_CACHE": str(folder / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", script, str(folder), *args],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout
