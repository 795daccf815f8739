"""
Converts a checkpoint of the authors' FGVC-PIM code (github.com/chou141253/FGVC-PIM, `best.pt` =
`{"model": state_dict, "optimizer": ..., "epoch": ...}` or a bare state dict), or of their HERBS code
(github.com/chou141253/FGVC-HERBS, same format), into a [`PimForImageClassification`] folder that `from_pretrained`
loads; the work of `pim-convert` (its command line is [`modeling_pim.tools.pim_convert`]).

    pim-convert best.pt --backbone swin-t --num_classes 200 --output_dir pim-cub --class_names CUB_200_2011/classes.txt
    pim-convert herbs_best.pt --method herbs --backbone swin-t --output_dir herbs-cub

`--method herbs` (read from the checkpoint's key names when not given) builds HERBS (`configs/config.yaml` of their
repository): the PIM model with the bottom-up pyramid, the predicted-class selector, 256/128/64/32 tokens (Swin), 64
tokens per graph node and their loss weights, from their Swin builder only (`--backbone swin-t`): their CNN builders
cannot build HERBS (its bottom-up pyramid mixes token sequences), and their ViT builder's pyramids mix the class token
too, which this model does not read.

`--backbone` names the builder of the original `models/builder.py` the checkpoint was trained with:

- `swin-t`: Swin-L 384 (their `swin_large_patch4_window12_384_in22k`; `configs/CUB200_SwinT.yaml`), the paper's model:
  stage outputs after their patch merging, fpn 1536, Linear projections, Conv upsampling, 2048/512/128/32 tokens.
- `resnet50`: timm ResNet-50, outputs of layer1..layer4, fpn 512, Conv projections, bilinear upsampling, 32 tokens
  per layer, 448 px (a CNN: any multiple of 32 works, set `--image_size` to what you evaluate at).
- `vit`: ViT-B/16 (MIIL ImageNet-21k, no qkv bias) at 448 px, outputs of blocks 8..11, Linear/Conv, 32 tokens per
  layer. The weights convert exactly, but the original also feeds the class token to PIM (785 tokens at 448)
  where ours uses the 784 patch tokens: the final logits differ for images whose class token the original selects.
- `efficient`: not convertible, see `original_recipe`.

Only tensors are read (`torch.load(..., weights_only=True)`): a file that needs to unpickle code is refused.
"""

import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import PimConfig, PimForImageClassification, PimImageProcessor
from ..utils.cli import UserInputError
from .original_code import METHODS


# What HERBS (their configs/config.yaml, models/pim_module/pim_module.py) changes in the PIM recipe of a builder.
_HERBS_RECIPE = {
    "use_bottom_up_fpn": True,
    "selection_rule": "predicted_class",
    "tokens_per_graph_node": 64,
    "lambda_b": 0.3,
    "lambda_s": 0.0,
    "lambda_n": 5.0,
    "lambda_c": 1.0,
    "lambda_b0": 1.375,
    "refinement_temperature": 64.0,
    "refinement_temperature_halving_epochs": 10,
}

# Our keys: PimForImageClassification's base model under this prefix, its final classifier at the top.
_BASE = f"{PimForImageClassification.base_model_prefix}."
# Original combiner names -> ours (`combiner.proj_<layer>`, the per-layer heads and the classifier handled separately).
_COMBINER_NAMES = {
    "param_pool0": "node_pool",
    "adj1": "adjacency",
    "conv_q1": "query",
    "conv_k1": "key",
    "alpha1": "alpha",
    "conv1": "graph_conv",
    "batch_norm1": "norm",
    "param_pool1": "node_readout",
}
# Per-layer modules of the original code: the key prefix before the layer name -> our module, with the layer's index
# plus the offset (an upsampler belongs to the coarser of the two layers it joins).
_LAYER_MODULES = (
    ("fpn.Proj_", "feature_pyramid.projections.{}.layers", 0),
    ("fpn.Up_", "feature_pyramid.token_upsamplers.{}", -1),
    ("fpn_classifier_", "token_classifiers.{}.layers", 0),
    ("selector.classifier_l_", "token_classifiers.{}.layers", 0),
    ("combiner.proj_", "combiner.projections.{}", 0),
    # HERBS: the top-down pyramid `fpn_down` with classifiers of its own, the bottom-up `fpn_up` with the selector's.
    ("fpn_down.Proj_", "feature_pyramid.projections.{}.layers", 0),
    ("fpn_down.Up_", "feature_pyramid.token_upsamplers.{}", -1),
    ("fpn_classifier_down_", "top_down_token_classifiers.{}.layers", 0),
    ("fpn_up.Proj_", "bottom_up_pyramid.projections.{}.layers", 0),
    ("fpn_up.Down_", "bottom_up_pyramid.token_downsamplers.{}", 0),
    ("fpn_classifier_up_", "token_classifiers.{}.layers", 0),
)
# Top-level modules of an original backbone that PIM never uses (its own ImageNet classifier, final norm, ...).
_UNUSED_BACKBONE_MODULES = {
    "head": "the backbone's own ImageNet classifier, unused by PIM",
    "fc": "the backbone's own ImageNet classifier, unused by PIM",
    "classifier": "the backbone's own ImageNet classifier, unused by PIM",
    "pre_logits": "the backbone's pre-logits layer, unused by PIM",
    "norm": "the backbone's final norm, after the layers PIM taps",
    "fc_norm": "the backbone's final norm, after the layers PIM taps",
}
# Buffers of the original's (old timm) Swin that current timm recomputes and does not save.
_RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


class ConversionError(UserInputError, ValueError):
    """A checkpoint that cannot be converted into the requested PIM model, with the reason."""


@dataclass
class ConversionReport:
    """What `convert_state_dict` did with every key."""

    mapped: dict[str, str] = field(default_factory=dict)  # original key -> our key
    dropped: dict[str, str] = field(default_factory=dict)  # original key -> why our model does not need it
    unmapped: list[str] = field(default_factory=list)  # original keys with no place in our model
    missing: list[str] = field(default_factory=list)  # our keys that no original key fills
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unmapped and not self.missing

    def format(self) -> str:
        lines = [f"{len(self.mapped)} tensors converted."]
        reasons: dict[str, list[str]] = {}
        for key, reason in self.dropped.items():
            reasons.setdefault(reason, []).append(key)
        for reason, keys in reasons.items():
            lines.append(f"{len(keys)} original tensors not needed ({reason}), e.g. {keys[0]}")
        if self.unmapped:
            lines.append(f"{len(self.unmapped)} original tensors have no place in the PIM model:")
            lines.extend(f"  {key}" for key in self.unmapped)
        if self.missing:
            lines.append(f"{len(self.missing)} PIM model tensors are not in the checkpoint:")
            lines.extend(f"  {key}" for key in self.missing)
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)


# The models of the original builders (`backbone_name` → `PimConfig` fields), before the checkpoint's shapes say more.
_BUILDER_RECIPES = {
    "swin-t": {
        "backbone": "swin_large_patch4_window12_384",
        "feature_taps": "paper",
        "image_size": 384,
        "fpn_size": 1536,
        "proj_type": "Linear",
        "upsample_type": "Conv",
        "num_selects": [2048, 512, 128, 32],
    },
    "resnet50": {
        "backbone": "resnet50",
        "out_indices": [-4, -3, -2, -1],  # layer1..layer4 (timm features 1..4)
        "image_size": 448,
        "fpn_size": 512,
        "proj_type": "Conv",
        "upsample_type": "Bilinear",
        "num_selects": [32, 32, 32, 32],
    },
    "vit": {
        "backbone": "vit_base_patch16_224_miil",  # their vit_base_patch16_224_miil_in21k: no qkv bias
        "out_indices": [-4, -3, -2, -1],  # blocks 8..11
        "image_size": 448,
        "fpn_size": 512,
        "proj_type": "Linear",
        "upsample_type": "Conv",
        "num_selects": [32, 32, 32, 32],
    },
}


def check_builder(backbone_name: str, method: str | None = None) -> None:
    """
    Refuses, from the arguments alone (before any checkpoint is read), a builder that can never be converted: an
    unknown one, `efficient`, and HERBS (`method="herbs"`) from a builder other than `swin-t`. `method=None` (to be
    read from the checkpoint) checks the builder only.

    Raises:
        [`ConversionError`]: the reason, and what to do instead.
    """
    if method is not None and method not in METHODS:
        raise ConversionError(f"--method must be one of {METHODS}, got {method!r}.")
    if method == "herbs" and backbone_name in ("resnet50", "efficient"):
        raise ConversionError(
            f"--method herbs --backbone {backbone_name}: the HERBS code cannot build this model (its bottom-up pyramid "
            "mixes token sequences, which the CNN builders do not give); HERBS checkpoints come from --backbone swin-t."
        )
    if method == "herbs" and backbone_name == "vit":
        raise ConversionError(
            "--method herbs --backbone vit: their ViT builder puts the class token on the token axis that HERBS' "
            "pyramids mix with learned Conv1d layers (785 × 785 at 448 px), and this model reads the 784 patch tokens "
            "only, so those weights have no place here; HERBS checkpoints convert from --backbone swin-t."
        )
    if backbone_name == "efficient":
        raise ConversionError(
            "--backbone efficient cannot be converted: the original builds torchvision's efficientnet_b7 and taps "
            "`features.4..7` (its stages 4-7, strides 16, 16, 32, 32), but a timm EfficientNet with "
            "features_only=True only exposes the last block of every stride (blocks 0, 1, 2, 4, 6), so stages 4 and 6 "
            "of torchvision (timm blocks 3 and 5) cannot be tapped; torchvision's B7 also uses BatchNorm eps=1e-3 "
            "where timm's efficientnet_b7 uses 1e-5. The weights could be renamed, but the converted model would "
            "not compute what the original computed. Fine-tune a timm EfficientNet PIM instead (backbone="
            "'efficientnet_b7' or 'tf_efficientnet_b7')."
        )
    if backbone_name not in _BUILDER_RECIPES:
        raise ConversionError(
            f"--backbone {backbone_name!r} is not a builder of the original code: use one of "
            f"{', '.join(_BUILDER_RECIPES)}."
        )


def original_recipe(
    backbone_name: str,
    num_classes: int,
    image_size: int | None = None,
    fpn_size: int | None = None,
    num_selects: list[int] | None = None,
    method: str = "pim",
    **overrides,
) -> PimConfig:
    """
    The [`PimConfig`] of the model one of the original `models/builder.py` builders makes (`backbone_name` as their
    `model_name`: "swin-t", "resnet50", "vit"), with their defaults (and `configs/CUB200_SwinT.yaml` for "swin-t")
    unless `image_size`, `fpn_size` or `num_selects` say otherwise; `method="herbs"`: the same builder in the HERBS
    repository with its `configs/config.yaml`. `overrides` go to `PimConfig` as they are.
    """
    check_builder(backbone_name, method)
    kwargs = dict(_BUILDER_RECIPES[backbone_name])
    if method == "herbs" and backbone_name == "swin-t":
        kwargs["num_selects"] = [256, 128, 64, 32]  # their configs/config.yaml
    if image_size is not None:
        kwargs["image_size"] = image_size
    if fpn_size is not None:
        kwargs["fpn_size"] = fpn_size
    if num_selects is not None:
        kwargs["num_selects"] = list(num_selects)
    kwargs.update(
        num_labels=num_classes,
        backbone_pretrained=False,  # every weight comes from the checkpoint
        use_fpn=True,
        use_selection=True,
        use_combiner=True,  # the original builders always build the combiner
        tokens_per_graph_node=32,  # hard-coded in the original
    )
    if method == "herbs":
        kwargs.update(_HERBS_RECIPE)
    kwargs.update(overrides)
    return PimConfig(**kwargs)


def _layer_names(original: dict) -> list[str]:
    """The original's layer names ('layer1', ...), in the order its modules were built (= the state dict's)."""
    names: list[str] = []
    pattern = re.compile(
        r"^(?:fpn(?:_down|_up)?\.Proj_|fpn_classifier_(?:down_|up_)?|selector\.classifier_l_|combiner\.proj_)(.+?)\."
    )
    for key in original:
        match = pattern.match(key)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    if all(re.fullmatch(r"\D*\d+", name) for name in names):  # 'layer1'..'layer4': by number, whatever the key order
        names.sort(key=lambda name: int(re.search(r"\d+$", name).group()))
    return names


def _head_key(key: str, layers: dict[str, int]) -> str | None:
    """Our name of an original PIM-head key (anything but the backbone), or None."""
    for prefix, module, offset in _LAYER_MODULES:
        for name, index in layers.items():
            if key.startswith(f"{prefix}{name}."):
                return f"{_BASE}{module.format(index + offset)}.{key[len(prefix) + len(name) + 1 :]}"
    if key.startswith("combiner.classifier."):  # the combiner's classifier is our head's
        return key.removeprefix("combiner.")
    if key.startswith("combiner."):
        module, _, rest = key[len("combiner.") :].partition(".")
        if module in _COMBINER_NAMES:
            return f"{_BASE}combiner." + _COMBINER_NAMES[module] + (f".{rest}" if rest else "")
    if key.startswith("classifier."):  # backbone-only original (every module off)
        return key
    return None


def _backbone_candidates(key: str) -> list[str]:
    """Our possible names of an original `backbone.*` key (timm features_only vs FeatureGetterNet wrappers)."""
    rest = key[len("backbone.") :]
    # The original's vendored timm merges patches at the END of Swin stage i, current timm at the START of stage i+1.
    rest = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", rest)
    return [f"{_BASE}backbone.model.{rest}", f"{_BASE}backbone.model.model.{rest}"]


def _likely_cause(our_key: str, config: PimConfig) -> str:
    our_key = our_key.removeprefix(_BASE)
    if our_key.startswith("backbone."):
        return f"the checkpoint's backbone is not {config.backbone!r}: check --backbone"
    if our_key.startswith(("feature_pyramid.token_upsamplers.", "bottom_up_pyramid.token_downsamplers.")):
        return (
            f"the number of tokens per layer differs: the checkpoint was trained at another image size than "
            f"--image_size {config.image_size}"
        )
    if our_key.startswith(("combiner.node_pool", "combiner.adjacency", "combiner.node_readout")):
        return f"sum(num_selects) differs: check --num_selects (now {config.num_selects})"
    if our_key.endswith(("classifier.weight", "classifier.bias", "layers.3.weight", "layers.3.bias")) or (
        our_key.startswith("token_classifiers.") and not config.use_fpn
    ):
        return f"the number of classes differs: check --num_classes (now {config.num_labels}), or --fpn_size"
    if our_key.startswith("feature_pyramid.projections."):
        return f"the backbone's channels or the pyramid size differ: check --backbone and --fpn_size ({config.fpn_size})"
    return f"check --backbone, --num_classes ({config.num_labels}) and --fpn_size ({config.fpn_size})"


def _expected_model(config: PimConfig) -> tuple[dict[str, torch.Size], dict[str, torch.Size]]:
    """Shapes of our model's state dict and of its recomputed (non-persistent) buffers, built on the meta device."""
    with torch.device("meta"):
        model = PimForImageClassification(config)
    state = {key: value.shape for key, value in model.state_dict().items()}
    buffers = {key: value.shape for key, value in model.named_buffers() if key not in state}
    return state, buffers


def convert_state_dict(
    original: dict[str, torch.Tensor], config: PimConfig, allow_missing: bool = False
) -> tuple[dict[str, torch.Tensor], "ConversionReport"]:
    """
    Renames the state dict of an original FGVC-PIM `PluginMoodel` into the state dict of
    `PimForImageClassification(config)`. Raises `ConversionError` naming the key when a shape does not match, and
    when an original tensor has no place in our model or a model tensor is not in the checkpoint (unless
    `allow_missing`, which leaves them to the report).
    """
    original = {key.removeprefix("module."): value for key, value in original.items()}
    expected, recomputed = _expected_model(config)
    layer_names = _layer_names(original)
    report = ConversionReport()
    num_layers = len(config.num_selects) if config.use_selection else len(config.out_indices)
    if layer_names and len(layer_names) != num_layers:
        raise ConversionError(
            f"The checkpoint has {len(layer_names)} PIM layers ({', '.join(layer_names)}) but the model has "
            f"{num_layers}: check --backbone."
        )
    layers = {name: index for index, name in enumerate(layer_names)}
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in original.items():
        if not isinstance(tensor, torch.Tensor):
            raise ConversionError(f"{key!r} is a {type(tensor).__name__}, not a tensor: is this a PIM state dict?")
        if key.startswith("backbone."):
            candidates = _backbone_candidates(key)
            leaf = key.rsplit(".", 1)[-1]
            if leaf in _RECOMPUTED_BUFFERS:
                ours = next((name for name in candidates if name in recomputed), None)
                if ours is not None and recomputed[ours] != tensor.shape:
                    raise ConversionError(
                        f"{key}: shape {tuple(tensor.shape)} in the checkpoint but {tuple(recomputed[ours])} in the "
                        f"model ({ours}). Likely cause: the checkpoint's Swin ran at another image size than "
                        f"--image_size {config.image_size} (its attention windows differ)."
                    )
                report.dropped[key] = "buffers current timm recomputes"
                continue
            our_key = next((name for name in candidates if name in expected), None)
            if our_key is None:
                top = key[len("backbone.") :].split(".", 1)[0]
                if top in _UNUSED_BACKBONE_MODULES:
                    report.dropped[key] = _UNUSED_BACKBONE_MODULES[top]
                else:
                    report.unmapped.append(key)
                continue
        else:
            our_key = _head_key(key, layers)
            if our_key is None or our_key not in expected:
                report.unmapped.append(key)
                continue
        if tensor.dim() == 3 and tuple(expected[our_key]) == (*tensor.shape, 1):
            tensor = tensor.unsqueeze(-1)  # the original's Conv1d token classifier is our 1×1 Conv2d
        if tuple(expected[our_key]) != tuple(tensor.shape):
            raise ConversionError(
                f"{key} -> {our_key}: shape {tuple(tensor.shape)} in the checkpoint but {tuple(expected[our_key])} in "
                f"the model. Likely cause: {_likely_cause(our_key, config)}."
            )
        if our_key in converted:
            first = next(name for name, ours in report.mapped.items() if ours == our_key)
            raise ConversionError(f"{first} and {key} both map to {our_key}: is this a PIM state dict?")
        converted[our_key] = tensor.detach().clone()
        report.mapped[key] = our_key
    report.missing = [key for key in expected if key not in converted]
    if config.backbone.startswith("vit"):
        report.notes.append(
            "the original ViT builder also feeds the class token to the pyramid and the selector as one more token "
            "(785 at 448 px); this model uses the patch tokens only. The weights convert exactly and the final "
            "logits are the same whenever the original's selector does not keep the class token, but they differ "
            "for images where it does (and the layer means always differ a little): evaluate the converted model "
            "before quoting the original's accuracy."
        )
    if not report.complete and not allow_missing:
        raise ConversionError("The checkpoint does not match the model:\n" + report.format())
    return converted, report


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of an original `best.pt` (`{"model": ..., ...}`) or of a bare state dict."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path} holds pickled Python objects other than tensors and plain containers (it would run code when "
            f"unpickled), so it is refused. If it comes from a source you trust, re-save only the weights there: "
            f"torch.save({{'model': model.state_dict()}}, 'best.pt'). ({str(error).splitlines()[0]})"
        ) from None
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint or not all(
        isinstance(value, torch.Tensor) for value in checkpoint.values()
    ):
        raise ConversionError(
            f"{path} is neither an original FGVC-PIM checkpoint ({{'model': state_dict, ...}}) nor a state dict."
        )
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def inspect_original(original: dict[str, torch.Tensor]) -> dict[str, int | None]:
    """What the tensor shapes tell: num_classes, fpn_size, sum(num_selects), image_size (None where they don't)."""
    found: dict[str, int | None] = {"num_classes": None, "fpn_size": None, "total_selects": None, "image_size": None}
    for key, tensor in original.items():
        if re.match(r"^(combiner\.classifier|classifier)\.weight$", key) or re.match(
            r"^(fpn_classifier_.+\.3|selector\.classifier_l_[^.]+)\.weight$", key
        ):
            found["num_classes"] = found["num_classes"] or tensor.shape[0]
        elif re.match(r"^fpn(?:_down)?\.Proj_.+\.2\.weight$", key):
            found["fpn_size"] = found["fpn_size"] or tensor.shape[0]
        elif key == "combiner.param_pool0.weight":
            found["total_selects"] = tensor.shape[1]
    layer_names = _layer_names(original)
    upsampler = None
    if len(layer_names) > 1:
        pyramid = "fpn_down" if guess_method(original) == "herbs" else "fpn"
        upsampler = f"{pyramid}.Up_{layer_names[1]}.weight"
    patch = original.get("backbone.patch_embed.proj.weight")
    if "backbone.pos_embed" in original and patch is not None:  # ViT: (1, 1 + (size/patch)², C)
        side = math.isqrt(original["backbone.pos_embed"].shape[1] - 1)
        found["image_size"] = side * patch.shape[-1]
    elif upsampler in original and patch is not None and "backbone.layers.0.blocks.0.norm1.weight" in original:
        # Swin with the paper's taps: the first layer (after the first patch merging) has (size / 8)² tokens.
        found["image_size"] = math.isqrt(original[upsampler].shape[0]) * patch.shape[-1] * 2
    return found


def guess_backbone(original: dict[str, torch.Tensor]) -> str | None:
    """The original builder whose backbone key names the checkpoint has ("swin-t", "resnet50", "vit", "efficient")."""
    keys = set(original)
    if "backbone.layers.0.blocks.0.norm1.weight" in keys:
        return "swin-t"
    if "backbone.pos_embed" in keys and "backbone.blocks.0.norm1.weight" in keys:
        return "vit"
    if "backbone.layer1.0.conv1.weight" in keys:
        return "resnet50"
    if "backbone.features.0.0.weight" in keys:  # torchvision EfficientNet
        return "efficient"
    return None


def guess_method(original: dict[str, torch.Tensor]) -> str:
    """"herbs" for a checkpoint of the HERBS code (its two pyramids `fpn_down` / `fpn_up`), else "pim"."""
    return "herbs" if any(key.startswith(("fpn_up.", "fpn_down.")) for key in original) else "pim"


def config_for_checkpoint(
    backbone_name: str,
    original: dict[str, torch.Tensor],
    num_classes: int | None = None,
    image_size: int | None = None,
    fpn_size: int | None = None,
    num_selects: list[int] | None = None,
    method: str | None = None,
) -> PimConfig:
    """`original_recipe` with what the checkpoint's shapes tell, checked against what the user said."""
    found_method = guess_method(original)
    if method is not None and method != found_method:
        repository = {"pim": "FGVC-PIM", "herbs": "FGVC-HERBS"}[found_method]
        raise ConversionError(
            f"--method {method} but the checkpoint comes from the {repository} code (its key names, e.g. "
            f"{next(key for key in original if key.startswith(('fpn', 'combiner')))}): pass --method {found_method}."
        )
    guessed = guess_backbone(original)
    if guessed is not None and guessed != backbone_name:
        raise ConversionError(
            f"The checkpoint holds a {guessed!r} backbone (key names such as "
            f"{next(key for key in original if key.startswith('backbone.'))}), not --backbone {backbone_name}."
        )
    found = inspect_original(original)
    for name, given in (("num_classes", num_classes), ("fpn_size", fpn_size), ("image_size", image_size)):
        if given is not None and found[name] is not None and given != found[name]:
            raise ConversionError(
                f"--{name} {given} but the checkpoint was trained with {name}={found[name]} (from its tensor shapes)."
            )
    num_classes = num_classes or found["num_classes"]
    if num_classes is None:
        raise ConversionError("Cannot tell the number of classes from the checkpoint: pass --num_classes.")
    recipe = original_recipe(
        backbone_name,
        num_classes,
        image_size=image_size or found["image_size"],
        fpn_size=fpn_size or found["fpn_size"],
        num_selects=num_selects,
        method=found_method,
    )
    if found["total_selects"] is not None and sum(recipe.num_selects) != found["total_selects"]:
        example = "256 128 64 32" if found_method == "herbs" else "2048 512 128 32"
        raise ConversionError(
            f"The checkpoint's combiner pools sum(num_selects)={found['total_selects']} tokens but num_selects="
            f"{recipe.num_selects} sums to {sum(recipe.num_selects)}: pass the per-layer numbers it was trained with, "
            f"e.g. --num_selects {example} (only their sum is stored in the checkpoint)."
        )
    return recipe


def read_class_names(path: str | Path) -> list[str]:
    """
    Class names, in label order, from CUB's `classes.txt` (`1 001.Black_footed_Albatross` -> "Black footed
    Albatross") or from a file with one name per line (UTF-8, a byte-order mark ignored; blank lines skipped). The
    original labels class folders in alphabetical order.

    The CUB forms are recognised per file, not per line: a leading `<id> ` is removed only when every line has one
    and the ids count up by one (so a file whose every name starts with a number keeps them), and a folder name
    `<number>.<name>` becomes `<name>` with spaces for underscores only when every line is one, so
    that a name of a one-name-per-line file that starts with a number ("3 toed woodpecker") is kept whole.
    """
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    names = [line for line in lines if line]
    ids = [re.match(r"(\d+)\s+(\S.*)", name) for name in names]  # "<id> <name>"
    if names and all(ids) and len({int(match.group(1)) - index for index, match in enumerate(ids)}) == 1:
        names = [match.group(2) for match in ids]
    folders = [re.fullmatch(r"\d+\.(.+)", name) for name in names]  # CUB folder names "001.Black_footed_Albatross"
    if names and all(folders):
        names = [folder.group(1).replace("_", " ") for folder in folders]
    return names


def convert_checkpoint(
    checkpoint_path: str | Path,
    backbone_name: str,
    output_dir: str | Path,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    fpn_size: int | None = None,
    num_selects: list[int] | None = None,
    resize_size: int | None = None,
    allow_missing: bool = False,
    method: str | None = None,
) -> ConversionReport:
    """
    Converts `checkpoint_path` and saves the model and its image processor in `output_dir`. `method` ("pim" or
    "herbs") is read from the checkpoint when not given. A builder that can never be converted is refused before the
    checkpoint is read ([`check_builder`]).
    """
    check_builder(backbone_name, method)
    original = load_original_checkpoint(checkpoint_path)
    config = config_for_checkpoint(backbone_name, original, num_classes, image_size, fpn_size, num_selects, method)
    if class_names is not None:
        if len(class_names) != config.num_labels:
            raise ConversionError(
                f"{len(class_names)} class names for a checkpoint with {config.num_labels} classes."
            )
        config.id2label = dict(enumerate(class_names))
        config.label2id = {name: index for index, name in enumerate(class_names)}
    state_dict, report = convert_state_dict(original, config, allow_missing=allow_missing)
    model = PimForImageClassification(config)
    model.load_state_dict(state_dict, strict=not allow_missing)
    model.eval()
    model.save_pretrained(output_dir)
    PimImageProcessor.for_image_size(config.image_size, resize_size=resize_size).save_pretrained(output_dir)
    return report


__all__ = [
    "ConversionError",
    "ConversionReport",
    "check_builder",
    "config_for_checkpoint",
    "convert_checkpoint",
    "convert_state_dict",
    "guess_backbone",
    "guess_method",
    "inspect_original",
    "load_original_checkpoint",
    "original_recipe",
    "read_class_names",
]
