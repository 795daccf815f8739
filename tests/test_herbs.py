"""HERBS (Chou et al. 2023) as PimConfig options: every term against a hand computation, the schedule of the
refinement temperature, and PIM left bit-identical when the options are off (training and resume with the
temperature: tests/test_train_pim.py)."""

import pytest
import torch
import torch.nn.functional as F

from modeling_pim import PimConfig, PimForImageClassification
from modeling_pim.modeling_pim import BottomUpFeaturePyramid, WeaklySupervisedSelector
from modeling_pim.training.metrics import sum_of_softmax_ensemble


NUM_LABELS = 5
TINY_SWIN = {"embed_dim": 8, "depths": (2, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}
# Swin with the paper taps at 64 px: 64, 16, 4, 4 tokens (the last two layers have as many tokens, as at 384 px).
SWIN = {
    "backbone": "swin_tiny_patch4_window7_224",
    "backbone_kwargs": TINY_SWIN,
    "feature_taps": "paper",
    "proj_type": "Linear",
    "upsample_type": "Conv",
}
HERBS = {
    "use_bottom_up_fpn": True,
    "selection_rule": "predicted_class",
    "lambda_b": 0.3,
    "lambda_n": 5.0,
    "lambda_c": 1.0,
    "lambda_b0": 1.375,
    "refinement_temperature": 64.0,
    "refinement_temperature_halving_epochs": 10,
}


def tiny_model(herbs: bool = True, **overrides) -> PimForImageClassification:
    torch.manual_seed(0)
    kwargs = {
        "image_size": 64,
        "num_labels": NUM_LABELS,
        "backbone_pretrained": False,
        "fpn_size": 16,
        "num_selects": [16, 8, 4, 2],
        "tokens_per_graph_node": 4,
        **SWIN,
        **(HERBS if herbs else {}),
        **overrides,
    }
    return PimForImageClassification(PimConfig(**kwargs))


def images(batch_size: int = 2) -> torch.Tensor:
    return torch.randn(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_herbs_outputs_have_the_documented_shapes():
    model = tiny_model().eval()
    output = model(images(), labels=torch.tensor([0, 3]))
    counts, selects = model.pim.backbone.token_counts, model.config.num_selects
    assert counts == [64, 16, 4, 4]
    assert output.logits.shape == (2, NUM_LABELS)
    assert [tuple(t.shape) for t in output.top_down_token_logits] == [(2, n, NUM_LABELS) for n in counts]
    assert [tuple(t.shape) for t in output.top_down_layer_logits] == [(2, NUM_LABELS)] * 4
    assert [tuple(t.shape) for t in output.token_logits] == [(2, n, NUM_LABELS) for n in counts]
    assert [tuple(t.shape) for t in output.selection_thresholds] == [(2,)] * 4
    assert [tuple(t.shape) for t in output.selected_token_logits] == [(2, s, NUM_LABELS) for s in selects]
    assert output.loss_refinement.ndim == 0 and torch.isfinite(output.loss)
    # `logits` is the combiner's, not an ensemble of heads.
    assert not torch.equal(output.logits, output.layer_logits[-1])


def test_options_off_leave_pim_bit_identical():
    """HERBS fields at values that switch nothing on: same modules, same outputs, bit for bit, as plain PIM."""
    pim = tiny_model(herbs=False)
    inactive = tiny_model(
        herbs=False,
        use_bottom_up_fpn=False,
        selection_rule="max_probability",
        lambda_b0=0.0,
        refinement_temperature=3.0,
        refinement_temperature_halving_epochs=2,
    )
    inactive.set_refinement_epoch(7)
    assert pim.state_dict().keys() == inactive.state_dict().keys()
    assert not any("bottom_up" in key or "top_down" in key for key in pim.state_dict())
    assert isinstance(pim.pim.feature_pyramid.token_upsamplers[-1], torch.nn.Identity)  # 4 → 4 tokens: PIM's identity
    labels = torch.tensor([1, 2])
    for mode in ("train", "eval"):
        outputs = []
        for model in (pim, inactive):
            torch.manual_seed(2)  # the same dropout and drop-path draws
            outputs.append(model.train(mode == "train")(images(), labels=labels))
        for name in outputs[0].keys():
            first, second = outputs[0][name], outputs[1][name]
            for a, b in zip(first, second) if isinstance(first, tuple) else [(first, second)]:
                assert torch.equal(a, b), (mode, name)
        assert outputs[0].top_down_token_logits is None and outputs[0].loss_refinement is None
        outputs[0].loss.backward()
        outputs[1].loss.backward()
    for (name, first), second in zip(pim.named_parameters(), inactive.parameters()):
        assert (first.grad is None and second.grad is None) or torch.equal(first.grad, second.grad), name


def naive_predicted_class_selection(logits: torch.Tensor, num_select: int):
    """The authors' rule, one sample at a time: rank tokens by the probability of the class the layer predicts."""
    selected, dropped, thresholds = [], [], []
    for sample in logits:
        predicted = sample.mean(0).softmax(-1).argmax()
        scores = sample.softmax(-1)[:, predicted]
        ranked_scores, order = scores.sort(descending=True)
        selected.append(sample[order[:num_select]])
        dropped.append(sample[order[num_select:]])
        thresholds.append(ranked_scores[num_select])
    return torch.stack(selected), torch.stack(dropped), torch.stack(thresholds)


def test_predicted_class_selector_equals_the_authors_rule_sample_by_sample():
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(3, n, NUM_LABELS, generator=generator) for n in (64, 16, 4)]
    selection = WeaklySupervisedSelector([10, 5, 1], rule="predicted_class")(logits, logits)
    for layer, num_select in enumerate([10, 5, 1]):
        selected, dropped, thresholds = naive_predicted_class_selection(logits[layer], num_select)
        torch.testing.assert_close(selection.logits[layer], selected, rtol=0, atol=0)
        torch.testing.assert_close(selection.thresholds[layer], thresholds, rtol=0, atol=0)
        torch.testing.assert_close(
            selection.dropped_logits[layer].sort(dim=1).values, dropped.sort(dim=1).values, rtol=0, atol=0
        )


def test_the_two_selection_rules_rank_tokens_differently():
    # Token 0 is very sure of class 1, tokens 1-3 fairly sure of class 0, which the layer predicts on average.
    logits = torch.tensor([[[0.0, 6.0, 0.0], [3.0, 0.0, 0.0], [2.9, 0.0, 0.0], [2.8, 0.0, 0.0]]])
    by_max = WeaklySupervisedSelector([1], rule="max_probability")([logits], [logits])
    by_class = WeaklySupervisedSelector([1], rule="predicted_class")([logits], [logits])
    assert by_max.indices[0].tolist() == [[0]]
    assert by_class.indices[0].tolist() == [[1]]
    expected_threshold = logits[0, 2].softmax(-1)[0]  # the first dropped token's probability of class 0
    torch.testing.assert_close(by_class.thresholds[0], expected_threshold[None])


def test_a_layer_that_keeps_every_token_has_a_zero_threshold():
    logits = torch.randn(2, 4, NUM_LABELS)
    selection = WeaklySupervisedSelector([4], rule="predicted_class")([logits], [logits])
    assert selection.dropped_logits[0].shape == (2, 0, NUM_LABELS)
    assert selection.thresholds[0].tolist() == [0.0, 0.0]


def test_bottom_up_pyramid_equals_a_hand_computation():
    config = tiny_model().config
    pyramid = BottomUpFeaturePyramid([8, 4, 2, 2], config).eval()
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 16, side, side, generator=generator) for side in (8, 4, 2, 2)]

    def project(index: int, feature: torch.Tensor) -> torch.Tensor:  # Linear → ReLU → Linear on every token
        first, _, second = pyramid.projections[index].layers
        return second(F.relu(first(feature.flatten(2).transpose(1, 2))))  # (B, N, D)

    expected = [project(i, feature) for i, feature in enumerate(features)]
    for i in range(3):  # from the shallowest layer down: x[i+1] += Conv1d over the token axis of x[i]
        expected[i + 1] = expected[i + 1] + pyramid.token_downsamplers[i](expected[i])
    result = pyramid(features)
    for ours, theirs in zip(result, expected):
        torch.testing.assert_close(ours.flatten(2).transpose(1, 2), theirs)
    assert [tuple(conv.weight.shape) for conv in pyramid.token_downsamplers] == [(16, 64, 1), (4, 16, 1), (4, 4, 1)]


def test_herbs_mixes_tokens_with_a_learned_conv_also_between_layers_of_equal_size():
    model = tiny_model()
    last = model.pim.feature_pyramid.token_upsamplers[-1]
    assert isinstance(last, torch.nn.Conv1d) and last.weight.shape == (4, 4, 1)


def test_bilinear_bottom_up_pyramid_for_cnn_backbones():
    model = tiny_model(backbone="test_resnet", backbone_kwargs={}, feature_taps="stages", proj_type="Conv",
                       upsample_type="Bilinear", num_selects=[8, 4, 2, 1]).eval()
    features = model.pim.feature_pyramid(model.pim.backbone(images()))
    expected = [projection(feature) for projection, feature in zip(model.pim.bottom_up_pyramid.projections, features)]
    for i in range(3):
        expected[i + 1] = expected[i + 1] + F.interpolate(
            expected[i], size=expected[i + 1].shape[-2:], mode="bilinear", align_corners=False
        )
    for ours, theirs in zip(model.pim.bottom_up_pyramid(features), expected):
        torch.testing.assert_close(ours, theirs)
    assert model(images(), labels=torch.tensor([0, 1])).loss.isfinite()


def test_each_herbs_loss_term_matches_a_hand_computation():
    model = tiny_model().eval()
    model.set_refinement_epoch(25)  # T = 64 / 4
    labels = torch.tensor([1, 4])
    output = model(images(), labels=labels)

    temperature = 16.0
    loss_refinement = 0.0
    for top_down, bottom_up in zip(output.top_down_token_logits, output.token_logits):
        p = (bottom_up / temperature).softmax(-1)
        log_q = (top_down / temperature).log_softmax(-1)
        loss_refinement += (p * (p.log() - log_q)).sum() / p.numel()  # nn.KLDivLoss(), reduction "mean"
    loss_layers = sum(F.cross_entropy(logits.mean(1), labels) for logits in output.token_logits)
    loss_dropped = sum(  # layer 3 keeps all its 4 tokens: nothing dropped there
        ((torch.tanh(dropped) + 1) ** 2).mean() for dropped in output.dropped_token_logits if dropped.shape[1]
    )
    loss_combiner = F.cross_entropy(output.logits, labels)
    torch.testing.assert_close(output.loss_refinement, loss_refinement)
    torch.testing.assert_close(output.loss_layers, loss_layers)
    torch.testing.assert_close(output.loss_dropped, loss_dropped)
    expected = 0.3 * loss_layers + 5.0 * loss_dropped + 1.0 * loss_combiner + 1.375 * loss_refinement
    torch.testing.assert_close(output.loss, expected)
    for top_down in output.top_down_token_logits:  # the top-down heads are the "FPN1_" heads: their means
        assert top_down.shape[1] in model.pim.backbone.token_counts
    torch.testing.assert_close(output.top_down_layer_logits[0], output.top_down_token_logits[0].mean(1))


def test_refinement_trains_only_the_top_down_pyramid_heads():
    model = tiny_model()
    output = model(images(), labels=torch.tensor([0, 1]))
    output.loss_refinement.backward()
    # The bottom-up target is detached: its classifiers get nothing from this term; the top-down ones do.
    assert all(p.grad is None for p in model.pim.token_classifiers.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pim.top_down_token_classifiers.parameters()
               if p.ndim > 1)


def test_without_lambda_b0_the_refinement_is_logged_but_not_trained():
    model = tiny_model(lambda_b0=0.0)
    output = model(images(), labels=torch.tensor([0, 1]))
    assert output.loss_refinement is not None and not output.loss_refinement.requires_grad
    output.loss.backward()
    assert all(p.grad is None for p in model.pim.top_down_token_classifiers.parameters())


@pytest.mark.parametrize(
    ("epoch", "temperature"),
    [(0, 64.0), (9, 64.0), (9.99, 64.0), (10, 32.0), (19.5, 32.0), (25, 16.0), (79, 0.5)],
)
def test_current_refinement_temperature_is_halved_every_ten_epochs(epoch, temperature):
    model = tiny_model()
    model.set_refinement_epoch(epoch)
    assert model.current_refinement_temperature == temperature


def test_current_refinement_temperature_follows_the_configured_period_and_start():
    model = tiny_model(refinement_temperature=8.0, refinement_temperature_halving_epochs=3)
    temperatures = []
    for epoch in range(7):
        model.set_refinement_epoch(epoch)
        temperatures.append(model.current_refinement_temperature)
    assert temperatures == [8.0, 8.0, 8.0, 4.0, 4.0, 4.0, 2.0]
    assert model.config.refinement_temperature == 8.0  # the starting T, never changed by the schedule
    assert not hasattr(model, "refinement_temperature")  # one name each: the config's start, the model's current T


def test_sum_of_softmax_ensemble_is_the_authors_diagnostic():
    model = tiny_model().eval()
    output = model(images())
    heads = [*output.layer_logits, *output.top_down_layer_logits, output.logits]
    expected = sum(head.softmax(-1) for head in heads)
    torch.testing.assert_close(sum_of_softmax_ensemble(output), expected)
    pim_output = tiny_model(herbs=False).eval()(images())
    expected = sum(head.softmax(-1) for head in [*pim_output.layer_logits, pim_output.logits])
    torch.testing.assert_close(sum_of_softmax_ensemble(pim_output), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"selection_rule": "entropy"}, "selection_rule"),
        ({"use_fpn": False, "use_bottom_up_fpn": True}, "set `use_fpn=True`"),
        ({"use_bottom_up_fpn": False, "lambda_b0": 1.0}, "set `use_bottom_up_fpn=True`, or `lambda_b0=0`"),
        ({"lambda_b0": -1.0}, "`lambda_b0` must be 0 or more"),
        ({"refinement_temperature": 0.0}, "`refinement_temperature` must be positive"),
        ({"refinement_temperature_halving_epochs": 0}, "positive number of epochs"),
    ],
)
def test_invalid_herbs_configurations_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        PimConfig(**{**HERBS, **overrides})


def test_save_and_from_pretrained_keep_every_herbs_head(tmp_path):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    loaded = PimForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.use_bottom_up_fpn and loaded.config.selection_rule == "predicted_class"
    with torch.no_grad():
        expected, actual = model(images()), loaded(images())
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)
    for ours, theirs in zip(actual.top_down_token_logits, expected.top_down_token_logits):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
