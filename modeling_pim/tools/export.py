"""
Exports a trained PIM model for deployment: `pim-export MODEL --output model.onnx` (ONNX) or `--output model.pt2` (a
`torch.export` program).

`MODEL` is a folder written by `save_pretrained` or a Hub model id, loaded as `pim-infer` loads it
(`trust_remote_code=True`). The exported graph takes `pixel_values` `(batch, 3, image_size, image_size)`, float32,
normalised as the model's image processor does (`preprocessor_config.json`), with a dynamic batch axis, and returns
`logits` `(batch, num_labels)` only: the final head. `config.id2label` travels with it (ONNX metadata property
`id2label`, `.pt2` extra file `id2label.json`, both JSON).

- ONNX: `torch.onnx.export(..., dynamo=True)` (the `torch.export`-based exporter), opset 18 by default (`--opset`), the
  weights inside the file (in `<output>.data` beside it only for models over 2 GB).
- `.pt2`: `torch.export.export` saved with `torch.export.save`; load it with `torch.export.load(path).module()`.

Before anything is written, the exported program is run (onnxruntime's CPU provider for ONNX, `torch.export.load` for
`.pt2`) on seeded random batches of 1 and 3 images and compared with the model in eager PyTorch: when the largest
absolute logit difference exceeds `--tolerance` (1e-4), the command fails (exit 2) and leaves no file.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

from ..utils.cli import UserInputError, add_debug_argument, check_output_file, run_command
from .infer import load_model_and_processor


FORMATS = (".onnx", ".pt2")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
CHECK_BATCH_SIZES = (1, 3)
EXAMPLE_BATCH_SIZE = 2  # traced with 2 images, so that the batch axis is not specialised to 1


class ExportVerificationError(UserInputError):
    """The exported program's logits are not those of the PyTorch model; nothing was written."""


class LogitsOnly(nn.Module):
    """`pixel_values` → `logits` of a PIM model in eval mode: the one output an exported program returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


def _images(batch_size: int, image_size: int, seed: int) -> torch.Tensor:
    return torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))


def _dynamic_batch() -> dict[str, dict[int, torch.export.Dim]]:
    return {"pixel_values": {0: torch.export.Dim("batch", min=1)}}


def _write_onnx(model: LogitsOnly, example: torch.Tensor, path: Path, opset: int, id2label: str) -> None:
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes=_dynamic_batch(),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props["id2label"] = id2label
    program.save(path)


def _run_onnx(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda pixel_values: torch.from_numpy(session.run(["logits"], {"pixel_values": pixel_values.numpy()})[0])


def _write_pt2(model: LogitsOnly, example: torch.Tensor, path: Path, id2label: str) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, path, extra_files={"id2label.json": id2label})


def _run_pt2(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.export.load(path).module()


def largest_logit_difference(model: nn.Module, exported: Callable[[torch.Tensor], torch.Tensor], image_size: int) -> float:
    """The largest absolute difference between `exported` and `model` logits on batches of `CHECK_BATCH_SIZES` images."""
    difference = 0.0
    with torch.no_grad():
        for seed, batch_size in enumerate(CHECK_BATCH_SIZES):
            pixel_values = _images(batch_size, image_size, seed)
            expected = model(pixel_values)
            difference = max(difference, (exported(pixel_values) - expected).abs().max().item())
    return difference


def export_model(
    model: nn.Module, output: str | os.PathLike, opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """
    Exports `model` (a [`PimForImageClassification`], or any model with `config.image_size` whose output has
    `logits`) to `output` (`.onnx` or `.pt2`, see the module docstring) and returns the largest absolute logit
    difference found when checking it.

    Raises:
        `ExportVerificationError`: that difference exceeds `tolerance`; no file was written.
    """
    output = Path(output)
    logits_only = LogitsOnly(model.float().cpu().eval()).eval()
    image_size = model.config.image_size
    example = _images(EXAMPLE_BATCH_SIZE, image_size, seed=len(CHECK_BATCH_SIZES))
    id2label = json.dumps({str(index): label for index, label in model.config.id2label.items()})
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written in a hidden folder beside the output and moved there once checked (ONNX external data keeps its name).
    staging = Path(tempfile.mkdtemp(prefix=".pim-export-", dir=output.parent))
    try:
        staged = staging / output.name
        if output.suffix.lower() == ".onnx":
            _write_onnx(logits_only, example, staged, opset, id2label)
            exported, runtime = _run_onnx(staged), "onnxruntime"
        else:
            _write_pt2(logits_only, example, staged, id2label)
            exported, runtime = _run_pt2(staged), "torch.export"
        difference = largest_logit_difference(logits_only, exported, image_size)
        if not difference <= tolerance:  # also refuses NaN
            raise ExportVerificationError(
                f"--output {str(output)!r}: the exported program's logits ({runtime}) differ from PyTorch's by up to "
                f"{difference:.3g} on random batches of {' and '.join(map(str, CHECK_BATCH_SIZES))} images, more than "
                f"--tolerance {tolerance:g}: nothing was written. Try another --opset, or the other format."
            )
        for produced in staging.iterdir():
            os.replace(produced, output.parent / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return difference


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


__all__ = ["ExportVerificationError", "LogitsOnly", "export_model", "largest_logit_difference", "main"]


if __name__ == "__main__":
    sys.exit(main())
