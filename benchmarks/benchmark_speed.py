"""
Speed and memory of PIM against the plain timm backbone with a linear head (and, optionally, the original FGVC-PIM
module), on the same input: a training step (forward + backward + SGD step) and an evaluation forward (no_grad).

Variants are timed alternately in one process (A, B, A, B, ...) and the median of `--repeats` runs is reported, with
the ratios PIM / plain and PIM / original. Peak memory is measured per variant in a fresh subprocess (CPU: the
growth of the process's max RSS over a few steps, plus its total; GPU: torch.cuda.max_memory_allocated).

    python benchmarks/benchmark_speed.py                                   # ResNet-50 @224, batch 8, 200 classes, CPU
    python benchmarks/benchmark_speed.py --original_repo /tmp/FGVC-PIM     # + the original module (scratch checkout)
    python benchmarks/benchmark_speed.py --backbone swin_large_patch4_window12_384 --image_size 384 \\
        --batch_size 16 --device cuda --dtype bfloat16 --num_selects 2048 512 128 32 --fpn_size 1536

`--original_repo` is a checkout of github.com/chou141253/FGVC-PIM kept outside this repository; only its ResNet-50
builder is timed (its Swin needs its own patched copy of timm). The script runs without it.
"""

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_pim import PimConfig, PimForImageClassification  # noqa: E402


TARGETS = {"train_vs_plain": 1.9, "train_vs_original": 0.7, "eval_vs_plain": 1.9}
# The original's loss weights (configs/CUB200_SwinT.yaml), the same as our defaults.
LAMBDA_B, LAMBDA_S, LAMBDA_N, LAMBDA_C = 0.5, 0.0, 5.0, 1.0


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the PIM model a benchmark builds with random weights ([`pim_config`])."""
    parser.add_argument("--backbone", default="resnet50", help="timm model name")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_classes", type=int, default=200)
    parser.add_argument("--fpn_size", type=int, default=512)
    parser.add_argument("--num_selects", type=int, nargs="+", default=[32, 32, 32, 32])
    parser.add_argument("--proj_type", choices=("Conv", "Linear"), help="default: Conv for CNNs, Linear for Swin/ViT")
    parser.add_argument("--upsample_type", choices=("Bilinear", "Conv"), help="default: Bilinear for CNNs, else Conv")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per variant first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="autocast dtype")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all cores)")
    parser.add_argument("--original_repo", help="scratch checkout of chou141253/FGVC-PIM (ResNet-50 only)")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--output", default="benchmark_speed.json", help="JSON results file")
    parser.add_argument("--_memory_worker", nargs=2, metavar=("VARIANT", "MODE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _is_transformer(backbone: str) -> bool:
    return any(name in backbone for name in ("swin", "vit", "deit", "eva", "beit"))


def pim_config(args) -> PimConfig:
    transformer = _is_transformer(args.backbone)
    return PimConfig(
        backbone=args.backbone,
        backbone_pretrained=False,
        feature_taps="paper" if "swin" in args.backbone else "stages",
        image_size=args.image_size,
        num_labels=args.num_classes,
        fpn_size=args.fpn_size,
        num_selects=args.num_selects,
        proj_type=args.proj_type or ("Linear" if transformer else "Conv"),
        upsample_type=args.upsample_type or ("Conv" if transformer else "Bilinear"),
    )


def build(variant: str, args) -> torch.nn.Module:
    torch.manual_seed(0)
    if variant == "pim":
        return PimForImageClassification(pim_config(args))
    if variant == "plain":
        kwargs = {}
        pretrained_cfg = timm.models.get_pretrained_cfg(args.backbone)
        if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
            kwargs["img_size"] = args.image_size
        return timm.create_model(args.backbone, pretrained=False, num_classes=args.num_classes, **kwargs)
    if variant == "original":
        if args.backbone != "resnet50":
            raise SystemExit("--original_repo: only the original's ResNet-50 builder can be timed (--backbone resnet50).")
        # Appended, not prepended: `timm` must stay the installed one (their vendored copy is only needed for Swin).
        sys.path.append(str(Path(args.original_repo).resolve()))
        from models.builder import build_resnet50  # noqa: PLC0415 (the original code, from the scratch checkout)

        return build_resnet50(
            pretrained="",
            img_size=args.image_size,
            num_classes=args.num_classes,
            fpn_size=args.fpn_size,
            num_selects={f"layer{i + 1}": n for i, n in enumerate(args.num_selects)},
            proj_type=args.proj_type or "Conv",
            upsample_type=args.upsample_type or "Bilinear",
        )
    raise ValueError(variant)


def original_loss(outs: dict, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The loss of the original main.py `train` (same lambdas as ours)."""
    loss = 0.0
    batch_size = labels.shape[0]
    for name, out in outs.items():
        if "select_" in name:
            if LAMBDA_S != 0:
                logit = out.reshape(-1, num_classes)
                loss = loss + LAMBDA_S * F.cross_entropy(logit, labels.unsqueeze(1).repeat(1, out.size(1)).flatten(0))
        elif "drop_" in name:
            logit = out.reshape(-1, num_classes)
            target = torch.zeros([batch_size * out.size(1), num_classes], device=labels.device) - 1
            loss = loss + LAMBDA_N * F.mse_loss(torch.tanh(logit), target)
        elif "layer" in name:
            loss = loss + LAMBDA_B * F.cross_entropy(out.mean(1), labels)
        elif "comb_outs" in name:
            loss = loss + LAMBDA_C * F.cross_entropy(out, labels)
    return loss


class Runner:
    """One variant: its model, an SGD optimizer and the step / forward to time."""

    def __init__(self, variant: str, args, device: torch.device):
        self.variant = variant
        self.num_classes = args.num_classes
        self.model = build(variant, args).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        self.device = device
        self.dtype = getattr(torch, args.dtype)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.variant == "pim":
            return self.model(pixel_values=images, labels=labels).loss
        if self.variant == "plain":
            return F.cross_entropy(self.model(images), labels)
        return original_loss(self.model(images), labels, self.num_classes)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.model.train()
        with self._autocast():
            loss = self.loss(images, labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_forward(self, images: torch.Tensor) -> None:
        self.model.eval()
        with self._autocast():
            self.model(images)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    function()
    _sync(device)
    return time.perf_counter() - start


def inputs(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), generator=generator)
    return images.to(device), labels.to(device)


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or last reset) of this process, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        _rss_mb("VmHWM")
        return True
    except OSError:
        return False
    except KeyError:
        return False


def memory_worker(args) -> None:
    """Runs in a fresh process: peak memory of a few training steps or forwards of one variant, printed as JSON."""
    variant, mode = args._memory_worker
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    runner = Runner(variant, args, device)
    images, labels = inputs(args, device)
    gc.collect()
    # Building a model can peak higher than what follows (the original even runs a forward to probe shapes): reset the
    # process's high-water mark where Linux allows it, and measure from the memory held now.
    reset = _reset_peak_rss()
    baseline_mb = _rss_mb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline_cuda = torch.cuda.memory_allocated(device)
    for _ in range(2):
        runner.train_step(images, labels) if mode == "train" else runner.eval_forward(images)
    peak_mb = _rss_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"peak_rss_mb": peak_mb, "peak_rss_growth_mb": peak_mb - baseline_mb, "rss_peak_was_reset": reset}
    if device.type == "cuda":
        result["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["cuda_peak_growth_mb"] = (torch.cuda.max_memory_allocated(device) - baseline_cuda) / 2**20
    print("MEMORY_RESULT " + json.dumps(result))


def measure_memory(variant: str, mode: str, argv: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--_memory_worker", variant, mode]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith("MEMORY_RESULT "):
            return json.loads(line.removeprefix("MEMORY_RESULT "))
    raise RuntimeError(f"memory worker {variant}/{mode} failed:\n{completed.stderr[-3000:]}")


def _ratio(results: dict, numerator: str, denominator: str, key: str) -> float | None:
    if numerator in results and denominator in results:
        return results[numerator][key] / results[denominator][key]
    return None


def markdown(results: dict, ratios: dict, args, memory_key: str) -> str:
    lines = [
        f"Backbone `{args.backbone}` @{args.image_size}, batch {args.batch_size}, {args.num_classes} classes, "
        f"fpn {args.fpn_size}, selects {args.num_selects}, device {args.device}, {args.dtype}, "
        f"{args.threads} threads, median of {args.repeats}.",
        "",
        f"| variant | train step (s) | eval forward (s) | train img/s | eval img/s | train ×plain | eval ×plain "
        f"| peak mem train ({memory_key}) | peak mem eval ({memory_key}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, result in results.items():
        train_ratio = _ratio(results, variant, "plain", "train_step_s")
        eval_ratio = _ratio(results, variant, "plain", "eval_forward_s")
        memory = result.get("memory", {})
        train_memory = memory.get("train", {}).get(memory_key)
        eval_memory = memory.get("eval", {}).get(memory_key)
        lines.append(
            f"| {variant} | {result['train_step_s']:.3f} | {result['eval_forward_s']:.3f} "
            f"| {args.batch_size / result['train_step_s']:.1f} | {args.batch_size / result['eval_forward_s']:.1f} "
            f"| {train_ratio:.2f} | {eval_ratio:.2f} "
            f"| {'-' if train_memory is None else f'{train_memory:.0f} MB'} "
            f"| {'-' if eval_memory is None else f'{eval_memory:.0f} MB'} |"
        )
    lines.append("")
    for name, value in ratios.items():
        if value is None:
            continue
        target = TARGETS.get(name)
        verdict = "" if target is None else (f" (target ≤ {target}: {'met' if value <= target else 'MISSED'})")
        lines.append(f"- PIM {name.replace('_vs_', ' / ')}: {value:.2f}{verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._memory_worker:
        memory_worker(args)
        return 0
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    variants = ["plain", "pim"] + (["original"] if args.original_repo else [])
    runners = {variant: Runner(variant, args, device) for variant in variants}
    images, labels = inputs(args, device)

    timings = {variant: {"train": [], "eval": []} for variant in variants}
    for mode in ("train", "eval"):
        for repeat in range(args.warmup + args.repeats):
            for variant, runner in runners.items():  # alternate A, B, (C), A, B, ...
                if mode == "train":
                    seconds = _timed(lambda: runner.train_step(images, labels), device)
                else:
                    seconds = _timed(lambda: runner.eval_forward(images), device)
                if repeat >= args.warmup:
                    timings[variant][mode].append(seconds)
    del runners

    results = {
        variant: {
            "train_step_s": statistics.median(timing["train"]),
            "eval_forward_s": statistics.median(timing["eval"]),
            "train_step_all_s": timing["train"],
            "eval_forward_all_s": timing["eval"],
        }
        for variant, timing in timings.items()
    }
    memory_key = "cuda_peak_allocated_mb" if device.type == "cuda" else "peak_rss_growth_mb"
    if not args.no_memory:
        worker_argv = [arg for arg in argv if arg != "--no_memory"]
        for variant in variants:
            results[variant]["memory"] = {mode: measure_memory(variant, mode, worker_argv) for mode in ("train", "eval")}
    ratios = {
        "train_vs_plain": _ratio(results, "pim", "plain", "train_step_s"),
        "eval_vs_plain": _ratio(results, "pim", "plain", "eval_forward_s"),
        "train_vs_original": _ratio(results, "pim", "original", "train_step_s"),
        "eval_vs_original": _ratio(results, "pim", "original", "eval_forward_s"),
    }
    load_after = os.getloadavg()[0]
    table = markdown(results, ratios, args, memory_key)
    if device.type == "cpu" and max(load_before, load_after) > (os.cpu_count() or 1):
        table += (
            f"\n\nWarning: the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after, "
            f"{os.cpu_count()} cores): other processes competed for the CPU, the ratios are unreliable."
        )
    print(table)
    report = {
        "settings": {key: value for key, value in vars(args).items() if not key.startswith("_")},
        "environment": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "date": time.strftime("%Y-%m-%d"),
            "load_average_before_after": [load_before, load_after],
        },
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
        "markdown": table,
    }
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
