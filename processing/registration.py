"""Registers the XModal processors with the transformers Auto classes, keyed by `XModalConfig`.

`xmodal` (the model package) never imports `xmodal.processing`, so the registration happens here,
called once by the package `__init__` (importing any processing module runs it first).
The processor modules never import this one, so there is no import circle, and a checkpoint's copy
of their code (see `register_for_auto_class`) carries none of it.
"""

import logging

logger = logging.getLogger(__name__)
_registered = False


def register_processing_auto_classes():
    """Register AutoImageProcessor, AutoFeatureExtractor, AutoVideoProcessor and AutoProcessor; safe to call
    repeatedly.

    Returns True once registered, False while `XModalConfig` cannot be imported (then a later
    call tries again).
    """
    global _registered
    if _registered:
        return True
    from .feature_extraction_xmodal import XModalFeatureExtractor
    from .image_processing_xmodal import XModalImageProcessor
    from .processing_xmodal import XModalProcessor
    from .video_processing_xmodal import XModalVideoProcessor

    # A saved processor copies its code next to its files and names it in an `auto_map`, so that
    # `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` works where xmodal is not installed.
    XModalProcessor.register_for_auto_class("AutoProcessor")
    XModalImageProcessor.register_for_auto_class("AutoImageProcessor")
    XModalFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    XModalVideoProcessor.register_for_auto_class("AutoVideoProcessor")
    try:
        from xmodal import XModalConfig
    except ImportError as error:
        logger.debug("XModalConfig is not importable yet (%s); Auto-class registration deferred.", error)
        return False
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor
    # `transformers.AutoVideoProcessor` is a placeholder that raises without torchvision; the class itself is not.
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    AutoImageProcessor.register(XModalConfig, image_processor_classes={"pil": XModalImageProcessor}, exist_ok=True)
    AutoFeatureExtractor.register(XModalConfig, XModalFeatureExtractor, exist_ok=True)
    # Under "torchvision" too: `AutoVideoProcessor.from_pretrained` (and `ProcessorMixin` loading through it)
    # asks for that backend by default. The class needs no torchvision (see video_processing_xmodal.py).
    AutoVideoProcessor.register(XModalConfig, video_processor_classes={"pil": XModalVideoProcessor,
                                                                       "torchvision": XModalVideoProcessor},
                                exist_ok=True)
    AutoProcessor.register(XModalConfig, XModalProcessor, exist_ok=True)
    _registered = True
    return True


__all__ = ["register_processing_auto_classes"]
