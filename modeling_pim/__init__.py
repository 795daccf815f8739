"""PIM (Chou et al., "A Novel Plug-in Module for Fine-grained Visual Classification") for Hugging Face transformers."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_pim import PimConfig
from .image_processing_pim import PimImageProcessor
from .modeling_pim import (
    PimForImageClassification,
    PimImageClassifierOutput,
    PimModel,
    PimModelOutput,
    PimPreTrainedModel,
)


AutoConfig.register(PimConfig.model_type, PimConfig, exist_ok=True)
AutoModel.register(PimConfig, PimModel, exist_ok=True)
AutoModelForImageClassification.register(PimConfig, PimForImageClassification, exist_ok=True)
AutoImageProcessor.register(PimConfig, image_processor_classes={"torchvision": PimImageProcessor}, exist_ok=True)
PimConfig.register_for_auto_class()
PimModel.register_for_auto_class("AutoModel")
PimForImageClassification.register_for_auto_class("AutoModelForImageClassification")
PimImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "PimConfig",
    "PimForImageClassification",
    "PimImageClassifierOutput",
    "PimImageProcessor",
    "PimModel",
    "PimModelOutput",
    "PimPreTrainedModel",
]
