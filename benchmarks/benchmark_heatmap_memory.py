"""
Peak memory of `pim-heatmap` on a large photo (8000×6000 by default) and on a small one, each run in a fresh process
(peak resident set size from `os.wait4`, the console script run as its wrapper runs it), with a tiny random PIM model
so that the image, not the model, dominates.

    python benchmarks/benchmark_heatmap_memory.py --output_json heatmap_memory.json
    python benchmarks/benchmark_heatmap_memory.py --package_root /path/to/other/checkout   # e.g. before a change

Prints a Markdown table and writes the same numbers as JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmark_startup import console_scripts
from PIL import Image


ROOT = Path(__file__).resolve().parents[1]


def make_model(folder: Path, package_root: Path) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(package_root)!r})
from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
config = PimConfig(backbone="test_resnet", image_size=64, num_labels=3, fpn_size=32, num_selects=[16, 8, 4, 2],
                   tokens_per_graph_node=2, backbone_pretrained=False)
PimForImageClassification(config).save_pretrained({str(folder)!r})
PimImageProcessor.for_image_size(64).save_pretrained({str(folder)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def make_photo(path: Path, width: int, height: int) -> None:
    """A smooth random colour field (compresses like a photo), saved as JPEG."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    coarse.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)


def peak_memory(command: list[str], package_root: Path) -> tuple[float, float]:
    """Peak resident set size (MiB) and wall time (s) of `command` in a fresh process."""
    environment = {**os.environ, "PYTHONPATH": str(package_root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, elapsed  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--package_root", type=Path, default=ROOT, help="Checkout whose modeling_pim is measured.")
    parser.add_argument("--output_json", type=Path, default=None)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_model(scratch / "model", args.package_root)
        for width, height in ((640, 480), (args.width, args.height)):
            photo = scratch / f"photo_{width}x{height}.jpg"
            make_photo(photo, width, height)
            command = [
                *console_scripts(args.package_root)["pim-heatmap"], str(scratch / "model"), str(photo),
                "--output", str(scratch / "heatmap.png"), "--device", "cpu",
            ]  # fmt: skip
            peak, seconds = peak_memory(command, args.package_root)
            rows.append({"image": f"{width}×{height}", "peak_rss_mib": round(peak), "wall_s": round(seconds, 1)})

    print(f"pim-heatmap, tiny PIM model, CPU ({platform.node()}, {os.cpu_count()} CPUs), {args.package_root}\n")
    print("| image | peak RSS (MiB) | wall (s) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['image']} | {row['peak_rss_mib']} | {row['wall_s']} |")
    if args.output_json:
        args.output_json.write_text(json.dumps({"package_root": str(args.package_root), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
