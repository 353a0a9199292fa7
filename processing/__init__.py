"""Turns raw text, images, sound and video into XModal inputs, and builds the built-in data.

Names are resolved lazily so that `import xmodal.processing` stays cheap (no datasets, no
soundfile) until a part is used.
"""

import importlib

_EXPORTS = {
    # processors
    "XModalImageProcessor": ".image_processing_xmodal",
    "XModalFeatureExtractor": ".feature_extraction_xmodal",
    "XModalVideoProcessor": ".video_processing_xmodal",
    "XModalProcessor": ".processing_xmodal",
    "load_video_audio": ".video_processing_xmodal",
    "train_tokenizer": ".tokenization_xmodal",
    "load_default_tokenizer": ".tokenization_xmodal",
    # built-in data
    "build_scene_dataset": ".scenes",
    "load_scene_dataset": ".scenes",
    "build_digits_dataset": ".digits",
    "synthesize_speech": ".speech",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Importing `xmodal.processing` registers the processors with AutoImageProcessor,
# AutoFeatureExtractor, AutoVideoProcessor and AutoProcessor (the model package never imports processing), and
# marks them with `register_for_auto_class` so that a saved processor carries its code. This is
# the only place registration runs: the processor modules never import `.registration`.
from .registration import register_processing_auto_classes  # noqa: E402

register_processing_auto_classes()
