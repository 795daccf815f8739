"""
PIM's pipelines: transformers' `image-classification` and `image-feature-extraction` pipelines with PIM's image
decoding. Exported with the model as remote code.

transformers' pipelines open every image with `transformers.image_utils.load_image`, which ends with
`image.convert("RGB")`: a 16-bit image is clipped at 255 (a white picture) and transparent pixels lose their alpha
(they show whatever color they hide) before the image processor sees them. These subclasses open the image without
converting it ([`open_image`]) and convert it with [`image_to_rgb`] (16-bit and float images by their real range,
transparency onto white, EXIF orientation), the conversion of training, `PimImageProcessor` and the command-line
tools; everything else (`top_k`, `function_to_apply`, `pool`, batching, devices, `timeout`) is transformers'.

A PIM model's `save_pretrained` writes [`CUSTOM_PIPELINES`] into its `config.json` as `custom_pipelines` and copies
this file beside it, so that `pipeline("image-classification", model=folder_or_hub_id, trust_remote_code=True)`
builds [`PimImageClassificationPipeline`] (transformers looks the task up in `config.custom_pipelines` first).
"""

from typing import Any

import PIL.Image
from transformers import ImageClassificationPipeline, ImageFeatureExtractionPipeline

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


class PimImageClassificationPipeline(ImageClassificationPipeline):
    """
    transformers' [`ImageClassificationPipeline`] whose images are decoded by [`decode_image`] ([`image_to_rgb`])
    instead of `load_image`'s `convert("RGB")`.
    """

    def preprocess(self, image: Any, timeout: float | None = None) -> Any:
        return super().preprocess(decode_image(image, timeout), timeout=timeout)


class PimImageFeatureExtractionPipeline(ImageFeatureExtractionPipeline):
    """
    transformers' [`ImageFeatureExtractionPipeline`] (on [`PimModel`], whose first output is the fine-grained
    embedding `pooler_output`) whose images are decoded by [`decode_image`] ([`image_to_rgb`]).
    """

    def preprocess(self, image: Any, timeout: float | None = None, **image_processor_kwargs) -> Any:
        return super().preprocess(decode_image(image, timeout), timeout=timeout, **image_processor_kwargs)


__all__ = ["CUSTOM_PIPELINES", "PimImageClassificationPipeline", "PimImageFeatureExtractionPipeline", "decode_image"]
