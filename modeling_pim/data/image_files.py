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

[`load_image`] opens a file into the RGB image the model sees ([`image_to_rgb`]): the tools and the load-time scan of
the datasets use it, so an image is "readable" for all of them in the same sense.
"""

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image

from ..image_processing_pim import image_to_rgb


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


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """
    Opens and fully decodes an image file into the RGB image the model sees ([`image_to_rgb`]: EXIF orientation, high
    bit depth by its real range, transparency onto white).

    Raises:
        Whatever PIL raises for a missing, unreadable, truncated or corrupt file, or a mode it cannot convert.
    """
    with PIL.Image.open(path) as image:
        return image_to_rgb(image)


__all__ = ["ImageFiles", "find_image_files", "image_extensions", "is_image_file_name", "load_image"]
