"""
Throughput of `pim-infer` (img/s) on a folder of class folders, through its command line entry point
(`modeling_pim.tools.pim_infer.main`): one untimed run on `--small` images (CUDA start-up, first kernels), then timed
runs on `--small` images and on all of them; images per second = (all - small) / (time of all - time of small), so that
loading the model and starting the DataLoader workers, the same in both runs, cancel out. The end-to-end rate of the
full run (model loading included) is reported too.

    python benchmarks/gpu/infer_throughput.py MODEL_DIR IMAGES_DIR OUT.json --batch_size 64 --device cuda --dtype bfloat16

When `MODEL_DIR` holds no saved model (the training stage of the kit failed), a model of the paper's CUB architecture
with random weights is saved there first, with one class per class folder of `IMAGES_DIR`.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from modeling_pim.tools.pim_infer import main as infer_main  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("images_dir", help="<class>/<image> folders")
    parser.add_argument("output", help="JSON results file")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=8)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--small", type=int, default=64, help="images of the short run (a multiple of the batch)")
    parser.add_argument(
        "--fallback_model",
        type=json.loads,
        default={
            "backbone": "swin_large_patch4_window12_384",
            "feature_taps": "paper",
            "image_size": 384,
            "fpn_size": 1536,
            "proj_type": "Linear",
            "upsample_type": "Conv",
            "num_selects": [2048, 512, 128, 32],
        },
        help="PimConfig fields (JSON) of the random model saved when MODEL_DIR holds none",
    )
    return parser.parse_args(argv)


def save_random_model(model_dir: Path, class_names: list[str], config_fields: dict) -> None:
    from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor  # noqa: PLC0415

    config = PimConfig(
        backbone_pretrained=False,
        num_labels=len(class_names),
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
        **config_fields,
    )
    PimForImageClassification(config).save_pretrained(model_dir)
    PimImageProcessor.for_image_size(config.image_size).save_pretrained(model_dir)


def subset(images_dir: Path, count: int, destination: Path) -> Path:
    """A folder of the same class folders holding links to the first `count` images (in sorted order)."""
    files = sorted(path for path in images_dir.glob("*/*") if path.is_file())[:count]
    for path in files:
        link = destination / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    return destination


def timed_run(model_dir: Path, images_dir: Path, output_dir: Path, args: argparse.Namespace) -> tuple[float, dict]:
    argv = [
        str(model_dir),
        str(images_dir),
        "--output_dir", str(output_dir),
        "--batch_size", str(args.batch_size),
        "--num_workers", str(args.num_workers),
        "--device", args.device,
        "--dtype", args.dtype,
    ]  # fmt: skip
    start = time.perf_counter()
    status = infer_main(argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"pim-infer exited with {status} on {images_dir}")
    return seconds, json.loads((output_dir / "infer_results.json").read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir, images_dir = Path(args.model_dir), Path(args.images_dir)
    report: dict = {"settings": vars(args)}
    if not (model_dir / "config.json").is_file():
        class_names = sorted(path.name for path in images_dir.iterdir() if path.is_dir())
        save_random_model(model_dir, class_names, args.fallback_model)
        report["model"] = "random weights (no trained model found)"
    else:
        report["model"] = "trained by the kit's training stage"
    scratch = Path(tempfile.mkdtemp(prefix="pim-infer-throughput-"))
    try:
        small = subset(images_dir, args.small, scratch / "small_images")
        timed_run(model_dir, small, scratch / "warmup", args)
        small_s, _ = timed_run(model_dir, small, scratch / "small", args)
        all_s, results = timed_run(model_dir, images_dir, scratch / "all", args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    count = results["num_predicted"]
    report.update(
        num_images=count,
        num_skipped=results["num_skipped"],
        small_run_s=small_s,
        full_run_s=all_s,
        images_per_s=(count - args.small) / (all_s - small_s) if all_s > small_s else None,
        end_to_end_images_per_s=count / all_s,
        accuracy=results.get("accuracy"),
        device=results["device"],
        dtype=results["dtype"],
    )
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps({key: value for key, value in report.items() if key != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
