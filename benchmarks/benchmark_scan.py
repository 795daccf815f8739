#!/usr/bin/env python
"""
The load-time image scan on generated JPEGs (10,000 by default, photo-like 500x375 pictures of about the size of CUB's
and iNaturalist's images): without cache (every image decoded, as on every run before the cache), a first run with an
empty cache (decode + cache writes), a second run with nothing changed (stats only), and a run after 1 % of the files
were touched (their new modification time makes them decoded again). Each is run `--repeats` times, alternating; the
median is reported. Then the cost of building the dataset from the same paths: the `imagefolder` builder of `datasets`
with explicit files (what the loaders did before; its second run reads its Arrow cache) against `Dataset.from_dict`
(what they do now). Prints Markdown tables and writes JSON.

    python benchmarks/benchmark_scan.py [--num_images 10000] [--repeats 3] \
        [--output benchmarks/results/benchmark_scan.json]

The images are generated once into `--image_dir` and reused. They were just written, so they sit in the operating
system's page cache: the figures are decode and file-system-metadata costs, not cold-disk reads.
"""

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import PIL
from PIL import Image


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_pim.data.image_scan import scan_images  # noqa: E402


RUNS = ("no cache", "first run (empty cache)", "second run (unchanged)", "after touching 1 % of the files")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=10_000)
    parser.add_argument("--image_size", type=int, nargs=2, default=(500, 375), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument(
        "--image_dir", default=str(REPO / "outputs" / "benchmark_scan_images"), help="Generated images (reused)."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each kind (median reported).")
    parser.add_argument("--num_workers", type=int, help="Scan threads (default: the scan's default).")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "benchmark_scan.json"))
    return parser.parse_args(argv)


def generate_images(directory: Path, count: int, size: tuple[int, int]) -> list[str]:
    """`count` JPEGs (smooth colour fields with noise, quality 90) in 100-image folders; existing ones are kept."""
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for index in range(count):
        path = directory / f"{index // 100:04d}" / f"{index:06d}.jpg"
        paths.append(str(path))
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        frequency = rng.uniform(0.005, 0.05, size=3)
        channels = [127 + 100 * np.sin(frequency[c] * (x + 0.7 * y) + phase[c]) for c in range(3)]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, size=(height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def timed_scan(paths: list[str], cache_file: Path | None, num_workers: int | None) -> dict:
    start = time.perf_counter()
    scan = scan_images(paths, cache_file, num_workers=num_workers)
    seconds = time.perf_counter() - start
    assert not scan.errors, f"generated images failed to decode: {list(scan.errors.items())[:3]}"
    return {"seconds": seconds, "decoded": scan.num_decoded}


def time_dataset_builds(paths: list[str], repeats: int) -> dict[str, dict]:
    """Seconds to build a dataset of `paths` with labels: imagefolder (first and cached run) and Dataset.from_dict."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    labels = [index % 2 for index in range(len(paths))]
    timings = {"imagefolder builder, first run": [], "imagefolder builder, cached": [], "Dataset.from_dict": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache_dir:
            for run in ("imagefolder builder, first run", "imagefolder builder, cached"):
                start = time.perf_counter()
                loaded = datasets.load_dataset(
                    "imagefolder", data_files={"train": [glob.escape(path) for path in paths]}, drop_labels=True,
                    cache_dir=cache_dir,
                )["train"]
                loaded.add_column("label", labels, feature=features["label"])
                timings[run].append(time.perf_counter() - start)
        start = time.perf_counter()
        datasets.Dataset.from_dict({"image": paths, "label": labels}, features=features)
        timings["Dataset.from_dict"].append(time.perf_counter() - start)
    return {run: {"median_s": statistics.median(times), "all_s": times} for run, times in timings.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    paths = generate_images(Path(args.image_dir), args.num_images, tuple(args.image_size))
    print(f"{len(paths)} images in {args.image_dir} ({time.perf_counter() - started:.0f} s to generate or find)")
    load_before = os.getloadavg()[0]
    measurements = {run: [] for run in RUNS}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            cache_file = Path(scratch) / f"scan-{repeat}.sqlite"
            measurements["no cache"].append(timed_scan(paths, None, args.num_workers))
            measurements["first run (empty cache)"].append(timed_scan(paths, cache_file, args.num_workers))
            measurements["second run (unchanged)"].append(timed_scan(paths, cache_file, args.num_workers))
            now = time.time_ns()
            for path in paths[repeat :: 100]:
                os.utime(path, ns=(now, now))
            measurements["after touching 1 % of the files"].append(timed_scan(paths, cache_file, args.num_workers))
    builds = time_dataset_builds(paths, args.repeats)
    load_after = os.getloadavg()[0]

    results = {
        run: {
            "median_s": statistics.median(m["seconds"] for m in runs),
            "all_s": [m["seconds"] for m in runs],
            "decoded": runs[0]["decoded"],
        }
        for run, runs in measurements.items()
    }
    reference = results["no cache"]["median_s"]
    lines = [
        f"Image scan of {len(paths)} JPEGs ({args.image_size[0]}x{args.image_size[1]}), median of {args.repeats}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
        "",
        "| run | images decoded | seconds | images/s | speed-up vs no cache |",
        "|---|---:|---:|---:|---:|",
    ]
    for run, result in results.items():
        lines.append(
            f"| {run} | {result['decoded']} | {result['median_s']:.3f} | {len(paths) / result['median_s']:,.0f} | "
            f"{reference / result['median_s']:.1f}x |"
        )
    lines += [
        "",
        f"Building the dataset of the same {len(paths)} paths, median of {args.repeats}",
        "",
        "| how | seconds |",
        "|---|---:|",
        *(f"| {run} | {result['median_s']:.3f} |" for run, result in builds.items()),
    ]
    table = "\n".join(lines)
    if max(load_before, load_after) > (os.cpu_count() or 1) / 2:
        table += (
            f"\n\nWarning: the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} "
            f"after, {os.cpu_count()} cores): other processes competed for the CPU; the figures are noisy."
        )
    print(table)
    report = {
        "settings": vars(args),
        "environment": {
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "datasets": datasets.__version__,
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "load_average_before_after": [load_before, load_after],
        },
        "results": results,
        "dataset_builds": builds,
        "markdown": table,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
