"""PIM model configuration."""

import types
from collections.abc import Sequence
from typing import Any, get_args, get_origin

from transformers import PretrainedConfig


FEATURE_TAPS = ("stages", "paper")
PROJECTION_TYPES = ("Linear", "Conv")
UPSAMPLE_TYPES = ("Bilinear", "Conv")
SELECTION_RULES = ("max_probability", "predicted_class")


def _has_type(value: Any, annotation: Any) -> bool:
    """Whether `value` (as read from JSON or YAML) is of the field type `annotation`; an integer is a valid float."""
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):
        return isinstance(value, (int, annotation)) and not isinstance(value, bool)
    if isinstance(annotation, types.UnionType):
        return any(_has_type(value, option) for option in get_args(annotation))
    if get_origin(annotation) is Sequence:
        return isinstance(value, (list, tuple)) and all(_has_type(item, get_args(annotation)[0]) for item in value)
    if get_origin(annotation) is dict:
        key_type, value_type = get_args(annotation)
        return isinstance(value, dict) and all(
            _has_type(key, key_type) and _has_type(item, value_type) for key, item in value.items()
        )
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    """How an error message names the field type `annotation` (`Sequence[int]` → "a list of integers")."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, types.UnionType):
        return " or ".join(_type_name(option) for option in get_args(annotation))
    if get_origin(annotation) is Sequence:
        return f"a list of {_type_name(get_args(annotation)[0]).removeprefix('an ').removeprefix('a ')}s"
    if get_origin(annotation) is dict:
        return f"a dictionary with {_type_name(get_args(annotation)[0]).removeprefix('a ')} keys"
    return annotation.__name__


class PimConfigError(ValueError):
    """
    A value of [`PimConfig`] that the configuration or the model built from it cannot use (a field of the wrong type,
    `num_selects` not matching the backbone's layers, more selected tokens than a layer has, ...). `fields` names the
    fields at fault, so that a command line can name the flags they came from.
    """

    def __init__(self, message: str, fields: Sequence[str] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


class PimConfig(PretrainedConfig):
    r"""
    Configuration of a [`PimForImageClassification`]: a timm backbone whose multi-scale features go through a feature
    pyramid, a weakly supervised selector that keeps the most discriminative tokens of every layer and a graph
    convolution combiner that fuses them (Chou et al., "A Novel Plug-in Module for Fine-grained Visual
    Classification", arXiv 2202.03822). The same model is HERBS (Chou et al., "Fine-grained Visual Classification
    with High-temperature Refinement and Background Suppression", arXiv 2303.06442) with `use_bottom_up_fpn=True`,
    `selection_rule="predicted_class"` and `lambda_b0 > 0`: see `configuration/cub200_herbs_swin_large_384.yaml`.

    Args:
        backbone (`str`, *optional*, defaults to `"resnet50"`):
            Name of any timm model (`timm.list_models()`), e.g. `"swin_large_patch4_window12_384"`.
        backbone_pretrained (`bool`, *optional*, defaults to `True`):
            Whether a new training run starts from timm's pretrained weights of `backbone`
            ([`PimForImageClassification.load_pretrained_backbone`]). Never used by `from_pretrained`: a PIM checkpoint
            holds the backbone weights.
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"drop_path_rate": 0.1}`). `img_size` is filled in
            from `image_size` for backbones with a fixed input size (ViT, Swin, ...).
        feature_taps (`str`, *optional*, defaults to `"stages"`):
            Which backbone features feed PIM. `"stages"`: timm's `features_only` stage outputs chosen by
            `out_indices`. `"paper"` (Swin only): the taps of the paper, i.e. every stage output *after* its patch
            merging plus the last stage's output without the final norm (48², 24², 12², 12² tokens for Swin at 384).
        out_indices (`list[int]`, *optional*, defaults to `[-4, -3, -2, -1]`):
            Stages (timm `features_only` indices, negative counts from the end) used with `feature_taps="stages"`:
            distinct levels of the backbone, from shallow to deep (increasing once negative ones are counted from the
            end). Must be left at its default with `feature_taps="paper"`, which always gives 4 layers.
        image_size (`int`, *optional*, defaults to `224`):
            Side of the square input image. Fixes the number of tokens of each layer, hence what `num_selects`,
            `upsample_type="Conv"` and the combiner can use.
        use_fpn (`bool`, *optional*, defaults to `True`):
            Whether to use the top-down feature pyramid, which projects every layer to `fpn_size` channels and adds a
            token classifier (Conv1d → BatchNorm → ReLU → Conv1d) per layer.
        fpn_size (`int`, *optional*, defaults to `512`):
            Channels of the feature pyramid.
        proj_type (`str`, *optional*, defaults to `"Conv"`):
            Projection of a layer to `fpn_size`: `"Conv"` (1×1 convolutions on the feature map) or `"Linear"`
            (linear layers on the tokens); both are Linear → ReLU → Linear with `C_i` hidden channels.
        upsample_type (`str`, *optional*, defaults to `"Bilinear"`):
            How a deeper layer is brought to the size of the one above it: `"Bilinear"` (2× bilinear upsampling of the
            feature map, for CNNs) or `"Conv"` (a learned 1×1 Conv1d over the token axis from `N_i` to `N_{i-1}`
            tokens, the paper's choice for ViT and Swin; it fixes the input resolution to `image_size`).
        use_selection (`bool`, *optional*, defaults to `True`):
            Whether to use the weakly supervised selector.
        num_selects (`list[int]`, *optional*, defaults to `[32, 32, 32, 32]`):
            Number of tokens the selector keeps per layer, one entry per layer, each at most the layer's token count.
        use_combiner (`bool`, *optional*, defaults to `True`):
            Whether to fuse the selected tokens with the graph convolution combiner (requires `use_selection`).
        comb_proj_size (`int`, *optional*, defaults to `512`):
            Channels the selected tokens of every layer are projected to before the combiner when `use_fpn=False`.
        tokens_per_graph_node (`int`, *optional*, defaults to `32`):
            The combiner pools the `sum(num_selects)` selected tokens into `sum(num_selects) // tokens_per_graph_node`
            graph nodes.
        combiner_dropout (`float`, *optional*, defaults to `0.1`):
            Dropout before the combiner's classifier.
        lambda_b (`float`, *optional*, defaults to `0.5`):
            Weight of the cross-entropy of every layer's logits (mean of its token logits).
        lambda_s (`float`, *optional*, defaults to `0.0`):
            Weight of the cross-entropy of every selected token's logits (the authors found it destabilises training
            with the combiner).
        lambda_n (`float`, *optional*, defaults to `5.0`):
            Weight of the mean squared error pushing `tanh` of every dropped token's logits to -1.
        lambda_c (`float`, *optional*, defaults to `1.0`):
            Weight of the cross-entropy of the combiner's logits.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            Label smoothing ε in [0, 1) of every cross-entropy term of the loss (layers, selected tokens, combiner,
            and the pooled linear head when every module is off): the target is `1 - ε` on the true class plus
            `ε / num_labels` on every class, as in `torch.nn.functional.cross_entropy(label_smoothing=ε)` (Szegedy et
            al., arXiv 1512.00567, §7). The dropped-token loss has no class target and does not change.
        use_bottom_up_fpn (`bool`, *optional*, defaults to `False`):
            HERBS: after the top-down pyramid (requires `use_fpn`), a bottom-up one: every layer projected again
            (Linear → ReLU → Linear, `fpn_size` channels), then from the shallowest layer down
            `x[i+1] = x[i+1] + downsample_i(x[i])` (`upsample_type="Conv"`: a learned 1×1 Conv1d over the token axis
            from `N_i` to `N_{i+1}` tokens, the authors' choice; `"Bilinear"`: bilinear resizing to the coarser map,
            our extension for CNNs), with its own token classifiers. The selector, the combiner and `lambda_b` then
            use the bottom-up layers; the top-down layers keep their classifiers, trained by the refinement term
            (`lambda_b0`). As in the authors' code, with `upsample_type="Conv"` both pyramids then use a learned
            Conv1d also between layers with the same number of tokens (PIM uses the identity there).
        selection_rule (`str`, *optional*, defaults to `"max_probability"`):
            How the selector ranks a layer's tokens: `"max_probability"` (PIM: a token's highest softmax probability)
            or `"predicted_class"` (HERBS: its softmax probability of the class the layer predicts, i.e. the argmax of
            the softmax of the layer's mean logits).
        lambda_b0 (`float`, *optional*, defaults to `0.0`):
            HERBS' high-temperature refinement: weight of `sum_i KL(p_i ‖ q_i)`, where `p_i = softmax(bottom-up token
            logits / T)` (detached: the target) and `q_i = softmax(top-down token logits / T)` of layer `i`, averaged
            over batch, tokens and classes as the authors' `nn.KLDivLoss()` does. Requires `use_bottom_up_fpn`; at 0
            the top-down token classifiers get no gradient (under DDP, set `ddp_find_unused_parameters=True`).
        refinement_temperature (`float`, *optional*, defaults to `64.0`):
            The temperature `T` of the refinement term at the first epoch.
        refinement_temperature_halving_epochs (`int`, *optional*, defaults to `10`):
            `T` is halved every this many epochs: `T = refinement_temperature * 0.5 ** (epoch // this)`, epoch counted
            from 0. The trainer sets the epoch ([`PimForImageClassification.set_refinement_epoch`]); the model's
            `current_refinement_temperature` is the `T` in use.

    The usual `num_labels`, `id2label` and `label2id` are inherited from [`PretrainedConfig`]. A value of the wrong type
    or out of range raises [`PimConfigError`] (a `ValueError`) naming the fields; so does the model for values that
    only the backbone can check (e.g. more selected tokens than a layer has).

    Example:

    ```python
    >>> from modeling_pim import PimConfig, PimForImageClassification

    >>> config = PimConfig(backbone="swin_large_patch4_window12_384", feature_taps="paper", image_size=384,
    ...                    num_labels=200, fpn_size=1536, proj_type="Linear", upsample_type="Conv",
    ...                    num_selects=[2048, 512, 128, 32])
    >>> model = PimForImageClassification(config)  # random weights, nothing is downloaded
    ```
    """

    model_type = "pim"
    keys_to_ignore_at_inference = [
        "token_logits",
        "selected_token_logits",
        "dropped_token_logits",
        "selected_indices",
        "loss_layers",
        "loss_selected",
        "loss_dropped",
        "loss_combiner",
        "top_down_layer_logits",
        "top_down_token_logits",
        "selection_thresholds",
        "loss_refinement",
    ]

    backbone: str = "resnet50"
    backbone_pretrained: bool = True
    backbone_kwargs: dict[str, Any] | None = None
    feature_taps: str = "stages"
    out_indices: Sequence[int] = (-4, -3, -2, -1)
    image_size: int = 224
    use_fpn: bool = True
    fpn_size: int = 512
    proj_type: str = "Conv"
    upsample_type: str = "Bilinear"
    use_selection: bool = True
    num_selects: Sequence[int] = (32, 32, 32, 32)
    use_combiner: bool = True
    comb_proj_size: int = 512
    tokens_per_graph_node: int = 32
    combiner_dropout: float = 0.1
    lambda_b: float = 0.5
    lambda_s: float = 0.0
    lambda_n: float = 5.0
    lambda_c: float = 1.0
    label_smoothing: float = 0.0
    use_bottom_up_fpn: bool = False
    selection_rule: str = "max_probability"
    lambda_b0: float = 0.0
    refinement_temperature: float = 64.0
    refinement_temperature_halving_epochs: int = 10

    def __post_init__(self, **kwargs):
        self._check_types()
        self.backbone_kwargs = dict(self.backbone_kwargs or {})
        self.out_indices = list(self.out_indices)
        self.num_selects = list(self.num_selects)
        super().__post_init__(**kwargs)
        self._validate()

    def _check_types(self) -> None:
        """
        Raises a [`PimConfigError`] naming the field, its value and the type it must have when a field of this class
        has another type (a hand-edited `config.json`, a recipe), before any other check could fail on it obscurely.
        """
        for name, annotation in PimConfig.__annotations__.items():
            value = getattr(self, name)
            if not _has_type(value, annotation):
                raise PimConfigError(
                    f"`{name}` must be {_type_name(annotation)}, got {value!r} ({type(value).__name__}).", [name]
                )

    def _validate(self) -> None:
        """Checks what can be checked without building the backbone (the rest is checked by the model)."""
        if not isinstance(self.backbone, str) or not self.backbone:
            raise PimConfigError(f"`backbone` must be a timm model name, got {self.backbone!r}.", ["backbone"])
        for name, allowed in (
            ("feature_taps", FEATURE_TAPS),
            ("proj_type", PROJECTION_TYPES),
            ("upsample_type", UPSAMPLE_TYPES),
            ("selection_rule", SELECTION_RULES),
        ):
            if getattr(self, name) not in allowed:
                raise PimConfigError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.", [name])
        if self.feature_taps == "paper" and self.out_indices != [-4, -3, -2, -1]:
            raise PimConfigError(
                f"`out_indices`={self.out_indices} cannot be combined with feature_taps='paper', which always taps the "
                "4 Swin stages; use feature_taps='stages' to choose stages.",
                ["out_indices", "feature_taps"],
            )
        if not self.out_indices:
            raise PimConfigError("`out_indices` must name at least one backbone stage.", ["out_indices"])
        for name in ("image_size", "fpn_size", "comb_proj_size", "tokens_per_graph_node"):
            if getattr(self, name) <= 0:
                raise PimConfigError(f"`{name}` must be positive, got {getattr(self, name)}.", [name])
        for name in ("lambda_b", "lambda_s", "lambda_n", "lambda_c", "lambda_b0"):
            if getattr(self, name) < 0:
                raise PimConfigError(f"`{name}` must be 0 or more (a loss weight), got {getattr(self, name)}.", [name])
        if not 0 <= self.label_smoothing < 1:
            raise PimConfigError(
                f"`label_smoothing` must be in [0, 1) (0: no smoothing, 0.1 is common), got {self.label_smoothing}.",
                ["label_smoothing"],
            )
        if not 0 <= self.combiner_dropout < 1:
            raise PimConfigError(
                f"`combiner_dropout` is a probability in [0, 1), got {self.combiner_dropout}.", ["combiner_dropout"]
            )
        if self.use_combiner and not self.use_selection:
            raise PimConfigError(
                "`use_combiner=True` needs the selector: set `use_selection=True` or `use_combiner=False`.",
                ["use_combiner", "use_selection"],
            )
        if self.use_selection:
            if len(self.num_selects) != len(self.out_indices):
                raise PimConfigError(
                    f"`num_selects` has {len(self.num_selects)} entries but the backbone gives "
                    f"{len(self.out_indices)} layers: give one number of selected tokens per layer.",
                    ["num_selects", "out_indices"],
                )
            if any(count <= 0 for count in self.num_selects):
                raise PimConfigError(
                    f"Every entry of `num_selects` must be positive, got {self.num_selects}.", ["num_selects"]
                )
        self._validate_herbs()
        if self.use_combiner and sum(self.num_selects) < self.tokens_per_graph_node:
            raise PimConfigError(
                f"The combiner pools sum(num_selects)={sum(self.num_selects)} tokens into graph nodes of "
                f"tokens_per_graph_node={self.tokens_per_graph_node}: select more tokens or lower "
                "`tokens_per_graph_node`.",
                ["num_selects", "tokens_per_graph_node"],
            )

    def _validate_herbs(self) -> None:
        if self.use_bottom_up_fpn and not self.use_fpn:
            raise PimConfigError(
                "`use_bottom_up_fpn=True` adds a bottom-up pass over the top-down feature pyramid: set `use_fpn=True`.",
                ["use_bottom_up_fpn", "use_fpn"],
            )
        if self.lambda_b0 and not self.use_bottom_up_fpn:
            raise PimConfigError(
                f"`lambda_b0`={self.lambda_b0} weights the refinement of the top-down pyramid by the bottom-up one: "
                "set `use_bottom_up_fpn=True`, or `lambda_b0=0`.",
                ["lambda_b0", "use_bottom_up_fpn"],
            )
        if self.refinement_temperature <= 0:
            raise PimConfigError(
                f"`refinement_temperature` must be positive, got {self.refinement_temperature}.",
                ["refinement_temperature"],
            )
        if self.refinement_temperature_halving_epochs <= 0:
            raise PimConfigError(
                "`refinement_temperature_halving_epochs` must be a positive number of epochs, got "
                f"{self.refinement_temperature_halving_epochs}.",
                ["refinement_temperature_halving_epochs"],
            )


__all__ = ["PimConfig", "PimConfigError"]
