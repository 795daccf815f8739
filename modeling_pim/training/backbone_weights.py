"""
Checking what a local backbone weights file (`train_pim.py --backbone_weights FILE`) gave the backbone. timm loads
such a file without strict key matching (the classifier of its model is dropped), so a file whose keys fit none of
the backbone's tensors (saved with a `backbone.` prefix, or of another architecture) loads nothing and only logs
"missing keys": the run would train a randomly initialised backbone believing it pretrained.

A tensor counts as loaded when it holds the values of a tensor of the file (same shape, same values), whatever its
name: this reads what ended in the backbone after timm's own conversions (renamed keys, a first convolution adapted to
other input channels), with no copy of timm's logic. Tensors with a single value throughout (a fresh normalisation
layer's ones and zeros) tell nothing either way and are not counted. The share that decides is that of the values
(a file of the first layers only loads many small tensors, but few of the backbone's weights).
"""

import hashlib
import os
from collections.abc import Iterable

import torch
from timm.models import load_state_dict
from torch import nn

from ..utils.cli import UserInputError


# Below this share of the values of its (non-constant) tensors loaded from the file, a backbone is not pretrained.
MIN_LOADED_FRACTION = 0.5
NUM_NAMED_KEYS = 3


def _fingerprint(tensor: torch.Tensor) -> tuple[tuple[int, ...], bytes]:
    """The shape and a hash of the float32 values of `tensor`."""
    values = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes()
    return tuple(tensor.shape), hashlib.blake2b(values, digest_size=16).digest()


def _is_informative(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is floating point with more than one value (a fresh initialisation cannot match it)."""
    if not tensor.is_floating_point() or tensor.numel() < 2:
        return False
    flat = tensor.detach().flatten()
    return not bool(torch.all(flat == flat[0]))


def loaded_tensor_names(
    backbone: nn.Module, weights: dict[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """
    The informative tensors of `backbone` (floating point, more than one value) split by whether they hold the values
    of a tensor of `weights` (a state dict, as timm read the file).

    Returns:
        `(loaded, not_loaded)`: the names of the backbone's tensors, in `state_dict` order.
    """
    in_file = {_fingerprint(value) for value in weights.values() if _is_informative(value)}
    loaded, not_loaded = [], []
    for name, value in backbone.state_dict().items():
        if _is_informative(value):
            (loaded if _fingerprint(value) in in_file else not_loaded).append(name)
    return loaded, not_loaded


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:NUM_NAMED_KEYS]) + (", ..." if len(names) > NUM_NAMED_KEYS else "")


def _key_summary(keys: list[str]) -> str:
    """How an error describes the keys of a weights file: their common prefix, else the first ones."""
    prefix = os.path.commonprefix(keys)
    prefix = prefix[: prefix.rfind(".") + 1]
    return f"its keys start with {prefix!r}" if prefix else f"its keys are {_listed(keys)}"


def check_backbone_weights(backbone: nn.Module, weights_file: str | os.PathLike, backbone_name: str) -> str:
    """
    Refuses a `--backbone_weights` file that gave `backbone` (the timm model `backbone_name`, after loading the file)
    less than `MIN_LOADED_FRACTION` of the values of its non-constant tensors.

    Returns:
        The log line of a file that did: how many of the backbone's tensors it loaded, and which it did not.

    Raises:
        [`UserInputError`]: the file loaded none or few of the backbone's tensors; the message gives the counts, the
        file's key names and the backbone's.
    """
    weights = load_state_dict(str(weights_file))  # as timm reads it: .safetensors, or .pth with or without state_dict
    loaded, not_loaded = loaded_tensor_names(backbone, weights)
    sizes = {name: value.numel() for name, value in backbone.state_dict().items()}
    share = sum(sizes[name] for name in loaded) / max(1, sum(sizes[name] for name in loaded + not_loaded))
    counts = f"{len(loaded)} of the {len(loaded) + len(not_loaded)} non-constant tensors of {backbone_name}"
    if share < MIN_LOADED_FRACTION:
        floating = [name for name, value in weights.items() if value.is_floating_point()]
        raise UserInputError(
            f"--backbone_weights {weights_file} holds the values of {counts} ({share:.0%} of their values; "
            f"{_key_summary(floating)}; {backbone_name}'s are {_listed(sizes)}): give timm's weights of "
            f"{backbone_name} (the state dict of timm.create_model({backbone_name!r}), e.g. the model.safetensors of "
            "its Hub repository)."
        )
    missing = f" (not from the file: {_listed(not_loaded)})" if not_loaded else ""
    return f"Backbone: loaded {counts} ({share:.0%} of their values) from {weights_file}{missing}."


__all__ = ["MIN_LOADED_FRACTION", "check_backbone_weights", "loaded_tensor_names"]
