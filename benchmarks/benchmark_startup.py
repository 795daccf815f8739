"""
Start-up time of the command-line entry points (`--help`) and of `import modeling_pim`, each in a fresh process,
median of `--repeats` runs, warm (after one untimed run) and cold (the page cache of the virtual environment's
`site-packages` and of the checkout dropped before every run with `posix_fadvise(POSIX_FADV_DONTNEED)`, which needs no
privileges; pages that another process has mapped stay cached, so "cold" is as cold as a shared machine allows).

    python benchmarks/benchmark_startup.py --output_json startup.json
    python benchmarks/benchmark_startup.py --package_root /path/to/other/checkout   # e.g. before a change

Console scripts are run as their wrapper runs them (`from module import function; sys.exit(function())`, read from
the checkout's `setup.cfg`), so that an old checkout is measured with its own entry points. Prints a Markdown table
and writes the same numbers as JSON.
"""

import argparse
import configparser
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
EMPTY_HELP_CACHE = "train_pim.py --help (empty help cache)"


def console_scripts(package_root: Path) -> dict[str, list[str]]:
    """
    The console scripts of the checkout at `package_root` (its `setup.cfg`), each as the argv that runs it the way its
    installed wrapper does (`from module import function; sys.exit(function())`); append the arguments.
    """
    setup = configparser.ConfigParser()
    setup.read(package_root / "setup.cfg")
    scripts = {}
    for line in setup["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("="))
        module, function = target.split(":")
        scripts[name] = [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]
    return scripts


def commands(package_root: Path) -> dict[str, list[str]]:
    """
    What is timed: name → argv, for the checkout at `package_root`. Each row runs with one `PIM_CACHE` for all its
    runs, so `train_pim.py --help` is served from its help cache after the first run; the row "(empty help cache)"
    gives every run a new, empty one: the first `--help` after an install or upgrade.
    """
    timed = {
        "import modeling_pim": [sys.executable, "-c", "import modeling_pim"],
        "from modeling_pim import PimForImageClassification": [
            sys.executable, "-c", "from modeling_pim import PimForImageClassification",
        ],
    }  # fmt: skip
    for name, argv in console_scripts(package_root).items():
        timed[f"{name} --help"] = [*argv, "--help"]
    for script in ("train_pim.py", "push_to_hub.py"):
        timed[f"{script} --help"] = [sys.executable, str(package_root / script), "--help"]
    timed[EMPTY_HELP_CACHE] = timed["train_pim.py --help"]
    return timed


def drop_page_cache(folders: list[Path]) -> None:
    """Asks the kernel to drop the cached pages of every file under `folders`."""
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                try:
                    descriptor = os.open(os.path.join(directory, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(descriptor)


def run_once(argv: list[str], package_root: Path, cache: Path) -> float:
    environment = {
        **os.environ,
        "PYTHONPATH": str(package_root),
        "PIM_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    start = time.perf_counter()
    completed = subprocess.run(argv, cwd=package_root, env=environment, capture_output=True)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{argv} exited with {completed.returncode}: {completed.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per command and condition (median).")
    parser.add_argument("--package_root", type=Path, default=ROOT, help="Checkout whose entry points are measured.")
    parser.add_argument("--output_json", type=Path, default=None)
    args = parser.parse_args()
    package_root = args.package_root.resolve()
    cached = [Path(sysconfig.get_paths()["purelib"]), package_root]

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, argv in commands(package_root).items():
            row_cache = Path(tempfile.mkdtemp(dir=scratch))
            fresh_cache = name == EMPTY_HELP_CACHE
            cold, warm = [], []
            for run in range(2 * args.repeats + 1):  # repeats cold, one untimed, repeats warm
                if run < args.repeats:
                    drop_page_cache(cached)
                cache = Path(tempfile.mkdtemp(dir=scratch)) if fresh_cache else row_cache
                seconds = run_once(argv, package_root, cache)
                if run != args.repeats:
                    (cold if run < args.repeats else warm).append(seconds)
            results[name] = {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm)}
            times = results[name]
            print(f"{name}: cold {times['cold_s']:.2f} s, warm {times['warm_s']:.2f} s", file=sys.stderr)

    print(f"\nStart-up, median of {args.repeats} ({platform.node()}, {os.cpu_count()} CPUs), {package_root}\n")
    print("| command | cold (s) | warm (s) |\n|---|---|---|")
    for name, times in results.items():
        print(f"| `{name}` | {times['cold_s']:.2f} | {times['warm_s']:.2f} |")
    if args.output_json:
        report = {"package_root": str(package_root), "repeats": args.repeats, "results": results}
        args.output_json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
