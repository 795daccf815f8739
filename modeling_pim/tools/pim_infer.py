"""
The `pim-infer` command: its arguments and entry point. It imports nothing heavy until the arguments are parsed, so
that `--help` and argument errors answer at once; the work is [`modeling_pim.tools.infer`] (see its docstring for
the folder layouts and the outputs).
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..utils.cli import UserInputError, add_debug_argument, run_command


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The `model`, `--revision`, `--device` and `--dtype` arguments shared by `pim-infer` and `pim-heatmap`."""
    parser.add_argument(
        "model", help="A folder written by save_pretrained (e.g. the output_dir of train_pim.py) or a Hub model id."
    )
    parser.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub model (default: main).")
    parser.add_argument(
        "--device", default="auto", help="'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="Compute precision: 'auto' is bfloat16 autocast on a GPU that supports it, float32 otherwise.",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pim-infer",
        description="Classify a folder of images with a trained PIM model; with class folders, also measure accuracy.",
    )
    add_model_arguments(parser)
    add_debug_argument(parser)
    parser.add_argument(
        "images_dir",
        help="A flat folder of images (predictions only) or a folder of <class name>/ folders (and accuracy); "
        "images next to the class folders are predicted without a label.",
    )
    parser.add_argument("--output_dir", required=True, help="Where predictions.csv, infer_results.json and plots go.")
    parser.add_argument("--top_k", type=int, default=5, help="Number of classes per image in predictions.csv.")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument(
        "--num_workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="DataLoader processes decoding images (0: decode in the main process).",
    )
    parser.add_argument(
        "--ignore_labels",
        action="store_true",
        help="Treat every image under images_dir as unlabeled, even in class folders (no accuracy).",
    )
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.num_workers < 0:
        parser.error(f"--num_workers must be 0 or more, got {args.num_workers}.")
    return args


def _run(argv: list[str]) -> int:
    args = parse_args(argv)
    from .infer import RESULTS_FILENAME, print_summary, run_inference

    results = run_inference(args)
    print_summary(results, args.output_dir)
    if not results["num_predicted"]:
        raise UserInputError(
            f"none of the {results['num_images']} image files could be read (reasons in "
            f"{Path(args.output_dir) / RESULTS_FILENAME}): check that {results['images_dir']!r} holds images PIL opens."
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pim-infer`: 0 on success, 2 on a user error or when no image could be read."""
    return run_command("pim-infer", _run, argv)


__all__ = ["add_model_arguments", "main", "parse_args"]


if __name__ == "__main__":
    sys.exit(main())
