"""
Class-aware heatmaps of a PIM model: the work of `pim-heatmap MODEL IMAGE --output OUT.png [--target_class NAME|ID]`
(its command line is [`modeling_pim.tools.pim_heatmap`]).

For a class `c` (the predicted class, or `--target_class`), every layer's token classifier scores each of its tokens:
`token_logits[i][:, :, c]`, a `(h_i, w_i)` map once put back on the layer's grid. Each layer's map is min-max
normalised on its grid (a map that is constant, such as the single token of a 1×1 last layer, becomes zeros), then
upsampled to the model input, and the maps are averaged over the layers. Normalising before upsampling keeps the
float rounding of the interpolation (about 1e-6) from being stretched to [0, 1] in a constant layer.

Why logits rather than the softmax probability of `c` per token: a token's logit of `c` is a linear read-out (the
token classifier's last 1×1 convolution) of the token's features, so the map is a class activation map (Zhou et al.,
2016) of that layer: it varies smoothly, it differs between classes, and it is informative for any class. The
per-token softmax probability saturates: for a class the model does not predict it is close to 0 everywhere, and
normalising such a map magnifies noise. Per-layer normalisation removes the class bias and each layer's scale, so
that shallow and deep layers weigh the same in the mean.

The figure shows the image file, the heatmap and its overlay on the image *as the model saw it* (the processor's
resized, center-cropped crop, de-normalised), with the tokens the weakly supervised selector kept marked by dots, one
colour per layer. Layers whose selector keeps more than half of the tokens are not marked: their dots would cover the
image and tell nothing.
"""

import argparse
import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from transformers import PreTrainedModel

from ..data.image_files import load_image, normalize_class_name
from ..image_processing_pim import image_to_rgb
from ..utils.cli import UserInputError
from .infer import load_model_and_processor, resolve_device, resolve_dtype


LAYER_COLOURS = ("#00e5ff", "#76ff03", "#ffea00", "#ff3d00", "#d500f9", "#ffffff")
# Longest side, in pixels, at which the image is drawn: a panel of the figure is about 500 pixels wide.
MAX_DRAWN_SIDE = 1024


class HeatmapResult(NamedTuple):
    """
    What [`compute_heatmap`] returns; unpacks as `(heatmap, predicted_class, probability, selected_centres,
    probabilities)`.

    Attributes:
        heatmap (`np.ndarray` of shape `(H, W)`):
            Mean over layers of the per-layer normalised token logits of the target class, in [0, 1], at the model
            input size.
        predicted_class (`int`):
            Argmax of the final head's `logits`.
        probability (`float`):
            Softmax probability of `predicted_class` under the final head.
        selected_centres (`list[np.ndarray]`):
            Per layer, the `(x, y)` pixel centres in the model input of the tokens the selector kept, shape `(S_i, 2)`,
            most confident first (an empty list when the model has no selector).
        probabilities (`np.ndarray` of shape `(num_labels,)`):
            Softmax probabilities of every class under the final head.
    """

    heatmap: np.ndarray
    predicted_class: int
    probability: float
    selected_centres: list[np.ndarray]
    probabilities: np.ndarray


# A map whose span is below this fraction of its largest magnitude is constant up to float rounding.
CONSTANT_MAP_TOLERANCE = 1e-5


def _normalise(values: torch.Tensor) -> torch.Tensor:
    """
    Min-max normalisation to [0, 1]. A map that is constant up to float rounding (span at most
    `CONSTANT_MAP_TOLERANCE` times its largest magnitude) becomes zeros.
    """
    low, high = values.min(), values.max()
    span = high - low
    if span <= CONSTANT_MAP_TOLERANCE * torch.maximum(low.abs(), high.abs()):
        return torch.zeros_like(values)
    return (values - low) / span


def _token_centres(indices: torch.Tensor, grid_size: int, image_size: tuple[int, int]) -> np.ndarray:
    """Row-major token indices of a `grid_size`² grid → `(x, y)` centres of their cells in pixels of `image_size`."""
    rows, columns = indices // grid_size, indices % grid_size
    height, width = image_size
    x = (columns.float() + 0.5) * width / grid_size
    y = (rows.float() + 0.5) * height / grid_size
    return torch.stack([x, y], dim=-1).cpu().numpy()


@torch.inference_mode()
def compute_heatmap(
    model: PreTrainedModel, pixel_values: torch.Tensor, target_class: int | None = None
) -> HeatmapResult:
    """
    The class-aware heatmap of one image (see the module docstring for the method).

    Args:
        model ([`PimForImageClassification`]):
            A PIM model with token classifiers (`use_fpn` or `use_selection`), in eval mode.
        pixel_values (`torch.Tensor` of shape `(1, 3, H, W)` or `(3, H, W)`):
            One image as the model's image processor prepares it.
        target_class (`int`, *optional*):
            Class whose evidence is mapped; defaults to the predicted class.

    Returns:
        [`HeatmapResult`]: `(heatmap, predicted_class, probability, selected_centres, probabilities)`.
    """
    if pixel_values.dim() == 3:
        pixel_values = pixel_values[None]
    if pixel_values.shape[0] != 1:
        raise ValueError(f"compute_heatmap takes one image, got a batch of {pixel_values.shape[0]}.")
    num_labels = model.config.num_labels
    if target_class is not None and not 0 <= target_class < num_labels:
        raise ValueError(f"target_class={target_class} is not a class id of this model (0 to {num_labels - 1}).")
    outputs = model(pixel_values=pixel_values.to(model.device, model.dtype))
    if outputs.token_logits is None:
        raise ValueError(
            "This model has no token classifiers (use_fpn=False and use_selection=False): PIM heatmaps need them."
        )
    probabilities = outputs.logits[0].float().softmax(dim=-1)
    predicted_class = int(probabilities.argmax())
    target = predicted_class if target_class is None else target_class
    image_size = tuple(pixel_values.shape[-2:])
    grid_sizes = model.pim.backbone.grid_sizes
    layer_maps = []
    for token_logits, grid_size in zip(outputs.token_logits, grid_sizes):
        scores = _normalise(token_logits[0, :, target].float())  # (h_i * w_i,)
        scores = scores.reshape(1, 1, grid_size, grid_size)  # (1, 1, h_i, w_i)
        layer_maps.append(F.interpolate(scores, size=image_size, mode="bilinear", align_corners=False)[0, 0])  # (H, W)
    heatmap = torch.stack(layer_maps).mean(dim=0)
    selected_centres = [
        _token_centres(indices[0], grid_size, image_size)
        for indices, grid_size in zip(outputs.selected_indices or (), grid_sizes)
    ]
    probability = float(probabilities[predicted_class])
    return HeatmapResult(
        heatmap.cpu().numpy(), predicted_class, probability, selected_centres, probabilities.cpu().numpy()
    )


def resolve_target_class(target: str, id2label: dict[int, str]) -> int:
    """
    A class name of `id2label` (exact, then case-insensitive; both in Unicode NFC, as training compares class names)
    or a class id → the class id.

    Raises:
        `UserInputError`: no class has that name or id; the message gives close names and where to find them all.
    """
    wanted = normalize_class_name(target)
    exact = {normalize_class_name(name): int(class_id) for class_id, name in id2label.items()}
    if wanted in exact:
        return exact[wanted]
    folded = {name.casefold(): class_id for name, class_id in exact.items()}
    if wanted.casefold() in folded:
        return folded[wanted.casefold()]
    if target.isdigit() and int(target) in id2label:
        return int(target)
    names = list(exact)
    containing = [name for name in names if wanted.casefold() in name.casefold()]
    close = list(dict.fromkeys(containing + difflib.get_close_matches(wanted, names, n=5, cutoff=0.5)))[:5]
    suggestion = f" Close names: {', '.join(map(repr, close))}." if close else ""
    raise UserInputError(
        f"--target_class {target!r} is neither a class name nor a class id (0 to {len(id2label) - 1}) of this "
        f"model.{suggestion} All class names are in `id2label` of the model's config.json "
        "(`AutoConfig.from_pretrained(MODEL, trust_remote_code=True).id2label`)."
    )


def model_view(pixel_values: torch.Tensor, processor: Any) -> np.ndarray:
    """The image as the model saw it: `pixel_values` `(3, H, W)` de-normalised to an `(H, W, 3)` array in [0, 1]."""
    image = pixel_values.float().cpu()
    if getattr(processor, "do_normalize", True):
        mean = torch.tensor(processor.image_mean, dtype=image.dtype)[:, None, None]
        std = torch.tensor(processor.image_std, dtype=image.dtype)[:, None, None]
        image = image * std + mean
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def drawn_image(original: PIL.Image.Image) -> PIL.Image.Image:
    """
    The image panel of the figure: `original` as the model saw it ([`image_to_rgb`]: transparency on white, high bit
    depth by its range), at most `MAX_DRAWN_SIDE` pixels wide and high (aspect ratio kept), so that drawing a
    48-megapixel photo costs no more memory than the figure needs.
    """
    image = image_to_rgb(original)
    if max(image.size) > MAX_DRAWN_SIDE:
        image = PIL.ImageOps.contain(image, (MAX_DRAWN_SIDE, MAX_DRAWN_SIDE), PIL.Image.Resampling.BILINEAR)
    return image


def plot_heatmap(
    original: PIL.Image.Image,
    seen: np.ndarray,
    result: HeatmapResult,
    grid_sizes: Sequence[int],
    title: str,
    path: str | os.PathLike | BinaryIO,
) -> None:
    """
    Saves the original image, the heatmap and its overlay on `seen` (the model's view) with the selected tokens of
    the layers that keep at most half of their tokens (`grid_sizes[i]`² each), as PNG when `path` is a file object.

    `original` is drawn as [`drawn_image`] prepares it: as the model saw it, at a bounded size.
    """
    figure = Figure(figsize=(13.5, 5.2), layout="constrained")
    original_axes, heatmap_axes, overlay_axes = figure.subplots(1, 3)
    original_axes.imshow(drawn_image(original))
    original_axes.set_title(f"image ({original.width}×{original.height})")
    image = heatmap_axes.imshow(result.heatmap, cmap="jet", vmin=0, vmax=1)
    heatmap_axes.set_title("heatmap (mean of per-layer token logits)")
    figure.colorbar(image, ax=heatmap_axes, shrink=0.8)
    overlay_axes.imshow(seen)
    overlay_axes.imshow(result.heatmap, cmap="jet", vmin=0, vmax=1, alpha=0.45)
    for layer, (centres, grid_size) in enumerate(zip(result.selected_centres, grid_sizes)):
        num_tokens = grid_size * grid_size
        if len(centres) > num_tokens / 2:
            continue
        overlay_axes.scatter(
            centres[:, 0],
            centres[:, 1],
            s=float(np.clip((140 / grid_size) ** 2, 4, 60)),  # about half a cell wide, in points²
            c=LAYER_COLOURS[layer % len(LAYER_COLOURS)],
            edgecolors="black",
            linewidths=0.4,
            label=f"layer {layer}: {len(centres)} of {num_tokens} tokens kept",
        )
    handles, labels = overlay_axes.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower right", fontsize=8, ncols=len(handles), frameon=False)
    overlay_axes.set_title(f"overlay on the model input ({seen.shape[1]}×{seen.shape[0]})")
    for axes in (original_axes, heatmap_axes, overlay_axes):
        axes.set_axis_off()
    figure.suptitle(title, fontsize=13, fontweight="bold")
    figure.savefig(path, dpi=110)


def render_heatmap(
    model: PreTrainedModel,
    processor: Any,
    image: PIL.Image.Image,
    output: str | os.PathLike | BinaryIO,
    target_class: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[HeatmapResult, str]:
    """
    The `pim-heatmap` figure of one decoded image, written to `output` (a path, or a binary file object for PNG).

    Args:
        model ([`PimForImageClassification`]): a PIM model in eval mode.
        processor: its image processor.
        image (`PIL.Image.Image`): the image, decoded.
        output: where [`plot_heatmap`] saves the figure.
        target_class (`int`, *optional*): the class to map; the predicted class by default.
        dtype (`torch.dtype`): autocast dtype of the forward pass (`torch.float32`: no autocast).

    Returns:
        `tuple[HeatmapResult, str]`: the heatmap result and the figure's title.

    Raises:
        `ValueError`: the model has no token classifiers, or `target_class` is not one of its classes.
    """
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    device = model.device
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        result = compute_heatmap(model, pixel_values, target_class)
    id2label = {int(class_id): name for class_id, name in model.config.id2label.items()}
    title = f"predicted: {id2label[result.predicted_class]} ({result.probability:.1%})"
    if target_class is not None:
        title += f" — heatmap of: {id2label[target_class]}"
    seen = model_view(pixel_values[0], processor)
    plot_heatmap(image, seen, result, model.pim.backbone.grid_sizes, title, output)
    return result, title


def run_heatmap(args: argparse.Namespace, output: Path) -> str:
    """
    Runs `pim-heatmap` with parsed arguments, writing the figure to `output` (its folder is created); returns the
    figure's title.
    """
    if not os.path.isfile(args.image):
        raise UserInputError(f"Image {args.image!r} does not exist or is not a file.")
    try:
        original = load_image(args.image)
    except Exception as error:  # Any PIL plugin failure means the same thing to the user: not a readable image.
        raise UserInputError(f"Cannot read {args.image!r} as an image ({type(error).__name__}: {error}).") from error
    model, processor = load_model_and_processor(args.model, resolve_device(args.device), revision=args.revision)
    if model.config.model_type != "pim":
        raise UserInputError(f"{args.model!r} is a {model.config.model_type!r} model: pim-heatmap needs a PIM model.")
    id2label = {int(class_id): name for class_id, name in model.config.id2label.items()}
    target = None if args.target_class is None else resolve_target_class(args.target_class, id2label)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        _, title = render_heatmap(model, processor, original, output, target, resolve_dtype(args.dtype, model.device))
    except ValueError as error:
        raise UserInputError(str(error)) from error
    return title


__all__ = [
    "HeatmapResult",
    "compute_heatmap",
    "drawn_image",
    "model_view",
    "plot_heatmap",
    "render_heatmap",
    "resolve_target_class",
    "run_heatmap",
]
