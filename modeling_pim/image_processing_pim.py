"""Image processor for PIM: the paper's evaluation transform (resize 510 → center crop 384 at 384 px)."""

from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


# The paper resizes to 510 before cropping 384: keep that ratio at other image sizes.
RESIZE_RATIO = 510 / 384


class PimImageProcessor(TorchvisionBackend):
    r"""
    Resizes to `size`, center-crops `crop_size`, rescales to [0, 1] and normalises with `image_mean`/`image_std`.
    Training augmentation (random crop, flip, blur, sharpness) is built by the training script from these sizes and
    statistics; the processor only does what evaluation and inference need.

    Use [`PimImageProcessor.for_image_size`] to get the paper's sizes for a model's `image_size` and its timm
    backbone's normalisation.
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


__all__ = ["PimImageProcessor"]
