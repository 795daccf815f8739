"""
PIM (Chou et al., "A Novel Plug-in Module for Fine-grained Visual Classification") for Hugging Face transformers.

`import modeling_pim` is instant: torch, timm and transformers are imported, and the classes registered with the
`Auto*` classes (locally, and for `save_pretrained` to write `auto_map` and copy the code files), on the first access
to one of the names below (`from modeling_pim import PimConfig`). This keeps the command-line tools' `--help` fast.
Code of this package that saves or auto-loads a model imports these names from the package, not from the
remote-code modules, so that the registration has happened.
"""

import importlib
from typing import Any


# Public name → the remote-code module that defines it.
_MODULE_OF = {
    "PimConfig": "configuration_pim",
    "PimConfigError": "configuration_pim",
    "PimImageProcessor": "image_processing_pim",
    "PimForImageClassification": "modeling_pim",
    "PimImageClassifierOutput": "modeling_pim",
    "PimModel": "modeling_pim",
    "PimModelOutput": "modeling_pim",
    "PimPreTrainedModel": "modeling_pim",
}


def _register_auto_classes() -> None:
    """Registers the PIM classes with transformers' `Auto*` classes (idempotent)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

    from .configuration_pim import PimConfig
    from .image_processing_pim import PimImageProcessor
    from .modeling_pim import PimForImageClassification, PimModel

    AutoConfig.register(PimConfig.model_type, PimConfig, exist_ok=True)
    AutoModel.register(PimConfig, PimModel, exist_ok=True)
    AutoModelForImageClassification.register(PimConfig, PimForImageClassification, exist_ok=True)
    AutoImageProcessor.register(PimConfig, image_processor_classes={"torchvision": PimImageProcessor}, exist_ok=True)
    PimConfig.register_for_auto_class()
    PimModel.register_for_auto_class("AutoModel")
    PimForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    PimImageProcessor.register_for_auto_class("AutoImageProcessor")


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _register_auto_classes()
    for public_name, module_name in _MODULE_OF.items():
        globals()[public_name] = getattr(importlib.import_module(f".{module_name}", __name__), public_name)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = sorted(_MODULE_OF)
