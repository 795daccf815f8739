"""The load-time image scan and its per-file cache (path, size, modification time)."""

import errno
import os
import sqlite3

import PIL.Image
import pytest

from fgvc_trees import _image, _save, _write_corrupt, _write_truncated
from modeling_pim.data import image_scan
from modeling_pim.data.image_scan import DecodeFailure, decode_error, is_content_error, scan_cache_file, scan_images


@pytest.fixture
def images(tmp_path) -> dict[str, str]:
    """Four good JPEGs, a corrupt and a truncated one, and a path that does not exist."""
    paths = {f"good{index}": _save(_image(index, index, 24), tmp_path / f"good{index}.jpg", None) for index in range(4)}
    _write_corrupt(tmp_path / "corrupt.jpg", seed=0)
    _write_truncated(tmp_path / "truncated.jpg", _image(0, 0, 24))
    paths.update(corrupt=tmp_path / "corrupt.jpg", truncated=tmp_path / "truncated.jpg", missing=tmp_path / "no.jpg")
    return {name: str(path) for name, path in paths.items()}


class CountingCheck:
    """`decode_error`, recording the paths it decodes."""

    def __init__(self, fail_after: int | None = None):
        self.decoded: list[str] = []
        self.fail_after = fail_after

    def __call__(self, path: str) -> DecodeFailure | None:
        if self.fail_after is not None and len(self.decoded) >= self.fail_after:
            raise KeyboardInterrupt
        self.decoded.append(path)
        return decode_error(path)


def test_scan_reports_every_unreadable_image_with_its_reason(images):
    scan = scan_images(images.values(), num_workers=2)
    assert list(scan.errors) == [images["corrupt"], images["truncated"], images["missing"]]
    assert scan.errors[images["corrupt"]].startswith("UnidentifiedImageError: cannot identify image file")
    assert scan.errors[images["truncated"]] == "OSError: Truncated File Read"
    missing = images["missing"]
    assert scan.errors[missing] == f"FileNotFoundError: [Errno 2] No such file or directory: {missing!r}"
    assert (scan.num_images, scan.num_decoded, scan.cache_file) == (7, 6, None)


def test_second_scan_decodes_only_new_and_changed_files(images, tmp_path):
    cache_file = tmp_path / "cache" / "scan.sqlite"
    first = scan_images(images.values(), cache_file, check=CountingCheck())
    check = CountingCheck()
    second = scan_images(images.values(), cache_file, check=check)
    assert check.decoded == [] and second.num_decoded == 0
    assert second.errors == first.errors and second.cache_file == cache_file

    _save(_image(1, 3, 30), tmp_path / "good1.jpg", None)  # rewritten: another size
    _write_corrupt(tmp_path / "good2.jpg", seed=5)  # now corrupt
    os.utime(images["good3"], ns=(1, 1))  # same bytes, another modification time
    new = str(_save(_image(2, 0, 24), tmp_path / "new.jpg", None))
    check = CountingCheck()
    third = scan_images([*images.values(), new], cache_file, check=check)
    assert sorted(check.decoded) == sorted([images["good1"], images["good2"], images["good3"], new])
    assert list(third.errors) == [images["good2"], images["corrupt"], images["truncated"], images["missing"]]


def test_cache_of_another_scan_version_is_not_trusted(images, tmp_path, monkeypatch):
    cache_file = tmp_path / "scan.sqlite"
    scan_images(images.values(), cache_file)
    monkeypatch.setattr(image_scan, "SCAN_VERSION", image_scan.SCAN_VERSION + 1)
    assert scan_images(images.values(), cache_file).num_decoded == 6
    assert scan_images(images.values(), cache_file).num_decoded == 0
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # decides DecompressionBombError: another verdict
    assert scan_images(images.values(), cache_file).num_decoded == 6


def failing_once(monkeypatch, path: str, error: BaseException) -> None:
    """Makes decoding `path` raise `error` until `monkeypatch.undo()`."""
    load_image = image_scan.load_image

    def flaky(candidate):
        if candidate == path:
            raise error
        return load_image(candidate)

    monkeypatch.setattr(image_scan, "load_image", flaky)


ENVIRONMENT_ERRORS = {
    "permission": PermissionError(errno.EACCES, "Permission denied"),
    "io": OSError(errno.EIO, "Input/output error"),
    "stale_nfs_handle": OSError(errno.ESTALE, "Stale file handle"),
    "too_many_open_files": OSError(errno.EMFILE, "Too many open files"),
    "memory": MemoryError(),
    "codec_missing": OSError("decoder jpeg not available"),
    "unknown_exception": RuntimeError("can't start new thread"),
}


@pytest.mark.parametrize("error", ENVIRONMENT_ERRORS.values(), ids=ENVIRONMENT_ERRORS)
def test_environment_errors_skip_the_image_for_this_run_only(images, tmp_path, monkeypatch, caplog, error):
    cache_file, good = tmp_path / "scan.sqlite", images["good0"]
    failing_once(monkeypatch, good, error)
    first = scan_images(images.values(), cache_file)
    assert first.errors[good] == f"{type(error).__name__}: {error}" and first.num_environment_errors == 1
    assert (
        f"1 of the unreadable images failed for a reason of this run, not of their content (permission, I/O or "
        f"memory errors; e.g. {good}: {type(error).__name__}: {error}): they are skipped in this run only and decoded "
        "again next run; fix the cause to get them back."
    ) in caplog.text
    monkeypatch.undo()  # the cause is fixed: same bytes, same size and modification time

    check = CountingCheck()
    second = scan_images(images.values(), cache_file, check=check)
    assert check.decoded == [good] and good not in second.errors and second.num_environment_errors == 0
    assert list(second.errors) == [images["corrupt"], images["truncated"], images["missing"]]
    assert scan_images(images.values(), cache_file).num_decoded == 0


CONTENT_ERRORS = {
    "unidentified": PIL.UnidentifiedImageError("cannot identify image file 'good0.jpg'"),
    "truncated": OSError("image file is truncated (3 bytes not processed)"),
    "decoder": OSError("broken data stream when reading image file"),
    "plugin": SyntaxError("broken PNG file (chunk b'IDAT')"),
    "end_of_file": EOFError("no more images in GIF file"),
    "no_rgb_conversion": ValueError("conversion from CMYK;16B to RGB not supported"),
    "bomb": PIL.Image.DecompressionBombError("Image size (628124515 pixels) exceeds limit of 178956970 pixels"),
}


@pytest.mark.parametrize("error", CONTENT_ERRORS.values(), ids=CONTENT_ERRORS)
def test_content_errors_are_cached_with_the_file(images, tmp_path, monkeypatch, error):
    cache_file, good, reason = tmp_path / "scan.sqlite", images["good0"], f"{type(error).__name__}: {error}"
    failing_once(monkeypatch, good, error)
    first = scan_images(images.values(), cache_file)
    assert first.errors[good] == reason and first.num_environment_errors == 0
    monkeypatch.undo()  # a verdict on these bytes: kept until the file changes
    check = CountingCheck()
    assert scan_images(images.values(), cache_file, check=check).errors[good] == reason and check.decoded == []
    os.utime(good, ns=(1, 1))
    assert good not in scan_images(images.values(), cache_file).errors


def test_decode_errors_of_real_files_are_content_errors(images):
    assert decode_error(images["good0"]) is None
    for name in ("corrupt", "truncated"):
        assert decode_error(images[name]).kind == "content"
    assert decode_error(images["missing"]).kind == "missing"
    assert is_content_error(PIL.UnidentifiedImageError("cannot identify image file"))
    assert not is_content_error(PermissionError(errno.EACCES, "Permission denied"))


def test_interrupted_scan_keeps_what_it_checked(images, tmp_path, monkeypatch):
    monkeypatch.setattr(image_scan, "CHUNK_SIZE", 2)
    monkeypatch.setattr(image_scan, "COMMIT_INTERVAL", 0.0)
    cache_file = tmp_path / "scan.sqlite"
    with pytest.raises(KeyboardInterrupt):
        scan_images(images.values(), cache_file, num_workers=1, check=CountingCheck(fail_after=4))
    with sqlite3.connect(cache_file) as connection:
        assert connection.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 4
    check = CountingCheck()
    scan = scan_images(images.values(), cache_file, check=check)
    assert check.decoded == [images["corrupt"], images["truncated"]]
    assert list(scan.errors) == [images["corrupt"], images["truncated"], images["missing"]]


def test_damaged_cache_is_replaced(images, tmp_path, caplog):
    cache_file = tmp_path / "scan.sqlite"
    cache_file.write_bytes(b"not a database" * 100)
    scan = scan_images(images.values(), cache_file)
    assert scan.num_decoded == 6 and len(scan.errors) == 3
    assert f"The image scan cache {cache_file} is damaged" in caplog.text
    assert scan_images(images.values(), cache_file).num_decoded == 0


def test_unusable_cache_location_scans_without_cache(images, tmp_path, caplog):
    (tmp_path / "a_file").write_text("")
    scan = scan_images(images.values(), tmp_path / "a_file" / "scan.sqlite")
    assert scan.cache_file is None and scan.num_decoded == 6 and len(scan.errors) == 3
    assert f"Cannot create the image scan cache {tmp_path / 'a_file' / 'scan.sqlite'}" in caplog.text


def test_progress_bar_shows_an_eta_for_large_scans(tmp_path, capsys):
    scan_images([str(tmp_path / f"{index}.jpg") for index in range(image_scan.PROGRESS_BAR_MIN_IMAGES)])
    progress = capsys.readouterr().err
    assert "Checking images: 100%" in progress and "1000/1000 [00:00<00:00" in progress


def test_cache_file_names_are_readable_and_distinct(tmp_path):
    first = scan_cache_file(tmp_path, "Stanford Cars at /data/stanford_cars")
    assert first.parent == tmp_path and first.name.startswith("Stanford_Cars_at_data_stanford_cars-")
    assert first != scan_cache_file(tmp_path, "Stanford Cars at /data/stanford-cars")
