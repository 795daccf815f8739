"""
Exports a trained PIM model for deployment: the work of `pim-export MODEL --output model.onnx` (ONNX) or `--output
model.pt2` (a `torch.export` program); its command line is [`modeling_pim.tools.pim_export`].

`MODEL` is a folder written by `save_pretrained` or a Hub model id, loaded as `pim-infer` loads it
([`modeling_pim.tools.infer.load_pretrained`]). The exported graph takes `pixel_values`
`(batch, 3, image_size, image_size)`, float32, normalised as the model's image processor does
(`preprocessor_config.json`), with a dynamic batch axis, and returns `logits` `(batch, num_labels)` only: the final
head. `config.id2label` travels with it (ONNX metadata property `id2label`, `.pt2` extra file `id2label.json`, both
JSON).

- ONNX: `torch.onnx.export(..., dynamo=True)` (the `torch.export`-based exporter) at the opset asked for (`--opset`,
  18 by default; an opset the exporter cannot convert the model to is refused), the weights inside the file (in
  `<output>.data` beside it only for models over 2 GB).
- `.pt2`: `torch.export.export` saved with `torch.export.save`; load it with `torch.export.load(path).module()`.

Before anything is written, the exported program is run (onnxruntime's CPU provider for ONNX, `torch.export.load` for
`.pt2`) on seeded random batches of 1 and 3 images and compared with the model in eager PyTorch: when the largest
absolute logit difference exceeds `--tolerance` (1e-4), the command fails (exit 2) and leaves no file.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..utils.cli import UserInputError


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
    produced = program.model.opset_imports.get("")
    if produced != opset:  # the exporter falls back to its own opset when it cannot convert to the one asked for
        raise ExportVerificationError(
            f"--opset {opset}: the ONNX exporter could not convert the model to opset {opset} (it produced opset "
            f"{produced}): nothing was written; use --opset {produced} or higher."
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


def export_model(model: nn.Module, output: str | os.PathLike, opset: int, tolerance: float) -> float:
    """
    Exports `model` (a [`PimForImageClassification`], or any model with `config.image_size` whose output has
    `logits`; moved to float32 on the CPU, in eval mode) to `output` (`.onnx` or `.pt2`, see the module docstring) at
    ONNX `opset` and returns the largest absolute logit difference found when checking it (the command's defaults:
    `pim_export.DEFAULT_OPSET`, `pim_export.DEFAULT_TOLERANCE`).

    Raises:
        `ExportVerificationError`: that difference exceeds `tolerance`; no file was written.
    """
    output = Path(output)
    logits_only = LogitsOnly(model.float().cpu()).eval()
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


__all__ = ["CHECK_BATCH_SIZES", "ExportVerificationError", "LogitsOnly", "export_model", "largest_logit_difference"]
