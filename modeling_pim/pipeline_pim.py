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


def decode_image(image: Any, timeout: float | None = None) -> Any:
    """
    A pipeline input → the RGB image the model sees: a PIL image, a local path, an http(s) URL or base64 is opened
    ([`open_image`]) and converted with [`image_to_rgb`]; anything else (a NumPy array, a tensor: already pixels) is
    returned unchanged for transformers to handle.
    """
    if isinstance(image, (str, PIL.Image.Image)):
        return image_to_rgb(open_image(image, timeout=timeout))
    return image


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
