"""xmodal: cross-modal (text, image, speech, video) models as `transformers` classes.

Importing the package registers the configs and models with the Auto classes, and marks them
with `register_for_auto_class` so that a saved checkpoint carries its own code.
"""

from .configuration_xmodal import (
    XModalAudioConfig,
    XModalConfig,
    XModalDecoderConfig,
    XModalTextConfig,
    XModalVideoConfig,
    XModalVisionConfig,
)
from .fusion import FUSION_LAYERS
from .modalities import MODALITIES, MODALITY_NAMES, PARTS
from .modeling_xmodal import (
    XModalForConditionalGeneration,
    XModalForCTC,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalForVideoPreTraining,
    XModalModel,
    XModalPreTrainedModel,
)
from .registration import AUTO_MAP, register_auto_classes

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "AUTO_MAP",
    "FUSION_LAYERS",
    "MODALITIES",
    "MODALITY_NAMES",
    "PARTS",
    "XModalAudioConfig",
    "XModalConfig",
    "XModalDecoderConfig",
    "XModalForCTC",
    "XModalForConditionalGeneration",
    "XModalForMatching",
    "XModalForPreTraining",
    "XModalForSequenceClassification",
    "XModalForVideoPreTraining",
    "XModalModel",
    "XModalPreTrainedModel",
    "XModalTextConfig",
    "XModalVideoConfig",
    "XModalVisionConfig",
]
