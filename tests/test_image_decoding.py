"""
One image decoding (`modeling_pim.image_processing_pim.image_to_rgb`): high bit depth by its real range, transparency
on white, every mode to RGB, EXIF orientation; used by the processor, the transforms, `pim-infer` and `pim-heatmap`.
"""

import io
import json

import numpy as np
import PIL.Image
import pytest
import torch

from tiny_models import tiny_pim_config

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.data.image_files import load_image
from modeling_pim.data.transforms import build_eval_transform, make_transform_fn
from modeling_pim.image_processing_pim import image_to_rgb
from modeling_pim.pipeline_pim import PimImageClassificationPipeline
from modeling_pim.tools import pim_infer
from modeling_pim.tools.heatmap import MAX_DRAWN_SIDE, drawn_image


GRADIENT_8 = np.tile(np.arange(256, dtype=np.uint8), (3, 1))  # (3, 256): 0, 1, ..., 255 on every row


def pixels(image: PIL.Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


def gradient_16_bit(mode: str) -> PIL.Image.Image:
    """The 8-bit gradient stretched over 16 bits (0, 257, ..., 65535), in one of Pillow's 16-bit modes."""
    values = GRADIENT_8.astype(np.uint16) * 257
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2"}[mode]
    return PIL.Image.frombytes(mode, (256, 3), values.astype(dtype).tobytes())


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B"])
def test_16_bit_gradient_becomes_the_8_bit_gradient(mode):
    converted = pixels(image_to_rgb(gradient_16_bit(mode)))
    assert np.abs(converted - GRADIENT_8[..., None]).max() <= 1
    assert converted[0, 0].tolist() == [0, 0, 0] and converted[0, 255].tolist() == [255, 255, 255]


def test_16_bit_png_file_is_not_clipped(tmp_path):
    gradient_16_bit("I;16").save(tmp_path / "microscope.png")
    with PIL.Image.open(tmp_path / "microscope.png") as image:
        assert image.mode == "I;16"
        assert np.asarray(image.convert("RGB"))[0, 2:].min() == 255  # what Pillow's convert does: white
    assert np.abs(pixels(load_image(tmp_path / "microscope.png")) - GRADIENT_8[..., None]).max() <= 1


def test_32_bit_integers_use_the_16_bit_range_when_they_fit_else_their_own():
    fits = PIL.Image.fromarray(GRADIENT_8.astype(np.int32) * 257)
    assert fits.mode == "I"
    assert np.abs(pixels(image_to_rgb(fits)) - GRADIENT_8[..., None]).max() <= 1

    wide = PIL.Image.fromarray((GRADIENT_8.astype(np.int32) - 128) * 1000)  # -128000 .. 127000
    converted = pixels(image_to_rgb(wide))[..., 0]
    assert converted[0, 0] == 0 and converted[0, 255] == 255
    assert np.abs(converted - GRADIENT_8).max() <= 1


def test_floats_use_their_actual_range():
    image = PIL.Image.fromarray(GRADIENT_8.astype(np.float32) / 255 * 3.5 - 1.0)  # -1.0 .. 2.5
    assert image.mode == "F"
    assert np.abs(pixels(image_to_rgb(image)) - GRADIENT_8[..., None]).max() <= 1
    constant = PIL.Image.fromarray(np.full((2, 2), 7.5, np.float32))
    assert pixels(image_to_rgb(constant)).max() == 0


def test_transparency_is_composited_onto_white():
    rgba = PIL.Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))
    assert pixels(image_to_rgb(rgba)).tolist() == [[[10, 20, 30], [255, 255, 255]]]

    half = PIL.Image.new("LA", (1, 1), (0, 128))
    assert pixels(image_to_rgb(half)).tolist() == [[[127, 127, 127]]]  # black at half opacity on white

    palette = PIL.Image.new("P", (2, 1), 0)
    palette.putpalette([200, 0, 0, 0, 0, 200])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    assert pixels(image_to_rgb(palette)).tolist() == [[[200, 0, 0], [255, 255, 255]]]


def keyed_rgb_png(path) -> PIL.Image.Image:
    """
    An RGB PNG whose blue background is its transparent colour key (`tRNS`) around a red square, written to `path`;
    returns the picture as browsers show it: the background white.
    """
    key = (30, 30, 200)
    image = PIL.Image.new("RGB", (48, 40), key)
    image.paste((200, 0, 0), (10, 8, 34, 30))
    image.save(path, transparency=key)
    on_white = PIL.Image.new("RGB", image.size, (255, 255, 255))
    on_white.paste((200, 0, 0), (10, 8, 34, 30))
    return on_white


def test_rgb_colour_key_is_composited_onto_white_like_the_gray_and_palette_keys(tmp_path):
    on_white = keyed_rgb_png(tmp_path / "keyed.png")
    with PIL.Image.open(tmp_path / "keyed.png") as keyed:
        assert keyed.mode == "RGB" and keyed.info["transparency"] == (30, 30, 200)
        converted = image_to_rgb(keyed)
    assert pixels(converted).tolist() == pixels(on_white).tolist()
    assert "transparency" not in converted.info  # no later step may composite it a second way
    assert pixels(load_image(tmp_path / "keyed.png")).tolist() == pixels(on_white).tolist()

    gray = PIL.Image.new("L", (2, 1), 30)
    gray.putpixel((1, 0), 90)
    gray.info["transparency"] = 30
    assert pixels(image_to_rgb(gray)).tolist() == [[[255, 255, 255], [90, 90, 90]]]


def test_rgb_colour_key_training_processor_and_pipeline_agree(tmp_path):
    """The transform of training and evaluation, the processor and the pipeline see the keyed PNG on white."""
    on_white = keyed_rgb_png(tmp_path / "keyed.png")
    processor = PimImageProcessor.for_image_size(64)
    expected = processor(on_white, return_tensors="pt")["pixel_values"][0]
    row = {"image": [{"bytes": (tmp_path / "keyed.png").read_bytes(), "path": None}], "label": [0]}
    training = make_transform_fn(build_eval_transform(processor))(row)["pixel_values"][0]
    torch.testing.assert_close(training, expected, rtol=0, atol=1e-5)
    with PIL.Image.open(tmp_path / "keyed.png") as keyed:
        torch.testing.assert_close(processor(keyed, return_tensors="pt")["pixel_values"][0], expected, rtol=0, atol=0)

    torch.manual_seed(0)
    classifier = PimImageClassificationPipeline(
        model=PimForImageClassification(tiny_pim_config(["a", "b", "c"])).eval(), image_processor=processor
    )
    with torch.no_grad():
        logits = classifier.model(pixel_values=expected[None]).logits[0]
    for source in (str(tmp_path / "keyed.png"), PIL.Image.open(tmp_path / "keyed.png")):
        answer = classifier(source, top_k=3, function_to_apply="none")
        assert [prediction["score"] for prediction in answer] == pytest.approx(
            logits.sort(descending=True).values.tolist(), abs=1e-5
        )


def test_other_modes_become_rgb():
    assert pixels(image_to_rgb(PIL.Image.new("CMYK", (1, 1), (0, 0, 0, 0)))).tolist() == [[[255, 255, 255]]]
    assert pixels(image_to_rgb(PIL.Image.new("CMYK", (1, 1), (0, 255, 255, 0)))).tolist() == [[[255, 0, 0]]]
    assert pixels(image_to_rgb(PIL.Image.new("1", (1, 1), 1))).tolist() == [[[255, 255, 255]]]
    assert pixels(image_to_rgb(PIL.Image.new("L", (1, 1), 77))).tolist() == [[[77, 77, 77]]]
    with pytest.raises(TypeError, match="expects a PIL.Image.Image"):
        image_to_rgb(torch.zeros(3, 4, 4))


def test_exif_orientation_is_applied_once(tmp_path):
    image = PIL.Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90° clockwise to view
    image.save(tmp_path / "turned.jpg", exif=exif, quality=95)

    upright = load_image(tmp_path / "turned.jpg")

    assert upright.size == (20, 40)
    assert pixels(upright)[2, 10, 0] > 200  # the red band is now on top
    assert pixels(image_to_rgb(upright)).tolist() == pixels(upright).tolist()


def test_processor_and_transforms_see_the_same_rgb(tmp_path):
    processor = PimImageProcessor.for_image_size(32)
    image = gradient_16_bit("I;16").resize((64, 48))
    expected = processor(image_to_rgb(image), return_tensors="pt")["pixel_values"][0]
    clipped = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    torch.testing.assert_close(processor(image, return_tensors="pt")["pixel_values"][0], expected, rtol=0, atol=0)
    image.save(tmp_path / "gradient.png")
    from_path = processor(str(tmp_path / "gradient.png"), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(from_path, expected, rtol=0, atol=0)
    torch.testing.assert_close(build_eval_transform(processor)(image), expected, rtol=0, atol=1e-5)
    assert (clipped - expected).abs().max() > 1  # transformers' own conversion clips at 255


def test_pim_infer_sees_16_bit_and_transparent_images_as_their_8_bit_rgb(tmp_path):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    PimForImageClassification(tiny_pim_config(["a", "b", "c"])).save_pretrained(model_dir)
    PimImageProcessor.for_image_size(64).save_pretrained(model_dir)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(0, 256, (4, 4), dtype=np.uint8), np.ones((20, 20), np.uint8))  # (80, 80)
    PIL.Image.fromarray(blocks).save(images / "eight_bit.png")
    PIL.Image.fromarray(blocks.astype(np.uint16) * 257).save(images / "sixteen_bit.png")
    cutout = PIL.Image.fromarray(blocks).convert("RGBA")
    alpha = np.full((80, 80), 255, np.uint8)
    alpha[:40] = 0  # the hidden half holds the blocks, but the model must see white there
    cutout.putalpha(PIL.Image.fromarray(alpha))
    cutout.save(images / "transparent.png")
    on_white = PIL.Image.fromarray(np.where(alpha == 0, 255, blocks).astype(np.uint8))
    on_white.save(images / "on_white.png")

    assert pim_infer.main([str(model_dir), str(images), "--output_dir", str(tmp_path / "out"), "--num_workers", "0"]) == 0

    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    rows = {line.split(",")[0]: line.split(",", 1)[1] for line in lines[1:]}
    assert rows["sixteen_bit.png"] == rows["eight_bit.png"]
    assert rows["transparent.png"] == rows["on_white.png"]
    assert json.loads((tmp_path / "out" / "infer_results.json").read_text())["num_predicted"] == 4


def test_heatmap_draws_what_the_model_saw_at_a_bounded_size():
    cutout = PIL.Image.new("RGBA", (8000, 6000), (10, 20, 30, 0))  # fully transparent: white for the model
    drawn = drawn_image(cutout)
    assert drawn.size == (MAX_DRAWN_SIDE, MAX_DRAWN_SIDE * 3 // 4)
    assert pixels(drawn).min() == 255
    small = drawn_image(gradient_16_bit("I;16"))
    assert small.size == (256, 3) and np.abs(pixels(small) - GRADIENT_8[..., None]).max() <= 1


def test_conversion_survives_pickling_for_dataloader_workers():
    import pickle

    transform = pickle.loads(pickle.dumps(build_eval_transform(PimImageProcessor.for_image_size(32))))
    buffer = io.BytesIO()
    gradient_16_bit("I;16").resize((64, 48)).save(buffer, format="PNG")
    with PIL.Image.open(buffer) as image:
        assert transform(image).shape == (3, 32, 32)
