"""
Image processor for PIM: the paper's evaluation transform (resize 510 → center crop 384 at 384 px), [`image_to_rgb`],
the one conversion of a decoded image into the RGB image the model sees, and [`open_image`], which opens the image a
path, URL or base64 string names without converting it.
"""

import base64
import binascii
import io
import os
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


# The paper resizes to 510 before cropping 384: keep that ratio at other image sizes.
RESIZE_RATIO = 510 / 384
# Pillow's modes of 16-bit unsigned integer pixels (PNG, TIFF, PGM of 16 bits per sample open as one of these).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_MAX = 65535


def _high_bit_depth_to_8_bits(image: PIL.Image.Image) -> PIL.Image.Image:
    """
    Maps a single-channel image of more than 8 bits to an 8-bit `L` image by its real range (never clipping at 255):
    the 16-bit modes by 0..65535; `I` (32-bit integers) by 0..65535 when its values fit in 16 bits (Pillow opens many
    16-bit files as `I`), else by its actual minimum and maximum; `F` (floats) by its actual minimum and maximum (NaN
    → 0). A constant image of the last two kinds becomes black. A gray value marked transparent
    (`info["transparency"]`) becomes a transparent pixel of an `LA` image.
    """
    values = np.asarray(image).astype(np.float64)  # (H, W)
    if image.mode in SIXTEEN_BIT_MODES or (
        image.mode == "I" and values.size and values.min() >= 0 and values.max() <= SIXTEEN_BIT_MAX
    ):
        low, high = 0.0, float(SIXTEEN_BIT_MAX)
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    gray = PIL.Image.fromarray(np.nan_to_num(scaled).round().clip(0, 255).astype(np.uint8), mode="L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)):
        alpha = np.where(np.asarray(image) == transparent, 0, 255).astype(np.uint8)
        gray = PIL.Image.merge("LA", (gray, PIL.Image.fromarray(alpha, mode="L")))
    return gray


def image_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """
    The RGB image the model sees, from any image PIL decodes: the one conversion used by [`PimImageProcessor`] (so by
    `pipeline` and the Hub), by training and evaluation transforms and by the command-line tools.

    1. The EXIF orientation is applied (a photo taken upright is seen upright) and removed, so that converting twice
       gives the same image.
    2. High bit depth is mapped to 8 bits by its real range, never clipped at 255 (what `image.convert("RGB")` does):
       see `_high_bit_depth_to_8_bits`. A 16-bit gradient becomes the same 8-bit gradient (±1 level).
    3. Transparency (an alpha band, or a transparent palette entry, gray value or RGB colour key — PNG's `tRNS`) is
       composited onto white, and the result holds no transparency key (`info["transparency"]`) any more.
    4. Any other mode (`1`, `L`, `P`, `CMYK`, `YCbCr`, `LA`, `PA`, ...) is converted to `RGB` by PIL.

    Args:
        image (`PIL.Image.Image`):
            An opened image (decoded lazily by PIL if it was not loaded yet).

    Returns:
        `PIL.Image.Image`: an `RGB` image of 8 bits per channel, of the upright size.

    Raises:
        `TypeError`: `image` is not a PIL image. Errors of PIL decoding the file (truncated, corrupt) propagate.
    """
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image_to_rgb expects a PIL.Image.Image, got {type(image).__name__}.")
    image = PIL.ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode in SIXTEEN_BIT_MODES:
        image = _high_bit_depth_to_8_bits(image)
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def open_image(source: str | os.PathLike | PIL.Image.Image, timeout: float | None = None) -> PIL.Image.Image:
    """
    The image `source` names, opened by PIL and not converted (its mode, bit depth, transparency and EXIF orientation
    as in the file), for [`image_to_rgb`]. The sources are those of transformers' `load_image`, which converts with
    `image.convert("RGB")` (clipping 16-bit images at 255, dropping transparency): a PIL image (returned as it is), a
    local file, an `http://` or `https://` URL, or a base64-encoded image file (optionally a `data:image/...;base64,`
    URL).

    Args:
        source (`str`, `os.PathLike` or `PIL.Image.Image`):
            The image or where to read it.
        timeout (`float`, *optional*):
            Seconds to wait for a URL's server (`None`: no limit, as in `load_image`).

    Returns:
        `PIL.Image.Image`: the opened image (decoded lazily by PIL, or from the bytes read).

    Raises:
        `ValueError`: a string that is neither an existing file, nor an http(s) URL, nor base64. `TypeError`: any
        other type. Errors of PIL opening the file and of the HTTP request propagate.
    """
    if isinstance(source, PIL.Image.Image):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(
            f"An image must be a PIL image, a local path, an http(s) URL or base64, got {type(source).__name__}."
        )
    if source.startswith(("http://", "https://")):
        import httpx  # transformers' dependency, used as `load_image` uses it

        response = httpx.get(source, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        return PIL.Image.open(io.BytesIO(response.content))
    if os.path.isfile(source):
        return PIL.Image.open(source)
    encoded = source.partition(",")[2] if source.startswith("data:image/") else source
    try:
        return PIL.Image.open(io.BytesIO(base64.b64decode(encoded)))
    except (binascii.Error, ValueError, PIL.UnidentifiedImageError) as error:
        raise ValueError(
            f"{source[:80]!r} is neither an image file, nor an http(s) URL, nor a base64-encoded image ({error})."
        ) from error


class PimImageProcessor(TorchvisionBackend):
    r"""
    Resizes to `size`, center-crops `crop_size`, rescales to [0, 1] and normalises with `image_mean`/`image_std`.
    Training augmentation (random crop, flip, blur, sharpness) is built by the training script from these sizes and
    statistics; the processor only does what evaluation and inference need.

    Use [`PimImageProcessor.for_image_size`] to get the paper's sizes for a model's `image_size` and its timm
    backbone's normalisation.

    PIL images, and images given by path, URL or base64 ([`open_image`]), are converted with [`image_to_rgb`] (EXIF
    orientation, 16-bit and float images by their real range, transparency onto white) instead of transformers'
    `convert_to_rgb`. transformers' own pipelines convert every image with `image.convert("RGB")` before the
    processor sees it; the model's `config.json` therefore names the pipelines of `pipeline_pim.py`, which decode with
    [`image_to_rgb`] (`custom_pipelines`, written by the model's `save_pretrained`).
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 510, "width": 510}
    crop_size = {"height": 384, "width": 384}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def fetch_images(self, image_url_or_urls: Any) -> Any:
        """Opens images given by path, URL or base64 ([`open_image`]) and converts them with [`image_to_rgb`]."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, str):
            with open_image(image_url_or_urls) as image:
                return image_to_rgb(image)
        return super().fetch_images(image_url_or_urls)

    def process_image(self, image: Any, *args, **kwargs) -> Any:
        """Converts a PIL image with [`image_to_rgb`] (not transformers' `convert_to_rgb`), then processes it."""
        if isinstance(image, PIL.Image.Image):
            image = image_to_rgb(image)
        return super().process_image(image, *args, **kwargs)

    @classmethod
    def for_image_size(
        cls,
        image_size: int,
        resize_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ) -> "PimImageProcessor":
        """
        A processor that center-crops `image_size` out of a `resize_size` square (default: `image_size` × 510 / 384,
        the paper's ratio), normalised with `image_mean`/`image_std` (default: ImageNet's).
        """
        resize_size = resize_size or round(image_size * RESIZE_RATIO)
        if resize_size < image_size:
            raise ValueError(f"resize_size={resize_size} is smaller than the crop image_size={image_size}.")
        return cls(
            size={"height": resize_size, "width": resize_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=list(image_mean or cls.image_mean),
            image_std=list(image_std or cls.image_std),
            **kwargs,
        )


__all__ = ["PimImageProcessor", "image_to_rgb", "open_image"]
