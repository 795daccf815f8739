"""
The `pim-export` command: its arguments and entry point. The output path and the ONNX packages are checked, and
`--help` answered, before anything heavy is imported; the work is [`modeling_pim.tools.export`] (see its docstring).
"""

import argparse
import sys
from collections.abc import Sequence
from importlib.util import find_spec

from ..utils.cli import UserInputError, add_debug_argument, check_output_file, run_command


FORMATS = (".onnx", ".pt2")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pim-export",
        description="Export a trained PIM model to ONNX or to a torch.export program (pixel_values -> logits), "
        "checked against PyTorch before it is written.",
    )
    parser.add_argument(
        "model", help="A folder written by save_pretrained (e.g. the output_dir of train_pim.py) or a Hub model id."
    )
    parser.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub model (default: main).")
    parser.add_argument("--output", required=True, help="model.onnx (ONNX) or model.pt2 (torch.export program).")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version (default: %(default)s).")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="Largest absolute logit difference from PyTorch accepted when checking the export (default: %(default)g).",
    )
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.tolerance <= 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}.")
    return args


def _run(argv: list[str]) -> int:
    args = parse_args(argv)
    output = check_output_file(args.output, "--output", FORMATS, ".onnx")
    missing = [package for package in ONNX_PACKAGES if find_spec(package) is None]
    if output.suffix.lower() == ".onnx" and missing:
        raise UserInputError(
            f"--output {args.output!r}: ONNX export needs {', '.join(ONNX_PACKAGES)}, and {', '.join(missing)} "
            "is not installed: pip install 'modeling-pim[export]' (or write a .pt2 program, which needs torch only)."
        )
    import torch

    from .export import CHECK_BATCH_SIZES, export_model
    from .infer import load_model_and_processor

    model, _ = load_model_and_processor(args.model, torch.device("cpu"), revision=args.revision)
    difference = export_model(model, output, opset=args.opset, tolerance=args.tolerance)
    size = model.config.image_size
    what = f"ONNX opset {args.opset}" if output.suffix.lower() == ".onnx" else "torch.export program"
    print(
        f"Wrote {output} ({what}): pixel_values (batch, 3, {size}, {size}) float32 -> logits (batch, "
        f"{model.config.num_labels}); largest |logit difference| from PyTorch {difference:.3g} on batches of "
        f"{' and '.join(map(str, CHECK_BATCH_SIZES))} random images (tolerance {args.tolerance:g})."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pim-export`: 0 on success, 2 on a user error or when the export does not match PyTorch."""
    return run_command("pim-export", _run, argv)


__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "FORMATS", "main", "parse_args"]


if __name__ == "__main__":
    sys.exit(main())
