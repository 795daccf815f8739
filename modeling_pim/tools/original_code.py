"""
The names of the authors' code that `pim-convert` reads (chou141253/FGVC-PIM and chou141253/FGVC-HERBS): the
builders of its `models/builder.py` and the two methods. Shared by the light command (`pim_convert.py`, no heavy
imports) and the conversion (`convert.py`).
"""

# The builders of the original code's `models/builder.py` (`model_name` in its configs).
BACKBONES = ("swin-t", "resnet50", "vit", "efficient")
# The authors' two codes whose checkpoints convert: FGVC-PIM and FGVC-HERBS.
METHODS = ("pim", "herbs")

__all__ = ["BACKBONES", "METHODS"]
