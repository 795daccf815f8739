"""Seeded generator of a small synthetic fine-grained image classification dataset.

Every image shows the same kind of object (a "bird": a large body ellipse, a head and a tail of one shared
colour family) at a random position and scale on a cluttered background that differs from image to image.
The class is encoded only by a small detail painted at a random position on the body: a 6x6-cell mark (6x6 pixels
at 64 px) in an ink slightly darker and on a paper slightly lighter than the body, whose *arrangement* is class
specific. The marks of all classes have the same number of ink and paper cells, and every other random choice
(colours, positions, sizes, clutter, noise) is drawn independently of the class, so global statistics such as the
mean colour or the colour histogram of an image carry no information about its label. One to three distractor
marks, of classes drawn uniformly from the dataset's classes, are painted on the background away from the object,
so that a classifier has to find the object and then the detail on it.

Every mark pattern is left-right symmetric, so horizontal-flip augmentation keeps labels valid (vertical flips do
not: `t_shape` and `inverted_t` are vertical mirror images of each other).

The dataset is written as PNG files laid out as `output_dir/{train,validation,test}/<class name>/<index>.png`
(the layout of the `imagefolder` loader of 🤗 Datasets and of `torchvision.datasets.ImageFolder`), together with
`dataset_info.json` (generation parameters and counts) and `annotations.json` (label, detail box, object box and
distractor boxes of every image).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..utils.cache import cache_dir
from ..utils.cli import UserInputError, run_command

GENERATOR_VERSION = 1
SPLITS = ("train", "validation", "test")
INFO_FILENAME = "dataset_info.json"
ANNOTATIONS_FILENAME = "annotations.json"

DEFAULT_NUM_CLASSES = 8
DEFAULT_TRAIN_PER_CLASS = 100
DEFAULT_VALIDATION_PER_CLASS = 25
DEFAULT_TEST_PER_CLASS = 25
DEFAULT_IMAGE_SIZE = 64
MIN_IMAGE_SIZE = 48

_PATTERN_ROWS: dict[str, tuple[str, ...]] = {
    "horizontal_bar": ("......", "......", "######", "######", "......", "......"),
    "vertical_bar": ("..##..", "..##..", "..##..", "..##..", "..##..", "..##.."),
    "diagonal_cross": ("#....#", ".#..#.", "..##..", "..##..", ".#..#.", "#....#"),
    "hollow_square": ("......", ".####.", ".#..#.", ".#..#.", ".####.", "......"),
    "t_shape": ("######", "..##..", "..##..", "..##..", "......", "......"),
    "chevron": ("#....#", "#....#", ".#..#.", ".#..#.", "..##..", "..##.."),
    "three_dots": ("..##..", "..##..", "......", "......", "##..##", "##..##"),
    "diamond": ("......", "..##..", ".####.", ".####.", "..##..", "......"),
    "side_bars": ("#....#", "#....#", "#....#", "#....#", "#....#", "#....#"),
    "top_bottom_bars": ("######", "......", "......", "......", "......", "######"),
    "corner_brackets": ("##..##", "#....#", "......", "......", "#....#", "##..##"),
    "inverted_t": ("......", "......", "..##..", "..##..", "..##..", "######"),
}

# The difficulty: lower mark contrast, more pixel noise or more distractors make the dataset harder.
_BODY_COLOUR = np.array((150, 105, 60), dtype=np.int16)
_MARK_CONTRAST = 36
_NOISE_STD = 8.0
_DISTRACTORS = (1, 3)
_PLACEMENT_ATTEMPTS = 10


def _pattern_from_rows(rows: tuple[str, ...]) -> np.ndarray:
    """Turns rows of `#` (ink) and `.` (paper) characters into a boolean mask."""
    return np.array([[character == "#" for character in row] for row in rows], dtype=bool)


DETAIL_PATTERNS: dict[str, np.ndarray] = {name: _pattern_from_rows(rows) for name, rows in _PATTERN_ROWS.items()}
MAX_NUM_CLASSES = len(DETAIL_PATTERNS)
_PATTERN_SIZE = 6


def class_names(num_classes: int = DEFAULT_NUM_CLASSES) -> list[str]:
    """Returns the directory names of the first `num_classes` classes, e.g. `class_00_horizontal_bar`."""
    if not 2 <= num_classes <= MAX_NUM_CLASSES:
        raise ValueError(f"num_classes must be between 2 and {MAX_NUM_CLASSES}, got {num_classes}.")
    return [f"class_{index:02d}_{name}" for index, name in enumerate(list(DETAIL_PATTERNS)[:num_classes])]


def default_cache_dir() -> Path:
    """Returns where the synthetic dataset is cached: `$PIM_CACHE/synthetic` or `~/.cache/modeling_pim/synthetic`."""
    return cache_dir("synthetic")


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(channel) for channel in rng.integers(0, 256, size=3))


def _jittered_colour(rng: np.random.Generator, colour: np.ndarray, amplitude: int) -> tuple[int, int, int]:
    jittered = np.clip(colour + rng.integers(-amplitude, amplitude + 1, size=3), 0, 255)
    return tuple(int(channel) for channel in jittered)


def _draw_clutter(rng: np.random.Generator, image_size: int) -> Image.Image:
    """Draws a background of a random gradient covered with random rectangles, ellipses and lines."""
    ramp = np.linspace(0.0, 1.0, image_size)[:, None, None]
    start, end = rng.integers(0, 256, size=(2, 1, 1, 3))
    gradient = start + (end - start) * ramp
    if rng.random() < 0.5:
        gradient = gradient.transpose(1, 0, 2)
    canvas = np.broadcast_to(gradient, (image_size, image_size, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(canvas))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 13))):
        x0, y0 = rng.integers(-image_size // 8, image_size, size=2)
        width, height = rng.integers(image_size // 16 + 1, image_size // 3, size=2)
        box = (int(x0), int(y0), int(x0 + width), int(y0 + height))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle(box, fill=_random_colour(rng))
        elif kind == 1:
            draw.ellipse(box, fill=_random_colour(rng))
        else:
            draw.line(box, fill=_random_colour(rng), width=int(rng.integers(1, 4)))
    return image


def _draw_bird(rng: np.random.Generator, image: Image.Image) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Draws the shared object (body ellipse, head, tail) and returns its body mask, its box and its body colour."""
    size = image.width
    half_width = int(size * rng.uniform(0.22, 0.3))
    half_height = int(size * rng.uniform(0.15, 0.2))
    centre_x = int(rng.integers(half_width + size // 8, size - half_width - size // 8 + 1))
    centre_y = int(rng.integers(half_height + size // 16, size - half_height - size // 16 + 1))
    facing = 1 if rng.random() < 0.5 else -1
    body_colour = _jittered_colour(rng, _BODY_COLOUR, 20)
    head_colour = _jittered_colour(rng, np.array(body_colour), 12)
    head_radius = max(2, int(half_height * 0.6))
    head_x = centre_x + facing * (half_width + head_radius // 2)
    head_y = centre_y - half_height // 2
    tail_x = centre_x - facing * half_width
    tail = [
        (tail_x + facing * (half_width // 4), centre_y),
        (tail_x - facing * (size // 8), centre_y - half_height // 2),
        (tail_x - facing * (size // 8), centre_y + half_height // 2),
    ]
    body_box = (centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height)
    head_box = (head_x - head_radius, head_y - head_radius, head_x + head_radius, head_y + head_radius)
    draw = ImageDraw.Draw(image)
    draw.polygon(tail, fill=head_colour)
    draw.ellipse(body_box, fill=body_colour)
    draw.ellipse(head_box, fill=head_colour)
    body_mask = Image.new("L", image.size)
    ImageDraw.Draw(body_mask).ellipse(body_box, fill=1)
    xs = [body_box[0], body_box[2], head_box[0], head_box[2]] + [x for x, _ in tail]
    ys = [body_box[1], body_box[3], head_box[1], head_box[3]] + [y for _, y in tail]
    object_box = [max(0, min(xs)), max(0, min(ys)), min(size, max(xs) + 1), min(size, max(ys) + 1)]
    return np.asarray(body_mask, dtype=bool), object_box, np.array(body_colour, dtype=np.int16)


def _fully_inside_positions(mask: np.ndarray, extent: int) -> np.ndarray:
    """Returns the top-left `(y, x)` positions of the `extent`x`extent` squares whose four corners lie in `mask`.

    For a convex mask (the body ellipse) this means the whole square lies inside it.
    """
    last = extent - 1
    corners = mask[:-last, :-last] & mask[:-last, last:] & mask[last:, :-last] & mask[last:, last:]
    return np.argwhere(corners)


def _paint_mark(
    canvas: np.ndarray,
    pattern: np.ndarray,
    top: int,
    left: int,
    cell: int,
    body_colour: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Paints `pattern` with cells of `cell` pixels at `(top, left)`, in an ink darker and on a paper lighter than
    the body colour."""
    shade = _MARK_CONTRAST + rng.integers(-_MARK_CONTRAST // 4, _MARK_CONTRAST // 4 + 1, size=3)
    ink = np.clip(body_colour - shade, 0, 255)
    paper = np.clip(body_colour + shade, 0, 255)
    pixels = np.kron(pattern, np.ones((cell, cell), dtype=bool))
    extent = pixels.shape[0]
    canvas[top : top + extent, left : left + extent] = np.where(pixels[..., None], ink, paper)


def _place_distractors(
    rng: np.random.Generator,
    canvas: np.ndarray,
    forbidden: np.ndarray,
    num_classes: int,
    cell: int,
    body_colour: np.ndarray,
) -> list[list[int]]:
    """Paints marks of random classes on the background, away from the object, and returns their boxes."""
    boxes = []
    size = canvas.shape[0]
    extent = _PATTERN_SIZE * cell
    for _ in range(int(rng.integers(_DISTRACTORS[0], _DISTRACTORS[1] + 1))):
        pattern = DETAIL_PATTERNS[list(DETAIL_PATTERNS)[int(rng.integers(num_classes))]]
        for top, left in rng.integers(0, size - extent + 1, size=(_PLACEMENT_ATTEMPTS, 2)).tolist():
            if not forbidden[top : top + extent, left : left + extent].any():
                _paint_mark(canvas, pattern, top, left, cell, body_colour, rng)
                forbidden[max(0, top - 1) : top + extent + 1, max(0, left - 1) : left + extent + 1] = True
                boxes.append([left, top, left + extent, top + extent])
                break
    return boxes


def render_example(
    label: int, num_classes: int, image_size: int, rng: np.random.Generator
) -> tuple[Image.Image, dict]:
    """Renders one image of class `label` and returns it with its annotation.

    The annotation holds the `label`, the `detail_box` of the class-specific mark, the `object_box` of the bird and
    the `distractor_boxes` of the marks on the background, all boxes as `[x0, y0, x1, y1]` with exclusive ends.
    """
    cell = max(1, image_size // 64)
    extent = _PATTERN_SIZE * cell
    image = _draw_clutter(rng, image_size)
    body_mask, object_box, body_colour = _draw_bird(rng, image)
    canvas = np.array(image)
    positions = _fully_inside_positions(body_mask, extent + 2)
    top, left = (int(value) + 1 for value in positions[rng.integers(len(positions))])
    _paint_mark(canvas, DETAIL_PATTERNS[list(DETAIL_PATTERNS)[label]], top, left, cell, body_colour, rng)
    forbidden = np.zeros_like(body_mask)
    x0, y0, x1, y1 = object_box
    forbidden[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = True
    distractor_boxes = _place_distractors(rng, canvas, forbidden, num_classes, cell, body_colour)
    noise = rng.normal(0.0, _NOISE_STD, size=canvas.shape)
    canvas = np.clip(canvas + noise, 0, 255).round().astype(np.uint8)
    annotation = {
        "label": label,
        "detail_box": [left, top, left + extent, top + extent],
        "object_box": object_box,
        "distractor_boxes": distractor_boxes,
    }
    return Image.fromarray(canvas), annotation


def _dataset_parameters(
    num_classes: int, train_per_class: int, validation_per_class: int, test_per_class: int, image_size: int, seed: int
) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_classes": num_classes,
        "per_class": {"train": train_per_class, "validation": validation_per_class, "test": test_per_class},
        "image_size": image_size,
        "seed": seed,
    }


def _image_paths(parameters: dict) -> list[tuple[str, int, int, str]]:
    """Lists `(split, label, index, relative path)` of every image of a dataset."""
    names = class_names(parameters["num_classes"])
    return [
        (split, label, index, f"{split}/{name}/{index:04d}.png")
        for split in SPLITS
        for label, name in enumerate(names)
        for index in range(parameters["per_class"][split])
    ]


def _is_complete(output_dir: Path, parameters: dict) -> bool:
    """Whether `output_dir` holds a fully written dataset generated with `parameters`."""
    try:
        info = json.loads((output_dir / INFO_FILENAME).read_text())
    except (OSError, ValueError):
        return False
    if info.get("parameters") != parameters or not (output_dir / ANNOTATIONS_FILENAME).is_file():
        return False
    return all((output_dir / path).is_file() for *_, path in _image_paths(parameters))


def _files_not_generated(output_dir: Path) -> list[Path]:
    """
    The files and folders under the split folders of `output_dir` that this generator does not write (it writes
    `<split>/<class name>/<NNNN>.png`, for class names of [`class_names`]): what regenerating would delete.
    """
    own_classes = set(class_names(MAX_NUM_CLASSES))
    foreign = []
    for split in SPLITS:
        if not (output_dir / split).exists():
            continue
        if not (output_dir / split).is_dir():
            foreign.append(output_dir / split)
            continue
        for entry in sorted((output_dir / split).iterdir()):
            if entry.name not in own_classes or not entry.is_dir() or entry.is_symlink():
                foreign.append(entry)
                continue
            foreign += [
                path
                for path in sorted(entry.iterdir())
                if not (re.fullmatch(r"\d{4}\.png", path.name) and path.is_file() and not path.is_symlink())
            ]
    return foreign


def _write_json(path: Path, content: dict) -> None:
    """Writes `content` to `path` atomically, so that a partial file is never taken for a finished one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    temporary.replace(path)


def generate_fine_grained_dataset(
    output_dir: str | os.PathLike,
    num_classes: int = DEFAULT_NUM_CLASSES,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    validation_per_class: int = DEFAULT_VALIDATION_PER_CLASS,
    test_per_class: int = DEFAULT_TEST_PER_CLASS,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
) -> Path:
    """Writes the synthetic fine-grained dataset to `output_dir` and returns its path.

    Nothing is written when `output_dir` already holds a complete dataset generated with the same parameters.
    Otherwise the `train`, `validation` and `test` folders of `output_dir` are deleted and generated again, when they
    hold only what the generator writes (a set generated with other parameters, or an interrupted generation). Every
    image is drawn from its own random stream seeded by `(seed, split, label, index)`, so the files are
    byte-identical for a given seed whatever the other counts are.

    Args:
        output_dir: Folder of the dataset, created when missing.
        num_classes: Number of classes, at most `MAX_NUM_CLASSES`.
        train_per_class: Number of training images per class.
        validation_per_class: Number of validation images per class.
        test_per_class: Number of test images per class.
        image_size: Height and width of the square images in pixels, at least `MIN_IMAGE_SIZE`.
        seed: Seed of the generator, a non-negative integer.

    Returns:
        The path of the dataset folder.

    Raises:
        `ValueError`: a parameter out of range. `FileExistsError`: a split folder of `output_dir` holds files or
        folders that the generator did not write (the user's own data), which are never deleted.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}.")
    if min(train_per_class, validation_per_class, test_per_class) < 0:
        raise ValueError("The numbers of images per class must not be negative.")
    output_dir = Path(output_dir)
    parameters = _dataset_parameters(
        num_classes, train_per_class, validation_per_class, test_per_class, image_size, seed
    )
    if _is_complete(output_dir, parameters):
        return output_dir
    foreign = _files_not_generated(output_dir)
    if foreign:
        listed = ", ".join(str(path.relative_to(output_dir)) for path in foreign[:3])
        raise FileExistsError(
            f"{output_dir} holds {'/, '.join(split for split in SPLITS if (output_dir / split).exists())}/ folders "
            f"that are not a synthetic set ({len(foreign)} files or folders the generator did not write: {listed}"
            f"{', ...' if len(foreign) > 3 else ''}), which generating the set there would delete: give an empty or "
            "new folder."
        )
    (output_dir / INFO_FILENAME).unlink(missing_ok=True)
    for split in SPLITS:
        shutil.rmtree(output_dir / split, ignore_errors=True)
    names = class_names(num_classes)
    for split in SPLITS:
        for name in names:
            (output_dir / split / name).mkdir(parents=True, exist_ok=True)
    annotations = {}
    for split, label, index, path in _image_paths(parameters):
        rng = np.random.default_rng([seed, SPLITS.index(split), label, index])
        image, annotations[path] = render_example(label, num_classes, image_size, rng)
        image.save(output_dir / path, format="PNG")
    _write_json(output_dir / ANNOTATIONS_FILENAME, annotations)
    counts = {split: parameters["per_class"][split] * num_classes for split in SPLITS}
    _write_json(output_dir / INFO_FILENAME, {"parameters": parameters, "class_names": names, "counts": counts})
    return output_dir


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate the synthetic fine-grained classification dataset.")
    parser.add_argument("output_dir", nargs="?", type=Path, default=default_cache_dir(), help="dataset folder")
    parser.add_argument("--num_classes", type=int, default=DEFAULT_NUM_CLASSES)
    parser.add_argument("--train_per_class", type=int, default=DEFAULT_TRAIN_PER_CLASS)
    parser.add_argument("--validation_per_class", type=int, default=DEFAULT_VALIDATION_PER_CLASS)
    parser.add_argument("--test_per_class", type=int, default=DEFAULT_TEST_PER_CLASS)
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: `python -m modeling_pim.data.synthetic OUTPUT_DIR [--num_classes ...]`."""
    arguments = _parse_args(argv)
    start = time.perf_counter()
    try:
        path = generate_fine_grained_dataset(**vars(arguments))
    except (FileExistsError, ValueError) as error:
        raise UserInputError(str(error)) from error
    counts = json.loads((path / INFO_FILENAME).read_text())["counts"]
    summary = ", ".join(f"{counts[split]} {split}" for split in SPLITS)
    print(f"Synthetic dataset at {path}: {summary} images ({time.perf_counter() - start:.1f} s).")


if __name__ == "__main__":
    sys.exit(run_command("python -m modeling_pim.data.synthetic", main))


__all__ = [
    "DETAIL_PATTERNS",
    "MAX_NUM_CLASSES",
    "MIN_IMAGE_SIZE",
    "SPLITS",
    "class_names",
    "default_cache_dir",
    "generate_fine_grained_dataset",
    "render_example",
]
