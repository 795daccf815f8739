"""
Gathers what the stages of `benchmarks/gpu/run.sh` left in its work folder into `summary.json` and `summary.md` in the
output folder, checks them against the targets of issue 13, and prints the Markdown. A stage that failed, timed out or
was skipped is reported as such, with whatever it measured before; a missing result never stops the summary.

    python benchmarks/gpu/summarize.py WORK_DIR OUTPUT_DIR
"""

import importlib.metadata
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


STAGES_FILE = "stages.tsv"
PACKAGES = ("torch", "transformers", "timm", "accelerate", "datasets", "evaluate", "huggingface_hub", "safetensors")
# Issue 13: PIM's training img/s >= 0.8x plain Swin-L's, evaluation >= 0.85x, peak training memory <= 1.5x; the GPU
# busy (outside the wait for data) >= 95 % of the training time.
TARGETS = {
    "train_speed_vs_plain": ("≥", 0.8),
    "eval_speed_vs_plain": ("≥", 0.85),
    "train_memory_vs_plain": ("≤", 1.5),
    "busy_fraction": ("≥", 0.95),
}


def read_stages(work_dir: Path) -> list[dict]:
    """One entry per stage line `name<TAB>status<TAB>exit code<TAB>seconds<TAB>limit<TAB>note` written by run.sh."""
    stages = []
    path = work_dir / STAGES_FILE
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, code, seconds, limit, note = (line.split("\t") + [""] * 6)[:6]
        stages.append(
            {"name": name, "status": status, "exit_code": int(code), "seconds": float(seconds), "limit_s": int(limit), "note": note}
        )
    return stages


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_pytest(path: Path) -> dict | None:
    """Counts and the failing tests of a JUnit XML report."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures, skips = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            counts["failed"] += 1
            failures.append({"test": name, "message": (failure.get("message") or "")[:500]})
        elif skipped is not None:
            counts["skipped"] += 1
            skips.append({"test": name, "reason": (skipped.get("message") or "")[:200]})
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures, "skips": skips}


def environment() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    gpu = None
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"python": platform.python_version(), "packages": versions, "gpu": gpu or None}


def check(name: str, value: float | None) -> dict:
    comparison, target = TARGETS[name]
    met = None if value is None else (value >= target if comparison == "≥" else value <= target)
    return {"value": value, "target": f"{comparison} {target}", "met": met}


def summarize(work_dir: Path) -> dict:
    speed = read_json(work_dir / "speed.json") or {}
    compiled = read_json(work_dir / "speed_compile.json") or {}
    variants = {**speed.get("variants", {}), **compiled.get("variants", {})}
    train = read_json(work_dir / "train_timing.json")
    infer = read_json(work_dir / "infer.json")
    eager = variants.get("eager", {}).get("ratios", {})
    checks = {name: check(name, eager.get(name)) for name in ("train_speed_vs_plain", "eval_speed_vs_plain", "train_memory_vs_plain")}
    checks["busy_fraction"] = check("busy_fraction", (train or {}).get("busy_fraction"))
    checks["loss_finite_and_decreasing"] = {
        "value": None if not train or "loss_decreasing" not in train else train["loss_all_finite"] and train["loss_decreasing"],
        "target": "true",
    }
    checks["loss_finite_and_decreasing"]["met"] = checks["loss_finite_and_decreasing"]["value"]
    pytest_results = read_pytest(work_dir / "pytest.xml")
    checks["cuda_tests_pass"] = {
        "value": None if pytest_results is None else pytest_results["failed"] == 0 and pytest_results["passed"] > 0,
        "target": "no failure",
    }
    checks["cuda_tests_pass"]["met"] = checks["cuda_tests_pass"]["value"]
    return {
        "environment": environment(),
        "stages": read_stages(work_dir),
        "checks": checks,
        "pytest": pytest_results,
        "speed": {
            "settings": speed.get("settings") or compiled.get("settings"),
            "environment": speed.get("environment") or compiled.get("environment"),
            "build_s": speed.get("build_s"),
            "variants": variants,
            "markdown": [report["markdown"] for report in (speed, compiled) if "markdown" in report],
            "profile_tables": speed.get("profile_tables"),
        },
        "train": train,
        "infer": infer,
    }


def _number(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value:.{digits}f}{suffix}"


def markdown(summary: dict) -> str:
    environment_line = summary["environment"]
    packages = ", ".join(f"{name} {version}" for name, version in environment_line["packages"].items() if version)
    lines = [
        "## GPU check kit",
        "",
        f"GPU: {environment_line['gpu'] or 'none'}; Python {environment_line['python']}; {packages}.",
        "",
        "| stage | status | seconds | limit | note |",
        "|---|---|---:|---:|---|",
    ]
    for stage in summary["stages"]:
        lines.append(
            f"| {stage['name']} | {stage['status']} | {stage['seconds']:.0f} | {stage['limit_s']} | {stage['note']} |"
        )
    lines += ["", "| check | value | target | met |", "|---|---:|---|---|"]
    for name, result in summary["checks"].items():
        met = "-" if result["met"] is None else ("yes" if result["met"] else "**NO**")
        lines.append(f"| {name} | {_number(result['value'], 3)} | {result['target']} | {met} |")
    pytest_results = summary["pytest"]
    if pytest_results:
        lines += [
            "",
            f"CUDA tests: {pytest_results['passed']} passed, {pytest_results['failed']} failed, "
            f"{pytest_results['skipped']} skipped.",
        ]
        lines += [f"- FAILED {failure['test']}: {failure['message'][:300]}" for failure in pytest_results["failures"]]
    for table in summary["speed"]["markdown"]:
        lines += ["", table]
    train = summary["train"]
    if train:
        metrics = train.get("train_metrics", {})
        lines += [
            "",
            f"Training (train_pim.py, CUB Swin-L recipe, synthetic set): {train['optimizer_steps']} optimizer steps of "
            f"{train['samples_per_optimizer_step']} samples; loss {_number(train.get('loss_first'), 3)} → "
            f"{_number(train.get('loss_last'), 3)} (first/last fifth of the logged losses); "
            f"{_number(train.get('samples_per_s'), 1)} samples/s after the first step "
            f"(Trainer: {_number(metrics.get('train_samples_per_second'), 1)} over the whole run); "
            f"step median {_number(train.get('step_median_s'), 3)} s, data wait median "
            f"{_number(train.get('wait_median_s'), 4)} s, max {_number(train.get('wait_max_s'), 3)} s, "
            f"busy {_number(train.get('busy_fraction'), 3)}; first step {_number(train.get('first_step_s'), 1)} s "
            f"after a {_number(train.get('first_wait_s'), 1)} s wait.",
        ]
    infer = summary["infer"]
    if infer:
        lines += [
            "",
            f"pim-infer: {infer['num_images']} images, batch {infer['settings']['batch_size']}, {infer['dtype']} on "
            f"{infer['device']}: {_number(infer.get('images_per_s'), 1)} img/s (model loading excluded), "
            f"{_number(infer.get('end_to_end_images_per_s'), 1)} img/s end to end ({infer['model']}).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: summarize.py WORK_DIR OUTPUT_DIR", file=sys.stderr)
        return 2
    work_dir, output_dir = Path(argv[0]), Path(argv[1])
    summary = summarize(work_dir)
    text = markdown(summary)
    profile_tables = summary["speed"].get("profile_tables") or {}
    profile_text = "".join(
        f"\n\n### One {model} training step, by self device time\n\n```\n{table}\n```" for model, table in profile_tables.items()
    )
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (output_dir / "summary.md").write_text(text + profile_text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
