"""
CUDA behaviour, run by `benchmarks/gpu/run.sh` on a GPU machine (`pytest -m gpu`); skipped without CUDA: a bf16
autocast training step of the CNN, ViT and Swin (paper taps) recipes, CPU/CUDA agreement of the model and of the
selector's `topk`/`gather`, `pim-infer` and `pim-heatmap` with `--device cuda`, and a 2-process DDP run (2 GPUs).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fgvc_trees import FOLDER_CLASS_NAMES, make_image_folders
from tiny_models import tiny_pim_config

from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
from modeling_pim.modeling_pim import WeaklySupervisedSelector
from modeling_pim.tools import pim_heatmap, pim_infer
from modeling_pim.tools.heatmap import compute_heatmap


REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
RECIPES = ["cub200_resnet50_448.yaml", "cub200_vit_base_448.yaml", "cub200_swin_large_384.yaml"]


@pytest.fixture
def full_float32_precision():
    """Float32 matrix products and convolutions without TF32, so that CUDA and CPU results agree to ~1e-5."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def recipe_model(recipe: str) -> PimForImageClassification:
    """The model of a recipe, with random weights (200 classes)."""
    values = yaml.safe_load((REPO / "configuration" / recipe).read_text())
    fields = {key: value for key, value in values.items() if key in PimConfig.__annotations__}
    torch.manual_seed(0)
    return PimForImageClassification(PimConfig(**{**fields, "backbone_pretrained": False, "num_labels": 200}))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float().cpu() - expected.float().cpu()).norm() / expected.float().cpu().norm())


@pytest.mark.parametrize("recipe", RECIPES)
def test_bf16_autocast_training_step_on_cuda(recipe, full_float32_precision):
    model = recipe_model(recipe)
    size = model.config.image_size
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, size, size, generator=generator)
    labels = torch.randint(0, 200, (2,), generator=generator)
    with torch.no_grad():
        cpu_layer_logits = model.eval()(pixel_values=pixel_values).layer_logits
    model.cuda()
    pixel_values, labels = pixel_values.cuda(), labels.cuda()
    with torch.no_grad():
        float32_layer_logits = model(pixel_values=pixel_values).layer_logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16_layer_logits = model(pixel_values=pixel_values).layer_logits
    for layer, (cpu, float32, bf16) in enumerate(zip(cpu_layer_logits, float32_layer_logits, bf16_layer_logits)):
        assert relative_error(float32, cpu) < 1e-4, (layer, relative_error(float32, cpu))
        # bf16 keeps 8 bits of mantissa: ~1e-2 after a deep random-init network; NaN, overflow or a wrong path fail.
        assert relative_error(bf16, float32) < 1e-1, (layer, relative_error(bf16, float32))

    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output = model(pixel_values=pixel_values, labels=labels)
    assert output.logits.shape == (2, 200) and output.logits.device.type == "cuda"
    assert torch.isfinite(output.loss)
    output.loss.backward()
    gradients = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert all(torch.isfinite(gradient).all() for gradient in gradients.values())
    for part in ("backbone.", "token_classifiers.", "combiner."):
        assert any(gradient.abs().sum() > 0 for name, gradient in gradients.items() if part in name), part


def test_selector_on_cuda_equals_cpu_at_the_paper_sizes():
    # One token per (sample, rank) gets its top class logit from a permutation of well separated values, so that the
    # expected ranking is known and no two confidences are within rounding of each other on either device.
    generator = torch.Generator().manual_seed(0)
    num_selects, token_counts, num_labels = [2048, 512, 128, 32], [2304, 576, 144, 144], 200
    tokens, logits, rankings = [], [], []
    for count in token_counts:
        peaks = torch.linspace(4.0, 0.0, count)
        order = torch.stack([torch.randperm(count, generator=generator) for _ in range(16)])  # token of each rank
        layer_logits = torch.zeros(16, count, num_labels)
        classes = torch.randint(0, num_labels, (16, count), generator=generator)
        layer_logits.scatter_(2, classes[..., None], peaks[order.argsort(dim=1)][..., None])
        logits.append(layer_logits)
        tokens.append(torch.randn(16, count, 64, generator=generator))
        rankings.append(order)
    selector = WeaklySupervisedSelector(num_selects)
    cpu = selector(tokens, logits)
    cuda = selector([value.cuda() for value in tokens], [value.cuda() for value in logits])
    for layer, num_select in enumerate(num_selects):
        torch.testing.assert_close(cuda.indices[layer].cpu(), rankings[layer][:, :num_select], rtol=0, atol=0)
        torch.testing.assert_close(cuda.indices[layer].cpu(), cpu.indices[layer], rtol=0, atol=0)
        torch.testing.assert_close(cuda.features[layer].cpu(), cpu.features[layer], rtol=0, atol=0)
        torch.testing.assert_close(cuda.logits[layer].cpu(), cpu.logits[layer], rtol=0, atol=0)
        torch.testing.assert_close(  # the dropped set's order is irrelevant to the loss
            cuda.dropped_logits[layer].cpu().sort(dim=1).values, cpu.dropped_logits[layer].sort(dim=1).values
        )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    PimForImageClassification(tiny_pim_config(sorted(FOLDER_CLASS_NAMES))).save_pretrained(path)
    PimImageProcessor.for_image_size(64).save_pretrained(path)
    return path


def read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_pim_infer_on_cuda_matches_the_cpu(model_dir, tmp_path, full_float32_precision):
    images = make_image_folders(tmp_path / "data", splits=("test",), images_per_class=3) / "test"
    runs = {}
    for device, dtype in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "bfloat16")):
        output_dir = tmp_path / f"{device}-{dtype}"
        argv = [str(model_dir), str(images), "--output_dir", str(output_dir), "--num_workers", "0"]
        assert pim_infer.main([*argv, "--device", device, "--dtype", dtype]) == 0
        results = json.loads((output_dir / "infer_results.json").read_text())
        assert (results["device"], results["dtype"], results["num_predicted"]) == (device, dtype, 9)
        runs[device, dtype] = read_predictions(output_dir / "predictions.csv")
    for cpu_row, cuda_row in zip(runs["cpu", "float32"], runs["cuda", "float32"]):
        assert cuda_row["path"] == cpu_row["path"] and cuda_row["top1_label"] == cpu_row["top1_label"]
        assert float(cuda_row["top1_probability"]) == pytest.approx(float(cpu_row["top1_probability"]), abs=1e-4)
    assert [row["path"] for row in runs["cuda", "bfloat16"]] == [row["path"] for row in runs["cpu", "float32"]]


def test_pim_heatmap_on_cuda_matches_the_cpu(model_dir, tmp_path, full_float32_precision):
    image = tmp_path / "bird.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(image)
    output = tmp_path / "map.png"
    assert pim_heatmap.main([str(model_dir), str(image), "--output", str(output), "--device", "cuda"]) == 0
    assert Image.open(tmp_path / "map.png").size[0] > 0

    model = PimForImageClassification.from_pretrained(model_dir).eval()
    pixel_values = PimImageProcessor.from_pretrained(model_dir)(images=Image.open(image), return_tensors="pt")[
        "pixel_values"
    ]
    cpu = compute_heatmap(model, pixel_values)
    cuda = compute_heatmap(model.cuda(), pixel_values.cuda())
    np.testing.assert_allclose(cuda.heatmap, cpu.heatmap, atol=1e-4)
    assert (cuda.predicted_class, cuda.probability) == (cpu.predicted_class, pytest.approx(cpu.probability, abs=1e-5))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="a 2-process DDP run needs 2 GPUs")
def test_ddp_on_two_gpus_trains_and_counts_every_evaluation_sample_once(tmp_path):
    data_dir = make_image_folders(tmp_path / "data", splits=("train", "validation"), images_per_class=3)
    output_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
        str(REPO / "train_pim.py"),
        "--backbone", "test_resnet", "--backbone_pretrained", "false", "--image_size", "32", "--fpn_size", "16",
        "--num_selects", "8", "4", "2", "1", "--tokens_per_graph_node", "3",
        "--train_dir", str(data_dir / "train"), "--validation_dir", str(data_dir / "validation"),
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2", "--max_steps", "2",
        "--bf16", "true", "--do_train", "true", "--do_eval", "true", "--report_to", "none",
        "--remove_unused_columns", "false", "--dataloader_num_workers", "0", "--output_dir", str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((output_dir / "eval_results.json").read_text())["eval_num_samples"] == 9
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2
