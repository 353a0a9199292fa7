"""Registration with the `transformers` Auto classes (done once, when `xmodal` is imported)."""

import transformers
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

from .configuration_xmodal import (
    XModalAudioConfig,
    XModalConfig,
    XModalDecoderConfig,
    XModalTextConfig,
    XModalVideoConfig,
    XModalVisionConfig,
)
from .modeling_xmodal import (
    AUTO_MAP,
    XModalForConditionalGeneration,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
)

MODEL_CLASSES = {
    "XModalModel": XModalModel,
    "XModalForPreTraining": XModalForPreTraining,
    "XModalForSequenceClassification": XModalForSequenceClassification,
    "XModalForConditionalGeneration": XModalForConditionalGeneration,
    "XModalForMatching": XModalForMatching,
}


def register_auto_classes():
    """Registers configs and models with the Auto classes; safe to call more than once."""
    for config_class in (XModalConfig, XModalTextConfig, XModalVisionConfig, XModalAudioConfig, XModalVideoConfig,
                         XModalDecoderConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    XModalConfig.register_for_auto_class("AutoConfig")
    for auto_name, target in AUTO_MAP.items():
        if auto_name == "AutoConfig":
            continue
        model_class = MODEL_CLASSES[target.split(".")[-1]]
        getattr(transformers, auto_name).register(XModalConfig, model_class, exist_ok=True)
    # The speech-recognition pipeline decodes with `generate` only for classes named in this static
    # mapping (registering with AutoModelForSpeechSeq2Seq does not add to it); without the entry it
    # would treat the model as CTC. Adding our class name is the registration it reads.
    MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES.setdefault(XModalConfig.model_type, "XModalForConditionalGeneration")
    for model_class in MODEL_CLASSES.values():
        model_class.register_for_auto_class(next(k for k, v in AUTO_MAP.items() if v.endswith(model_class.__name__)))
