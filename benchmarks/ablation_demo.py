#!/usr/bin/env python
"""
Ablation on the embedded demo: the same recipe and budget (configuration/demo_cpu.yaml by default) trained with the
PIM modules switched on one by one — backbone only, +FPN, +selector, +combiner — each evaluated once on the test
split with its final head. Prints a Markdown table and writes JSON.

    python benchmarks/ablation_demo.py [--recipe configuration/demo_cpu.yaml] [--output benchmarks/results/ablation_demo.json]
"""

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402


VARIANTS = {
    "backbone only": ["--use_fpn", "false", "--use_selection", "false", "--use_combiner", "false"],
    "+ FPN": ["--use_fpn", "true", "--use_selection", "false", "--use_combiner", "false"],
    "+ FPN + selector": ["--use_fpn", "true", "--use_selection", "true", "--use_combiner", "false"],
    "+ FPN + selector + combiner (PIM)": ["--use_fpn", "true", "--use_selection", "true", "--use_combiner", "true"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(REPO / "configuration" / "demo_cpu.yaml"), help="Recipe to ablate.")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "ablation_demo"), help="Training runs go here.")
    parser.add_argument(
        "--output", default=str(REPO / "benchmarks" / "results" / "ablation_demo.json"), help="JSON results file."
    )
    parser.add_argument("extra", nargs="*", help="Further train_pim.py flags applied to every variant.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = []
    for name, switches in VARIANTS.items():
        run_dir = Path(args.output_dir) / name.replace(" ", "_").replace("+", "plus")
        start = time.perf_counter()
        results = train_pim.main(
            [args.recipe, *switches, "--output_dir", str(run_dir), "--disable_tqdm", "true", *args.extra]
        )
        test = results["test"]
        rows.append(
            {
                "variant": name,
                "test_accuracy": test["test_accuracy"],
                "test_top5_accuracy": test["test_top5_accuracy"],
                "test_mean_per_class_accuracy": test["test_mean_per_class_accuracy"],
                "validation_accuracy": results.get("eval", {}).get("eval_accuracy"),
                "train_seconds": round(time.perf_counter() - start, 1),
            }
        )
    print(f"\nAblation on {args.recipe} ({date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads); test split, final head:\n")
    print("| variant | test top-1 | test top-5 | mean per-class | validation top-1 | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        validation = "-" if row["validation_accuracy"] is None else f"{row['validation_accuracy']:.3f}"
        print(
            f"| {row['variant']} | {row['test_accuracy']:.3f} | {row['test_top5_accuracy']:.3f} | "
            f"{row['test_mean_per_class_accuracy']:.3f} | {validation} | {row['train_seconds']} |"
        )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"recipe": args.recipe, "date": str(date.today()), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
