"""Where the package caches what it generates (the synthetic demo set, the help text of `train_pim.py`)."""

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    """`$PIM_CACHE/<name>` when `PIM_CACHE` is set, else `$XDG_CACHE_HOME/modeling_pim/<name>` (`~/.cache/...`)."""
    if os.environ.get("PIM_CACHE"):
        return Path(os.environ["PIM_CACHE"]).expanduser() / name
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache_home / "modeling_pim" / name


__all__ = ["cache_dir"]
