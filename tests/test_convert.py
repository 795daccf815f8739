"""pim-convert: original FGVC-PIM state dicts (generated here with the original's key names) -> PimForImageClassification."""

import re

import pytest
import torch

from modeling_pim import PimConfig, PimForImageClassification, PimImageProcessor
from modeling_pim.tools import convert, pim_convert
from modeling_pim.tools.convert import (
    ConversionError,
    config_for_checkpoint,
    convert_state_dict,
    inspect_original,
    load_original_checkpoint,
    original_recipe,
    read_class_names,
)


TINY_SWIN = {"embed_dim": 8, "depths": (2, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}
LAYERS = ["layer1", "layer2", "layer3", "layer4"]
CONFIGS = {
    "resnet": {"backbone": "test_resnet", "num_selects": [16, 8, 4, 2]},
    "resnet-no-fpn": {"backbone": "test_resnet", "num_selects": [16, 8, 4, 2], "use_fpn": False},
    "vit": {"backbone": "test_vit", "num_selects": [8, 6, 4, 2], "proj_type": "Linear", "upsample_type": "Conv"},
    "swin-paper": {
        "backbone": "swin_tiny_patch4_window7_224",
        "backbone_kwargs": TINY_SWIN,
        "feature_taps": "paper",
        "num_selects": [16, 8, 4, 2],
        "proj_type": "Linear",
        "upsample_type": "Conv",
    },
}
CONFIGS["swin-herbs"] = {
    **CONFIGS["swin-paper"],
    "use_bottom_up_fpn": True,
    "selection_rule": "predicted_class",
    "lambda_b0": 1.375,
}
# Our combiner module names -> the original GCNCombiner's.
ORIGINAL_COMBINER = {
    "node_pool": "param_pool0",
    "adjacency": "adj1",
    "query": "conv_q1",
    "key": "conv_k1",
    "alpha": "alpha1",
    "graph_conv": "conv1",
    "norm": "batch_norm1",
    "node_readout": "param_pool1",
}


def tiny_config(kind: str, **overrides) -> PimConfig:
    kwargs = {
        "image_size": 64,
        "num_labels": 5,
        "fpn_size": 16,
        "comb_proj_size": 12,
        "tokens_per_graph_node": 4,
        "backbone_pretrained": False,
        **CONFIGS[kind],
    }
    kwargs.update(overrides)
    return PimConfig(**kwargs)


def tiny_model(kind: str, **overrides) -> PimForImageClassification:
    torch.manual_seed(0)
    model = PimForImageClassification(tiny_config(kind, **overrides))
    with torch.no_grad():  # make BatchNorm statistics and the adaptive adjacency matter
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        model.pim.combiner.alpha.fill_(0.5)
    return model.eval()


def to_original(model: PimForImageClassification) -> dict[str, torch.Tensor]:
    """
    The state dict the original code (models/pim_module/pim_module.py + its vendored timm 0.4.12) would hold for the
    same weights: its names, old timm's Swin layout (patch merging at the end of a stage), the Swin buffers old timm
    saved, and the backbone's ImageNet head that PIM never uses. A HERBS model gets the names of the HERBS code: the
    top-down pyramid `fpn_down` with `fpn_classifier_down_*`, the bottom-up `fpn_up` with `fpn_classifier_up_*`.
    """
    config = model.config
    swin = config.feature_taps == "paper"
    herbs = config.use_bottom_up_fpn
    top_down = "fpn_down" if herbs else "fpn"
    original = {}
    for key, value in model.state_dict().items():
        key = key.removeprefix("pim.")
        if key.startswith("backbone.model."):
            rest = key.removeprefix("backbone.model.").removeprefix("model.")
            if swin:
                rest = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", rest)
            name = f"backbone.{rest}"
        elif match := re.match(r"feature_pyramid\.projections\.(\d+)\.layers\.(.+)", key):
            name = f"{top_down}.Proj_{LAYERS[int(match[1])]}.{match[2]}"
        elif match := re.match(r"feature_pyramid\.token_upsamplers\.(\d+)\.(.+)", key):
            name = f"{top_down}.Up_{LAYERS[int(match[1]) + 1]}.{match[2]}"
        elif match := re.match(r"bottom_up_pyramid\.projections\.(\d+)\.layers\.(.+)", key):
            name = f"fpn_up.Proj_{LAYERS[int(match[1])]}.{match[2]}"
        elif match := re.match(r"bottom_up_pyramid\.token_downsamplers\.(\d+)\.(.+)", key):
            name = f"fpn_up.Down_{LAYERS[int(match[1])]}.{match[2]}"
        elif match := re.match(r"(top_down_)?token_classifiers\.(\d+)\.layers\.(.+)", key):
            if herbs:
                prefix = "fpn_classifier_down_" if match[1] else "fpn_classifier_up_"
            else:
                prefix = "fpn_classifier_" if config.use_fpn else "selector.classifier_l_"
            name = f"{prefix}{LAYERS[int(match[2])]}.{match[3]}"
            if value.dim() == 4:
                value = value.squeeze(-1)  # the original classifies tokens with Conv1d
        elif key.startswith("classifier."):
            name = f"combiner.{key}"
        elif match := re.match(r"combiner\.projections\.(\d+)\.(.+)", key):
            name = f"combiner.proj_{LAYERS[int(match[1])]}.{match[2]}"
        elif match := re.match(r"combiner\.(\w+)(.*)", key):
            name = f"combiner.{ORIGINAL_COMBINER[match[1]]}{match[2]}"
        else:
            raise AssertionError(f"no original name for {key}")
        original[name] = value.clone()
    if swin:
        for key, buffer in model.named_buffers():
            if key.endswith(("relative_position_index", "attn_mask")) and buffer is not None:
                original[key.replace("pim.backbone.model.", "backbone.")] = buffer.clone()
        width = model.pim.backbone.model.num_features
        original["backbone.head.weight"] = torch.randn(1000, width)
        original["backbone.head.bias"] = torch.zeros(1000)
    return original


def images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", CONFIGS)
def test_round_trip_gives_identical_logits(kind):
    source = tiny_model(kind)
    original = to_original(source)
    converted, report = convert_state_dict(original, tiny_config(kind))
    assert report.complete and not report.unmapped and not report.missing
    target = PimForImageClassification(tiny_config(kind)).eval()
    target.load_state_dict(converted, strict=True)
    with torch.no_grad():
        expected, actual = source(images()), target(images())
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)
    for ours, theirs in zip(actual.token_logits, expected.token_logits):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_swin_patch_merging_moves_to_the_next_stage_and_buffers_are_dropped():
    original = to_original(tiny_model("swin-paper"))
    assert "backbone.layers.0.downsample.reduction.weight" in original  # old timm: end of stage 0
    _, report = convert_state_dict(original, tiny_config("swin-paper"))
    assert report.mapped["backbone.layers.0.downsample.reduction.weight"] == (
        "pim.backbone.model.layers.1.downsample.reduction.weight"
    )
    assert report.mapped["backbone.layers.2.downsample.norm.bias"] == "pim.backbone.model.layers.3.downsample.norm.bias"
    assert report.mapped["fpn.Up_layer2.weight"] == "pim.feature_pyramid.token_upsamplers.0.weight"
    assert report.mapped["combiner.param_pool0.weight"] == "pim.combiner.node_pool.weight"
    assert report.mapped["combiner.classifier.weight"] == "classifier.weight"  # the head's final classifier
    dropped = report.dropped
    assert "backbone.layers.0.blocks.0.attn.relative_position_index" in dropped
    assert "backbone.layers.0.blocks.1.attn_mask" in dropped
    assert "backbone.head.weight" in dropped and "ImageNet classifier" in dropped["backbone.head.weight"]
    assert "recomputes" in report.format()


def test_swin_attention_mask_of_another_image_size_is_an_error():
    original = to_original(tiny_model("swin-paper"))
    original["backbone.layers.0.blocks.1.attn_mask"] = torch.zeros(16, 4, 4)  # 64 windows at 64 px
    with pytest.raises(ConversionError, match=r"attn_mask.*\(16, 4, 4\).*\(64, 4, 4\).*image size"):
        convert_state_dict(original, tiny_config("swin-paper"))


def test_data_parallel_prefix_and_key_order_do_not_matter():
    source = tiny_model("resnet")
    original = {f"module.{key}": value for key, value in sorted(to_original(source).items(), reverse=True)}
    converted, _ = convert_state_dict(original, tiny_config("resnet"))
    assert torch.equal(
        converted["pim.feature_pyramid.projections.0.layers.0.weight"], original["module.fpn.Proj_layer1.0.weight"]
    )
    assert torch.equal(converted["pim.token_classifiers.3.layers.3.bias"], original["module.fpn_classifier_layer4.3.bias"])


def test_unmapped_original_key_is_named():
    original = to_original(tiny_model("resnet"))
    original["fpn.mystery.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match=r"no place in the PIM model:\n  fpn\.mystery\.weight"):
        convert_state_dict(original, tiny_config("resnet"))
    _, report = convert_state_dict(original, tiny_config("resnet"), allow_missing=True)
    assert report.unmapped == ["fpn.mystery.weight"]


def test_missing_model_key_is_named():
    original = to_original(tiny_model("resnet"))
    del original["combiner.alpha1"]
    with pytest.raises(ConversionError, match=r"not in the checkpoint:\n  pim\.combiner\.alpha"):
        convert_state_dict(original, tiny_config("resnet"))
    converted, report = convert_state_dict(original, tiny_config("resnet"), allow_missing=True)
    assert report.missing == ["pim.combiner.alpha"] and "pim.combiner.alpha" not in converted


def test_shape_mismatch_names_key_shapes_and_cause():
    original = to_original(tiny_model("resnet"))
    with pytest.raises(ConversionError) as error:
        convert_state_dict(original, tiny_config("resnet", num_labels=7))
    message = str(error.value)
    assert "fpn_classifier_layer1.3.weight -> pim.token_classifiers.0.layers.3.weight" in message
    assert "(5, 16, 1)" in message and "(7, 16, 1, 1)" in message and "--num_classes" in message
    with pytest.raises(ConversionError, match=r"backbone\..*--backbone"):
        convert_state_dict(original, tiny_config("resnet", backbone="test_efficientnet"))
    with pytest.raises(ConversionError, match=r"combiner.node_pool.*--num_selects"):
        convert_state_dict(original, tiny_config("resnet", num_selects=[16, 8, 4, 1]))


def test_checkpoint_formats(tmp_path):
    source = tiny_model("resnet")
    original = to_original(source)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    source(images(), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    torch.save({"model": original, "optimizer": optimizer.state_dict(), "epoch": 7}, tmp_path / "best.pt")
    torch.save(original, tmp_path / "bare.pt")
    for name in ("best.pt", "bare.pt"):
        loaded = load_original_checkpoint(tmp_path / name)
        assert loaded.keys() == original.keys()
    torch.save({"epoch": 7}, tmp_path / "nothing.pt")
    with pytest.raises(ConversionError, match="neither"):
        load_original_checkpoint(tmp_path / "nothing.pt")


class PickledCode:
    """Anything that unpickling would have to import and run."""


def test_pickled_code_is_refused(tmp_path, capsys):
    torch.save({"model": PickledCode()}, tmp_path / "evil.pt")
    with pytest.raises(ConversionError, match="pickled Python objects"):
        load_original_checkpoint(tmp_path / "evil.pt")
    argv = [str(tmp_path / "evil.pt"), "--backbone", "resnet50", "--output_dir", str(tmp_path / "out")]
    status = pim_convert.main(argv)
    assert status == 2 and "refused" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_recipes():
    swin = original_recipe("swin-t", 200)
    assert swin.backbone == "swin_large_patch4_window12_384" and swin.feature_taps == "paper"
    assert (swin.image_size, swin.fpn_size, swin.proj_type, swin.upsample_type) == (384, 1536, "Linear", "Conv")
    assert swin.num_selects == [2048, 512, 128, 32] and swin.tokens_per_graph_node == 32
    assert not swin.backbone_pretrained and swin.num_labels == 200
    resnet = original_recipe("resnet50", 555, image_size=224)
    assert (resnet.backbone, resnet.image_size, resnet.fpn_size) == ("resnet50", 224, 512)
    assert (resnet.proj_type, resnet.upsample_type, resnet.num_selects) == ("Conv", "Bilinear", [32] * 4)
    vit = original_recipe("vit", 200)
    assert (vit.backbone, vit.image_size, vit.proj_type, vit.upsample_type) == (
        "vit_base_patch16_224_miil",
        448,
        "Linear",
        "Conv",
    )
    with pytest.raises(ConversionError, match="efficientnet_b7.*features.4..7"):
        original_recipe("efficient", 200)


def test_herbs_recipe_is_their_config_yaml():
    herbs = original_recipe("swin-t", 200, method="herbs")
    assert (herbs.backbone, herbs.feature_taps, herbs.image_size, herbs.fpn_size) == (
        "swin_large_patch4_window12_384",
        "paper",
        384,
        1536,
    )
    assert herbs.num_selects == [256, 128, 64, 32] and herbs.tokens_per_graph_node == 64
    assert herbs.use_bottom_up_fpn and herbs.selection_rule == "predicted_class"
    assert (herbs.lambda_b, herbs.lambda_s, herbs.lambda_n, herbs.lambda_c, herbs.lambda_b0) == (0.3, 0, 5, 1, 1.375)
    assert (herbs.refinement_temperature, herbs.refinement_temperature_halving_epochs) == (64, 10)
    with pytest.raises(ConversionError, match="--method herbs --backbone resnet50: the HERBS code cannot build"):
        original_recipe("resnet50", 200, method="herbs")
    with pytest.raises(ConversionError, match="--method herbs --backbone vit: their ViT builder puts the class token"):
        original_recipe("vit", 200, method="herbs")


def test_herbs_keys_map_onto_both_pyramids():
    original = to_original(tiny_model("swin-herbs"))
    assert convert.guess_method(original) == "herbs" and convert.guess_method(to_original(tiny_model("swin-paper"))) == "pim"
    assert original["fpn_down.Up_layer4.weight"].shape == (4, 4, 1)  # a learned 4 -> 4 token mixing, as HERBS has
    _, report = convert_state_dict(original, tiny_config("swin-herbs"))
    assert report.mapped["fpn_down.Proj_layer2.2.weight"] == "pim.feature_pyramid.projections.1.layers.2.weight"
    assert report.mapped["fpn_down.Up_layer4.weight"] == "pim.feature_pyramid.token_upsamplers.2.weight"
    assert report.mapped["fpn_classifier_down_layer1.3.bias"] == "pim.top_down_token_classifiers.0.layers.3.bias"
    assert report.mapped["fpn_up.Proj_layer3.0.weight"] == "pim.bottom_up_pyramid.projections.2.layers.0.weight"
    assert report.mapped["fpn_up.Down_layer1.weight"] == "pim.bottom_up_pyramid.token_downsamplers.0.weight"
    assert report.mapped["fpn_classifier_up_layer4.1.running_var"] == "pim.token_classifiers.3.layers.1.running_var"
    assert report.mapped["combiner.classifier.weight"] == "classifier.weight"
    found = inspect_original(original)
    assert found == {"num_classes": 5, "fpn_size": 16, "total_selects": 30, "image_size": 64}


def test_method_is_read_from_the_checkpoint_and_a_wrong_one_is_refused():
    herbs = to_original(tiny_model("swin-herbs"))
    with pytest.raises(ConversionError, match="--method pim but the checkpoint comes from the FGVC-HERBS code"):
        config_for_checkpoint("swin-t", herbs, method="pim")
    pim = to_original(tiny_model("swin-paper"))
    with pytest.raises(ConversionError, match="--method herbs but the checkpoint comes from the FGVC-PIM code"):
        config_for_checkpoint("swin-t", pim, method="herbs")
    with pytest.raises(ConversionError, match=r"sum\(num_selects\)=30 .*e.g. --num_selects 256 128 64 32"):
        config_for_checkpoint("swin-t", herbs, num_classes=5)


def test_shapes_tell_classes_pyramid_selects_and_image_size():
    found = inspect_original(to_original(tiny_model("swin-paper")))
    assert found == {"num_classes": 5, "fpn_size": 16, "total_selects": 30, "image_size": 64}
    assert convert.guess_backbone(to_original(tiny_model("swin-paper"))) == "swin-t"
    assert convert.guess_backbone(to_original(tiny_model("vit"))) == "vit"
    found = inspect_original(to_original(tiny_model("vit")))
    assert found["image_size"] == 64 and found["num_classes"] == 5
    assert inspect_original(to_original(tiny_model("resnet")))["image_size"] is None  # a CNN runs at any size


def test_flags_are_checked_against_the_checkpoint():
    original = to_original(tiny_model("resnet", num_selects=[32, 32, 16, 4]))
    with pytest.raises(ConversionError, match="--num_classes 200 but the checkpoint was trained with num_classes=5"):
        config_for_checkpoint("resnet50", original, num_classes=200)
    with pytest.raises(ConversionError, match="--fpn_size 512 but"):
        config_for_checkpoint("resnet50", original, fpn_size=512)
    with pytest.raises(ConversionError, match=r"sum\(num_selects\)=84 .*--num_selects"):
        config_for_checkpoint("resnet50", original, image_size=448)  # recipe default 4 × 32 = 128
    with pytest.raises(ConversionError, match="holds a 'resnet50' backbone .*not --backbone swin-t"):
        config_for_checkpoint("swin-t", original)
    config = config_for_checkpoint("resnet50", original, image_size=64, num_selects=[32, 32, 16, 4])
    assert (config.num_labels, config.fpn_size, config.image_size) == (5, 16, 64)


def test_class_names(tmp_path):
    (tmp_path / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n\n")
    assert read_class_names(tmp_path / "classes.txt") == ["Black footed Albatross", "Laysan Albatross"]
    (tmp_path / "names.txt").write_text("Cardinal\nBlue Jay\n")
    assert read_class_names(tmp_path / "names.txt") == ["Cardinal", "Blue Jay"]
    # Saved by a Windows editor: byte-order mark and CRLF line ends.
    (tmp_path / "bom.txt").write_bytes("1 001.Black_footed_Albatross\r\n2 002.Laysan_Albatross\r\n".encode("utf-8-sig"))
    assert read_class_names(tmp_path / "bom.txt") == ["Black footed Albatross", "Laysan Albatross"]
    # One name per line whose names start with numbers: kept whole (the CUB forms are recognised for a whole file).
    (tmp_path / "numbers.txt").write_text("3 toed woodpecker\n12 apostles rock\nCardinal\n")
    assert read_class_names(tmp_path / "numbers.txt") == ["3 toed woodpecker", "12 apostles rock", "Cardinal"]
    # Every name starts with a number, but they are not ids counting up by one: kept whole.
    (tmp_path / "all_numbers.txt").write_text("3 toed woodpecker\n12 apostles rock\n")
    assert read_class_names(tmp_path / "all_numbers.txt") == ["3 toed woodpecker", "12 apostles rock"]
    (tmp_path / "from_zero.txt").write_text("0 Cardinal\n1 Blue Jay\n")
    assert read_class_names(tmp_path / "from_zero.txt") == ["Cardinal", "Blue Jay"]
    (tmp_path / "versions.txt").write_text("001.Black_footed_Albatross\n3.5 mm screw\nNo_number_here\n")
    expected = ["001.Black_footed_Albatross", "3.5 mm screw", "No_number_here"]
    assert read_class_names(tmp_path / "versions.txt") == expected


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    # The resnet50 recipe with a tiny timm ResNet in place of ResNet-50 (same module names, same taps).
    recipe = convert.original_recipe
    monkeypatch.setattr(convert, "original_recipe", lambda *args, **kwargs: recipe(*args, **kwargs, backbone="test_resnet"))
    torch.manual_seed(0)
    config = original_recipe("resnet50", 5, image_size=64, fpn_size=16, num_selects=[32, 32, 16, 4], backbone="test_resnet")
    source = PimForImageClassification(config).eval()
    torch.save({"model": to_original(source), "optimizer": {}, "epoch": 49}, tmp_path / "best.pt")
    names = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani", "Crested Auklet"]
    (tmp_path / "classes.txt").write_text("".join(f"{i + 1} {i + 1:03d}.{n.replace(' ', '_')}\n" for i, n in enumerate(names)))
    output_dir = tmp_path / "converted"
    argv = [str(tmp_path / "best.pt"), "--backbone", "resnet50", "--num_classes", "5", "--output_dir", str(output_dir)]
    argv += ["--class_names", str(tmp_path / "classes.txt"), "--image_size", "64", "--num_selects", "32", "32", "16", "4"]
    assert pim_convert.main(argv) == 0
    out = capsys.readouterr().out
    assert "tensors converted" in out
    assert (
        f"Read 5 class names from {tmp_path / 'classes.txt'}: 'Black footed Albatross', 'Laysan Albatross', "
        "'Sooty Albatross', ...\n"
    ) in out

    model = PimForImageClassification.from_pretrained(output_dir).eval()
    assert model.config.id2label[0] == "Black footed Albatross" and model.config.label2id["Crested Auklet"] == 4
    assert not model.config.backbone_pretrained
    with torch.no_grad():
        torch.testing.assert_close(model(images()).logits, source(images()).logits, rtol=0, atol=0)
    processor = PimImageProcessor.from_pretrained(output_dir)
    assert processor.crop_size["height"] == 64 and list(processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])

    bad = argv[:3] + ["--num_classes", "200"] + argv[5:]
    assert pim_convert.main(bad) == 2
    assert "--num_classes 200 but the checkpoint was trained with num_classes=5" in capsys.readouterr().err


def test_cli_converts_a_herbs_checkpoint(tmp_path, monkeypatch, capsys):
    # Their HERBS Swin-L recipe with a tiny Swin in place of Swin-L (same module names, same taps).
    recipe = convert.original_recipe
    monkeypatch.setattr(
        convert,
        "original_recipe",
        lambda *args, **kwargs: recipe(*args, **kwargs, backbone="swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN),
    )
    torch.manual_seed(0)
    source = tiny_model("swin-herbs", tokens_per_graph_node=64, num_selects=[64, 16, 4, 4], lambda_b=0.3)
    torch.save({"model": to_original(source), "optimizer": {}, "epoch": 79}, tmp_path / "best.pt")
    output_dir = tmp_path / "converted"
    argv = [str(tmp_path / "best.pt"), "--method", "herbs", "--backbone", "swin-t", "--output_dir", str(output_dir)]
    assert pim_convert.main([*argv, "--num_selects", "64", "16", "4", "4"]) == 0
    assert "tensors converted" in capsys.readouterr().out
    model = PimForImageClassification.from_pretrained(output_dir).eval()
    config = model.config
    assert config.use_bottom_up_fpn and config.selection_rule == "predicted_class" and config.lambda_b0 == 1.375
    assert (config.image_size, config.fpn_size, config.num_labels) == (64, 16, 5)
    with torch.no_grad():
        expected, actual = source(images()), model(images())
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)
    for ours, theirs in zip(actual.top_down_token_logits, expected.top_down_token_logits):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert pim_convert.main([argv[0], "--method", "pim", *argv[3:6], str(tmp_path / "as_pim")]) == 2
    assert "pass --method herbs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, error",
    [
        (["--backbone", "efficient"], "--backbone efficient cannot be converted: the original builds torchvision's"),
        (["--backbone", "resnet50", "--method", "herbs"], "--method herbs --backbone resnet50: the HERBS code cannot"),
        (["--backbone", "vit", "--method", "herbs"], "--method herbs --backbone vit: their ViT builder puts the class"),
        (["--backbone", "efficient", "--method", "herbs"], "--method herbs --backbone efficient: the HERBS code cannot"),
    ],
)
def test_cli_refuses_a_builder_that_never_converts_before_reading_the_checkpoint(
    tmp_path, monkeypatch, capsys, arguments, error
):
    # A checkpoint that says nothing (no class count): the builder is refused first, not --num_classes asked for.
    torch.save({"model": {"foo.weight": torch.zeros(3)}}, tmp_path / "wrongkeys.pt")
    monkeypatch.setattr(convert, "load_original_checkpoint", lambda path: pytest.fail("the checkpoint was read"))
    assert pim_convert.main([str(tmp_path / "wrongkeys.pt"), *arguments, "--output_dir", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"pim-convert: error: {error}") and message.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, error",
    [
        (["--num_classes", "0"], "--num_classes must be at least 1, got 0."),
        (["--image_size", "-384"], "--image_size must be at least 1, got -384."),
        (["--fpn_size", "0"], "--fpn_size must be at least 1, got 0."),
        (["--resize_size", "0"], "--resize_size must be at least 1, got 0."),
        (["--num_selects", "32", "0", "8", "4"], "--num_selects must be at least 1 token per layer, got 32 0 8 4."),
    ],
)
def test_cli_refuses_sizes_below_one(tmp_path, capsys, arguments, error):
    torch.save({"model": {"foo.weight": torch.zeros(3)}}, tmp_path / "wrongkeys.pt")
    argv = [str(tmp_path / "wrongkeys.pt"), "--backbone", "resnet50", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        pim_convert.main([*argv, *arguments])
    assert exit_info.value.code == 2 and capsys.readouterr().err.endswith(f"pim-convert: error: {error}\n")
