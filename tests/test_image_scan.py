"""The load-time image scan and its per-file cache (path, size, modification time)."""

import os
import sqlite3

import pytest

from fgvc_trees import _image, _save, _write_corrupt, _write_truncated
from modeling_pim.data import image_scan
from modeling_pim.data.image_scan import decode_error, scan_cache_file, scan_images


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

    def __call__(self, path: str) -> str | None:
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
