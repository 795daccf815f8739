"""
Finding and opening image files. [`find_image_files`] is the one listing used by training (the class-folder loaders of
`modeling_pim.data.fgvc_datasets`), `pim-infer` and every later tool, so that they always see the same images.

Rules, at any depth:

- an image file is a file whose extension (case-insensitive) is in [`image_extensions`];
- hidden files and folders (name starting with `.`: `.ipynb_checkpoints/`, `.git/`, `.DS_Store`, macOS `._*` files)
  are skipped, and so is everything under a hidden folder;
- symbolic links to folders and files are followed; a link to a folder that is already on the path being walked (a
  loop) is not followed, and reported;
- the other visible files (not images) are counted and reported, never silently dropped;
- the listing is sorted (by path components), so it does not depend on the file system's order.

[`find_class_folders`] groups the images of a folder by class folder, with class names in Unicode NFC
([`normalize_class_name`]): training's class folders and `pim-infer`'s are the same classes, whatever form (NFC, or the
NFD macOS may write) their names are stored in.

[`load_image`] opens a file into the RGB image the model sees ([`image_to_rgb`]): the tools, the load-time scan of the
datasets and the training transforms ([`load_dataset_image`]) use it, so an image is "readable" for all of them in the
same sense.
"""

import functools
import io
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image

from ..image_processing_pim import image_to_rgb
from ..utils.cli import UserInputError


# A few common image extensions, for messages (the full list, `image_extensions()`, is about 60 long).
IMAGE_EXTENSION_EXAMPLES = "e.g. .jpg, .png, .webp: any image file Pillow opens"


@functools.cache
def image_extensions() -> frozenset[str]:
    """
    The extensions of image files (lower case, with the dot): those that both PIL opens and the `datasets`
    `imagefolder` builder loads (it silently drops files with other extensions), so that a folder holds the same
    images for training, `pim-infer` and `load_dataset("imagefolder", ...)`.
    """
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    registered = PIL.Image.registered_extensions()
    opened = {extension for extension, image_format in registered.items() if image_format in PIL.Image.OPEN}
    return frozenset(extension.lower() for extension in ImageFolder.EXTENSIONS if extension.lower() in opened)


def is_image_file_name(name: str | os.PathLike) -> bool:
    """Whether a file name has an image extension ([`image_extensions`], case-insensitive)."""
    return os.path.splitext(os.fspath(name))[1].lower() in image_extensions()


def normalize_class_name(name: str) -> str:
    """
    A class name (a class folder's name, a dataset's label name, a model's `id2label` name) in Unicode NFC, the form
    class names are compared in: macOS may store a folder named `café` in NFD (`e` followed by a combining accent),
    which looks the same but is another string.
    """
    return unicodedata.normalize("NFC", name)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


@dataclass
class ImageFiles:
    """
    What [`find_image_files`] found under `root`. Every path is relative to `root`, as seen through the links (not
    resolved), sorted by its components.

    Attributes:
        root (`Path`):
            The folder that was listed.
        images (`list[Path]`):
            The image files.
        other_files (`list[Path]`):
            The visible files that are not images (ignored by every tool, and reported).
        hidden (`list[Path]`):
            The hidden files and folders that were skipped (a hidden folder counts once; its content is not read).
        symlink_loops (`list[Path]`):
            Links to a folder that contains them (following them would never end): not followed.
    """

    root: Path
    images: list[Path] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)
    symlink_loops: list[Path] = field(default_factory=list)

    def describe_skipped(self) -> str:
        """
        A one-line account of what is not an image, e.g. `"3 other files (notes.txt, ...), 1 hidden entry
        (.ipynb_checkpoints)"`; empty when everything under `root` is an image.
        """
        parts = []
        for (one, several), paths in (
            (("other file", "other files"), self.other_files),
            (("hidden file or folder", "hidden files or folders"), self.hidden),
            (("symbolic link loop", "symbolic link loops"), self.symlink_loops),
        ):
            if paths:
                examples = ", ".join(path.as_posix() for path in paths[:3]) + (", ..." if len(paths) > 3 else "")
                parts.append(f"{len(paths)} {one if len(paths) == 1 else several} ({examples})")
        return ", ".join(parts)


def find_image_files(folder: str | os.PathLike) -> ImageFiles:
    """
    Lists the image files under `folder`, recursively, following the rules of this module's docstring.

    Args:
        folder (`str` or `os.PathLike`):
            An existing folder (a link to a folder is followed).

    Returns:
        [`ImageFiles`]: the images, the other files, the hidden entries and the symbolic link loops, each sorted.

    Raises:
        `NotADirectoryError`: `folder` is not a folder.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder.")
    found = ImageFiles(root)

    def walk(directory: Path, relative: Path, ancestors: frozenset[str]) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                path = relative / entry.name
                if _is_hidden(entry.name):
                    found.hidden.append(path)
                elif entry.is_dir():  # follows links
                    real = os.path.realpath(entry.path)
                    if real in ancestors:
                        found.symlink_loops.append(path)
                    else:
                        walk(Path(entry.path), path, ancestors | {real})
                elif is_image_file_name(entry.name):
                    found.images.append(path)  # a dangling link too: reported as unreadable when decoded
                else:
                    found.other_files.append(path)

    walk(root, Path(), frozenset({os.path.realpath(root)}))
    for paths in (found.images, found.other_files, found.hidden, found.symlink_loops):
        paths.sort(key=lambda path: path.parts)
    return found


@dataclass
class ClassFolders:
    """
    What [`find_class_folders`] found under `files.root`: its images grouped by class folder.

    Attributes:
        files ([`ImageFiles`]):
            Every image and skipped entry under the root ([`find_image_files`]).
        classes (`dict[str, list[Path]]`):
            Class name ([`normalize_class_name`] of the folder's name) → the images of its folder, at any depth,
            relative to the root, sorted. Every visible folder of the root is a class, sorted by name; a folder
            without images has an empty list.
        folders (`dict[str, str]`):
            Class name → the name of its folder on disk (which may be in NFD form).
        loose_images (`list[Path]`):
            The images directly in the root, outside any class folder.
    """

    files: ImageFiles
    classes: dict[str, list[Path]]
    folders: dict[str, str]
    loose_images: list[Path]


def find_class_folders(folder: str | os.PathLike) -> ClassFolders:
    """
    Lists the images under `folder` ([`find_image_files`]) and groups them by class folder (the visible folders of
    `folder`, links followed), named in Unicode NFC ([`normalize_class_name`]). Training and `pim-infer` both read
    class folders through this function.

    Raises:
        `NotADirectoryError`: `folder` is not a folder.
        `ValueError`: two class folders have the same name once normalised (one in NFC, one in NFD form).
    """
    files = find_image_files(folder)
    folders: dict[str, str] = {}
    with os.scandir(files.root) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            if _is_hidden(entry.name) or not entry.is_dir() or Path(entry.name) in files.symlink_loops:
                continue
            name = normalize_class_name(entry.name)
            if name in folders:
                raise ValueError(
                    f"{str(files.root)!r} has two class folders named {name!r} (one in Unicode NFC, one in NFD form, "
                    "as macOS may write it): merge them into one folder."
                )
            folders[name] = entry.name
    classes: dict[str, list[Path]] = {name: [] for name in sorted(folders)}
    class_of_folder = {folder_name: name for name, folder_name in folders.items()}
    loose_images = []
    for path in files.images:
        if len(path.parts) == 1:
            loose_images.append(path)
        else:
            classes[class_of_folder[path.parts[0]]].append(path)
    return ClassFolders(files, classes, {name: folders[name] for name in classes}, loose_images)


class UnreadableImageError(UserInputError):
    """An image that cannot be decoded while it is read for training or evaluation; the message names it and the fix."""


def load_image(path: str | os.PathLike | io.BytesIO) -> PIL.Image.Image:
    """
    Opens and fully decodes an image file (a path, or a file's bytes in a `BytesIO`) into the RGB image the model sees
    ([`image_to_rgb`]: EXIF orientation, high bit depth by its real range, transparency onto white).

    Raises:
        Whatever PIL raises for a missing, unreadable, truncated or corrupt file, or a mode it cannot convert.
    """
    with PIL.Image.open(path) as image:
        return image_to_rgb(image)


def load_dataset_image(
    value: Any, unreadable_fix: str, stored_in: Callable[[bytes], str] | None = None
) -> PIL.Image.Image:
    """
    The RGB image the model sees ([`image_to_rgb`]) of a cell of a `datasets.Image` column: a PIL image (a decoded
    column), or the `{"bytes", "path"}` dict of an undecoded one (`Image(decode=False)`), read from its bytes when it
    has them, else from its path ([`load_image`]).

    Args:
        value (`PIL.Image.Image` or `dict`):
            The cell.
        unreadable_fix (`str`):
            What to do about an image that cannot be decoded, for the error message (e.g. `"remove it"`).
        stored_in (`Callable[[bytes], str]`, *optional*):
            Where image bytes are stored, for the error message (e.g. `"row 5 of the train split of the dataset
            'birds'"`); default `"the dataset"`.

    Raises:
        [`UnreadableImageError`]: the image cannot be decoded; the message names its file, or where its bytes are
        stored, and `unreadable_fix`.
    """
    if isinstance(value, PIL.Image.Image):
        return image_to_rgb(value)
    path, data = value.get("path"), value.get("bytes")
    source = io.BytesIO(data) if data is not None else path
    try:
        return load_image(source)
    except Exception as error:  # Any failure to decode makes the image unusable, whatever PIL plugin raised it.
        location = stored_in(data) if data is not None and stored_in is not None else "the dataset"
        if data is None:
            where = str(path)
        elif path:
            where = f"the image {path!r} stored in {location}"
        else:
            where = f"the image stored without a path in {location}"
        named = f"of {len(data)} bytes" if data is not None and not path else repr(path)
        reason = str(error).replace(repr(source), named)  # PIL names a BytesIO by its repr
        raise UnreadableImageError(
            f"{where} cannot be decoded ({type(error).__name__}: {reason}): {unreadable_fix}."
        ) from error


__all__ = [
    "IMAGE_EXTENSION_EXAMPLES",
    "ClassFolders",
    "ImageFiles",
    "UnreadableImageError",
    "find_class_folders",
    "find_image_files",
    "image_extensions",
    "is_image_file_name",
    "load_dataset_image",
    "load_image",
    "normalize_class_name",
]
