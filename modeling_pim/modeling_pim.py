"""PyTorch PIM: a plug-in module for fine-grained visual classification on top of any timm backbone.

Data flow (B batch, K classes, L layers, N_i tokens, C_i channels, D = `fpn_size`, S_i = `num_selects[i]`):
timm backbone → L feature maps (B, C_i, h_i, w_i) → [FeaturePyramid] (B, D, h_i, w_i) → TokenClassifier per layer
(B, N_i, K) → [WeaklySupervisedSelector] S_i most confident tokens per layer → [GraphCombiner] (B, D) → classifier
(B, K).

HERBS (Chou et al., arXiv 2303.06442; `use_bottom_up_fpn`, `selection_rule="predicted_class"`, `lambda_b0`) is the
same model with a [BottomUpFeaturePyramid] after the top-down one: the top-down layers keep token classifiers of their
own (the students of the refinement term), the selector and the combiner read the bottom-up layers.

Base model and head, as transformers' ConvNeXt and Swin split them:

- [`PimModel`] (the base model, `AutoModel`) runs everything up to the fine-grained embedding `pooler_output`
  `(B, D)`: the combiner's pooled graph representation before its classifier, or the mean of the deepest layer's tokens
  when the combiner is off. The token classifiers belong to it although they have one output per class: the selector
  ranks tokens by the confidence of their class distribution, so there is no selection, and no combiner input, without
  them. The embedding is therefore the one a model trained on some classes finds discriminative: use it for
  fine-grained retrieval (cosine similarity) among images of related classes.
- [`PimForImageClassification`] adds what only classification needs: the final linear classifier (with its dropout)
  on `pooler_output`, and the losses. With the combiner off, the logits are the deepest layer's mean token logits
  (already computed by the base model) and no classifier is added; with every module off, the classifier reads the
  pooled last backbone layer.

`pipeline("image-feature-extraction", model=folder, trust_remote_code=True)` loads [`PimModel`] and returns
`pooler_output` (the first field of [`PimModelOutput`]).

Checkpoints saved before this split kept every module at the top level (`backbone.*`, `combiner.*`, ...) and the
final classifier inside the combiner (`combiner.classifier.*`); [`LEGACY_KEY_MAPPING`] renames them, see
[`PimPreTrainedModel.from_pretrained`].
"""

import copy
import re
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from timm.models import checkpoint_seq
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_pim import PimConfig, PimConfigError


@dataclass
class PimModelOutput(ModelOutput):
    r"""
    Output of [`PimModel`]: the fine-grained embedding and what the classification head needs.

    Args:
        pooler_output (`torch.FloatTensor` of shape `(B, D)`):
            The fine-grained embedding: the combiner's pooled graph representation before its classifier
            (`D = fpn_size`, or `comb_proj_size` without the pyramid), or the mean of the deepest layer's tokens when
            the combiner is off (`D = fpn_size` with the pyramid, else the backbone's last channels). First field, so
            that `pipeline("image-feature-extraction")` returns it with or without `pool=True`.
        last_hidden_state (`torch.FloatTensor` of shape `(B, N_L, C_L)`):
            The tokens of the deepest layer PIM reads (pyramid features with `use_fpn`), row-major.
        layer_logits (`tuple(torch.FloatTensor)` of shape `(B, K)` per layer, *optional*):
            Mean of every layer's token logits (`None` when neither the pyramid nor the selector is used).
        token_logits (`tuple(torch.FloatTensor)` of shape `(B, N_i, K)` per layer, *optional*):
            Logits of every token of every layer, tokens in row-major order of the layer's feature map.
        selected_token_logits (`tuple(torch.FloatTensor)` of shape `(B, S_i, K)` per layer, *optional*):
            Logits of the tokens kept by the selector, most confident first.
        dropped_token_logits (`tuple(torch.FloatTensor)` of shape `(B, N_i - S_i, K)` per layer, *optional*):
            Logits of the tokens the selector dropped.
        selected_indices (`tuple(torch.LongTensor)` of shape `(B, S_i)` per layer, *optional*):
            Row-major positions of the selected tokens in their layer's feature map.
        selection_thresholds (`tuple(torch.FloatTensor)` of shape `(B,)` per layer, *optional*):
            The selector's score of the highest-ranked dropped token of every sample (0 when a layer keeps all its
            tokens): HERBS' per-sample threshold.
        top_down_layer_logits (`tuple(torch.FloatTensor)` of shape `(B, K)` per layer, *optional*):
            With `use_bottom_up_fpn`: mean of the top-down pyramid's token logits.
        top_down_token_logits (`tuple(torch.FloatTensor)` of shape `(B, N_i, K)` per layer, *optional*):
            With `use_bottom_up_fpn`: logits of every token of the top-down pyramid (the other logits are then the
            bottom-up pyramid's).
    """

    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    layer_logits: tuple[torch.FloatTensor, ...] | None = None
    token_logits: tuple[torch.FloatTensor, ...] | None = None
    selected_token_logits: tuple[torch.FloatTensor, ...] | None = None
    dropped_token_logits: tuple[torch.FloatTensor, ...] | None = None
    selected_indices: tuple[torch.LongTensor, ...] | None = None
    selection_thresholds: tuple[torch.FloatTensor, ...] | None = None
    top_down_layer_logits: tuple[torch.FloatTensor, ...] | None = None
    top_down_token_logits: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class PimImageClassifierOutput(ModelOutput):
    r"""
    Output of [`PimForImageClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            `lambda_b * loss_layers + lambda_s * loss_selected + lambda_n * loss_dropped + lambda_c * loss_combiner
            + lambda_b0 * loss_refinement`, or the cross-entropy of `logits` when every PIM module is off. Every
            cross-entropy uses `config.label_smoothing`.
        logits (`torch.FloatTensor` of shape `(B, K)`):
            The final head: the combiner's logits, or the deepest layer's when the combiner is off, or the pooled
            linear head's when every module is off. *The* prediction of the model.
        layer_logits (`tuple(torch.FloatTensor)` of shape `(B, K)` per layer, *optional*):
            Mean of every layer's token logits. Diagnostics, not predictions to pick from.
        token_logits (`tuple(torch.FloatTensor)` of shape `(B, N_i, K)` per layer, *optional*):
            Logits of every token of every layer, tokens in row-major order of the layer's feature map.
        selected_token_logits (`tuple(torch.FloatTensor)` of shape `(B, S_i, K)` per layer, *optional*):
            Logits of the tokens kept by the selector, most confident first.
        dropped_token_logits (`tuple(torch.FloatTensor)` of shape `(B, N_i - S_i, K)` per layer, *optional*):
            Logits of the tokens the selector dropped.
        selected_indices (`tuple(torch.LongTensor)` of shape `(B, S_i)` per layer, *optional*):
            Row-major positions of the selected tokens in their layer's feature map (for visualisation).
        selection_thresholds (`tuple(torch.FloatTensor)` of shape `(B,)` per layer, *optional*):
            The selector's score (see `selection_rule`) of the highest-ranked dropped token of every sample, 0 when a
            layer keeps all its tokens. HERBS' per-sample threshold; the authors' loss does not use it.
        top_down_layer_logits (`tuple(torch.FloatTensor)` of shape `(B, K)` per layer, *optional*):
            With `use_bottom_up_fpn`: mean of the top-down pyramid's token logits (the authors' "FPN1_" heads).
            Diagnostics, not predictions to pick from.
        top_down_token_logits (`tuple(torch.FloatTensor)` of shape `(B, N_i, K)` per layer, *optional*):
            With `use_bottom_up_fpn`: logits of every token of the top-down pyramid (`layer_logits`, `token_logits`
            and the selector then belong to the bottom-up pyramid).
        loss_layers (`torch.FloatTensor` of shape `()`, *optional*):
            Sum over layers of the cross-entropy of `layer_logits`.
        loss_selected (`torch.FloatTensor` of shape `()`, *optional*):
            Sum over layers of the cross-entropy of every selected token's logits.
        loss_dropped (`torch.FloatTensor` of shape `()`, *optional*):
            Sum over layers of the mean squared error between `tanh(dropped_token_logits)` and -1.
        loss_combiner (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of the combiner's logits.
        loss_refinement (`torch.FloatTensor` of shape `()`, *optional*):
            With `use_bottom_up_fpn`: sum over layers of the high-temperature refinement KL divergence (see
            `PimConfig.lambda_b0`) at the current temperature.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    layer_logits: tuple[torch.FloatTensor, ...] | None = None
    token_logits: tuple[torch.FloatTensor, ...] | None = None
    selected_token_logits: tuple[torch.FloatTensor, ...] | None = None
    dropped_token_logits: tuple[torch.FloatTensor, ...] | None = None
    selected_indices: tuple[torch.LongTensor, ...] | None = None
    selection_thresholds: tuple[torch.FloatTensor, ...] | None = None
    top_down_layer_logits: tuple[torch.FloatTensor, ...] | None = None
    top_down_token_logits: tuple[torch.FloatTensor, ...] | None = None
    loss_layers: torch.FloatTensor | None = None
    loss_selected: torch.FloatTensor | None = None
    loss_dropped: torch.FloatTensor | None = None
    loss_combiner: torch.FloatTensor | None = None
    loss_refinement: torch.FloatTensor | None = None


@dataclass
class TokenSelection:
    """What the selector keeps and drops, one entry per layer."""

    features: list[torch.Tensor]
    logits: list[torch.Tensor]
    dropped_logits: list[torch.Tensor]
    indices: list[torch.Tensor]
    thresholds: list[torch.Tensor]


def _is_swin(model: nn.Module) -> bool:
    stages = getattr(model, "layers", None)
    return (
        hasattr(model, "patch_embed")
        and isinstance(stages, nn.Sequential)
        and len(stages) == 4
        and all(hasattr(stage, "downsample") and hasattr(stage, "blocks") for stage in stages)
    )


class TimmFeatureBackbone(nn.Module):
    """
    A timm model that returns the L feature maps PIM taps, each as `(B, C_i, h_i, w_i)` (a view for channels-last
    backbones such as Swin). Never patches timm: stages come from `features_only`, the paper's Swin taps from the
    public `patch_embed` / `layers[i].downsample` / `layers[i].blocks` modules.
    """

    def __init__(self, config: PimConfig):
        super().__init__()
        self.feature_taps = config.feature_taps
        self.out_indices = tuple(config.out_indices)
        self.model = self.create_timm_model(config, pretrained=False)
        if self.feature_taps == "paper":
            if not _is_swin(self.model):
                raise PimConfigError(
                    f"feature_taps='paper' taps the 4 stages of a Swin Transformer after their patch merging, but "
                    f"backbone={config.backbone!r} is not a timm Swin model: use feature_taps='stages'.",
                    ["feature_taps", "backbone"],
                )
            stage_info = self.model.feature_info
            taps = [stage_info[1], stage_info[2], stage_info[3], stage_info[3]]
            self.channels = [tap["num_chs"] for tap in taps]
            self.reductions = [tap["reduction"] for tap in taps]
            self.channels_last = True
        else:
            self.channels = self.model.feature_info.channels()
            self.reductions = self.model.feature_info.reduction()
            self.channels_last = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        stride = max(self.reductions)
        if config.image_size % stride:
            raise PimConfigError(
                f"image_size={config.image_size} is not a multiple of the largest stride ({stride}) of the "
                f"{config.backbone!r} layers PIM taps: use a multiple of {stride}, e.g. "
                f"{max(stride, round(config.image_size / stride) * stride)}.",
                ["image_size"],
            )
        self.grid_sizes = [config.image_size // reduction for reduction in self.reductions]
        self.token_counts = [side * side for side in self.grid_sizes]

    @staticmethod
    def create_timm_model(config: PimConfig, pretrained: bool, **pretrained_kwargs) -> nn.Module:
        """Creates the timm model of `config` (`features_only` unless the paper's Swin taps are asked for)."""
        if not timm.is_model(config.backbone):
            raise PimConfigError(
                f"backbone={config.backbone!r} is not a timm model name: see `timm.list_models()` "
                "(e.g. 'resnet50', 'vit_base_patch16_224', 'swin_large_patch4_window12_384').",
                ["backbone"],
            )
        kwargs = dict(config.backbone_kwargs)
        pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
        if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
            kwargs.setdefault("img_size", config.image_size)
        if config.feature_taps == "paper":
            kwargs["num_classes"] = 0
        else:
            kwargs.update(features_only=True, out_indices=tuple(config.out_indices))
        try:
            model = timm.create_model(config.backbone, pretrained=pretrained, **kwargs, **pretrained_kwargs)
        except TypeError as error:  # timm's model classes refuse an unknown keyword, or a value of the wrong type
            if not config.backbone_kwargs:
                raise
            raise PimConfigError(
                f"backbone_kwargs={config.backbone_kwargs} are not arguments {config.backbone!r} accepts ({error}): "
                "see the timm model's class for its arguments.",
                ["backbone_kwargs"],
            ) from error
        except (IndexError, AssertionError):  # timm's feature extraction, on an index out of range
            if config.feature_taps == "paper":
                raise
            kwargs.pop("features_only"), kwargs.pop("out_indices")
            with torch.device("meta"):
                levels = len(timm.create_model(config.backbone, pretrained=False, **kwargs).feature_info)
            TimmFeatureBackbone.check_out_indices(config, levels)
            raise
        if config.feature_taps != "paper":
            TimmFeatureBackbone.check_out_indices(config, len(model.feature_info.info))
        return model

    @staticmethod
    def check_out_indices(config: PimConfig, levels: int) -> None:
        """
        Refuses `config.out_indices` that do not name distinct feature levels of the backbone from shallow to deep:
        an index out of `[-levels, levels)`, or indices that are repeated or not increasing once negative ones are
        counted from the end (the feature pyramid's top-down path goes from the last layer to the first).

        Raises:
            [`PimConfigError`]: naming `out_indices`, the backbone's number of feature levels and an example.
        """
        indices = list(config.out_indices)
        if any(not -levels <= index < levels for index in indices):
            raise PimConfigError(
                f"out_indices={indices}: {config.backbone!r} has {levels} feature levels (0 to {levels - 1}, or "
                f"{-levels} to -1 from the end): choose levels in that range.",
                ["out_indices"],
            )
        resolved = [index % levels for index in indices]
        if any(shallow >= deep for shallow, deep in zip(resolved, resolved[1:])):
            example = list(range(levels))[-len(indices) :] if len(indices) <= levels else list(range(levels))
            raise PimConfigError(
                f"out_indices={indices} are the feature levels {resolved} of {config.backbone!r}: give distinct levels "
                f"from shallow to deep (increasing), e.g. {example}.",
                ["out_indices"],
            )

    def set_grad_checkpointing(self, enable: bool) -> None:
        self.model.set_grad_checkpointing(enable)

    def _paper_taps(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        stages = self.model.layers
        hidden = stages[0](self.model.patch_embed(pixel_values))  # (B, H/4, W/4, C)
        taps = []
        for stage in stages[1:]:
            hidden = stage.downsample(hidden)  # (B, h_i, w_i, C_i): stage i-1 after its patch merging
            taps.append(hidden)
            if stage.grad_checkpointing and torch.is_grad_enabled():
                hidden = checkpoint_seq(stage.blocks, hidden)
            else:
                hidden = stage.blocks(hidden)
        taps.append(hidden)  # last stage, without the final norm
        return taps

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        features = self._paper_taps(pixel_values) if self.feature_taps == "paper" else self.model(pixel_values)
        if self.channels_last:
            features = [feature.permute(0, 3, 1, 2) for feature in features]  # (B, C_i, h_i, w_i) views
        return list(features)


def _tokens(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C), row-major


class LayerProjection(nn.Module):
    """Linear → ReLU → Linear from `C_i` to `fpn_size` channels, as 1×1 convolutions (`"Conv"`) or linear layers."""

    def __init__(self, in_channels: int, out_channels: int, proj_type: str):
        super().__init__()
        self.proj_type = proj_type
        layer = nn.Linear if proj_type == "Linear" else lambda i, o: nn.Conv2d(i, o, 1)
        self.layers = nn.Sequential(layer(in_channels, in_channels), nn.ReLU(), layer(in_channels, out_channels))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.proj_type == "Linear":
            return self.layers(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.layers(feature_map)


class FeaturePyramid(nn.Module):
    """
    Top-down feature pyramid: every layer projected to `fpn_size` channels, then from the deepest layer up
    `x[i-1] = x[i-1] + upsample_i(x[i])`.
    """

    def __init__(self, channels: list[int], grid_sizes: list[int], config: PimConfig):
        super().__init__()
        self.grid_sizes = grid_sizes
        self.upsample_type = config.upsample_type
        self.projections = nn.ModuleList(
            LayerProjection(in_channels, config.fpn_size, config.proj_type) for in_channels in channels
        )
        if self.upsample_type == "Conv":
            token_counts = [side * side for side in grid_sizes]
            # HERBS learns a token mixing also between layers with as many tokens; PIM keeps them as they are.
            self.token_upsamplers = nn.ModuleList(
                nn.Identity() if fine == coarse and not config.use_bottom_up_fpn else nn.Conv1d(coarse, fine, 1)
                for fine, coarse in zip(token_counts[:-1], token_counts[1:])
            )

    def _upsample(self, coarse: torch.Tensor, index: int, size: tuple[int, int]) -> torch.Tensor:
        if self.upsample_type == "Conv":
            batch_size, channels = coarse.shape[:2]
            tokens = self.token_upsamplers[index](_tokens(coarse))  # (B, N_{i-1}, D)
            return tokens.transpose(1, 2).reshape(batch_size, channels, *size)
        if coarse.shape[-2:] == size:
            return coarse
        # On CPU, bilinear interpolation of a channels-last map avoids two layout copies (same values).
        coarse = coarse.contiguous(memory_format=torch.channels_last)
        return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        pyramid = [
            projection(feature.contiguous(memory_format=torch.channels_last))
            for projection, feature in zip(self.projections, features)
        ]
        for i in range(len(pyramid) - 1, 0, -1):
            fine = pyramid[i - 1]
            pyramid[i - 1] = fine + self._upsample(pyramid[i], i - 1, tuple(fine.shape[-2:]))
        return pyramid


class BottomUpFeaturePyramid(nn.Module):
    """
    HERBS' bottom-up pass over the top-down pyramid: every layer projected again (Linear → ReLU → Linear, `fpn_size`
    channels), then from the shallowest layer down `x[i+1] = x[i+1] + downsample_i(x[i])` (HERBS, Chou et al. 2023).
    """

    def __init__(self, grid_sizes: list[int], config: PimConfig):
        super().__init__()
        self.downsample_type = config.upsample_type
        self.projections = nn.ModuleList(
            LayerProjection(config.fpn_size, config.fpn_size, config.proj_type) for _ in grid_sizes
        )
        if self.downsample_type == "Conv":
            token_counts = [side * side for side in grid_sizes]
            self.token_downsamplers = nn.ModuleList(
                nn.Conv1d(fine, coarse, 1) for fine, coarse in zip(token_counts[:-1], token_counts[1:])
            )

    def _downsample(self, fine: torch.Tensor, index: int, size: tuple[int, int]) -> torch.Tensor:
        if self.downsample_type == "Conv":
            batch_size, channels = fine.shape[:2]
            tokens = self.token_downsamplers[index](_tokens(fine))  # (B, N_{i+1}, D)
            return tokens.transpose(1, 2).reshape(batch_size, channels, *size)
        if fine.shape[-2:] == size:
            return fine
        return F.interpolate(fine, size=size, mode="bilinear", align_corners=False)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        pyramid = [projection(feature) for projection, feature in zip(self.projections, features)]
        for i in range(len(pyramid) - 1):
            coarse = pyramid[i + 1]
            pyramid[i + 1] = coarse + self._downsample(pyramid[i], i, tuple(coarse.shape[-2:]))
        return pyramid


class TokenClassifier(nn.Module):
    """
    Classifies every token of a layer: Conv → BatchNorm → ReLU → Conv (1×1, i.e. per token) on pyramid features, a
    linear layer on raw backbone features. `(B, C, h, w)` → `(B, h*w, K)`.
    """

    def __init__(self, in_channels: int, num_labels: int, on_pyramid: bool):
        super().__init__()
        self.on_pyramid = on_pyramid
        if on_pyramid:
            # 1×1 Conv2d on the map = the paper's Conv1d over tokens; on CPU it is much faster in channels-last.
            self.layers = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 1),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(),
                nn.Conv2d(in_channels, num_labels, 1),
            )
        else:
            self.layers = nn.Linear(in_channels, num_labels)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.on_pyramid:
            return _tokens(self.layers(feature_map))
        return self.layers(_tokens(feature_map))


class WeaklySupervisedSelector(nn.Module):
    """
    Keeps, per layer and sample, the `num_selects[i]` tokens with the highest score, highest first; the other tokens
    are dropped. The score is a token's highest softmax probability (`rule="max_probability"`, PIM) or its softmax
    probability of the class the layer predicts from its mean logits (`"predicted_class"`, HERBS). Batched `topk` +
    `gather`; the score of the first dropped token is every sample's threshold.
    """

    def __init__(self, num_selects: list[int], rule: str = "max_probability"):
        super().__init__()
        self.num_selects = list(num_selects)
        self.rule = rule

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """`(B, N, K)` token logits → `(B, N)` scores in [0, 1] the tokens are ranked by."""
        probabilities = logits.detach().softmax(dim=-1)
        if self.rule == "max_probability":
            return probabilities.amax(dim=-1)
        predicted = logits.detach().mean(1).softmax(dim=-1).argmax(dim=-1)  # (B,)
        return probabilities.gather(2, predicted[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(2)

    def forward(self, tokens: list[torch.Tensor], token_logits: list[torch.Tensor]) -> TokenSelection:
        selection = TokenSelection(features=[], logits=[], dropped_logits=[], indices=[], thresholds=[])
        for features, logits, num_select in zip(tokens, token_logits, self.num_selects):
            num_tokens = logits.shape[1]
            score = self.score(logits)  # (B, N)
            selected = score.topk(num_select, dim=1).indices  # (B, S)
            # The selected tokens get a score below any softmax value, so the top N - S of what is left are exactly
            # the dropped tokens, even when scores tie.
            dropped_scores, dropped = score.scatter(1, selected, -1.0).topk(num_tokens - num_select, dim=1)
            selection.features.append(features.gather(1, selected[..., None].expand(-1, -1, features.shape[-1])))
            selection.logits.append(logits.gather(1, selected[..., None].expand(-1, -1, logits.shape[-1])))
            selection.dropped_logits.append(logits.gather(1, dropped[..., None].expand(-1, -1, logits.shape[-1])))
            selection.indices.append(selected)
            selection.thresholds.append(
                dropped_scores[:, 0] if num_tokens > num_select else score.new_zeros(score.shape[0])
            )
        return selection


class GraphCombiner(nn.Module):
    """
    Fuses the selected tokens of all layers with one graph convolution: the tokens are pooled into
    `sum(num_selects) // tokens_per_graph_node` nodes linked by a learned adjacency plus a data-dependent one, then
    read out into one `(B, D)` representation (the fine-grained embedding; the classifier is the head's).
    """

    def __init__(self, num_tokens: int, hidden_size: int, config: PimConfig, layer_channels: list[int] | None):
        super().__init__()
        if hidden_size < 4:
            raise PimConfigError(
                f"The combiner needs at least 4 channels (fpn_size or comb_proj_size), got {hidden_size}.",
                ["fpn_size" if config.use_fpn else "comb_proj_size"],
            )
        num_nodes = num_tokens // config.tokens_per_graph_node
        self.projections = None
        if layer_channels is not None:
            self.projections = nn.ModuleList(
                nn.Sequential(nn.Linear(channels, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))
                for channels in layer_channels
            )
        self.node_pool = nn.Linear(num_tokens, num_nodes)
        self.adjacency = nn.Parameter(self.initial_adjacency(num_nodes))
        self.query = nn.Conv1d(hidden_size, hidden_size // 4, 1)
        self.key = nn.Conv1d(hidden_size, hidden_size // 4, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.graph_conv = nn.Conv1d(hidden_size, hidden_size, 1)
        self.norm = nn.BatchNorm1d(hidden_size)
        self.node_readout = nn.Linear(num_nodes, 1)

    @staticmethod
    def initial_adjacency(num_nodes: int) -> torch.Tensor:
        return torch.eye(num_nodes) / 100 + 1 / 100

    def forward(self, selected: list[torch.Tensor]) -> torch.Tensor:
        if self.projections is not None:
            selected = [projection(tokens) for projection, tokens in zip(self.projections, selected)]
        hidden = self.node_pool(torch.cat(selected, dim=1).transpose(1, 2))  # (B, D, J)
        query = self.query(hidden).mean(1)  # (B, J)
        key = self.key(hidden).mean(1)  # (B, J)
        adjacency = self.adjacency + self.alpha * torch.tanh(query[:, :, None] - key[:, None, :])  # (B, J, J)
        hidden = self.norm(torch.matmul(self.graph_conv(hidden), adjacency))  # (B, D, J)
        return self.node_readout(hidden).flatten(1)  # (B, D)


def _block_class_names(model: nn.Module) -> list[str]:
    """
    Class names of the blocks of a timm model: the innermost modules that timm stacks in `nn.Sequential` /
    `nn.ModuleList` containers and whose parameters are spread over several children (ResNet's `Bottleneck`, ViT's
    `Block`, `SwinTransformerBlock`, `ConvNeXtBlock`, EfficientNet's `InvertedResidual`, ...). A block adds its input
    to its output, so a device map must never put its children on different devices.
    """

    def spread(module: nn.Module) -> bool:
        return sum(any(True for _ in child.parameters()) for child in module.children()) > 1

    containers = (nn.Sequential, nn.ModuleList)
    stacked = {
        id(child): child
        for container in model.modules()
        if isinstance(container, containers)
        for child in container.children()
        if not isinstance(child, containers) and spread(child)
    }
    innermost = [
        module
        for module in stacked.values()
        if not any(id(inner) in stacked for inner in module.modules() if inner is not module)
    ]
    return sorted({type(module).__name__ for module in innermost})


# Keys of checkpoints saved before PimModel existed -> today's keys, applied in this order: the final classifier
# moved from the combiner to the head, every other module under `base_model_prefix`. Used by
# `PimPreTrainedModel.from_pretrained` (transformers' `key_mapping`) and `PimForImageClassification.load_state_dict`
# (Trainer resuming from a checkpoint).
LEGACY_KEY_MAPPING = {
    r"^combiner\.classifier\.": "classifier.",
    r"^(backbone|feature_pyramid|token_classifiers|combiner)\.": r"pim.\1.",
}


class PimPreTrainedModel(PreTrainedModel):
    config_class = PimConfig
    base_model_prefix = "pim"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, *args, key_mapping: dict[str, str] | None = None, **kwargs):
        r"""
        [`PreTrainedModel.from_pretrained`], also for folders saved before [`PimModel`] existed: their keys are
        renamed by [`LEGACY_KEY_MAPPING`] (given to transformers as `key_mapping`, before any `key_mapping` of yours).
        As transformers does for every renaming it applies, a model loaded from such a folder is saved again with the
        folder's keys; `save_pretrained(..., save_original_format=False)` writes today's keys.
        """
        return super().from_pretrained(*args, key_mapping={**LEGACY_KEY_MAPPING, **(key_mapping or {})}, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """
        [`PreTrainedModel.save_pretrained`]. When the PIM classes are registered for the auto classes (importing
        `modeling_pim` does it, and so does loading them as remote code), the code files are copied beside the model
        and `config.json` gets

        - an `auto_map` naming both [`PimModel`] (`AutoModel`) and [`PimForImageClassification`]
          (`AutoModelForImageClassification`), where transformers writes only the saved class's entry;
        - `custom_pipelines` ([`pipeline_pim.CUSTOM_PIPELINES`]): `pipeline("image-classification")` and
          `pipeline("image-feature-extraction")` with `trust_remote_code=True` then decode images as PIM does
          (16-bit images by their range, transparency onto white), not with transformers' `convert("RGB")`.
        """
        if self._auto_class is not None:
            # This relative import also makes `save_pretrained` copy pipeline_pim.py with the model's code.
            from .pipeline_pim import CUSTOM_PIPELINES

            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.{PimModel.__name__}",
                "AutoModelForImageClassification": f"{module}.{PimForImageClassification.__name__}",
            }
            self.config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """
        PyTorch's default initialisation of every module it is called on (what the paper trained with), the combiner's
        adjacency and alpha their PIM values, and the non-persistent buffers of timm modules (e.g. Swin's relative
        position index and attention masks), which `from_pretrained` leaves empty, computed again. transformers calls
        it on every module when a model is built (the backbone, marked initialised by [`PimModel`], keeps timm's
        weights) and on the modules of the tensors `from_pretrained` did not load (missing, or mismatched with
        `ignore_mismatched_sizes=True`): their leaves, e.g. a token classifier's last `Conv2d`.
        """
        if module._non_persistent_buffers_set:
            for rebuild in ("init_non_persistent_buffers", "_init_buffers"):
                if hasattr(module, rebuild):
                    getattr(module, rebuild)()
                    break
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            if module.bias is not None:
                bound = 1 / module.weight[0].numel() ** 0.5  # 1 / sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, GraphCombiner):
            init.copy_(module.adjacency, GraphCombiner.initial_adjacency(module.adjacency.shape[0]))
            init.zeros_(module.alpha)

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        self.base_model.backbone.set_grad_checkpointing(enable)

    def load_pretrained_backbone(self, weights_file: str | None = None) -> None:
        """
        Loads timm's pretrained weights of `config.backbone` into the backbone: from the Hub, or from a local
        `weights_file` (`.safetensors`/`.pth`, e.g. for an offline machine). Used when a new training run starts;
        never by `from_pretrained`.
        """
        overlay = {"pretrained_cfg_overlay": {"file": str(weights_file)}} if weights_file else {}
        pretrained = TimmFeatureBackbone.create_timm_model(self.config, pretrained=True, **overlay)
        self.base_model.backbone.model.load_state_dict(pretrained.state_dict())


class PimModel(PimPreTrainedModel):
    """
    The PIM base model: backbone, feature pyramid, token classifiers, selector and graph combiner, up to the
    fine-grained embedding `pooler_output` (see the module docstring for what belongs here). `forward(pixel_values)`.
    """

    # Loading from a PimForImageClassification folder: its classifier is the head's.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: PimConfig):
        super().__init__(config)
        self.backbone = TimmFeatureBackbone(config)
        num_layers = len(self.backbone.channels)
        if config.use_selection:
            for layer, (num_tokens, num_select) in enumerate(zip(self.backbone.token_counts, config.num_selects)):
                if num_select > num_tokens:
                    raise PimConfigError(
                        f"num_selects[{layer}]={num_select} but layer {layer} of {config.backbone!r} has only "
                        f"{num_tokens} tokens at image_size={config.image_size} ({self.backbone.grid_sizes[layer]}²): "
                        "select at most that many tokens.",
                        ["num_selects", "image_size"],
                    )

        self.feature_pyramid = None
        self.bottom_up_pyramid = None
        self.top_down_token_classifiers = None
        self.token_classifiers = None
        self.selector = None
        self.combiner = None
        if config.use_fpn:
            self.feature_pyramid = FeaturePyramid(self.backbone.channels, self.backbone.grid_sizes, config)
            layer_channels = [config.fpn_size] * num_layers
            if config.use_bottom_up_fpn:
                self.top_down_token_classifiers = nn.ModuleList(
                    TokenClassifier(channels, config.num_labels, on_pyramid=True) for channels in layer_channels
                )
                self.bottom_up_pyramid = BottomUpFeaturePyramid(self.backbone.grid_sizes, config)
        else:
            layer_channels = self.backbone.channels
        if config.use_fpn or config.use_selection:
            self.token_classifiers = nn.ModuleList(
                TokenClassifier(channels, config.num_labels, on_pyramid=config.use_fpn) for channels in layer_channels
            )
        if config.use_selection:
            self.selector = WeaklySupervisedSelector(config.num_selects, config.selection_rule)
        self.embedding_size = layer_channels[-1]
        if config.use_combiner:
            self.embedding_size = config.fpn_size if config.use_fpn else config.comb_proj_size
            self.combiner = GraphCombiner(
                sum(config.num_selects), self.embedding_size, config, None if config.use_fpn else layer_channels
            )
        # A device map ("auto") keeps each of these on one device: timm's blocks, and PIM's modules that mix layers.
        self._no_split_modules = [*_block_class_names(self.backbone.model), "FeaturePyramid", "GraphCombiner"]
        if self.bottom_up_pyramid is not None:
            self._no_split_modules.append("BottomUpFeaturePyramid")
        # post_init() initialises every module that is not marked: the backbone keeps the weights timm gave it.
        for tensor in (*self.backbone.parameters(), *self.backbone.buffers()):
            tensor._is_hf_initialized = True
        self.post_init()

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor) -> PimModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, 3, image_size, image_size)`):
            Images normalised as [`PimImageProcessor`] does.
        """
        expected = (self.config.image_size, self.config.image_size)
        if tuple(pixel_values.shape[-2:]) != expected:
            raise ValueError(
                f"PIM was configured for {expected[0]}×{expected[1]} images (config.image_size), got "
                f"{tuple(pixel_values.shape[-2:])}: resize and crop them with the model's PimImageProcessor."
            )
        features = self.backbone(pixel_values)
        if self.feature_pyramid is not None:
            features = self.feature_pyramid(features)
        top_down_token_logits = None
        if self.bottom_up_pyramid is not None:
            top_down_token_logits = [
                classifier(feature) for classifier, feature in zip(self.top_down_token_classifiers, features)
            ]
            features = self.bottom_up_pyramid(features)
        token_logits = selection = None
        if self.token_classifiers is not None:
            token_logits = [classifier(feature) for classifier, feature in zip(self.token_classifiers, features)]
        if self.selector is not None:
            selection = self.selector([_tokens(feature) for feature in features], token_logits)
        if self.combiner is not None:
            pooler_output = self.combiner(selection.features)  # (B, D)
        else:
            pooler_output = features[-1].flatten(2).mean(-1)  # (B, C_L)
        # Built at once: a ModelOutput's field order is the order its fields are first set.
        return PimModelOutput(
            pooler_output=pooler_output,
            last_hidden_state=_tokens(features[-1]),  # (B, N_L, C_L)
            layer_logits=tuple(logits.mean(1) for logits in token_logits) if token_logits is not None else None,
            token_logits=tuple(token_logits) if token_logits is not None else None,
            selected_token_logits=tuple(selection.logits) if selection is not None else None,
            dropped_token_logits=tuple(selection.dropped_logits) if selection is not None else None,
            selected_indices=tuple(selection.indices) if selection is not None else None,
            selection_thresholds=tuple(selection.thresholds) if selection is not None else None,
            top_down_layer_logits=(
                tuple(logits.mean(1) for logits in top_down_token_logits) if top_down_token_logits else None
            ),
            top_down_token_logits=tuple(top_down_token_logits) if top_down_token_logits else None,
        )


def _refinement_loss(
    top_down_logits: torch.Tensor, bottom_up_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """
    HERBS' high-temperature refinement of one layer: `KL(p ‖ q)` with `p = softmax(bottom-up token logits / T)`
    (detached: the target) and `q = softmax(top-down token logits / T)`, summed over classes and averaged over batch,
    tokens and classes, as the authors' `nn.KLDivLoss()` (reduction "mean") computes it.
    """
    target = (bottom_up_logits.detach() / temperature).softmax(dim=-1)
    log_probabilities = (top_down_logits / temperature).log_softmax(dim=-1)
    return F.kl_div(log_probabilities, target, reduction="sum") / target.numel()


def _dropped_token_loss(token_logits: torch.Tensor, selected: torch.LongTensor) -> torch.Tensor:
    """
    `MSE(tanh(dropped token logits), -1)`, computed as (all tokens − selected tokens) so that its backward does not go
    through a gather of the (B, N - S, K) dropped logits.
    """
    batch_size, num_tokens, num_labels = token_logits.shape
    penalty = (torch.tanh(token_logits) + 1).square().sum(-1)  # (B, N)
    dropped_penalty = penalty.sum() - penalty.gather(1, selected).sum()
    return dropped_penalty / (batch_size * (num_tokens - selected.shape[1]) * num_labels)


class PimForImageClassification(PimPreTrainedModel):
    """
    [`PimModel`] with the final classifier and PIM's losses: `forward(pixel_values, labels=None)`; see [`PimConfig`]
    for every module switch.
    """

    def __init__(self, config: PimConfig):
        super().__init__(config)
        self.pim = PimModel(config)
        # The logits come from this classifier on the embedding, except with the combiner off and token classifiers
        # on, where they are the deepest layer's mean token logits.
        self.dropout = nn.Dropout(config.combiner_dropout) if config.use_combiner else nn.Identity()
        self.classifier = None
        if config.use_combiner or self.pim.token_classifiers is None:
            self.classifier = nn.Linear(self.pim.embedding_size, config.num_labels)
        self.refinement_epoch = 0
        self.post_init()

    def set_refinement_epoch(self, epoch: float) -> None:
        """
        Sets the epoch (counted from 0; a fraction counts as the epoch it is in) that fixes the temperature of HERBS'
        refinement term. [`PimTrainer`] calls it at the start of every epoch, also when it resumes; a custom training
        loop calls it itself.
        """
        self.refinement_epoch = int(epoch)

    @property
    def current_refinement_temperature(self) -> float:
        """
        The temperature `T` of HERBS' refinement term at `refinement_epoch`: the configured starting temperature
        (`config.refinement_temperature`) halved every `config.refinement_temperature_halving_epochs` epochs.
        """
        halvings = self.refinement_epoch // self.config.refinement_temperature_halving_epochs
        return self.config.refinement_temperature * 0.5**halvings

    def load_state_dict(self, state_dict, *args, **kwargs):
        """`nn.Module.load_state_dict`, also for the keys of checkpoints saved before [`PimModel`] existed."""
        if any(re.match(pattern, key) for key in state_dict for pattern in LEGACY_KEY_MAPPING):
            renamed = {}
            for key, value in state_dict.items():
                for pattern, replacement in LEGACY_KEY_MAPPING.items():
                    key = re.sub(pattern, replacement, key)
                renamed[key] = value
            state_dict = renamed
        return super().load_state_dict(state_dict, *args, **kwargs)

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor, labels: torch.LongTensor | None = None) -> PimImageClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, 3, image_size, image_size)`):
            Images normalised as [`PimImageProcessor`] does.
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            Class indices in `[0, num_labels)`; when given, the loss and its parts are computed.
        """
        outputs = self.pim(pixel_values)
        if self.classifier is not None:
            logits = self.classifier(self.dropout(outputs.pooler_output))
        else:
            logits = outputs.layer_logits[-1]
        output = PimImageClassifierOutput(
            logits=logits,
            layer_logits=outputs.layer_logits,
            token_logits=outputs.token_logits,
            selected_token_logits=outputs.selected_token_logits,
            dropped_token_logits=outputs.dropped_token_logits,
            selected_indices=outputs.selected_indices,
            selection_thresholds=outputs.selection_thresholds,
            top_down_layer_logits=outputs.top_down_layer_logits,
            top_down_token_logits=outputs.top_down_token_logits,
        )
        if labels is not None:
            self._add_losses(output, labels)
        return output

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """The cross-entropy of every classification term of the loss, with `config.label_smoothing`."""
        return F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)

    def _add_losses(self, output: PimImageClassifierOutput, labels: torch.LongTensor) -> None:
        config = self.config
        if output.layer_logits is None:  # every module off: a pooled linear head
            output.loss = self._cross_entropy(output.logits, labels)
            return
        output.loss_layers = sum(self._cross_entropy(logits, labels) for logits in output.layer_logits)
        loss = config.lambda_b * output.loss_layers
        if output.selected_token_logits is not None:
            # With lambda_s = 0 (the paper's default) the selected-token loss is only logged: keep it out of the graph.
            with torch.set_grad_enabled(torch.is_grad_enabled() and config.lambda_s != 0):
                output.loss_selected = sum(
                    self._cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(logits.shape[1]))
                    for logits in output.selected_token_logits
                )
            output.loss_dropped = sum(
                (
                    _dropped_token_loss(logits, indices)
                    for logits, indices in zip(output.token_logits, output.selected_indices)
                    if logits.shape[1] > indices.shape[1]
                ),
                torch.zeros((), device=labels.device),
            )
            loss = loss + config.lambda_n * output.loss_dropped
            if config.lambda_s != 0:
                loss = loss + config.lambda_s * output.loss_selected
        if config.use_combiner:
            output.loss_combiner = self._cross_entropy(output.logits, labels)
            loss = loss + config.lambda_c * output.loss_combiner
        if output.top_down_token_logits is not None:
            # Like the selected-token loss: only logged, out of the graph, when its weight is 0.
            with torch.set_grad_enabled(torch.is_grad_enabled() and config.lambda_b0 != 0):
                output.loss_refinement = sum(
                    _refinement_loss(top_down, bottom_up, self.current_refinement_temperature)
                    for top_down, bottom_up in zip(output.top_down_token_logits, output.token_logits)
                )
            if config.lambda_b0 != 0:
                loss = loss + config.lambda_b0 * output.loss_refinement
        output.loss = loss


__all__ = [
    "LEGACY_KEY_MAPPING",
    "BottomUpFeaturePyramid",
    "GraphCombiner",
    "FeaturePyramid",
    "PimForImageClassification",
    "PimImageClassifierOutput",
    "PimModel",
    "PimModelOutput",
    "PimPreTrainedModel",
    "TimmFeatureBackbone",
    "TokenClassifier",
    "WeaklySupervisedSelector",
]
