"""The GPU check kit (`benchmarks/gpu/run.sh`): a CPU dry run of every stage with tiny sizes, and its summary when
stages fail, time out or leave partial results."""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "gpu" / "run.sh"


def load_summarize():
    spec = importlib.util.spec_from_file_location("gpu_kit_summarize", REPO / "benchmarks" / "gpu" / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_kit(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ""}
    return subprocess.run(["bash", str(RUN), *arguments], env=env, capture_output=True, text=True, timeout=580)


def test_cpu_dry_run_runs_every_stage_and_writes_the_summary(tmp_path):
    result = run_kit(str(tmp_path / "out"), "--device", "cpu", "--no-install")

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    files = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert files == ["pim_train_step_trace.json.gz", "run.log", "summary.json", "summary.md"]  # at most 8 come back
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    statuses = {stage["name"]: stage["status"] for stage in summary["stages"]}
    assert statuses == {
        "install": "skipped",
        "pytest": "ok",
        "speed": "ok",
        "train": "ok",
        "infer": "ok",
        "compile": "skipped",
    }
    assert summary["pytest"]["failed"] == 0 and summary["pytest"]["skipped"] >= 6  # no CUDA here
    eager = summary["speed"]["variants"]["eager"]
    for model in ("plain", "pim"):
        assert eager[model]["train_images_per_s"] > 0 and eager[model]["eval_images_per_s"] > 0
        assert len(eager[model]["train_all_ms"]) == 2
    assert eager["ratios"]["train_speed_vs_plain"] > 0
    assert set(summary["speed"]["profile_tables"]) == {"plain", "pim"}
    train = summary["train"]
    assert train["optimizer_steps"] == 2 and train["samples_per_optimizer_step"] == 4  # batch 2 x accumulation 2
    assert train["loss_all_finite"] and len(train["losses"]) == 2
    assert 0 < train["busy_fraction"] <= 1
    assert summary["infer"]["num_images"] == 16 and summary["infer"]["end_to_end_images_per_s"] > 0
    assert summary["infer"]["model"] == "trained by the kit's training stage"
    with gzip.open(tmp_path / "out" / "pim_train_step_trace.json.gz", "rt") as trace:
        assert json.load(trace)["traceEvents"]
    assert "| train | ok |" in (tmp_path / "out" / "summary.md").read_text()
    assert "===== stage infer: ok" in (tmp_path / "out" / "run.log").read_text()


def test_summary_reports_failed_timed_out_and_partial_stages(tmp_path, capsys):
    summarize = load_summarize()
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "stages.tsv").write_text(
        "pytest\tfailed\t1\t12.5\t180\t\nspeed\ttimeout\t124\t200.0\t200\t\ncompile\tskipped\t0\t0\t0\ttime budget spent\n"
    )
    partial = {"plain": {"train_images_per_s": 100.0}, "pim": {"train_images_per_s": 85.0}}
    partial["ratios"] = {"train_speed_vs_plain": 0.85, "eval_speed_vs_plain": None}
    (work / "speed.json").write_text(json.dumps({"settings": {"backbone": "b"}, "variants": {"eager": partial}}))
    (work / "pytest.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_gpu" name="test_a"/>'
        '<testcase classname="tests.test_gpu" name="test_b"><failure message="assert 1 == 2"/></testcase>'
        '<testcase classname="tests.test_gpu" name="test_c"><skipped message="needs 2 GPUs"/></testcase>'
        "</testsuite></testsuites>"
    )

    assert summarize.main([str(work), str(out)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert [(stage["name"], stage["status"], stage["exit_code"]) for stage in summary["stages"]] == [
        ("pytest", "failed", 1),
        ("speed", "timeout", 124),
        ("compile", "skipped", 0),
    ]
    assert summary["checks"]["train_speed_vs_plain"] == {"value": 0.85, "target": "≥ 0.8", "met": True}
    assert summary["checks"]["eval_speed_vs_plain"]["met"] is None
    assert summary["checks"]["busy_fraction"]["met"] is None and summary["train"] is None
    assert summary["checks"]["cuda_tests_pass"]["met"] is False
    assert summary["pytest"]["failures"] == [{"test": "tests.test_gpu::test_b", "message": "assert 1 == 2"}]
    assert (summary["pytest"]["passed"], summary["pytest"]["skipped"]) == (1, 1)
    printed = capsys.readouterr().out
    assert "| speed | timeout | 200 | 200 |" in printed and "| eval_speed_vs_plain | - | ≥ 0.85 | - |" in printed


def test_run_refuses_bad_arguments_with_one_line():
    for arguments, message in (
        ((), "run.sh: error: OUTDIR is required"),
        (("out", "--fast"), "run.sh: error: unknown option --fast"),
        (("out", "--device", "tpu"), "run.sh: error: --device must be cuda or cpu, got tpu"),
    ):
        result = run_kit(*arguments)
        assert result.returncode == 2
        assert message in result.stderr
