#!/usr/bin/env python
"""
Inference speed of a PIM model exported to ONNX (onnxruntime, CPU) against the same model in eager PyTorch (CPU,
`torch.no_grad`, float32), at batch 1 and 16: `pixel_values` → `logits`, as `pim-export` writes it.

The model is built with random weights (speed does not depend on them) from the same settings as
`benchmark_speed.py` (ResNet-50 @224, 200 classes, fpn 512, 32 tokens per layer by default), exported with
`modeling_pim.tools.export.export_model` (which checks the logits), then both runtimes are timed alternately in one
process (eager, ONNX, eager, ...), the median of `--repeats` runs reported with the ratio. Both use `--threads`
threads. On a shared machine the absolute times move with the load: compare the ratio, and rerun on an idle machine
before quoting a figure.

    python benchmarks/benchmark_export.py                                 # ResNet-50 @224, batches 1 and 16
    python benchmarks/benchmark_export.py --backbone swin_large_patch4_window12_384 --image_size 384 \\
        --num_selects 2048 512 128 32 --fpn_size 1536
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import timm
import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchmark_speed import add_model_arguments, pim_config  # noqa: E402
from modeling_pim import PimForImageClassification  # noqa: E402
from modeling_pim.tools.export import export_model  # noqa: E402
from modeling_pim.tools.pim_export import DEFAULT_OPSET, DEFAULT_TOLERANCE  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per runtime and batch (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per runtime and batch first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of both runtimes")
    parser.add_argument("--output", default="benchmark_export.json", help="JSON results file")
    return parser.parse_args(argv)


def _median_seconds(run, pixel_values: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(pixel_values)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = PimForImageClassification(pim_config(args)).eval()
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / "model.onnx"
    started = time.perf_counter()
    difference = export_model(model, path, opset=DEFAULT_OPSET, tolerance=DEFAULT_TOLERANCE)
    export_seconds = time.perf_counter() - started
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eager(pixel_values: torch.Tensor) -> None:
        with torch.no_grad():
            model(pixel_values)

    def onnx(pixel_values: torch.Tensor) -> None:
        session.run(["logits"], {"pixel_values": pixel_values.numpy()})

    load_before = os.getloadavg()[0]
    results = []
    for batch_size in args.batch_sizes:
        pixel_values = torch.randn(batch_size, 3, args.image_size, args.image_size)
        for run in (eager, onnx):
            _median_seconds(run, pixel_values, args.warmup)
        timings = {"eager": [], "onnxruntime": []}
        for _ in range(args.repeats):  # alternate, so that a change of load hits both
            timings["eager"].append(_median_seconds(eager, pixel_values, 1))
            timings["onnxruntime"].append(_median_seconds(onnx, pixel_values, 1))
        eager_seconds, onnx_seconds = (statistics.median(timings[name]) for name in ("eager", "onnxruntime"))
        results.append(
            {
                "batch_size": batch_size,
                "eager_seconds": eager_seconds,
                "onnxruntime_seconds": onnx_seconds,
                "onnxruntime_vs_eager": onnx_seconds / eager_seconds,
                "eager_images_per_second": batch_size / eager_seconds,
                "onnxruntime_images_per_second": batch_size / onnx_seconds,
            }
        )
    load_after = os.getloadavg()[0]
    folder.cleanup()

    table = (
        f"Backbone `{args.backbone}` @{args.image_size}, {args.num_classes} classes, fpn {args.fpn_size}, selects "
        f"{args.num_selects}; CPU, float32, {args.threads} threads, median of {args.repeats}. Export (opset {DEFAULT_OPSET}, "
        f"checked: largest |logit difference| {difference:.2g}) took {export_seconds:.0f} s.\n\n"
        "| batch | eager PyTorch (s) | onnxruntime (s) | onnxruntime / eager | eager img/s | onnxruntime img/s |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
    )
    for row in results:
        table += (
            f"| {row['batch_size']} | {row['eager_seconds']:.3f} | {row['onnxruntime_seconds']:.3f} | "
            f"{row['onnxruntime_vs_eager']:.2f} | {row['eager_images_per_second']:.1f} | "
            f"{row['onnxruntime_images_per_second']:.1f} |\n"
        )
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        table += (
            f"\nWarning: the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after, "
            f"{os.cpu_count()} cores): other processes competed for the CPU, the times are unreliable."
        )
    print(table)
    report = {
        "settings": vars(args),
        "environment": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "load_average_before_after": [load_before, load_after],
        },
        "export": {"seconds": export_seconds, "largest_logit_difference": difference, "opset": DEFAULT_OPSET},
        "results": results,
        "markdown": table,
    }
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
