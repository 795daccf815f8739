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
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import PIL
from PIL import Image
from transformers.utils import logging

from ..utils.cache import cache_dir
from .image_files import load_image


logger = logging.get_logger(__name__)

# Part of every cache file's identity: raise it whenever `decode_error` (so `load_image`) changes what it accepts or
# what it caches, so that verdicts of an older check are never reused (version 1 cached environment errors too). The
# Pillow version and `PIL.Image.MAX_IMAGE_PIXELS` are part of it too (a new Pillow may read files the old one refused;
# the pixel limit decides `DecompressionBombError`).
SCAN_VERSION = 2
# Exceptions other than `OSError` that decoding raises about the bytes read: PIL plugins' `SyntaxError` ("broken PNG
# file") and `EOFError`, `ValueError` (a tile outside the image, a mode with no RGB conversion), `struct.error` and
# `zlib.error` of malformed chunks, and `DecompressionBombError` (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`).
CONTENT_ERRORS = (SyntaxError, EOFError, ValueError, struct.error, zlib.error, Image.DecompressionBombError)
# PIL's `OSError` for a codec this Pillow was built without: about the installation, not the file.
MISSING_DECODER = re.compile(r"decoder \S+ not available")
# Files per thread-pool task: amortises the task overhead over cheap (cached) files, yet keeps the progress bar moving.
CHUNK_SIZE = 64
# Seconds between two commits of new verdicts to the cache file.
COMMIT_INTERVAL = 5.0
# Scans of fewer images than this show no progress bar.
PROGRESS_BAR_MIN_IMAGES = 1000


def is_content_error(error: Exception) -> bool:
    """
    Whether `error`, raised while decoding an image file, is a verdict on the file's bytes, which the same bytes
    always get again (so the scan caches it), rather than a failure of this run's environment (not cached).

    Content errors: an `OSError` without an `errno`, which PIL raises itself — `PIL.UnidentifiedImageError` (no
    plugin recognises the bytes), "image file is truncated", "Truncated File Read", "broken data stream when reading
    image file", "decoder error -2" —, except "decoder <name> not available" (a Pillow built without that codec); and
    the exceptions of `CONTENT_ERRORS`. Everything else is about the environment: an `OSError` with an `errno` comes
    from the operating system (`PermissionError`, `FileNotFoundError`, `EIO` of a failing or remounted disk, `EMFILE`
    too many open files, `ESTALE`), `MemoryError` from a busy machine; an exception of another type is not known to
    be about the bytes, so it is not cached either (the file is only decoded again next run).
    """
    if isinstance(error, OSError):
        return error.errno is None and not MISSING_DECODER.fullmatch(str(error))
    return isinstance(error, CONTENT_ERRORS)


@dataclass(frozen=True)
class DecodeFailure:
    """
    Why a file cannot be used, from [`decode_error`] (or the scan's `os.stat`).

    Attributes:
        reason (`str`):
            `"<exception type>: <message>"`.
        kind (`str`):
            `"content"`: a verdict on the file's bytes ([`is_content_error`]), which the scan cache keeps;
            `"missing"`: the file does not exist (`FileNotFoundError`); `"environment"`: a failure of this run's
            environment (permission, I/O, memory), reported for this run only. Only `"content"` is cached.
    """

    reason: str
    kind: Literal["content", "missing", "environment"]

    @classmethod
    def from_exception(cls, error: Exception) -> "DecodeFailure":
        """The failure `error` (raised by `os.stat` or while decoding) stands for."""
        if isinstance(error, FileNotFoundError):
            kind = "missing"
        elif is_content_error(error):
            kind = "content"
        else:
            kind = "environment"
        return cls(f"{type(error).__name__}: {error}", kind)


def decode_error(path: str) -> DecodeFailure | None:
    """
    Why `path` cannot be decoded into the RGB image the model sees ([`load_image`]), or `None` when it can. Any
    exception makes the image unusable for this run, whatever raised it; its `kind` says whether the verdict holds
    for the file's bytes (cached) or only for this run.
    """
    try:
        load_image(path)
    except Exception as error:
        return DecodeFailure.from_exception(error)
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
        num_environment_errors (`int`):
            Errors of `errors` that this run's environment caused (permission, I/O, memory: see
            [`is_content_error`]); not cached, so these files are decoded again next run.
        cache_file (`Path`, *optional*):
            The cache file used, or `None` when the scan ran without one.
    """

    errors: dict[str, str]
    num_images: int
    num_decoded: int
    num_environment_errors: int
    cache_file: Path | None


class _ScanCache:
    """The SQLite file holding one verdict per path: (size in bytes, modification time in ns, reason or NULL)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.failed = False
        self.connection = sqlite3.connect(path, timeout=120)
        version = f"{SCAN_VERSION} Pillow {PIL.__version__} MAX_IMAGE_PIXELS {Image.MAX_IMAGE_PIXELS}"
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
    chunk: Sequence[tuple[str, tuple[int, int, str | None] | None]], check: Callable[[str], DecodeFailure | None]
) -> list[tuple[str, tuple[int, int] | None, DecodeFailure | None, bool]]:
    """
    (path, (size, mtime_ns) or None when it cannot be stat'ed, failure or None, whether it was decoded) for each
    cached entry; the cache holds content verdicts only.
    """
    results = []
    for path, cached in chunk:
        try:
            stat = os.stat(path)
        except OSError as error:
            results.append((path, None, DecodeFailure.from_exception(error), False))
            continue
        key = (stat.st_size, stat.st_mtime_ns)
        if cached is not None and cached[:2] == key:
            failure = None if cached[2] is None else DecodeFailure(cached[2], "content")
            results.append((path, key, failure, False))
        else:
            results.append((path, key, check(path), True))
    return results


def scan_images(
    paths: Iterable[str | os.PathLike],
    cache_file: str | os.PathLike | None = None,
    num_workers: int | None = None,
    check: Callable[[str], DecodeFailure | None] = decode_error,
) -> ImageScan:
    """
    Decodes every image once (in a thread pool, with a progress bar and an ETA from 1,000 images on) and reports those
    that fail: missing files, files that are not images, corrupt or truncated images.

    Args:
        paths (`Iterable[str | os.PathLike]`):
            Image files to check.
        cache_file (`str` or `os.PathLike`, *optional*):
            SQLite file of verdicts keyed by (path, size, modification time), created if needed (see
            [`scan_cache_file`]): files unchanged since they were checked are not decoded again. Only verdicts on the
            file's bytes are stored (decoded, or a content error of [`is_content_error`]); a failure of this run's
            environment is not, so the file is decoded again next run. A cache written by another `SCAN_VERSION`,
            Pillow version or `PIL.Image.MAX_IMAGE_PIXELS` is cleared first; a damaged one is replaced; an unusable
            location is a warning and a scan without cache. Without it every image is decoded.
        num_workers (`int`, *optional*):
            Threads; defaults to `concurrent.futures.ThreadPoolExecutor`'s default (`min(32, os.cpu_count() + 4)`).
            Decoding releases the GIL, and threads also hide file system latency.
        check (`Callable[[str], DecodeFailure | None]`, *optional*, defaults to [`decode_error`]):
            Returns why a path cannot be used (and whether that may be cached), or `None`.

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
    num_decoded = num_unchanged = num_missing = 0
    environment_errors: list[str] = []  # paths whose failure is this run's, not their content's (not cached)
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
            for path, key, failure, decoded in results:
                if failure is not None:
                    errors[path] = failure.reason
                    num_missing += failure.kind == "missing"
                    if failure.kind == "environment":
                        environment_errors.append(path)
                num_decoded += decoded
                num_unchanged += not decoded and key is not None
                if decoded and (failure is None or failure.kind == "content"):
                    pending.append((path, *key, None if failure is None else failure.reason))
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
            f"{num_unchanged} unchanged since their cached check"
            + (f" ({cache.path})" if cache is not None else "")
            + f", {num_missing} missing, {len(errors)} unreadable in all."
        )
    if environment_errors:
        example = environment_errors[0]
        logger.warning(
            f"{len(environment_errors)} of the unreadable images failed for a reason of this run, not of their "
            f"content (permission, I/O or memory errors; e.g. {example}: {errors[example]}): they are skipped in this "
            "run only and decoded again next run; fix the cause to get them back."
        )
    return ImageScan(
        errors={path: errors[path] for path in paths if path in errors},
        num_images=len(paths),
        num_decoded=num_decoded,
        num_environment_errors=len(environment_errors),
        cache_file=None if cache is None else cache.path,
    )


__all__ = [
    "CONTENT_ERRORS",
    "SCAN_VERSION",
    "DecodeFailure",
    "ImageScan",
    "decode_error",
    "default_scan_cache_dir",
    "is_content_error",
    "scan_cache_file",
    "scan_images",
]
