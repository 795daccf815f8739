"""
The load-time image scan: every image a dataset lists is decoded once before training, so that a missing, corrupt or
truncated file is reported and skipped instead of crashing a run hours in.

For large datasets (iNaturalist 2021 has 2.7 M training images) a full decode on every run is too slow, so the verdict
for each file is cached in a SQLite file keyed by the file's absolute path, size and modification time: a second run
reads the cache, stats every file and decodes only the new and changed ones. The cache is written as the scan goes, so
an interrupted scan keeps what it has checked.
"""

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import PIL
from transformers.utils import logging

from ..utils.cache import cache_dir
from .image_files import load_image


logger = logging.get_logger(__name__)

# Part of every cache file's identity: raise it whenever `decode_error` (so `load_image`) changes what it accepts, so
# that verdicts of an older check are never reused. The Pillow version is part of it too (a new Pillow may read files
# the old one refused).
SCAN_VERSION = 1
# Files per thread-pool task: amortises the task overhead over cheap (cached) files, yet keeps the progress bar moving.
CHUNK_SIZE = 64
# Seconds between two commits of new verdicts to the cache file.
COMMIT_INTERVAL = 5.0
# Scans of fewer images than this show no progress bar.
PROGRESS_BAR_MIN_IMAGES = 1000


def decode_error(path: str) -> str | None:
    """The reason why `path` cannot be decoded into the RGB image the model sees ([`load_image`]), or `None`."""
    try:
        load_image(path)
    except Exception as error:  # Any failure to decode makes the image unusable, whatever PIL plugin raised it.
        return f"{type(error).__name__}: {error}"
    return None


def default_scan_cache_dir() -> Path:
    """Where the scan caches live by default: `$PIM_CACHE/image_scan` or `~/.cache/modeling_pim/image_scan`."""
    return cache_dir("image_scan")


def scan_cache_file(directory: str | os.PathLike, key: str) -> Path:
    """
    The cache file of one dataset in `directory`: `key` (e.g. `"Stanford Cars at /data/stanford_cars"`) made readable
    (its first and last 30 letters and digits) and its hash, `<directory>/<readable key>-<16 hex digits>.sqlite`.
    """
    readable = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")
    if len(readable) > 61:
        readable = f"{readable[:30]}_{readable[-30:]}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return Path(directory).expanduser() / f"{readable}-{digest}.sqlite"


@dataclass
class ImageScan:
    """
    The result of [`scan_images`].

    Attributes:
        errors (`dict[str, str]`):
            Path → reason (`"<exception type>: <message>"`) for every image that cannot be decoded or does not exist,
            in the order the paths were given.
        num_images (`int`):
            Images checked.
        num_decoded (`int`):
            Images decoded by this scan; the others existed with the size and modification time the cache holds and
            got its verdict.
        cache_file (`Path`, *optional*):
            The cache file used, or `None` when the scan ran without one.
    """

    errors: dict[str, str]
    num_images: int
    num_decoded: int
    cache_file: Path | None


class _ScanCache:
    """The SQLite file holding one verdict per path: (size in bytes, modification time in ns, reason or NULL)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.failed = False
        self.connection = sqlite3.connect(path, timeout=120)
        version = f"{SCAN_VERSION} Pillow {PIL.__version__}"
        with self.connection:
            self.connection.execute("CREATE TABLE IF NOT EXISTS scan_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS images "
                "(path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, error TEXT) WITHOUT ROWID"
            )
            stored = self.connection.execute("SELECT value FROM scan_info WHERE key = 'version'").fetchone()
            if stored is None or stored[0] != version:
                self.connection.execute("DELETE FROM images")
                self.connection.execute("INSERT OR REPLACE INTO scan_info VALUES ('version', ?)", (version,))

    def entries(self) -> dict[str, tuple[int, int, str | None]]:
        return {path: (size, mtime_ns, error) for path, size, mtime_ns, error in self.connection.execute(
            "SELECT path, size, mtime_ns, error FROM images"
        )}

    def store(self, rows: Sequence[tuple[str, int, int, str | None]]) -> None:
        """Adds or replaces `rows`; a failure (disk full, file locked too long) is a warning and ends the caching."""
        if self.failed or not rows:
            return
        try:
            with self.connection:
                self.connection.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            self.failed = True
            logger.warning(f"Cannot write the image scan cache {self.path} ({error}): new verdicts are not cached.")

    def close(self) -> None:
        self.connection.close()


def _open_cache(path: Path) -> _ScanCache | None:
    """Opens (or creates) the cache at `path`; a damaged file is replaced; an unusable location means no cache."""
    try:
        return _ScanCache(path)
    except sqlite3.DatabaseError as error:
        if not path.is_file():
            logger.warning(f"Cannot create the image scan cache {path} ({error}): every image will be decoded.")
            return None
        logger.warning(f"The image scan cache {path} is damaged ({error}): starting a new one.")
        path.unlink()
    except OSError as error:
        logger.warning(f"Cannot create the image scan cache {path} ({error}): every image will be decoded.")
        return None
    try:
        return _ScanCache(path)
    except (sqlite3.DatabaseError, OSError) as error:
        logger.warning(f"Cannot create the image scan cache {path} ({error}): every image will be decoded.")
        return None


def _check_chunk(
    chunk: Sequence[tuple[str, tuple[int, int, str | None] | None]], check: Callable[[str], str | None]
) -> list[tuple[str, tuple[int, int] | None, str | None, bool]]:
    """(path, (size, mtime_ns) or None when missing, reason or None, whether it was decoded) for each cached entry."""
    results = []
    for path, cached in chunk:
        try:
            stat = os.stat(path)
        except OSError as error:
            results.append((path, None, f"{type(error).__name__}: {error}", False))
            continue
        key = (stat.st_size, stat.st_mtime_ns)
        if cached is not None and cached[:2] == key:
            results.append((path, key, cached[2], False))
        else:
            results.append((path, key, check(path), True))
    return results


def scan_images(
    paths: Iterable[str | os.PathLike],
    cache_file: str | os.PathLike | None = None,
    num_workers: int | None = None,
    check: Callable[[str], str | None] = decode_error,
) -> ImageScan:
    """
    Decodes every image once (in a thread pool, with a progress bar and an ETA from 1,000 images on) and reports those
    that fail: missing files, files that are not images, corrupt or truncated images.

    Args:
        paths (`Iterable[str | os.PathLike]`):
            Image files to check.
        cache_file (`str` or `os.PathLike`, *optional*):
            SQLite file of verdicts keyed by (path, size, modification time), created if needed (see
            [`scan_cache_file`]): files unchanged since they were checked are not decoded again. A cache written by
            another `SCAN_VERSION` or Pillow version is cleared first; a damaged one is replaced; an unusable location
            is a warning and a scan without cache. Without it every image is decoded.
        num_workers (`int`, *optional*):
            Threads; defaults to `concurrent.futures.ThreadPoolExecutor`'s default (`min(32, os.cpu_count() + 4)`).
            Decoding releases the GIL, and threads also hide file system latency.
        check (`Callable[[str], str | None]`, *optional*, defaults to [`decode_error`]):
            Returns why a path cannot be used, or `None`.

    Returns:
        [`ImageScan`]: the unreadable paths with their reasons, and how many images were decoded.
    """
    paths = [os.fspath(path) for path in paths]
    start = time.monotonic()
    cache = None if cache_file is None else _open_cache(Path(cache_file))
    known = cache.entries() if cache is not None else {}
    chunks = [
        [(path, known.get(path)) for path in paths[index : index + CHUNK_SIZE]]
        for index in range(0, len(paths), CHUNK_SIZE)
    ]
    del known
    errors: dict[str, str] = {}
    num_decoded = num_missing = 0
    pending: list[tuple[str, int, int, str | None]] = []
    last_commit = time.monotonic()
    executor = ThreadPoolExecutor(max_workers=num_workers)
    progress = logging.tqdm(
        total=len(paths), desc="Checking images", unit="img", disable=len(paths) < PROGRESS_BAR_MIN_IMAGES
    )
    futures = [executor.submit(_check_chunk, chunk, check) for chunk in chunks]
    try:
        for future in as_completed(futures):
            results = future.result()
            for path, key, error, decoded in results:
                if error is not None:
                    errors[path] = error
                if decoded:
                    num_decoded += 1
                    pending.append((path, *key, error))
                elif key is None:
                    num_missing += 1
            progress.update(len(results))
            progress.set_postfix_str(f"{num_decoded} decoded, {len(errors)} unreadable", refresh=False)
            if cache is not None and time.monotonic() - last_commit > COMMIT_INTERVAL:
                cache.store(pending)
                pending, last_commit = [], time.monotonic()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        progress.close()
        if cache is not None:
            cache.store(pending)
            cache.close()
    if paths:
        logger.info(
            f"Checked {len(paths)} images in {time.monotonic() - start:.1f} s: {num_decoded} decoded, "
            f"{len(paths) - num_decoded - num_missing} unchanged since their cached check"
            + (f" ({cache.path})" if cache is not None else "")
            + f", {num_missing} missing, {len(errors)} unreadable in all."
        )
    return ImageScan(
        errors={path: errors[path] for path in paths if path in errors},
        num_images=len(paths),
        num_decoded=num_decoded,
        cache_file=None if cache is None else cache.path,
    )


__all__ = [
    "SCAN_VERSION",
    "ImageScan",
    "decode_error",
    "default_scan_cache_dir",
    "scan_cache_file",
    "scan_images",
]
