"""
Shared fixtures: miniature fine-grained datasets on disk (see `fgvc_trees`), a private `datasets` cache and a private
`$PIM_CACHE`.
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


# Makes `fgvc_trees` importable by every test module whatever pytest's --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fgvc_trees import make_cub_tree, make_image_folders, make_nabirds_tree  # noqa: E402


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory) -> Path:
    """A `datasets` cache directory private to the test session (for tests that call `datasets.load_dataset`)."""
    return tmp_path_factory.mktemp("datasets_cache")


@pytest.fixture(scope="session", autouse=True)
def private_pim_cache(tmp_path_factory) -> Iterator[Path]:
    """`$PIM_CACHE` private to the test session, so that the image scan caches never land in the user's cache."""
    cache = tmp_path_factory.mktemp("pim_cache")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("PIM_CACHE", str(cache))
        yield cache


@pytest.fixture
def cub_dir(tmp_path) -> Path:
    """A fresh miniature CUB_200_2011 archive (3 classes × 4 images + a corrupt and a truncated file)."""
    return make_cub_tree(tmp_path)


@pytest.fixture
def nabirds_dir(tmp_path) -> Path:
    """A fresh miniature NABirds archive (leaf classes 1010, 295, 313 × 4 images, UUID ids, parent classes)."""
    return make_nabirds_tree(tmp_path)


@pytest.fixture
def image_folders(tmp_path) -> Path:
    """Fresh `train/` and `validation/` class folders (3 classes × 3 images each)."""
    return make_image_folders(tmp_path)
