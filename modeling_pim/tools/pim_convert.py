"""
The `pim-convert` command: its arguments and entry point. Paths are checked, and `--help` answered, before anything
heavy is imported; the work is [`modeling_pim.tools.convert`] (see its docstring for the supported checkpoints).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..utils.cli import UserInputError, add_debug_argument, check_output_directory, run_command
from .original_code import BACKBONES, METHODS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pim-convert",
        description="Convert a checkpoint of the original FGVC-PIM or FGVC-HERBS code (best.pt) into a Hugging Face "
        "PIM model folder.",
    )
    parser.add_argument("checkpoint", help="the original best.pt ({'model': state_dict, ...}) or a bare state dict")
    parser.add_argument("--backbone", required=True, choices=BACKBONES, help="the original builder (model_name)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="pim (FGVC-PIM) or herbs (FGVC-HERBS); default: read from the checkpoint's key names",
    )
    parser.add_argument("--num_classes", type=int, help="number of classes (default: read from the checkpoint)")
    parser.add_argument("--output_dir", required=True, help="folder for the converted model")
    parser.add_argument("--class_names", help="CUB classes.txt ('1 001.Black_footed_Albatross') or one name per line")
    parser.add_argument("--image_size", type=int, help="input size (default: the builder's, or read from the checkpoint)")
    parser.add_argument("--fpn_size", type=int, help="pyramid channels (default: read from the checkpoint)")
    parser.add_argument("--num_selects", type=int, nargs="+", help="tokens kept per layer, e.g. 2048 512 128 32")
    parser.add_argument(
        "--resize_size",
        type=int,
        help="resize before the center crop (default: image_size * 510 / 384, i.e. 510 at 384; the original code "
        "resized to 510 at every crop size: pass 510 to evaluate a 448 px model exactly as it did)",
    )
    parser.add_argument(
        "--allow_missing",
        action="store_true",
        help="save even when checkpoint tensors have no place in the model or model tensors are not in the checkpoint",
    )
    add_debug_argument(parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The arguments, with the sizes checked (a 0 would silently mean "read from the checkpoint")."""
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("num_classes", "image_size", "fpn_size", "resize_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.num_selects is not None and min(args.num_selects) < 1:
        parser.error(f"--num_selects must be at least 1 token per layer, got {' '.join(map(str, args.num_selects))}.")
    return args


def _run(argv: list[str]) -> int:
    args = parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise UserInputError(
            f"Checkpoint {args.checkpoint!r} does not exist or is not a file: give the original best.pt."
        )
    if args.class_names and not Path(args.class_names).is_file():
        raise UserInputError(
            f"--class_names {args.class_names!r} does not exist or is not a file: give CUB's classes.txt or a file "
            "with one class name per line."
        )
    output_dir = check_output_directory(args.output_dir, "--output_dir")
    from .convert import convert_checkpoint, read_class_names

    try:
        class_names = read_class_names(args.class_names) if args.class_names else None
        if class_names is not None:
            shown = ", ".join(map(repr, class_names[:3])) + (", ..." if len(class_names) > 3 else "")
            print(f"Read {len(class_names)} class names from {args.class_names}: {shown}")
        report = convert_checkpoint(
            args.checkpoint,
            args.backbone,
            output_dir,
            num_classes=args.num_classes,
            class_names=class_names,
            image_size=args.image_size,
            fpn_size=args.fpn_size,
            num_selects=args.num_selects,
            resize_size=args.resize_size,
            allow_missing=args.allow_missing,
            method=args.method,
        )
    except ValueError as error:  # ConversionError, or a PimConfig / PimForImageClassification refusing the values
        raise UserInputError(str(error)) from error
    print(report.format())
    print(f"Saved to {output_dir}: load it with PimForImageClassification.from_pretrained({str(output_dir)!r}).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pim-convert`: 0 on success, 2 on a user error."""
    return run_command("pim-convert", _run, argv)


__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main())
