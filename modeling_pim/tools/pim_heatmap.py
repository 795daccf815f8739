"""
The `pim-heatmap` command: its arguments and entry point. The output path is checked, and `--help` answered, before
anything heavy is imported; the work is [`modeling_pim.tools.heatmap`] (see its docstring for the method).
"""

import argparse
import sys
from collections.abc import Sequence

from ..utils.cli import add_debug_argument, check_output_file, run_command
from .pim_infer import add_model_arguments


# The formats `Figure.savefig` writes without extra libraries; a name without an extension gets `.png`.
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".pdf", ".svg", ".eps", ".ps")
DEFAULT_FIGURE_SUFFIX = ".png"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pim-heatmap",
        description="Class-aware heatmap of a PIM model on one image, with the tokens its selector kept.",
    )
    add_model_arguments(parser)
    add_debug_argument(parser)
    parser.add_argument("image", help="The image file.")
    parser.add_argument(
        "--output",
        required=True,
        help=f"Figure file to write: {', '.join(FIGURE_SUFFIXES)}; a name without an extension gets .png.",
    )
    parser.add_argument(
        "--target_class",
        default=None,
        help="Class to map, by name (config.json id2label) or id; default: the predicted class.",
    )
    return parser.parse_args(argv)


def _run(argv: list[str]) -> int:
    args = parse_args(argv)
    output = check_output_file(args.output, "--output", FIGURE_SUFFIXES, DEFAULT_FIGURE_SUFFIX)
    from .heatmap import run_heatmap

    title = run_heatmap(args, output)
    print(f"{title}\nWrote {output}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pim-heatmap`: 0 on success, 2 on a user error."""
    return run_command("pim-heatmap", _run, argv)


__all__ = ["main", "parse_args"]


if __name__ == "__main__":
    sys.exit(main())
