"""
PIM's pipelines: transformers' `image-classification` and `image-feature-extraction` pipelines with PIM's image
decoding. Exported with the model as remote code.

transformers' pipelines open every image with `transformers.image_utils.load_image`, which ends with
`image.convert("RGB")`: a 16-bit image is clipped at 255 (a white picture) and transparent pixels lose their alpha
(they show whatever color they hide) before the image processor sees them. These subclasses open the image without
converting it ([`open_image`]) and convert it with [`image_to_rgb`] (16-bit and float images by their real range,
transparency onto white, EXIF orientation), the conversion of training, `PimImageProcessor` and the command-line
tools; everything else (`top_k`, `function_to_apply`, `pool`, batching, devices, `timeout`) is transformers'.

The forward pass returns only the outputs that have one row per image ([`per_image_outputs`]): transformers' batching
(`batch_size=`) splits every output field by image, and PIM's per-layer tuples (`token_logits`, `selected_indices`...,
one entry per backbone layer) would be split by layer instead (an `IndexError` from the fifth image of a batch).

A PIM model's `save_pretrained` writes [`CUSTOM_PIPELINES`] into its `config.json` as `custom_pipelines` and copies
this file beside it, so that `pipeline("image-classification", model=folder_or_hub_id, trust_remote_code=True)`
builds [`PimImageClassificationPipeline`] (transformers looks the task up in `config.custom_pipelines` first).
"""

from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import ImageClassificationPipeline, ImageFeatureExtractionPipeline
from transformers.utils import ModelOutput

from .image_processing_pim import image_to_rgb, open_image


# `config.custom_pipelines`: task → this module's class ("impl") and the auto classes that load its model ("pt").
CUSTOM_PIPELINES = {
    "image-classification": {
        "impl": "pipeline_pim.PimImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"],
    },
    "image-feature-extraction": {
        "impl": "pipeline_pim.PimImageFeatureExtractionPipeline",
        "pt": ["AutoModel"],
    },
}


def _is_8_bit_rgb(pixels: np.ndarray) -> bool:
    """Whether `pixels` is what transformers' image processors take as it is: `uint8`, `(H, W, 3)` or `(3, H, W)`."""
    return pixels.dtype == np.uint8 and pixels.ndim == 3 and 3 in (pixels.shape[0], pixels.shape[-1])


def decode_image(image: Any, timeout: float | None = None) -> Any:
    """
    A pipeline input → the RGB image the model sees: a PIL image, a local path, an http(s) URL or base64 is opened
    ([`open_image`]) and converted with [`image_to_rgb`].

    A NumPy array or a tensor is pixels: 8-bit RGB (`uint8`, `(H, W, 3)` or `(3, H, W)`) is returned unchanged for
    transformers to handle; an image PIL holds in one of its modes — gray `(H, W)` or `(H, W, 1)` of `uint8` or
    `uint16`, RGBA `(H, W, 4)` of `uint8` — becomes a PIL image converted by [`image_to_rgb`] (16 bits by its range,
    transparency onto white), as the same picture read from a file. transformers would rescale any other array by
    1/255 as if it were 8-bit (a 16-bit or a [0, 1] float picture seen as another one), so it is refused.

    Raises:
        `ValueError`: an array or tensor of another dtype or shape; the message says what to pass instead.
    """
    if isinstance(image, (str, PIL.Image.Image)):
        return image_to_rgb(open_image(image, timeout=timeout))
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        return image
    pixels = image.numpy(force=True) if isinstance(image, torch.Tensor) else image
    if _is_8_bit_rgb(pixels):
        return image
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if (pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16)) or (
        pixels.ndim == 3 and pixels.shape[-1] == 4 and pixels.dtype == np.uint8
    ):
        return image_to_rgb(PIL.Image.fromarray(np.ascontiguousarray(pixels)))
    raise ValueError(
        f"PIM's pipeline takes arrays and tensors of 8-bit RGB pixels (uint8, (H, W, 3) or (3, H, W)), gray (H, W) of "
        f"uint8 or uint16, or RGBA (H, W, 4) of uint8; got {pixels.dtype} of shape {tuple(pixels.shape)}. Pass a PIL "
        "image or the image file instead: 16-bit, float and transparent images are then converted by their range "
        "(image_to_rgb), not rescaled by 1/255 as 8-bit pixels."
    )


def per_image_outputs(outputs: ModelOutput) -> ModelOutput:
    """
    `outputs` of a PIM model with only its tensor fields (`logits` `(batch, num_labels)`, `pooler_output`
    `(batch, hidden)`...), in their order, as the same `ModelOutput` class: the fields a pipeline may split by image.
    The per-layer tuples are dropped.
    """
    return type(outputs)(**{name: value for name, value in outputs.items() if isinstance(value, torch.Tensor)})


class PimImageClassificationPipeline(ImageClassificationPipeline):
    """
    transformers' [`ImageClassificationPipeline`] whose images are decoded by [`decode_image`] ([`image_to_rgb`])
    instead of `load_image`'s `convert("RGB")`.
    """

    def preprocess(self, image: Any, timeout: float | None = None) -> Any:
        return super().preprocess(decode_image(image, timeout), timeout=timeout)

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> ModelOutput:
        return per_image_outputs(super()._forward(model_inputs))


class PimImageFeatureExtractionPipeline(ImageFeatureExtractionPipeline):
    """
    transformers' [`ImageFeatureExtractionPipeline`] (on [`PimModel`], whose first output is the fine-grained
    embedding `pooler_output`) whose images are decoded by [`decode_image`] ([`image_to_rgb`]).
    """

    def preprocess(self, image: Any, timeout: float | None = None, **image_processor_kwargs) -> Any:
        return super().preprocess(decode_image(image, timeout), timeout=timeout, **image_processor_kwargs)

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> ModelOutput:
        return per_image_outputs(super()._forward(model_inputs))


__all__ = [
    "CUSTOM_PIPELINES",
    "PimImageClassificationPipeline",
    "PimImageFeatureExtractionPipeline",
    "decode_image",
    "per_image_outputs",
]
