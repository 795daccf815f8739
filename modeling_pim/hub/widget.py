"""
The example image of a model page: recorded by training, staged into the repository, classified when the card is built.

The Hub serves no live widget for custom-code models (hub-docs `models-widgets.md`, "Widget Availability and Provider
Support"), but it shows a card's `widget:` example with its `output:` when no provider serves the model
(`models-widgets.md`, "Example outputs"). So the model page gets

- an image stored in the repository (`src: widget_example.jpg`): the file given with `--widget_image`, else the first
  test image of the training run, which `train_pim.py` copies, bytes untouched, to `output_dir/test_example.<ext>`
  ([`save_test_example`]): a dataset's paths may move and a Hub dataset has no paths, so a path alone would not do;
- the model's own top-5 answer for that image ([`widget_output`]), computed by the `image-classification` pipeline,
  the path a user of the model (and the repository's `handler.py`) takes.
"""

import io
import os
import shutil
from pathlib import Path
from typing import Any

import PIL.Image
from datasets import Dataset
from transformers import PreTrainedModel, pipeline
from transformers.utils import logging

from ..data.image_files import load_image
from ..pipeline_pim import PimImageClassificationPipeline
from ..training.run_folder import TEST_EXAMPLE_STEM


logger = logging.get_logger(__name__)

WIDGET_IMAGE_STEM = "widget_example"
# Formats every browser shows, with the extension the staged file gets.
BROWSER_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}
# Longest side of a staged example; a larger image (or one in another format) is re-encoded as JPEG.
MAX_WIDGET_SIDE = 2048
WIDGET_TOP_K = 5


def _image_format(data: bytes) -> str | None:
    """PIL's format name of an encoded image (`"JPEG"`, `"TIFF"`...), `None` when PIL cannot identify it."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            return image.format
    except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError
        return None


def save_test_example(dataset: Dataset, output_dir: str | os.PathLike) -> Path | None:
    """
    Copies the first image of `dataset` (an `image` column of `datasets.Image`), bytes untouched, to
    `output_dir/test_example.<ext>` and returns its path; `None` (logged) for an empty split or bytes PIL cannot
    identify. Replaces the example of an earlier run in the same folder.
    """
    if len(dataset) == 0:
        return None
    # The arrow view reads the stored {bytes, path} of the row without decoding it or running the split's transform.
    stored = dataset.with_format("arrow")[:1].column("image")[0].as_py()
    data = stored["bytes"] if stored["bytes"] is not None else Path(stored["path"]).read_bytes()
    image_format = _image_format(data)
    if image_format is None:
        logger.warning(f"The first test image ({stored['path']}) is not an image PIL can identify: no widget example.")
        return None
    output_dir = Path(output_dir)
    for previous in output_dir.glob(f"{TEST_EXAMPLE_STEM}.*"):
        previous.unlink()
    path = output_dir / f"{TEST_EXAMPLE_STEM}{BROWSER_FORMATS.get(image_format, '.' + image_format.lower())}"
    path.write_bytes(data)
    return path


def find_test_example(model_dir: str | os.PathLike) -> Path | None:
    """The `test_example.<ext>` that [`save_test_example`] wrote into `model_dir`, if any."""
    return next((path for path in sorted(Path(model_dir).glob(f"{TEST_EXAMPLE_STEM}.*")) if path.is_file()), None)


def stage_widget_image(source: str | os.PathLike, staging_dir: str | os.PathLike) -> str:
    """
    Writes the example image into the repository folder `staging_dir` as `widget_example.<ext>` and returns that
    name: the file itself when browsers show its format and its longest side is at most `MAX_WIDGET_SIDE`, else the
    image as the model sees it (decoded to RGB) resized to fit `MAX_WIDGET_SIDE` and saved as JPEG.

    Raises:
        `ValueError`: `source` is not a file, or PIL cannot decode it; the message names the file.
    """
    source = Path(source)
    if not source.is_file():
        raise ValueError(f"{str(source)!r} does not exist or is not a file")
    try:
        image_format = _image_format(source.read_bytes())
        image = load_image(source)
    except Exception as error:  # Any PIL plugin failure means the same thing to the user: not a readable image.
        raise ValueError(f"{str(source)!r} is not an image PIL can read ({type(error).__name__}: {error})") from error
    extension = BROWSER_FORMATS.get(image_format)
    if extension is not None and max(image.size) <= MAX_WIDGET_SIDE:
        name = f"{WIDGET_IMAGE_STEM}{extension}"
        shutil.copyfile(source, Path(staging_dir) / name)
        return name
    name = f"{WIDGET_IMAGE_STEM}.jpg"
    image.thumbnail((MAX_WIDGET_SIDE, MAX_WIDGET_SIDE), PIL.Image.Resampling.LANCZOS)
    image.save(Path(staging_dir) / name, quality=95)
    return name


def widget_output(
    model: PreTrainedModel, processor: Any, image_path: str | os.PathLike, top_k: int = WIDGET_TOP_K
) -> list[dict[str, Any]]:
    """
    The model's answer for one image as the card's `widget.output`: `[{"label": str, "score": float}, ...]`, the
    `top_k` classes of the final head (softmax probabilities rounded to 4 decimals), best first, computed by the
    model's `image-classification` pipeline ([`PimImageClassificationPipeline`], which `pipeline(...,
    trust_remote_code=True)` builds for a user of the repository) on the image file.
    """
    classifier = pipeline(
        "image-classification", model=model, image_processor=processor, pipeline_class=PimImageClassificationPipeline
    )
    predictions = classifier(os.fspath(image_path), top_k=top_k)
    return [{"label": prediction["label"], "score": round(float(prediction["score"]), 4)} for prediction in predictions]


__all__ = [
    "MAX_WIDGET_SIDE",
    "WIDGET_IMAGE_STEM",
    "find_test_example",
    "save_test_example",
    "stage_widget_image",
    "widget_output",
]
