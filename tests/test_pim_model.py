"""PimModel (the base model and its embedding), checkpoint keys before and after it, re-initialisation for new
classes, device maps."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import infer_auto_device_map
from safetensors.torch import load_file
from transformers import AutoModel

from modeling_pim import PimForImageClassification, PimModel
from modeling_pim.modeling_pim import _block_class_names
from test_modeling_pim import MODULE_SWITCHES, images, tiny_model


OLD_FOLDER = Path(__file__).parent / "fixtures" / "pim_saved_before_pim_model"


@pytest.mark.parametrize("switches", MODULE_SWITCHES.values(), ids=MODULE_SWITCHES.keys())
def test_embedding_is_what_the_final_classifier_reads(switches):
    model = tiny_model("test_resnet", **switches).eval()
    config = model.config
    with torch.no_grad():
        embedding = model.pim(images())
        logits = model(images()).logits
    assert embedding.pooler_output.shape == (2, model.pim.embedding_size)
    if config.use_combiner:
        assert model.pim.embedding_size == (config.fpn_size if config.use_fpn else config.comb_proj_size)
    if model.classifier is None:  # combiner off, token classifiers on: the deepest layer's mean token logits
        torch.testing.assert_close(logits, embedding.layer_logits[-1], rtol=0, atol=0)
    else:
        torch.testing.assert_close(logits, model.classifier(embedding.pooler_output), rtol=0, atol=0)
    assert embedding.last_hidden_state.shape[:2] == (2, model.pim.backbone.token_counts[-1])


def test_folder_saved_before_pim_model_gives_the_same_logits_bit_for_bit(tmp_path):
    reference = load_file(OLD_FOLDER / "reference.safetensors")
    assert "combiner.classifier.weight" in load_file(OLD_FOLDER / "model.safetensors")  # the old layout
    model = PimForImageClassification.from_pretrained(OLD_FOLDER).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(reference["pixel_values"]).logits, reference["logits"], rtol=0, atol=0)
        embedding = AutoModel.from_pretrained(OLD_FOLDER).eval()(reference["pixel_values"]).pooler_output
        torch.testing.assert_close(model.classifier(embedding), reference["logits"], rtol=0, atol=0)

    # Saved again, as transformers saves every model it renamed keys for: in the folder's layout.
    model.save_pretrained(tmp_path / "again")
    assert load_file(tmp_path / "again" / "model.safetensors").keys() == load_file(OLD_FOLDER / "model.safetensors").keys()
    # Or in today's layout, which loads the same.
    model.save_pretrained(tmp_path / "today", save_original_format=False)
    keys = load_file(tmp_path / "today" / "model.safetensors").keys()
    assert all(key.startswith(("pim.", "classifier.")) for key in keys) and "classifier.weight" in keys
    for folder in ("again", "today"):
        reloaded = PimForImageClassification.from_pretrained(tmp_path / folder).eval()
        with torch.no_grad():
            torch.testing.assert_close(reloaded(reference["pixel_values"]).logits, reference["logits"], rtol=0, atol=0)


def test_load_state_dict_reads_the_old_keys_as_trainer_resume_does():
    reference = load_file(OLD_FOLDER / "reference.safetensors")
    model = PimForImageClassification(PimForImageClassification.config_class.from_pretrained(OLD_FOLDER))
    model.load_state_dict(load_file(OLD_FOLDER / "model.safetensors"), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(reference["pixel_values"]).logits, reference["logits"], rtol=0, atol=0)


def test_new_folders_hold_todays_keys_and_an_auto_map_for_both_classes(tmp_path):
    model = tiny_model("test_resnet").eval()
    model.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert keys == model.state_dict().keys()
    assert "pim.combiner.node_pool.weight" in keys and "classifier.weight" in keys
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_pim.PimModel"
    assert auto_map["AutoModelForImageClassification"] == "modeling_pim.PimForImageClassification"
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, PimModel)
    with torch.no_grad():
        torch.testing.assert_close(model.pim(images()).pooler_output, base(images()).pooler_output, rtol=0, atol=0)


def _fan_in_bound(weight: torch.Tensor) -> float:
    return 1 / weight[0].numel() ** 0.5  # PyTorch's default: kaiming_uniform(a=sqrt(5)) and bias both within it


@pytest.mark.parametrize("switches", ["fpn+selector+combiner", "selector+combiner", "backbone only"])
def test_fine_tuning_to_other_classes_reinitialises_class_tensors_at_pytorch_scale(tmp_path, switches):
    source = tiny_model("test_resnet", **MODULE_SWITCHES[switches])
    source.save_pretrained(tmp_path)
    model = PimForImageClassification.from_pretrained(
        tmp_path, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2},
        ignore_mismatched_sizes=True,
    )
    source_state, state = source.state_dict(), model.state_dict()
    reset = sorted(key for key in state if state[key].shape != source_state[key].shape)
    assert reset and all(state[key].shape[0] == 3 for key in reset)
    for key in state:
        if key not in reset:
            assert torch.equal(state[key], source_state[key]), f"{key} was not kept"
    for name, module in model.named_modules():
        if f"{name}.weight" in reset:
            bound = _fan_in_bound(module.weight)
            assert torch.isfinite(module.weight).all() and module.weight.abs().max() <= bound, name
            assert module.weight.abs().max() > bound / 2, name  # not zeros: a uniform draw reaches the bound
            assert module.bias.abs().max() <= bound, name
    loss = model(images(), labels=torch.tensor([0, 2])).loss
    assert torch.isfinite(loss)


def test_every_module_init_weights_is_called_on_gets_the_pytorch_default():
    model = tiny_model("test_resnet")
    for module in (model.classifier, model.pim.token_classifiers[0].layers[3], model.pim.token_classifiers[0].layers[1]):
        for tensor in module.parameters():
            tensor.data.fill_(float("nan"))
        model._init_weights(module)
        assert all(torch.isfinite(tensor).all() for tensor in module.parameters())
    batch_norm = model.pim.token_classifiers[0].layers[1]
    assert torch.equal(batch_norm.weight, torch.ones_like(batch_norm.weight))
    combiner = model.pim.combiner
    combiner.alpha.data.fill_(3.0)
    model._init_weights(combiner)
    assert combiner.alpha.item() == 0
    assert torch.equal(combiner.adjacency, combiner.initial_adjacency(combiner.adjacency.shape[0]))


@pytest.mark.parametrize(
    ("backbone", "blocks"),
    [
        ("test_resnet", ["BasicBlock", "Bottleneck"]),
        ("test_vit", ["Block"]),
        ("test_convnext", ["ConvNeXtBlock"]),
        ("test_efficientnet", ["ConvBnAct", "EdgeResidual", "InvertedResidual"]),
        ("swin", ["SwinTransformerBlock"]),
    ],
)
def test_no_split_modules_are_the_backbone_blocks_and_the_modules_mixing_layers(backbone, blocks):
    model = tiny_model(backbone)
    assert _block_class_names(model.pim.backbone.model) == blocks
    assert model._no_split_modules == {*blocks, "FeaturePyramid", "GraphCombiner"}


def test_device_map_never_cuts_a_block_in_two_and_loads_on_cpu(tmp_path):
    model = tiny_model("swin", feature_taps="paper").eval()
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    max_memory = {**{gpu: total // 4 for gpu in range(4)}, "cpu": 10 * total}
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=model._no_split_modules)
    assert len(set(device_map.values())) > 1 and "pim.backbone.model.layers.3.blocks.0" in device_map  # stages split
    for name, module in model.named_modules():
        if type(module).__name__ in model._no_split_modules:
            devices = {
                device
                for prefix, device in device_map.items()
                if prefix == name or prefix.startswith(f"{name}.") or name.startswith(f"{prefix}.")
            }
            assert len(devices) == 1, f"{name} cut across {devices}"

    model.save_pretrained(tmp_path)
    loaded = PimForImageClassification.from_pretrained(tmp_path, device_map="auto").eval()
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()).logits, model(images()).logits, rtol=0, atol=0)
