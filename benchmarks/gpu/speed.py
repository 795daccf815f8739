"""
Speed and memory of the paper's CUB model (Swin-L @384 with the paper taps, FPN 1536, selects 2048/512/128/32, Linear
projections, Conv upsampling, 200 classes) against the plain backbone with a linear head, on one GPU under bf16
autocast: a training step (forward + backward + SGD step) and an evaluation forward, same batch, the two models
alternating (plain, PIM, plain, PIM, ...), each call timed with CUDA events (host clock on a CPU), median of
`--repeats` after `--warmup` untimed calls.

Variants: `eager`; `channels_last` (models and input in channels-last memory format: the patch embedding and PIM's
1x1 convolutions are the layers it changes); `compile` (`torch.compile` of both models; the first call of each mode,
which compiles, is reported as compile time).

Peak memory of a model: its parameters and optimizer state plus the largest growth of
`torch.cuda.max_memory_allocated` over two training steps (over two forwards for evaluation: parameters plus growth),
so that the other model, resident during the alternating timing, is not counted.

    python benchmarks/gpu/speed.py --output speed.json                      # eager and channels_last, H200 ~1 min
    python benchmarks/gpu/speed.py --variants compile --output compile.json  # ~3 min of compilation

Results are written to `--output` after every variant, so that a run stopped by a time limit keeps what it measured.
"""

import argparse
import contextlib
import gzip
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn


REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from modeling_pim import PimConfig, PimForImageClassification  # noqa: E402


MODELS = ("plain", "pim")
VARIANTS = ("eager", "channels_last", "compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="swin_large_patch4_window12_384", help="timm model name")
    parser.add_argument("--backbone_kwargs", type=json.loads, default=None, help="timm kwargs (JSON), for tiny runs")
    parser.add_argument("--image_size", type=int, default=384)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_classes", type=int, default=200)
    parser.add_argument("--fpn_size", type=int, default=1536)
    parser.add_argument("--num_selects", type=int, nargs="+", default=[2048, 512, 128, 32])
    parser.add_argument("--tokens_per_graph_node", type=int, default=32)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"), help="autocast dtype")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model and mode first")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per model and mode (median reported)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["eager", "channels_last"])
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend (CPU dry runs: aot_eager)")
    parser.add_argument("--profile_trace", help="write a torch.profiler trace (.json.gz) of one eager PIM training step")
    parser.add_argument("--output", required=True, help="JSON results file")
    return parser.parse_args(argv)


def build_model(name: str, args: argparse.Namespace) -> nn.Module:
    """The PIM model of the paper's CUB recipe, or the plain timm backbone with its linear head (random weights)."""
    torch.manual_seed(0)
    backbone_kwargs = args.backbone_kwargs or {}
    if name == "pim":
        config = PimConfig(
            backbone=args.backbone,
            backbone_pretrained=False,
            backbone_kwargs=backbone_kwargs,
            feature_taps="paper",
            image_size=args.image_size,
            num_labels=args.num_classes,
            use_fpn=True,
            fpn_size=args.fpn_size,
            proj_type="Linear",
            upsample_type="Conv",
            num_selects=args.num_selects,
            tokens_per_graph_node=args.tokens_per_graph_node,
        )
        return PimForImageClassification(config)
    return timm.create_model(
        args.backbone, pretrained=False, num_classes=args.num_classes, img_size=args.image_size, **backbone_kwargs
    )


class Runner:
    """One model, its SGD optimizer (momentum 0.9, as the recipe) and the two calls that are timed."""

    def __init__(self, name: str, model: nn.Module, device: torch.device, dtype: torch.dtype):
        self.name = name
        self.model = model.to(device)
        self.device = device
        self.dtype = dtype
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        self.callable: Callable = self.model

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.model.train()
        with self.autocast():
            if self.name == "pim":
                loss = self.callable(pixel_values=images, labels=labels).loss
            else:
                loss = F.cross_entropy(self.callable(images), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_forward(self, images: torch.Tensor) -> None:
        self.model.eval()
        with self.autocast():
            self.callable(images)

    def resident_megabytes(self, with_optimizer: bool) -> float:
        """Parameters (and momentum buffers) held by this model, in MiB."""
        tensors = list(self.model.parameters())
        if with_optimizer:
            tensors += [value for state in self.optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors) / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], None], device: torch.device) -> float:
    """Seconds one call takes on the device: CUDA events around it on a GPU, the host clock on a CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start_time = time.perf_counter()
    function()
    return time.perf_counter() - start_time


def peak_growth_megabytes(function: Callable[[], None], device: torch.device, calls: int = 2) -> float | None:
    """Largest growth of allocated CUDA memory over `calls` calls, in MiB (None on a CPU)."""
    if device.type != "cuda":
        for _ in range(calls):
            function()
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    for _ in range(calls):
        function()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def measure_variant(
    variant: str,
    runners: dict[str, Runner],
    args: argparse.Namespace,
    device: torch.device,
    results: dict[str, dict],
    save: Callable[[], None],
) -> None:
    """Fills `results[model]` (and `results["ratios"]`) mode after mode, calling `save` after each."""
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    for runner in runners.values():
        memory_format = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        runner.model.to(memory_format=memory_format)
        runner.callable = torch.compile(runner.model, backend=args.compile_backend) if variant == "compile" else runner.model
    if variant == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)

    results.update({name: {} for name in runners})
    for mode in ("train", "eval"):
        calls = {
            name: (lambda runner=runner: runner.train_step(images, labels))
            if mode == "train"
            else (lambda runner=runner: runner.eval_forward(images))
            for name, runner in runners.items()
        }
        for name, call in calls.items():  # the first call compiles (compile variant) and allocates the optimizer state
            start = time.perf_counter()
            call()
            synchronize(device)
            results[name][f"{mode}_first_call_s"] = time.perf_counter() - start
            growth = peak_growth_megabytes(call, device)
            if growth is not None:
                resident = runners[name].resident_megabytes(with_optimizer=mode == "train")
                results[name][f"{mode}_peak_memory_mb"] = resident + growth
        timings: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(args.warmup + args.repeats):
            for name, call in calls.items():  # alternating: plain, PIM, plain, PIM, ...
                seconds = time_call(call, device)
                if repeat >= args.warmup:
                    timings[name].append(seconds)
        for name, values in timings.items():
            median = statistics.median(values)
            results[name][f"{mode}_step_ms"] = median * 1000
            results[name][f"{mode}_images_per_s"] = args.batch_size / median
            results[name][f"{mode}_all_ms"] = [value * 1000 for value in values]
        results["ratios"] = ratios(results)
        save()


def ratios(results: dict) -> dict[str, float | None]:
    """PIM / plain: speeds (img/s, higher is better) and peak training memory."""
    plain, pim = results["plain"], results["pim"]

    def ratio(key: str) -> float | None:
        return pim[key] / plain[key] if key in pim and key in plain else None

    return {
        "train_speed_vs_plain": ratio("train_images_per_s"),
        "eval_speed_vs_plain": ratio("eval_images_per_s"),
        "train_memory_vs_plain": ratio("train_peak_memory_mb"),
        "eval_memory_vs_plain": ratio("eval_peak_memory_mb"),
    }


def profile_training_step(runners: dict[str, Runner], args: argparse.Namespace, device: torch.device) -> dict:
    """Operator tables of one training step of each model and a trace of PIM's (for chrome://tracing / Perfetto)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    tables = {}
    for name, runner in runners.items():
        runner.model.to(memory_format=torch.contiguous_format)
        runner.callable = runner.model
        runner.train_step(images, labels)
        synchronize(device)
        with profile(activities=activities) as profiler:
            runner.train_step(images, labels)
            synchronize(device)
        tables[name] = profiler.key_averages().table(sort_by=sort_by, row_limit=25, max_name_column_width=60)
        if name == "pim":
            trace = Path(args.profile_trace)
            plain_trace = trace.with_name(trace.name.removesuffix(".gz"))
            profiler.export_chrome_trace(str(plain_trace))
            with open(plain_trace, "rb") as source, gzip.open(trace, "wb") as target:
                shutil.copyfileobj(source, target)
            plain_trace.unlink()
    return tables


def environment(device: torch.device) -> dict:
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def markdown(report: dict) -> str:
    settings = report["settings"]
    lines = [
        f"`{settings['backbone']}` @{settings['image_size']}, batch {settings['batch_size']}, "
        f"{settings['num_classes']} classes, fpn {settings['fpn_size']}, selects {settings['num_selects']}, "
        f"{settings['dtype']}{' autocast' if settings['dtype'] != 'float32' else ''}, {report['environment']['device']}, median of {settings['repeats']} "
        f"({'CUDA events' if settings['device'].startswith('cuda') else 'host clock'}).",
        "",
        "| variant | model | train ms | train img/s | eval ms | eval img/s | peak train MiB | peak eval MiB "
        "| first train call s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, results in report["variants"].items():
        for name in MODELS:
            result = results.get(name, {})
            cells = [
                f"{result[key]:.1f}" if key in result else "-"
                for key in (
                    "train_step_ms",
                    "train_images_per_s",
                    "eval_step_ms",
                    "eval_images_per_s",
                    "train_peak_memory_mb",
                    "eval_peak_memory_mb",
                    "train_first_call_s",
                )
            ]
            lines.append(f"| {variant} | {name} | " + " | ".join(cells) + " |")
        ratio = results.get("ratios", {})
        lines.append(
            f"| {variant} | PIM/plain | | {_format(ratio.get('train_speed_vs_plain'))} | "
            f"| {_format(ratio.get('eval_speed_vs_plain'))} | {_format(ratio.get('train_memory_vs_plain'))} "
            f"| {_format(ratio.get('eval_memory_vs_plain'))} | |"
        )
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report = {
        "settings": {key: value for key, value in vars(args).items()},
        "environment": environment(device),
        "variants": {},
    }
    output = Path(args.output)
    start = time.perf_counter()
    runners = {name: Runner(name, build_model(name, args), device, dtype) for name in MODELS}
    report["build_s"] = time.perf_counter() - start

    def save() -> None:
        report["markdown"] = markdown(report)
        output.write_text(json.dumps(report, indent=2))

    for variant in args.variants:
        start = time.perf_counter()
        results = report["variants"][variant] = {}
        measure_variant(variant, runners, args, device, results, save)
        results["wall_s"] = time.perf_counter() - start
        save()
        print(f"{variant}: {results['ratios']} ({results['wall_s']:.0f} s)")
    if args.profile_trace:
        start = time.perf_counter()
        report["profile_tables"] = profile_training_step(runners, args, device)
        report["profile_s"] = time.perf_counter() - start
        save()
        for name, table in report["profile_tables"].items():
            print(f"\nOne {name} training step, by self device time:\n{table}")
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
