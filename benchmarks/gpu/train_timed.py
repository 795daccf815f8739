"""
Runs `train_pim.py` with its own command line, unchanged, and times every optimizer step: the time the training loop
waits for its batches (from the end of one step to the start of the next: the DataLoader's `next()` for every
micro-batch of the step, plus logging) against the time of the step itself (forward, backward and optimizer step of
every micro-batch, the device synchronised at its end). Writes the timings, the logged losses and Trainer's metrics as
JSON.

    python benchmarks/gpu/train_timed.py TIMING.json configuration/cub200_swin_large_384.yaml --max_steps 200 ...

The timer is a `TrainerCallback` added to every `Trainer` the script builds (through `Trainer.add_callback`).
"""

import json
import math
import runpy
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback


REPO = Path(__file__).resolve().parents[2]


class StepTimer(TrainerCallback):
    """Host-clock timings of every optimizer step and of the wait for its data; the losses Trainer logs."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self.wait_s: list[float] = []
        self.epoch_at_step: list[float] = []
        self.logs: list[dict] = []
        self._step_start: float | None = None
        self._last_end: float | None = None

    @staticmethod
    def _synchronize() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, **kwargs):
        self._synchronize()
        self._last_end = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.wait_s.append(now - self._last_end)
        self._step_start = now

    def on_step_end(self, args, state, control, **kwargs):
        self._synchronize()
        self._last_end = time.perf_counter()
        self.step_s.append(self._last_end - self._step_start)
        self.epoch_at_step.append(state.epoch)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append({"step": state.global_step, **(logs or {})})

    def report(self, batch_size: int) -> dict:
        """Totals without the first step (DataLoader workers starting, first kernels), losses and their trend."""
        steps, waits = self.step_s[1:], self.wait_s[1:]
        losses = [entry["loss"] for entry in self.logs if "loss" in entry]
        train_metrics = next((entry for entry in reversed(self.logs) if "train_runtime" in entry), {})
        report = {
            "optimizer_steps": len(self.step_s),
            "samples_per_optimizer_step": batch_size,
            "first_step_s": self.step_s[0] if self.step_s else None,
            "first_wait_s": self.wait_s[0] if self.wait_s else None,
            "losses": losses,
            "loss_steps": [entry["step"] for entry in self.logs if "loss" in entry],
            "train_metrics": train_metrics,
            "step_s": self.step_s,
            "wait_s": self.wait_s,
            "epoch_at_step": self.epoch_at_step,
        }
        if steps:
            total = sum(steps) + sum(waits)
            report.update(
                step_median_s=statistics.median(steps),
                wait_median_s=statistics.median(waits),
                wait_max_s=max(waits),
                wait_fraction=sum(waits) / total,
                busy_fraction=sum(steps) / total,
                samples_per_s=batch_size * len(steps) / total,
            )
        if losses:
            window = max(1, len(losses) // 5)
            first, last = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
            report.update(
                loss_all_finite=all(math.isfinite(loss) for loss in losses),
                loss_first=first,
                loss_last=last,
                loss_decreasing=last < first,
            )
        return report


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: train_timed.py TIMING.json [train_pim.py arguments ...]", file=sys.stderr)
        return 2
    output, train_argv = Path(argv[0]), argv[1:]
    timer = StepTimer()
    trainers: list[transformers.Trainer] = []
    original_init = transformers.Trainer.__init__

    def init_with_timer(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(timer)
        trainers.append(self)

    transformers.Trainer.__init__ = init_with_timer
    sys.argv = [str(REPO / "train_pim.py"), *train_argv]
    sys.path.insert(0, str(REPO))
    try:
        runpy.run_path(str(REPO / "train_pim.py"), run_name="__main__")
    finally:
        batch_size = 0
        if trainers:
            training_args = trainers[0].args
            batch_size = (
                training_args.per_device_train_batch_size
                * training_args.gradient_accumulation_steps
                * max(1, training_args.world_size)
            )
        output.write_text(json.dumps(timer.report(batch_size), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
