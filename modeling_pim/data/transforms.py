"""
`torchvision.transforms.v2` pipelines built from an image processor's sizes and statistics: the paper's training
augmentation, an evaluation transform equal to the processor's own output, and the glue for `Dataset.with_transform`
(images decoded by `modeling_pim.data.image_files.load_dataset_image`, errors naming the file) and
`torch.utils.data.DataLoader`.

The processor is read through its attributes only (`size`, `crop_size`, `image_mean`, `image_std` and, when present,
`resample`, `do_resize`, `do_center_crop`, `do_rescale`, `rescale_factor`, `do_normalize`), so any object with these
attributes works, e.g. a transformers `TorchvisionBackend` image processor.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset, Image
from torchvision.transforms import InterpolationMode, v2
from transformers.image_utils import PILImageResampling, pil_torch_interpolation_mapping

from ..image_processing_pim import image_to_rgb
from .image_files import load_dataset_image


def _to_rgb() -> v2.Lambda:
    """[`image_to_rgb`] as the first step of a pipeline: the RGB image the model sees, from a PIL image of any mode."""
    return v2.Lambda(image_to_rgb, PIL.Image.Image)


def _height_width(processor: Any, attribute: str) -> tuple[int, int]:
    """The `(height, width)` of the processor's `size` or `crop_size` (a dict or `SizeDict` with those keys)."""
    value = getattr(processor, attribute, None)
    height = value.get("height") if hasattr(value, "get") else None
    width = value.get("width") if hasattr(value, "get") else None
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(
            f"{type(processor).__name__}.{attribute} is {value!r}: expected {{'height': H, 'width': W}} with positive "
            "integers (a fixed size, so that images can be batched)."
        )
    return height, width


def _interpolation(processor: Any) -> InterpolationMode:
    """The processor's `resample` as a torchvision interpolation mode (bilinear when it has none)."""
    resample = getattr(processor, "resample", None)
    if resample is None:
        return InterpolationMode.BILINEAR
    if isinstance(resample, InterpolationMode):
        return resample
    try:
        return pil_torch_interpolation_mapping[PILImageResampling(resample)]
    except (KeyError, ValueError):
        raise ValueError(
            f"{type(processor).__name__}.resample={resample!r} is not a PIL resampling filter or torchvision "
            "InterpolationMode."
        ) from None


def _geometry(processor: Any) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The resize size and the crop size (`None` when the processor does not crop) of `processor`."""
    if not getattr(processor, "do_resize", True):
        raise ValueError(
            f"{type(processor).__name__}.do_resize is False: the transforms need a fixed resize to batch images; set "
            "do_resize=True with a {'height', 'width'} size."
        )
    size = _height_width(processor, "size")
    if not getattr(processor, "do_center_crop", True):
        return size, None
    crop_size = _height_width(processor, "crop_size")
    if crop_size[0] > size[0] or crop_size[1] > size[1]:
        raise ValueError(
            f"{type(processor).__name__}.crop_size={crop_size} (height, width) is larger than its size={size}: the "
            "crop is taken from the resized image, so crop_size must not exceed size."
        )
    return size, crop_size


def _to_normalized_float(processor: Any) -> list[Callable]:
    """ToDtype (scaled to [0, 1]) and, when the processor normalises, Normalize with its mean and std."""
    rescale_factor = getattr(processor, "rescale_factor", None) or 1 / 255
    if not getattr(processor, "do_rescale", True) or not math.isclose(rescale_factor, 1 / 255):
        raise ValueError(
            f"{type(processor).__name__} has do_rescale={getattr(processor, 'do_rescale', True)}, "
            f"rescale_factor={rescale_factor}: the transforms only support rescaling 8-bit images to [0, 1] "
            "(do_rescale=True, rescale_factor=1/255)."
        )
    steps = [v2.ToDtype(torch.float32, scale=True)]
    if getattr(processor, "do_normalize", True):
        mean = getattr(processor, "image_mean", None)
        std = getattr(processor, "image_std", None)
        if mean is None or std is None:
            raise ValueError(
                f"{type(processor).__name__}.image_mean={mean!r}, image_std={std!r}: both must be set (3 values each) "
                "to normalise."
            )
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


def build_train_transform(
    processor: Any,
    horizontal_flip: bool = True,
    blur_probability: float = 0.1,
    sharpness_probability: float = 0.1,
) -> v2.Compose:
    """
    The paper's training augmentation at the processor's sizes: RGB ([`image_to_rgb`]) → resize to `size` → random
    crop of `crop_size` → horizontal flip → Gaussian blur (kernel 5, σ ∈ (0.1, 5)) with probability
    `blur_probability` → sharpness ×1.5 with probability `sharpness_probability` → float in [0, 1] → normalise with
    `image_mean`/`image_std`.

    The geometric and blur steps run on uint8 tensors (after `ToImage`), like the processor's own resize, so that an
    image seen in training and in evaluation is resized the same way. Without cropping in the processor
    (`do_center_crop=False`) there is no random crop either and images are trained on at `size`.

    Args:
        processor:
            An image processor (or any object) with `size` and `crop_size` (`{"height": H, "width": W}`),
            `image_mean` and `image_std`; `resample` (default bilinear) and the `do_*` switches are honoured.
        horizontal_flip (`bool`, *optional*, defaults to `True`):
            Whether to flip images horizontally with probability 0.5.
        blur_probability (`float`, *optional*, defaults to 0.1):
            Probability of the Gaussian blur (0 disables it).
        sharpness_probability (`float`, *optional*, defaults to 0.1):
            Probability of the sharpness adjustment (0 disables it).

    Returns:
        `torchvision.transforms.v2.Compose`: PIL image → float32 tensor of shape (3, crop height, crop width).
    """
    for name, probability in (
        ("blur_probability", blur_probability),
        ("sharpness_probability", sharpness_probability),
    ):
        if not 0 <= probability <= 1:
            raise ValueError(f"{name}={probability} must be a probability in [0, 1].")
    size, crop_size = _geometry(processor)
    steps = [_to_rgb(), v2.ToImage(), v2.Resize(size, interpolation=_interpolation(processor), antialias=True)]
    if crop_size is not None:
        steps.append(v2.RandomCrop(crop_size))
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if blur_probability > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 5.0))], p=blur_probability))
    if sharpness_probability > 0:
        steps.append(v2.RandomAdjustSharpness(sharpness_factor=1.5, p=sharpness_probability))
    return v2.Compose(steps + _to_normalized_float(processor) + [v2.ToPureTensor()])


def build_eval_transform(processor: Any) -> v2.Compose:
    """
    The evaluation transform: RGB ([`image_to_rgb`]) → resize to `size` → center crop of `crop_size` → float in
    [0, 1] → normalise.

    For a transformers `TorchvisionBackend` processor with the same settings this gives the processor's
    `pixel_values` up to float rounding (the processor fuses rescaling into the normalisation): a maximum absolute
    difference below 1e-5 (about 5e-7 measured with ImageNet statistics).

    Args:
        processor:
            An image processor (or any object) with `size` and `crop_size` (`{"height": H, "width": W}`),
            `image_mean` and `image_std`; `resample` (default bilinear) and the `do_*` switches are honoured.

    Returns:
        `torchvision.transforms.v2.Compose`: PIL image → float32 tensor of shape (3, crop height, crop width).
    """
    size, crop_size = _geometry(processor)
    steps = [_to_rgb(), v2.ToImage(), v2.Resize(size, interpolation=_interpolation(processor), antialias=True)]
    if crop_size is not None:
        steps.append(v2.CenterCrop(crop_size))
    return v2.Compose(steps + _to_normalized_float(processor) + [v2.ToPureTensor()])


# What to do about an image that cannot be decoded, when the caller has nothing more specific to say.
DEFAULT_UNREADABLE_FIX = "remove or replace it"


def describe_stored_image(table: Any, split: str, dataset_name: str | None, data: bytes) -> str:
    """
    Where the image bytes `data` are stored: `"row 5 of the train split of the dataset 'birds' (dataset['train'][5])"`,
    the rows of the split as loaded (`table`: a `Dataset.data`, which holds every row of the split whatever was
    selected from it since) whose `image` column holds these bytes, found when the message is needed.
    """
    column = table.column("image")
    rows, offset = [], 0
    for chunk in column.chunks:
        stored = pc.struct_field(chunk, "bytes")
        matches = pc.fill_null(pc.equal(stored, pa.scalar(data, stored.type)), False)
        rows.extend(offset + int(row) for row in np.flatnonzero(matches.to_numpy(zero_copy_only=False)))
        offset += len(chunk)
    dataset = f"the {split} split of the dataset {dataset_name!r}" if dataset_name else f"the {split} split"
    if not rows:
        return dataset
    first = f"dataset[{split!r}][{rows[0]}]"
    if len(rows) == 1:
        return f"row {rows[0]} of {dataset} ({first})"
    listing = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"rows {listing} of {dataset} ({first}, ...)"


def _transform_batch(
    batch: dict[str, list],
    transform: Callable,
    unreadable_fix: str,
    stored_in: Callable[[bytes], str] | None = None,
) -> dict[str, list]:
    """Decodes ([`load_dataset_image`]) and applies `transform` to the images of a batch of `image`/`label` rows."""
    if "image" not in batch:
        raise KeyError(f"The dataset rows have no 'image' column (columns: {list(batch)}).")
    images = [load_dataset_image(value, unreadable_fix, stored_in) for value in batch["image"]]
    output = {"pixel_values": [transform(image) for image in images]}
    if "label" in batch:
        output["labels"] = list(batch["label"])
    return output


def make_transform_fn(
    transform: Callable,
    unreadable_fix: str = DEFAULT_UNREADABLE_FIX,
    stored_in: Callable[[bytes], str] | None = None,
) -> Callable[[dict[str, list]], dict[str, list]]:
    """
    A function for `Dataset.with_transform` that maps a batch `{"image": [...], "label": [ints]}` to
    `{"pixel_values": [tensors], "labels": [ints]}` (`labels` only when the rows have a `label`). The images may be
    decoded PIL images or the `{"bytes", "path"}` dicts of an undecoded `datasets.Image(decode=False)` column, which it
    decodes itself ([`load_dataset_image`]): an image that cannot be decoded is then an [`UnreadableImageError`]
    naming its file (or `stored_in(bytes)` for an image stored as bytes) and `unreadable_fix`, instead of a decoding
    error of `datasets` that names nothing. It is picklable when `transform` is, so it works with `DataLoader`
    workers started by spawn.
    """
    return functools.partial(
        _transform_batch, transform=transform, unreadable_fix=unreadable_fix, stored_in=stored_in
    )


def with_image_transform(
    dataset: Dataset, transform: Callable, unreadable_fix: str = DEFAULT_UNREADABLE_FIX
) -> Dataset:
    """
    `dataset` (with an `image` `datasets.Image` column) whose rows are transformed as they are read
    ([`make_transform_fn`]), its images decoded by [`load_dataset_image`] rather than by `datasets`, so that an image
    that cannot be decoded (e.g. one the load-time scan did not check) stops training with an error naming its file
    and `unreadable_fix`; an image stored as bytes (a Hub or parquet dataset) is named by its split and row
    ([`describe_stored_image`]).
    """
    dataset = dataset.cast_column("image", Image(decode=False))
    split = str(dataset.split) if dataset.split is not None else "loaded"
    stored_in = functools.partial(describe_stored_image, dataset.data, split, dataset.info.dataset_name)
    return dataset.with_transform(make_transform_fn(transform, unreadable_fix, stored_in))


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """
    Batches transformed rows: `{"pixel_values": float tensor (B, 3, H, W), "labels": LongTensor (B,)}` (`labels`
    only when the rows have them), for `Trainer(data_collator=...)` or a `DataLoader`.
    """
    if not examples:
        raise ValueError("collate_fn got an empty list of examples.")
    shapes = {tuple(example["pixel_values"].shape) for example in examples}
    if len(shapes) > 1:
        raise ValueError(
            f"collate_fn got images of different shapes {sorted(shapes)}: use a transform with a fixed crop size."
        )
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"collate_fn got {pixel_values.dtype} pixel values: the transform must end with a float dtype."
        )
    batch = {"pixel_values": pixel_values}
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([example["labels"] for example in examples], dtype=torch.long)
    return batch


__all__ = [
    "DEFAULT_UNREADABLE_FIX",
    "build_eval_transform",
    "build_train_transform",
    "collate_fn",
    "describe_stored_image",
    "make_transform_fn",
    "with_image_transform",
]
