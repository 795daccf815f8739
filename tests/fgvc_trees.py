"""
Miniature fine-grained datasets on disk, in the layouts the loaders of `modeling_pim.data.fgvc_datasets` read: the
official CUB-200-2011 and NABirds archives and pre-split class folders. Plain functions so that dataset, transform and
training tests can all build them.

Every good image is a small solid-colour picture whose colour encodes its class (`class_color`), so a test can check
that a decoded image and its label belong together.
"""

import io
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


CUB_CLASS_NAMES = (
    "Black_footed_Albatross",
    "Laysan_Albatross",
    "Sooty_Albatross",
    "Groove_billed_Ani",
    "Crested_Auklet",
    "Least_Auklet",
)
NABIRDS_CLASS_NAMES = {
    0: "Birds",
    1: "Ducks, Geese, and Swans",
    2: "Perching Birds",
    295: "Mallard (Male)",
    313: "Wood Duck (Female/Immature)",
    1010: "Northern Cardinal (Adult Male)",
}
NABIRDS_PARENTS = {1: 0, 2: 0, 295: 1, 313: 1, 1010: 2}
FOLDER_CLASS_NAMES = ("Acadian Flycatcher", "Barn Swallow", "Cape May Warbler")


def class_color(label: int) -> tuple[int, int, int]:
    """The RGB colour of the images of class `label` (far apart for the first classes)."""
    palette = ((220, 40, 40), (40, 200, 60), (50, 60, 220), (220, 200, 40), (200, 40, 200), (40, 200, 200))
    return palette[label % len(palette)]


def _image(label: int, index: int, size: int) -> Image.Image:
    """A solid-colour RGB image of class `label`, slightly different for each `index`, of about `size` pixels."""
    height, width = size, size + 4 * (index % 3)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = class_color(label)
    pixels[: 1 + index % 4, :, :] = 128
    return Image.fromarray(pixels)


def _save(image: Image.Image, path: Path, special: str | None) -> Path:
    """Saves `image` at `path` as a JPEG, or in a `special` mode: "L" or "CMYK" JPEG, or "RGBA" PNG (new suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if special == "RGBA":
        path = path.with_suffix(".png")
        alpha = np.full((image.height, image.width), 255, dtype=np.uint8)
        alpha[0] = 0  # a transparent first row, composited onto white when converted to RGB
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(path)
    elif special in ("L", "CMYK"):
        image.convert(special).save(path, quality=95)
    else:
        image.save(path, quality=95)
    return path


def _write_corrupt(path: Path, seed: int) -> None:
    """Random bytes under an image file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 2000, dtype=np.uint8).tobytes())


def _write_truncated(path: Path, image: Image.Image) -> None:
    """A JPEG cut in the middle of its image data: the header opens, decoding fails."""
    buffer = io.BytesIO()
    image.resize((64, 64)).save(buffer, format="JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _special_mode(label: int, index: int) -> str | None:
    """Which image gets an unusual mode: class 0 image 0 is grayscale, class 1 image 1 CMYK, class 2 image 2 RGBA."""
    return {(0, 0): "L", (1, 1): "CMYK", (2, 2): "RGBA"}.get((label, index))


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def make_cub_tree(
    root: str | Path, num_classes: int = 3, images_per_class: int = 4, size: int = 40, with_bad_files: bool = True
) -> Path:
    """
    Writes a miniature CUB-200-2011 archive under `root/CUB_200_2011` and returns that folder.

    Class `c` (label `c`, class id `c + 1`) is `images/{c+1:03d}.{CUB_CLASS_NAMES[c]}/` with `images_per_class`
    images: the first half train, the rest test. Class 0 image 0 is a grayscale JPEG, class 1 image 1 a CMYK JPEG and
    class 2 image 2 an RGBA PNG. With `with_bad_files`, two more images are listed: `corrupt.jpg` (random bytes, train,
    class 0) and `truncated.jpg` (half a JPEG, test, class 1 or 0). `image_class_labels.txt` and `train_test_split.txt`
    list the ids in reverse order, so a loader must join the files by id.
    """
    archive = Path(root) / "CUB_200_2011"
    class_folders = [
        f"{label + 1:03d}.{CUB_CLASS_NAMES[label % len(CUB_CLASS_NAMES)]}" for label in range(num_classes)
    ]
    rows = []  # (relative path, class id, is_train)
    for label, folder in enumerate(class_folders):
        for index in range(images_per_class):
            name = f"{folder.split('.', 1)[1]}_{index + 1:04d}.jpg"
            path = _save(_image(label, index, size), archive / "images" / folder / name, _special_mode(label, index))
            rows.append((path.relative_to(archive / "images").as_posix(), label + 1, index < images_per_class // 2))
    if with_bad_files:
        _write_corrupt(archive / "images" / class_folders[0] / "corrupt.jpg", seed=0)
        rows.append((f"{class_folders[0]}/corrupt.jpg", 1, True))
        truncated_label = min(1, num_classes - 1)
        _write_truncated(archive / "images" / class_folders[truncated_label] / "truncated.jpg", _image(1, 0, size))
        rows.append((f"{class_folders[truncated_label]}/truncated.jpg", truncated_label + 1, False))
    ids = range(1, len(rows) + 1)
    _write_lines(
        archive / "images.txt", [f"{image_id} {path}" for image_id, (path, _, _) in zip(ids, rows, strict=True)]
    )
    _write_lines(archive / "image_class_labels.txt", [f"{i} {rows[i - 1][1]}" for i in reversed(ids)])
    _write_lines(archive / "train_test_split.txt", [f"{i} {int(rows[i - 1][2])}" for i in reversed(ids)])
    _write_lines(archive / "classes.txt", [f"{label + 1} {folder}" for label, folder in enumerate(class_folders)])
    return archive


def make_nabirds_tree(
    root: str | Path,
    class_ids: tuple[int, ...] = (1010, 295, 313),
    images_per_class: int = 4,
    size: int = 40,
    with_bad_files: bool = False,
) -> Path:
    """
    Writes a miniature NABirds archive under `root/nabirds` and returns that folder.

    The leaf classes `class_ids` (sparse; labels follow their sorted order, so by default 295 → 0, 313 → 1,
    1010 → 2, and the colour of an image is that of its label) have images in `images/{class_id:04d}/<uuid hex>.jpg`
    with UUID image ids, the first half train; `classes.txt` also lists parent classes without images, linked in
    `hierarchy.txt`. With `with_bad_files`, a corrupt image is added to the first class (train).
    """
    archive = Path(root) / "nabirds"
    label_of = {class_id: label for label, class_id in enumerate(sorted(class_ids))}
    rng = np.random.default_rng(0)
    rows = []  # (uuid, relative path, class id, is_train)
    for class_id in class_ids:
        for index in range(images_per_class):
            image_id = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))))
            relative = f"{class_id:04d}/{image_id.replace('-', '')}.jpg"
            _save(_image(label_of[class_id], index, size), archive / "images" / relative, None)
            rows.append((image_id, relative, class_id, index < images_per_class // 2))
    if with_bad_files:
        relative = f"{class_ids[0]:04d}/corrupt.jpg"
        _write_corrupt(archive / "images" / relative, seed=1)
        rows.append((str(uuid.UUID(int=int(rng.integers(0, 2**63)))), relative, class_ids[0], True))
    names = {**NABIRDS_CLASS_NAMES, **{c: f"Species {c}" for c in class_ids if c not in NABIRDS_CLASS_NAMES}}
    parents = {**NABIRDS_PARENTS, **{c: 2 for c in class_ids if c not in NABIRDS_PARENTS}}
    _write_lines(archive / "images.txt", [f"{image_id} {relative}" for image_id, relative, _, _ in rows])
    _write_lines(archive / "image_class_labels.txt", [f"{image_id} {class_id}" for image_id, _, class_id, _ in rows])
    _write_lines(archive / "train_test_split.txt", [f"{image_id} {int(train)}" for image_id, _, _, train in rows])
    _write_lines(archive / "classes.txt", [f"{class_id} {name}" for class_id, name in sorted(names.items())])
    _write_lines(archive / "hierarchy.txt", [f"{child} {parent}" for child, parent in sorted(parents.items())])
    return archive


def make_image_folders(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "validation"),
    class_names: tuple[str, ...] = FOLDER_CLASS_NAMES,
    images_per_class: int = 3,
    size: int = 40,
) -> Path:
    """
    Writes `root/<split>/<class name>/<class name>_<k>.jpg` for every split and class and returns `root`. Class
    `class_names[i]` has the colour of label `i` (so keep `class_names` sorted to have labels match colours).
    """
    root = Path(root)
    for split in splits:
        for label, name in enumerate(class_names):
            for index in range(images_per_class):
                _save(_image(label, index, size), root / split / name / f"{name}_{index}.jpg", None)
    return root


def make_hub_parquet_dataset(
    root: str | Path,
    class_names: tuple[str, ...] = FOLDER_CLASS_NAMES,
    images_per_class: dict[str, int] | None = None,
    unlabeled_splits: tuple[str, ...] = ("test",),
    size: int = 40,
    split_class_names: dict[str, tuple[str, ...]] | None = None,
) -> Path:
    """
    Writes `root` as `Dataset.push_to_hub` writes a dataset repository: `data/<split>-00000-of-00001.parquet` shards
    with an `image` column (`datasets.Image`, the JPEG bytes embedded as `embed_external_files=True` does) and a
    `label` column (`datasets.ClassLabel` of `class_names`), and a README whose `configs` list the shards per split.
    `images_per_class` gives each split's images per class (default: train 3, validation 2, test 2); the splits of
    `unlabeled_splits` have the label -1 (hidden test labels); `split_class_names` gives some splits their own
    `ClassLabel` names (as a split encoded on its own may have them), their labels counted in that order. Returns
    `root`, which `datasets.load_dataset` reads.
    """
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from datasets.table import embed_table_storage

    root = Path(root)
    images_per_class = images_per_class or {"train": 3, "validation": 2, "test": 2}
    for split, count in images_per_class.items():
        names = (split_class_names or {}).get(split, class_names)
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(names))})
        sources = make_image_folders(root.parent / f"{root.name}_sources", (split,), names, count, size)
        paths = [str(path) for name in names for path in sorted((sources / split / name).glob("*.jpg"))]
        labels = [-1 if split in unlabeled_splits else label for label in range(len(names)) for _ in range(count)]
        dataset = Dataset.from_dict({"image": paths, "label": labels}, features=features)
        dataset = dataset.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
        (root / "data").mkdir(parents=True, exist_ok=True)
        dataset.with_format(None).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    data_files = "".join(f"  - split: {split}\n    path: data/{split}-*\n" for split in images_per_class)
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n{data_files}---\n")
    return root
