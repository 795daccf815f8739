"""Behaviour of PimConfig / PimForImageClassification on tiny timm backbones (CPU, 32-64 px)."""

import re
import textwrap

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from tiny_models import run_as_remote_code

from modeling_pim import PimConfig, PimConfigError, PimForImageClassification, PimImageProcessor
from modeling_pim.modeling_pim import WeaklySupervisedSelector


TINY_SWIN = {"embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}
LABELS = ["cardinal", "blue jay", "house sparrow", "robin", "wren"]

# backbone name -> PimConfig kwargs giving a tiny model at 64 px with 4 layers.
BACKBONES = {
    "test_resnet": {"backbone": "test_resnet", "num_selects": [16, 8, 4, 2]},
    "test_efficientnet": {"backbone": "test_efficientnet", "num_selects": [16, 8, 4, 2]},
    "test_convnext": {"backbone": "test_convnext", "num_selects": [16, 8, 4, 2]},
    "test_vit": {
        "backbone": "test_vit",
        "num_selects": [8, 6, 4, 2],
        "proj_type": "Linear",
        "upsample_type": "Conv",
    },
    "swin": {
        "backbone": "swin_tiny_patch4_window7_224",
        "backbone_kwargs": TINY_SWIN,
        "num_selects": [16, 8, 4, 2],
        "proj_type": "Linear",
        "upsample_type": "Conv",
    },
}
MODULE_SWITCHES = {
    "fpn+selector+combiner": {"use_fpn": True, "use_selection": True, "use_combiner": True},
    "fpn+selector": {"use_fpn": True, "use_selection": True, "use_combiner": False},
    "fpn": {"use_fpn": True, "use_selection": False, "use_combiner": False},
    "selector+combiner": {"use_fpn": False, "use_selection": True, "use_combiner": True},
    "selector": {"use_fpn": False, "use_selection": True, "use_combiner": False},
    "backbone only": {"use_fpn": False, "use_selection": False, "use_combiner": False},
}


def tiny_config(family: str = "test_resnet", **overrides) -> PimConfig:
    kwargs = {
        "image_size": 64,
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "fpn_size": 16,
        "comb_proj_size": 12,
        "tokens_per_graph_node": 4,
        **BACKBONES[family],
    }
    kwargs.update(overrides)
    return PimConfig(**kwargs)


def tiny_model(family: str = "test_resnet", **overrides) -> PimForImageClassification:
    torch.manual_seed(0)
    return PimForImageClassification(tiny_config(family, **overrides))


def images(batch_size: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("switches", MODULE_SWITCHES.values(), ids=MODULE_SWITCHES.keys())
@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes_for_every_module_combination(backbone, switches):
    model = tiny_model(backbone, **switches)
    config = model.config
    labels = torch.tensor([0, 3])
    output = model(images(), labels=labels)

    assert output.logits.shape == (2, config.num_labels)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    if not (config.use_fpn or config.use_selection):
        assert output.layer_logits is None and output.token_logits is None
        return
    token_counts = model.pim.backbone.token_counts
    assert [tuple(t.shape) for t in output.token_logits] == [(2, n, config.num_labels) for n in token_counts]
    assert [tuple(t.shape) for t in output.layer_logits] == [(2, config.num_labels)] * 4
    if not config.use_selection:
        assert output.selected_token_logits is None and output.loss_dropped is None
        torch.testing.assert_close(output.logits, output.layer_logits[-1])
        return
    selects = config.num_selects
    assert [tuple(t.shape) for t in output.selected_token_logits] == [(2, s, config.num_labels) for s in selects]
    assert [tuple(t.shape) for t in output.dropped_token_logits] == [
        (2, n - s, config.num_labels) for n, s in zip(token_counts, selects)
    ]
    assert [tuple(t.shape) for t in output.selected_indices] == [(2, s) for s in selects]
    assert (output.loss_combiner is not None) == config.use_combiner


def test_paper_taps_on_swin_at_384_give_the_paper_token_grids():
    config = PimConfig(
        backbone="swin_large_patch4_window12_384",
        backbone_kwargs={**TINY_SWIN, "window_size": 12},
        feature_taps="paper",
        image_size=384,
        num_labels=3,
        fpn_size=16,
        proj_type="Linear",
        upsample_type="Conv",
        num_selects=[2048, 512, 128, 32],
    )
    model = PimForImageClassification(config).eval()
    assert model.pim.backbone.grid_sizes == [48, 24, 12, 12]
    assert model.pim.backbone.channels == [16, 32, 64, 64]  # 2C, 4C, 8C, 8C: after each patch merging
    with torch.no_grad():
        output = model(torch.randn(1, 3, 384, 384))
    assert [t.shape[1] for t in output.token_logits] == [2304, 576, 144, 144]
    assert output.logits.shape == (1, 3)


def test_paper_taps_are_the_stage_outputs_after_patch_merging():
    model = tiny_model("swin", feature_taps="paper", num_selects=[16, 8, 4, 2]).eval()
    swin = model.pim.backbone.model
    x = images(1)
    with torch.no_grad():
        taps = model.pim.backbone(x)
        stage_outputs = []
        hidden = swin.patch_embed(x)
        for stage in swin.layers:
            hidden = stage(hidden)
            stage_outputs.append(hidden)
        expected = [swin.layers[i + 1].downsample(stage_outputs[i]) for i in range(3)] + [stage_outputs[3]]
    for tap, reference in zip(taps, expected):
        torch.testing.assert_close(tap, reference.permute(0, 3, 1, 2))


def test_paper_taps_refuse_a_backbone_that_is_not_swin():
    with pytest.raises(ValueError, match="not a timm Swin model"):
        tiny_model("test_resnet", feature_taps="paper")


def naive_selection(tokens, logits, num_select):
    """Per-sample reference: sort tokens by max softmax probability, keep the first `num_select`."""
    features, selected_logits, dropped_logits, indices = [], [], [], []
    for sample_tokens, sample_logits in zip(tokens, logits):
        confidence = sample_logits.softmax(-1).max(-1).values
        order = torch.argsort(confidence, descending=True)
        features.append(sample_tokens[order[:num_select]])
        selected_logits.append(sample_logits[order[:num_select]])
        dropped_logits.append(sample_logits[order[num_select:]])
        indices.append(order[:num_select])
    return [torch.stack(x) for x in (features, selected_logits, dropped_logits, indices)]


def test_batched_selector_equals_naive_per_sample_selection():
    generator = torch.Generator().manual_seed(0)
    tokens = [torch.randn(3, n, 8, generator=generator) for n in (64, 16, 4)]
    logits = [torch.randn(3, n, 5, generator=generator) for n in (64, 16, 4)]
    selection = WeaklySupervisedSelector([10, 16, 1])(tokens, logits)
    for layer, num_select in enumerate([10, 16, 1]):
        features, selected, dropped, indices = naive_selection(tokens[layer], logits[layer], num_select)
        torch.testing.assert_close(selection.features[layer], features)
        torch.testing.assert_close(selection.logits[layer], selected)
        torch.testing.assert_close(selection.indices[layer], indices)
        # The dropped set is the complement (its order is irrelevant to the loss): compare sorted rows.
        torch.testing.assert_close(
            selection.dropped_logits[layer].sort(dim=1).values, dropped.sort(dim=1).values
        )


def test_selector_splits_tokens_exactly_even_when_confidences_tie():
    logits = [torch.zeros(2, 16, 5)]  # every token equally (un)confident
    selection = WeaklySupervisedSelector([6])(logits, logits)
    assert selection.dropped_logits[0].shape == (2, 10, 5)
    for sample in range(2):
        assert len(set(selection.indices[0][sample].tolist())) == 6


def test_each_loss_term_matches_a_hand_computation():
    model = tiny_model("test_resnet", lambda_b=0.5, lambda_s=0.25, lambda_n=5.0, lambda_c=1.0).eval()
    labels = torch.tensor([1, 4])
    output = model(images(), labels=labels)

    loss_layers = sum(F.cross_entropy(logits.mean(1), labels) for logits in output.token_logits)
    loss_selected = 0.0
    loss_dropped = 0.0
    for selected, dropped in zip(output.selected_token_logits, output.dropped_token_logits):
        repeated = labels[:, None].expand(-1, selected.shape[1]).reshape(-1)
        loss_selected += F.cross_entropy(selected.reshape(-1, 5), repeated)
        loss_dropped += ((torch.tanh(dropped) + 1) ** 2).mean()
    loss_combiner = F.cross_entropy(output.logits, labels)
    torch.testing.assert_close(output.loss_layers, loss_layers)
    torch.testing.assert_close(output.loss_selected, loss_selected)
    torch.testing.assert_close(output.loss_dropped, loss_dropped)
    torch.testing.assert_close(output.loss_combiner, loss_combiner)
    expected = 0.5 * loss_layers + 0.25 * loss_selected + 5.0 * loss_dropped + 1.0 * loss_combiner
    torch.testing.assert_close(output.loss, expected)


def test_label_smoothing_smooths_every_cross_entropy_and_the_loss_is_the_weighted_sum_of_the_smoothed_parts():
    model = tiny_model("test_resnet", lambda_b=0.5, lambda_s=0.25, lambda_n=5.0, lambda_c=1.0, label_smoothing=0.2)
    model.eval()
    labels = torch.tensor([1, 4])
    output = model(images(), labels=labels)

    def smoothed(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # (1 - ε) one-hot + ε / K
        targets = F.one_hot(targets, 5).float() * 0.8 + 0.2 / 5
        return -(targets * logits.log_softmax(-1)).sum(-1).mean()

    loss_layers = sum(smoothed(logits, labels) for logits in output.layer_logits)
    loss_selected = sum(
        smoothed(selected.flatten(0, 1), labels.repeat_interleave(selected.shape[1]))
        for selected in output.selected_token_logits
    )
    torch.testing.assert_close(output.loss_layers, loss_layers)
    torch.testing.assert_close(output.loss_selected, loss_selected)
    torch.testing.assert_close(output.loss_combiner, smoothed(output.logits, labels))
    assert not torch.isclose(output.loss_combiner, F.cross_entropy(output.logits, labels))
    expected = 0.5 * loss_layers + 0.25 * loss_selected + 5.0 * output.loss_dropped + 1.0 * output.loss_combiner
    torch.testing.assert_close(output.loss, expected)

    plain = tiny_model("test_resnet", **MODULE_SWITCHES["backbone only"], label_smoothing=0.2).eval()
    plain_output = plain(images(), labels=labels)
    torch.testing.assert_close(plain_output.loss, smoothed(plain_output.logits, labels))


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_label_smoothing_outside_zero_one_is_refused(value):
    expected = f"`label_smoothing` must be in [0, 1) (0: no smoothing, 0.1 is common), got {value}."
    with pytest.raises(ValueError, match=re.escape(expected)):
        tiny_config("test_resnet", label_smoothing=value)


def test_backbone_only_loss_is_plain_cross_entropy_of_a_pooled_linear_head():
    model = tiny_model("test_resnet", **MODULE_SWITCHES["backbone only"]).eval()
    labels = torch.tensor([2, 0])
    x = images()
    output = model(x, labels=labels)
    pooled = model.pim.backbone(x)[-1].mean((2, 3))
    torch.testing.assert_close(output.logits, model.classifier(pooled))
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, labels))


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_backward_reaches_backbone_and_every_head(backbone):
    model = tiny_model(backbone, lambda_s=1.0)
    with torch.no_grad():
        model.pim.combiner.alpha.fill_(0.5)  # at alpha=0 (its init) the data-dependent adjacency gets no gradient
    model(images(), labels=torch.tensor([0, 1])).loss.backward()

    def has_gradient(parameter: torch.nn.Parameter) -> bool:
        return parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)

    first_backbone_weight = next(model.pim.backbone.parameters())
    assert has_gradient(first_backbone_weight)
    heads_without_gradient = [
        name for name, p in model.named_parameters() if not name.startswith("pim.backbone.") and not has_gradient(p)
    ]
    assert heads_without_gradient == []


def test_building_a_model_keeps_the_backbone_weights_and_batchnorm_statistics():
    config = tiny_config("test_resnet")
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", features_only=True, out_indices=(-4, -3, -2, -1))
    torch.manual_seed(0)
    model = PimForImageClassification(config)
    reference_state = reference.state_dict()
    for key, value in model.pim.backbone.model.state_dict().items():
        torch.testing.assert_close(value, reference_state[key], msg=f"post_init changed backbone tensor {key}")


def test_load_pretrained_backbone_reads_timm_weights_from_a_local_file(tmp_path):
    source = timm.create_model("test_resnet", pretrained=False)
    weights = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), weights)
    model = tiny_model("test_resnet")
    model.load_pretrained_backbone(weights_file=weights)
    torch.testing.assert_close(model.pim.backbone.model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit", "swin"])
def test_save_and_from_pretrained_give_identical_logits(tmp_path, backbone):
    model = tiny_model(backbone).eval()
    x = images()
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, PimForImageClassification)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, expected, rtol=0, atol=0)


REMOTE_CODE_CHECK = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_pim"] = None  # this repo's package must not be importable
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoModelForImageClassification, pipeline

    folder = sys.argv[1]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    with torch.no_grad():
        logits = model(torch.load(folder + "/inputs.pt")).logits
    print("MAX_DIFF", (logits - torch.load(folder + "/logits.pt")).abs().max().item())
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    image = Image.new("RGB", (90, 70), (200, 30, 30))
    print("LABEL", classifier(image)[0]["label"])

    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(base).__name__ == "PimModel" and "transformers_modules" in type(base).__module__
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    embedding = torch.tensor(extractor(image))  # (1, D)
    print("EMBEDDING_DIFF", (embedding - torch.load(folder + "/embedding.pt")).abs().max().item())
    """
)


@pytest.mark.parametrize("backbone", ["test_resnet", "swin"])
def test_remote_code_export_loads_without_this_repository(tmp_path, backbone):
    model = tiny_model(backbone).eval()
    x = images()
    with torch.no_grad():
        torch.save(model(x).logits, tmp_path / "logits.pt")
    torch.save(x, tmp_path / "inputs.pt")
    processor = PimImageProcessor.for_image_size(64)
    with torch.no_grad():  # the embedding of the image the subprocess gives the feature-extraction pipeline
        pixel_values = processor(Image.new("RGB", (90, 70), (200, 30, 30)), return_tensors="pt")["pixel_values"]
        torch.save(model.pim(pixel_values).pooler_output, tmp_path / "embedding.pt")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    for code_file in ("configuration_pim.py", "modeling_pim.py", "image_processing_pim.py"):
        assert (tmp_path / code_file).exists()

    stdout = run_as_remote_code(REMOTE_CODE_CHECK, tmp_path)
    assert "MAX_DIFF 0.0" in stdout
    assert float(stdout.split("EMBEDDING_DIFF ")[1].split()[0]) < 1e-5
    assert any(f"LABEL {label}" in stdout for label in LABELS)


def test_pipeline_returns_label_names(tmp_path):
    model = tiny_model("test_resnet").eval()
    model.save_pretrained(tmp_path)
    PimImageProcessor.for_image_size(64).save_pretrained(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path), trust_remote_code=True)
    predictions = classifier(Image.new("RGB", (120, 90), (10, 120, 200)), top_k=5)
    assert sorted(p["label"] for p in predictions) == sorted(LABELS)
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-4


def test_image_processor_is_registered_and_does_the_paper_eval_transform(tmp_path):
    processor = PimImageProcessor.for_image_size(384)
    assert processor.size == {"height": 510, "width": 510}
    assert processor.crop_size == {"height": 384, "width": 384}
    tiny_config("test_resnet").save_pretrained(tmp_path)
    PimImageProcessor.for_image_size(64).save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").exists()
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "PimImageProcessor"
    pixel_values = loaded(Image.new("L", (100, 60), 128), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    ("overrides", "message", "fields"),
    [
        ({"use_selection": False, "use_combiner": True}, "needs the selector", ("use_combiner", "use_selection")),
        ({"num_selects": [16, 8, 4]}, "one number of selected tokens per layer", ("num_selects", "out_indices")),
        ({"num_selects": [16, 8, 4, 5]}, r"num_selects\[3\]=5 but layer 3 .* has only 4 tokens",
         ("num_selects", "image_size")),
        ({"upsample_type": "Nearest"}, "upsample_type", ("upsample_type",)),
        ({"proj_type": "MLP"}, "proj_type", ("proj_type",)),
        ({"backbone": "not_a_timm_model"}, "not a timm model name", ("backbone",)),
        ({"image_size": 72}, "not a multiple of the largest stride", ("image_size",)),
        ({"tokens_per_graph_node": 64}, "tokens_per_graph_node", ("num_selects", "tokens_per_graph_node")),
        ({"feature_taps": "hooks"}, "feature_taps", ("feature_taps",)),
        ({"lambda_s": -1.0}, r"`lambda_s` must be 0 or more \(a loss weight\), got -1.0", ("lambda_s",)),
        ({"combiner_dropout": 1.0}, r"`combiner_dropout` is a probability in \[0, 1\), got 1.0", ("combiner_dropout",)),
        ({"backbone_kwargs": {"no_such_argument": 1}}, "are not arguments 'test_resnet' accepts", ("backbone_kwargs",)),
    ],
)  # fmt: skip
def test_invalid_configurations_raise_clear_errors_naming_the_fields(overrides, message, fields):
    with pytest.raises(PimConfigError, match=message) as error:
        tiny_model("test_resnet", **overrides)
    assert isinstance(error.value, ValueError) and error.value.fields == fields


@pytest.mark.parametrize(
    ("family", "out_indices", "message"),
    [
        ("test_resnet", [7, 8, 9, 10], "out_indices=[7, 8, 9, 10]: 'test_resnet' has 5 feature levels (0 to 4, or -5 "
         "to -1 from the end): choose levels in that range."),
        ("test_vit", [-9, 2, 3, 4], "out_indices=[-9, 2, 3, 4]: 'test_vit' has 6 feature levels (0 to 5, or -6 to -1 "
         "from the end): choose levels in that range."),  # timm raises an AssertionError here, not an IndexError
        ("test_resnet", [-1, -1, -1, -1], "out_indices=[-1, -1, -1, -1] are the feature levels [4, 4, 4, 4] of "
         "'test_resnet': give distinct levels from shallow to deep (increasing), e.g. [1, 2, 3, 4]."),
        ("test_resnet", [-1, -2, -3, -4], "out_indices=[-1, -2, -3, -4] are the feature levels [4, 3, 2, 1] of "
         "'test_resnet': give distinct levels from shallow to deep (increasing), e.g. [1, 2, 3, 4]."),
    ],
)  # fmt: skip
def test_out_indices_must_name_distinct_backbone_levels_from_shallow_to_deep(family, out_indices, message):
    with torch.device("meta"), pytest.raises(PimConfigError) as error:
        tiny_model(family, out_indices=out_indices, num_selects=[1, 1, 1, 1])
    assert str(error.value) == message and error.value.fields == ("out_indices",)
    with torch.device("meta"):  # negative indices count from the end: levels 1, 2, 3, 4
        assert tiny_model(family, out_indices=[1, 2, -2, -1]).base_model.backbone.out_indices == (1, 2, -2, -1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fpn_size", "abc", "`fpn_size` must be an integer, got 'abc' (str)."),
        ("fpn_size", 3.5, "`fpn_size` must be an integer, got 3.5 (float)."),
        ("image_size", True, "`image_size` must be an integer, got True (bool)."),
        ("num_selects", 3, "`num_selects` must be a list of integers, got 3 (int)."),
        ("num_selects", [8, "4", 2, 1], "`num_selects` must be a list of integers, got [8, '4', 2, 1] (list)."),
        ("out_indices", "-1", "`out_indices` must be a list of integers, got '-1' (str)."),
        ("use_fpn", "yes", "`use_fpn` must be true or false, got 'yes' (str)."),
        ("lambda_b", "0.5", "`lambda_b` must be a number, got '0.5' (str)."),
        ("backbone", None, "`backbone` must be a string, got None (NoneType)."),
        ("backbone_kwargs", [1], "`backbone_kwargs` must be a dictionary with string keys or null, got [1] (list)."),
    ],
)
def test_fields_of_the_wrong_type_are_refused_naming_the_field_the_value_and_the_type(field, value, message):
    with pytest.raises(ValueError) as error:
        PimConfig(**{field: value})
    assert str(error.value) == message


def test_integers_are_numbers_and_tuples_are_lists():
    config = PimConfig(lambda_b=1, out_indices=(-2, -1), num_selects=(32, 4), backbone_kwargs=None)
    assert (config.lambda_b, config.out_indices, config.num_selects, config.backbone_kwargs) == (1, [-2, -1], [32, 4], {})


def test_conv_upsampling_refuses_other_image_sizes_at_forward():
    model = tiny_model("test_vit")
    with pytest.raises(ValueError, match="configured for 64×64 images"):
        model(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("feature_taps", ["stages", "paper"])
def test_gradient_checkpointing_gives_the_same_gradients(feature_taps):
    x, labels = images(), torch.tensor([0, 1])
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model("swin", feature_taps=feature_taps, combiner_dropout=0.0)
        if checkpointing:
            model.gradient_checkpointing_enable()
            timm_model = model.pim.backbone.model
            stages = timm_model.layers if feature_taps == "paper" else [timm_model]
            assert all(stage.grad_checkpointing for stage in stages)
        model(x, labels=labels).loss.backward()
        gradients.append(model.pim.backbone.model.patch_embed.proj.weight.grad.clone())
    torch.testing.assert_close(gradients[0], gradients[1])


def test_torch_compile_does_not_break_the_forward():
    model = tiny_model("test_resnet").eval()
    x = images()
    with torch.no_grad():
        expected = model(x).logits
        compiled = torch.compile(model, backend="aot_eager")
        torch.testing.assert_close(compiled(x).logits, expected, rtol=1e-5, atol=1e-5)
