"""PimTrainer: the Trainer paths that would drop PIM's losses are refused, evaluation sees every sample, the loss parts
survive nn.DataParallel, and a last training batch of one image never reaches BatchNorm (tiny model, CPU)."""

import re

import pytest
import torch
from torch import nn
from transformers import TrainingArguments

from modeling_pim import PimForImageClassification
from modeling_pim.training.trainer import LOSS_PARTS, PimTrainer, build_compute_metrics, stack_heads
from tiny_models import tiny_pim_config


AT_32_PIXELS = {"image_size": 32, "fpn_size": 16, "num_selects": [8, 4, 2, 1]}


class RandomImages(torch.utils.data.Dataset):
    """`length` random 32 px images with labels 0..2, as `collate_fn`-ready rows."""

    def __init__(self, length: int):
        generator = torch.Generator().manual_seed(length)
        self.pixel_values = torch.randn(length, 3, 32, 32, generator=generator)
        self.labels = torch.arange(length) % 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


def make_trainer(
    tmp_path, train_size: int = 8, eval_size: int = 9, model_overrides: dict | None = None, **arguments
) -> PimTrainer:
    torch.manual_seed(0)
    model = PimForImageClassification(tiny_pim_config(["a", "b", "c"], **AT_32_PIXELS, **(model_overrides or {})))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=2,
        use_cpu=True,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **arguments,
    )
    return PimTrainer(
        model=model,
        args=args,
        train_dataset=RandomImages(train_size),
        eval_dataset=RandomImages(eval_size),
        compute_metrics=build_compute_metrics(),
        preprocess_logits_for_metrics=stack_heads,
    )


def test_label_smoothing_factor_is_refused_with_a_pointer_to_pim_config(tmp_path):
    message = (
        "label_smoothing_factor=0.1 makes Trainer replace PIM's loss by a smoothed cross-entropy of the final logits "
        "only (the layer, token and combiner losses would vanish): set PimConfig.label_smoothing instead "
        "(train_pim.py --label_smoothing), which smooths every cross-entropy term of PIM's loss, and leave "
        "label_smoothing_factor at 0."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        make_trainer(tmp_path, label_smoothing_factor=0.1)


def test_label_names_other_than_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match=re.escape("label_names=['label']: PIM's batches hold their class indices")):
        make_trainer(tmp_path, label_names=["label"])


def test_a_compute_loss_func_is_refused(tmp_path):
    model = PimForImageClassification(tiny_pim_config(["a", "b"]))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="PimTrainer got a compute_loss_func: PIM computes its loss"):
        PimTrainer(model=model, args=args, compute_loss_func=lambda outputs, labels, num_items_in_batch: 0)


def test_evaluation_and_test_loaders_keep_every_sample_with_dataloader_drop_last(tmp_path):
    trainer = make_trainer(tmp_path, train_size=10, eval_size=9, dataloader_drop_last=True)
    assert sum(len(batch["labels"]) for batch in trainer.get_eval_dataloader()) == 9
    assert sum(len(batch["labels"]) for batch in trainer.get_test_dataloader(RandomImages(5))) == 5
    assert [len(batch["labels"]) for batch in trainer.get_train_dataloader()] == [4, 4]  # training drops the last 2
    assert trainer.args.dataloader_drop_last is True


def test_metrics_ignore_the_inputs_and_losses_that_include_for_metrics_adds(tmp_path):
    trainer = make_trainer(tmp_path, eval_size=5, include_for_metrics=["inputs", "loss"])
    metrics = trainer.evaluate()
    reference = make_trainer(tmp_path, eval_size=5).evaluate()
    assert metrics["eval_num_samples"] == 5
    for key in ("eval_accuracy", "eval_top5_accuracy", "eval_mean_per_class_accuracy", "eval_loss"):
        assert metrics[key] == pytest.approx(reference[key])


@pytest.mark.parametrize(
    ("train_size", "num_gpus", "batch_sizes"),
    [
        (9, 1, [4, 4]),  # 9 = 4 + 4 + 1: the batch of 1 is dropped
        (10, 1, [4, 4, 2]),
        (11, 2, [8]),  # batches of 8 over 2 GPUs: the last 3 would give one GPU 1 image
        (12, 2, [8, 4]),  # the last 4 give each GPU 2
    ],
)
def test_a_last_training_batch_that_gives_a_replica_one_image_is_dropped(tmp_path, train_size, num_gpus, batch_sizes):
    trainer = make_trainer(tmp_path, train_size=train_size)
    trainer.args._n_gpu = num_gpus  # what TrainingArguments finds on a machine with that many GPUs
    trainer._train_batch_size = trainer.args.train_batch_size
    assert [len(batch["labels"]) for batch in trainer.get_train_dataloader()] == batch_sizes


def test_training_on_9_images_in_batches_of_4_does_not_reach_batchnorm_with_one_image(tmp_path):
    trainer = make_trainer(tmp_path, train_size=9, num_train_epochs=1, save_strategy="no")
    trainer.train()
    assert trainer.state.global_step == 2


class SimulatedDataParallel(nn.Module):
    """
    What `nn.DataParallel` returns on 2 GPUs, on CPU: the batch split in 2, the halves run separately and the outputs
    gathered, batched tensors concatenated and 0-dim tensors (the loss and its parts) as one value per replica.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, pixel_values, labels):
        replicas = [
            self.module(pixel_values=pixels, labels=targets)
            for pixels, targets in zip(pixel_values.chunk(2), labels.chunk(2))
        ]
        gathered = {}
        for key, value in replicas[0].items():
            if isinstance(value, torch.Tensor):
                values = [replica[key] for replica in replicas]
                gathered[key] = torch.stack(values) if value.dim() == 0 else torch.cat(values)
        return gathered


def test_loss_parts_gathered_from_data_parallel_replicas_are_averaged_and_logged(tmp_path):
    # HERBS options on, so that every loss part, the refinement's included, is there.
    trainer = make_trainer(tmp_path, model_overrides={"use_bottom_up_fpn": True, "lambda_b0": 1.0})
    model = trainer.model.train()
    batch = {"pixel_values": RandomImages(4).pixel_values, "labels": torch.tensor([0, 1, 2, 0])}
    torch.manual_seed(0)  # the same combiner dropout in both forward passes
    halves = [model(pixel_values=batch["pixel_values"][i : i + 2], labels=batch["labels"][i : i + 2]) for i in (0, 2)]
    for part in LOSS_PARTS:
        assert halves[0][part].dim() == 0
    expected = {part: (halves[0][part] + halves[1][part]).item() / 2 for part in LOSS_PARTS}
    torch.manual_seed(0)
    loss = trainer.compute_loss(SimulatedDataParallel(model), batch)
    assert loss.shape == (2,)  # Trainer.training_step takes its mean when n_gpu > 1
    trainer.log({"loss": loss.mean().item()})

    logged = trainer.state.log_history[-1]
    for part in LOSS_PARTS:
        assert logged[part] == pytest.approx(round(expected[part], 4), abs=1e-4)
