"""The model page's example image: recorded by training, staged into the repository, and the Space's staged code."""

import io

import numpy as np
import pytest
from datasets import Dataset, Image as ImageFeature
from PIL import Image

from modeling_pim.hub.staging import APP_TEMPLATE, HANDLER_TEMPLATE, package_closure, third_party_modules
from modeling_pim.hub.widget import MAX_WIDGET_SIDE, find_test_example, save_test_example, stage_widget_image


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def random_image(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_first_test_image_is_recorded_bytes_untouched_from_a_path_or_from_bytes(tmp_path):
    first, second = tmp_path / "first.JPG", tmp_path / "second.png"
    random_image(30, 20).save(first, format="JPEG")
    random_image(20, 30).save(second)
    on_disk = Dataset.from_dict({"image": [str(first), str(second)]}).cast_column("image", ImageFeature())
    on_disk.set_transform(lambda batch: {"pixel_values": [0] * len(batch["image"])})  # as train_pim.py sets it
    output_dir = tmp_path / "run"
    output_dir.mkdir()

    assert save_test_example(on_disk, output_dir) == output_dir / "test_example.jpg"
    assert (output_dir / "test_example.jpg").read_bytes() == first.read_bytes()

    tiff = encoded(Image.new("I;16", (8, 8), 4000), "TIFF")  # a Hub dataset stores bytes, no path
    in_parquet = Dataset.from_dict({"image": [{"bytes": tiff, "path": None}]}).cast_column("image", ImageFeature())
    assert save_test_example(in_parquet, output_dir) == output_dir / "test_example.tiff"
    assert sorted(path.name for path in output_dir.iterdir()) == ["test_example.tiff"]  # the older one is replaced
    assert find_test_example(output_dir).read_bytes() == tiff
    assert find_test_example(tmp_path / "nowhere") is None


def test_widget_image_is_copied_when_browsers_show_it_else_reencoded_at_a_bounded_size(tmp_path):
    png, tiff, wide = tmp_path / "bird.png", tmp_path / "bird.tiff", tmp_path / "wide.jpg"
    random_image(40, 30).save(png)
    random_image(40, 30).save(tiff)
    random_image(3 * MAX_WIDGET_SIDE // 2, 100).save(wide)
    staged = {}
    for source in (png, tiff, wide):
        (tmp_path / source.name.replace(".", "_")).mkdir()
        name = stage_widget_image(source, tmp_path / source.name.replace(".", "_"))
        staged[source.name] = tmp_path / source.name.replace(".", "_") / name

    assert staged["bird.png"].name == "widget_example.png" and staged["bird.png"].read_bytes() == png.read_bytes()
    with Image.open(staged["bird.tiff"]) as image:
        assert staged["bird.tiff"].name == "widget_example.jpg" and image.format == "JPEG" and image.size == (40, 30)
    with Image.open(staged["wide.jpg"]) as image:
        assert image.size == (MAX_WIDGET_SIDE, round(100 * MAX_WIDGET_SIDE / (3 * MAX_WIDGET_SIDE // 2)))


def test_widget_image_that_is_not_an_image_names_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello")

    with pytest.raises(ValueError, match=r"^'.*notes.png' is not an image PIL can read \(UnidentifiedImageError"):
        stage_widget_image(text, tmp_path)
    with pytest.raises(ValueError, match="does not exist or is not a file"):
        stage_widget_image(tmp_path / "missing.jpg", tmp_path)


def test_the_space_stages_the_heatmap_code_and_the_model_classes_it_reads_not_the_package_init():
    names = {path.relative_to(APP_TEMPLATE.parents[1]).as_posix() for path in package_closure(APP_TEMPLATE)}

    assert {"tools/heatmap.py", "tools/infer.py", "image_processing_pim.py", "modeling_pim.py"} <= names
    assert {"configuration_pim.py", "pipeline_pim.py"} <= names
    assert not names & {"hub/app.py", "hub/staging.py", "__init__.py"}
    assert third_party_modules([HANDLER_TEMPLATE]) == {"PIL", "torch", "transformers"}
