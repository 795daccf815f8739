"""`compute_heatmap` and `pim-heatmap`: shapes, range, class-awareness, selected tokens, PNG and input errors."""

import copy
import unicodedata

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tiny_models import tiny_pim_config

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.tools.heatmap import compute_heatmap, model_view, resolve_target_class
from modeling_pim.tools.pim_heatmap import main


LABELS = ["cardinal", "blue jay", "house sparrow"]
NUM_SELECTS = [16, 8, 4, 2]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = tiny_pim_config(LABELS, num_selects=NUM_SELECTS)
    return PimForImageClassification(config).eval()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    PimImageProcessor.for_image_size(64).save_pretrained(path)
    return path


@pytest.fixture
def pixel_values():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "bird.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_heatmap_shape_range_and_prediction(model, pixel_values):
    heatmap, predicted_class, probability, selected_centres, class_probabilities = compute_heatmap(model, pixel_values)

    with torch.no_grad():
        probabilities = model(pixel_values=pixel_values).logits.softmax(-1)[0]
    assert heatmap.shape == (64, 64) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() <= 1 and heatmap.max() > heatmap.min()
    assert predicted_class == int(probabilities.argmax())
    assert probability == pytest.approx(float(probabilities.max()))
    np.testing.assert_allclose(class_probabilities, probabilities.numpy(), rtol=1e-5, atol=1e-7)
    assert [len(centres) for centres in selected_centres] == NUM_SELECTS


def test_selected_centres_are_the_selected_token_cells(model, pixel_values):
    result = compute_heatmap(model, pixel_values)

    with torch.no_grad():
        selected_indices = model(pixel_values=pixel_values).selected_indices
    for indices, centres, grid_size in zip(selected_indices, result.selected_centres, model.pim.backbone.grid_sizes):
        cell = 64 / grid_size
        rows, columns = np.divmod(indices[0].numpy(), grid_size)
        np.testing.assert_allclose(centres, np.stack([(columns + 0.5) * cell, (rows + 0.5) * cell], axis=1))


def test_heatmap_is_class_aware(model, pixel_values):
    maps = [compute_heatmap(model, pixel_values, target_class=class_id).heatmap for class_id in range(len(LABELS))]
    default = compute_heatmap(model, pixel_values)

    assert np.abs(maps[0] - maps[1]).max() > 0.05
    np.testing.assert_array_equal(default.heatmap, maps[default.predicted_class])


def _constant_token_classifier(model, layer):
    """A copy of `model` whose token classifier of `layer` gives every token the same logits (its last bias)."""
    constant = copy.deepcopy(model)
    with torch.no_grad():
        constant.pim.token_classifiers[layer].layers[-1].weight.zero_()
    return constant


def test_constant_layers_contribute_zeros(model, pixel_values):
    """A constant map (the 1×1 last layer; here every layer) is zeros, not bilinear rounding stretched to [0, 1]."""
    constant = model
    for layer in range(len(NUM_SELECTS)):
        constant = _constant_token_classifier(constant, layer)

    heatmap = compute_heatmap(constant, pixel_values, target_class=1).heatmap

    np.testing.assert_array_equal(heatmap, np.zeros((64, 64), dtype=np.float32))


def test_a_constant_layer_adds_nothing_to_the_mean(model, pixel_values):
    """With the last layer's map constant, the heatmap is the mean of before less that layer's quarter, nothing added."""
    result = compute_heatmap(model, pixel_values, target_class=1)
    constant = compute_heatmap(_constant_token_classifier(model, 3), pixel_values, target_class=1)

    with torch.no_grad():
        token_logits = model(pixel_values=pixel_values).token_logits[3][0, :, 1]
    last_layer = F.interpolate(
        ((token_logits - token_logits.min()) / (token_logits.max() - token_logits.min())).reshape(1, 1, 2, 2),
        size=(64, 64),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    np.testing.assert_allclose(constant.heatmap, result.heatmap - last_layer / 4, atol=1e-6)


def test_heatmap_takes_one_image_of_a_valid_class(model):
    with pytest.raises(ValueError, match="one image"):
        compute_heatmap(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="not a class id"):
        compute_heatmap(model, torch.randn(3, 64, 64), target_class=len(LABELS))


def test_model_view_undoes_the_normalisation():
    processor = PimImageProcessor.for_image_size(64, resize_size=64)  # no resampling: only the normalisation
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))

    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"][0]

    np.testing.assert_allclose(model_view(pixel_values, processor), np.asarray(image) / 255, atol=1e-5)


def test_cli_writes_the_figure(model_dir, image_file, tmp_path, capsys):
    output = tmp_path / "heatmap.png"

    assert main([str(model_dir), str(image_file), "--output", str(output), "--target_class", "Blue Jay"]) == 0

    with Image.open(output) as figure:
        figure.verify()
    assert "heatmap of: blue jay" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target, image, expected",
    [
        ("albatross", "bird.jpg", "id2label"),
        (None, "missing.jpg", "does not exist"),
        (None, "notes.jpg", "Cannot read"),
    ],
    ids=["unknown class", "missing image", "not an image"],
)
def test_cli_input_errors(model_dir, image_file, tmp_path, capsys, target, image, expected):
    (tmp_path / "notes.jpg").write_text("not an image")
    args = [str(model_dir), str(tmp_path / image), "--output", str(tmp_path / "out.png")]

    assert main(args + (["--target_class", target] if target else [])) == 2

    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("model_form", ["NFC", "NFD"])
@pytest.mark.parametrize("typed_form", ["NFC", "NFD"])
def test_target_class_names_are_compared_in_nfc(model_form, typed_form):
    """A class name typed on macOS (NFD) finds the model's class, whichever form the model's id2label holds."""
    id2label = {0: "red", 1: unicodedata.normalize(model_form, "café crème"), 2: "green"}

    assert resolve_target_class(unicodedata.normalize(typed_form, "café crème"), id2label) == 1
    assert resolve_target_class(unicodedata.normalize(typed_form, "CAFÉ CRÈME"), id2label) == 1
    assert resolve_target_class("2", id2label) == 2
