"""Tests of `modeling_pim.data.transforms`."""

import io
import pickle
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetInfo, Features, Image
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from modeling_pim.data.fgvc_datasets import load_archive
from modeling_pim.data.transforms import (
    build_eval_transform,
    build_train_transform,
    collate_fn,
    make_transform_fn,
    with_image_transform,
)
from modeling_pim.utils.cli import run_command


class BilinearProcessor(TorchvisionBackend):
    """A transformers image processor with the PIM evaluation steps at a small size."""

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 48, "width": 56}
    crop_size = {"height": 40, "width": 44}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


def plain_processor(**overrides) -> SimpleNamespace:
    """An object with just the attributes the transforms read."""
    attributes = {
        "size": {"height": 48, "width": 56},
        "crop_size": {"height": 40, "width": 44},
        "image_mean": IMAGENET_DEFAULT_MEAN,
        "image_std": IMAGENET_DEFAULT_STD,
    }
    return SimpleNamespace(**{**attributes, **overrides})


def random_image(mode: str, height: int = 37, width: int = 61, seed: int = 0) -> PIL.Image.Image:
    """A random image of any PIL `mode`; palette images get a transparent colour when the mode is "P"."""
    rng = np.random.default_rng(seed)
    rgba = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        image = rgba.convert("RGB").quantize(16)
        image.info["transparency"] = 3
        return image
    return rgba.convert(mode)


IMAGE_MODES = ["RGB", "RGBA", "L", "LA", "CMYK", "P", "1", "I;16", "YCbCr"]


@pytest.mark.parametrize("mode", IMAGE_MODES)
@pytest.mark.parametrize("build", [build_train_transform, build_eval_transform])
def test_output_shape_and_dtype_for_every_mode(build, mode):
    output = build(plain_processor())(random_image(mode))
    assert type(output) is torch.Tensor
    assert output.shape == (3, 40, 44) and output.dtype == torch.float32 and torch.isfinite(output).all()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "CMYK", "P"])
def test_eval_transform_equals_processor(mode):
    processor = BilinearProcessor()
    transform = build_eval_transform(processor)
    for height, width in [(37, 61), (120, 90), (48, 56)]:
        image = random_image(mode, height, width)
        expected = processor(image, return_tensors="pt")["pixel_values"][0]
        # Only float rounding differs (the processor fuses the 1/255 rescale into the normalisation): about 5e-7.
        torch.testing.assert_close(transform(image), expected, rtol=0, atol=1e-5)


def test_train_transform_without_randomness_equals_eval_transform():
    processor = plain_processor(crop_size={"height": 48, "width": 56})
    train = build_train_transform(processor, horizontal_flip=False, blur_probability=0, sharpness_probability=0)
    image = random_image("RGB")
    torch.testing.assert_close(train(image), build_eval_transform(processor)(image), rtol=0, atol=0)


def test_train_transform_steps_and_randomness():
    transform = build_train_transform(plain_processor(), blur_probability=1.0, sharpness_probability=1.0)
    names = [type(step).__name__ for step in transform.transforms]
    assert names == [
        "Lambda",  # image_to_rgb
        "ToImage",
        "Resize",
        "RandomCrop",
        "RandomHorizontalFlip",
        "RandomApply",
        "RandomAdjustSharpness",
        "ToDtype",
        "Normalize",
        "ToPureTensor",
    ]
    image = random_image("RGB")
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    torch.testing.assert_close(transform(image), first)
    assert not torch.equal(transform(image), first)


def test_processor_without_center_crop_keeps_the_resize():
    processor = plain_processor(do_center_crop=False, crop_size=None)
    assert build_eval_transform(processor)(random_image("RGB")).shape == (3, 48, 56)
    assert build_train_transform(processor)(random_image("RGB")).shape == (3, 48, 56)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"size": None}, r"\.size is None: expected \{'height': H, 'width': W\}"),
        ({"size": {"shortest_edge": 48}}, r"\.size is \{'shortest_edge': 48\}"),
        ({"crop_size": {"height": 64, "width": 44}}, "crop_size=.* is larger than its size"),
        ({"image_std": None}, "image_std=None: both must be set"),
        ({"do_rescale": False}, "only support rescaling 8-bit images"),
        ({"do_resize": False}, "do_resize is False"),
        ({"resample": "sideways"}, "resample='sideways' is not a PIL resampling filter"),
    ],
)
def test_bad_processor_attributes_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_eval_transform(plain_processor(**overrides))


def test_bad_probability():
    with pytest.raises(ValueError, match="blur_probability=1.5 must be a probability"):
        build_train_transform(plain_processor(), blur_probability=1.5)


def test_transforms_and_transform_fn_pickle():
    for transform in (build_train_transform(plain_processor()), build_eval_transform(plain_processor())):
        restored = pickle.loads(pickle.dumps(make_transform_fn(transform)))
        assert restored({"image": [random_image("RGB")], "label": [1]})["pixel_values"][0].shape == (3, 40, 44)


def test_with_transform_and_collate_on_a_dataset(cub_dir):
    dataset = load_archive("cub200", cub_dir)["train"]
    dataset = dataset.with_transform(make_transform_fn(build_train_transform(BilinearProcessor())))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_fn)
    batches = list(loader)
    assert [batch["pixel_values"].shape for batch in batches] == [(4, 3, 40, 44), (2, 3, 40, 44)]
    assert all(batch["pixel_values"].dtype == torch.float32 for batch in batches)
    labels = torch.cat([batch["labels"] for batch in batches])
    assert labels.dtype == torch.long and labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_transform_fn_without_labels():
    output = make_transform_fn(build_eval_transform(plain_processor()))({"image": [random_image("L")]})
    assert list(output) == ["pixel_values"]
    assert list(collate_fn([{"pixel_values": output["pixel_values"][0]}])) == ["pixel_values"]


def test_collate_fn_errors():
    with pytest.raises(ValueError, match="different shapes"):
        collate_fn([{"pixel_values": torch.zeros(3, 4, 4)}, {"pixel_values": torch.zeros(3, 4, 5)}])
    with pytest.raises(ValueError, match="torch.uint8 pixel values"):
        collate_fn([{"pixel_values": torch.zeros(3, 4, 4, dtype=torch.uint8)}])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_image_that_cannot_be_decoded_while_training_is_one_error_line_naming_it(cub_dir, num_workers, capsys):
    dataset = load_archive("cub200", cub_dir, skip_unreadable=False)["train"]  # lists corrupt.jpg, never scanned
    dataset = with_image_transform(dataset, build_train_transform(BilinearProcessor()), "remove it")
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_fn, num_workers=num_workers)

    assert run_command("train_pim.py", lambda argv: list(loader), []) == 2

    corrupt = next(cub_dir.glob("images/*/corrupt.jpg"))
    assert capsys.readouterr().err == (
        f"train_pim.py: error: {corrupt} cannot be decoded (UnidentifiedImageError: cannot identify image file "
        f"{str(corrupt)!r}): remove it.\n"
    )


def test_an_image_stored_as_bytes_that_cannot_be_decoded_is_named_by_its_split_and_row(capsys):
    def png(color: tuple[int, int, int]) -> dict:
        buffer = io.BytesIO()
        PIL.Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    images = [png((10 * row, 0, 0)) for row in range(8)]
    images[5] = {"bytes": b"garbage not an image", "path": None}
    images[6] = {"bytes": b"not an image", "path": "birds/x.jpg"}
    images[7] = images[5]  # the same bytes twice: both rows named
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    info = DatasetInfo(dataset_name="birds", features=features)
    dataset = Dataset.from_dict({"image": images, "label": [0, 1] * 4}, features=features, info=info, split="train")
    held_out = dataset.select([0, 2, 5])  # as a validation hold-out selects: the rows are still the split's
    for subset, index, line in (
        (
            held_out,
            2,
            "the image stored without a path in rows 5, 7 of the train split of the dataset 'birds' "
            "(dataset['train'][5], ...) cannot be decoded (UnidentifiedImageError: cannot identify image file of 20 "
            "bytes): remove it.",
        ),
        (
            dataset,
            6,
            "the image 'birds/x.jpg' stored in row 6 of the train split of the dataset 'birds' "
            "(dataset['train'][6]) cannot be decoded (UnidentifiedImageError: cannot identify image file "
            "'birds/x.jpg'): remove it.",
        ),
    ):
        transformed = with_image_transform(subset, build_eval_transform(BilinearProcessor()), "remove it")
        assert transformed[0]["pixel_values"].shape == (3, 40, 44)
        assert run_command("train_pim.py", lambda argv: transformed[index], []) == 2
        assert capsys.readouterr().err == f"train_pim.py: error: {line}\n"
