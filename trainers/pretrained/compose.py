"""The `towers` config section made real: pretrained towers composed with fresh parts, frozen or adapted.

`resolve_towers` runs when a run starts (never when a config file is read): each pretrained tower's
config replaces `model.<part>_config`, so that the processor and the model read the same towers, and
`train: lora` towers join `lora.parts`. `build_composed_model` then loads the weights. The encoder of an
encoder-decoder folder becomes the tower; the decoder part starts the text decoder from that folder's
decoder.
"""

import copy

import torch
from xmodal.configuration_xmodal import TOWER_CONFIG_CLASSES
from xmodal.modalities import MODALITIES, PART_CONFIG_KEYS, PARTS, parameter_part
from xmodal.towers import tower_output_size

from ..config import ConfigError
from ..data import configure_tokens
from ..lora import apply_lora
from .sources import NAMED_SOURCES, resolve_source
from .whisper_window import truncate_whisper_window, window_positions

OWN_MODEL_TYPES = {cls.model_type for cls in TOWER_CONFIG_CLASSES.values()}


def resolve_towers(config):
    """A copy of `config` with `model.<part>_config` filled from the pretrained towers and `lora` from the
    `train: lora` towers. Named sources are made ready here (the Whisper conversion runs once, then is
    cached); a config without pretrained towers comes back as it is."""
    if not config.towers.parts():
        return config
    config = copy.deepcopy(config)
    config.model.update(tower_model_configs(config))
    towers = config.towers.parts()
    lora_parts = [part for part, settings in towers.items() if settings["train"] == "lora"]
    if lora_parts:
        # A part named in `towers` trains as it says there; other parts keep their `lora.parts` entry.
        earlier = [part for part in config.lora.parts if part not in towers] if config.lora.enabled else []
        config.lora.enabled = True
        config.lora.parts = earlier + lora_parts
    return config


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
    # A config that is already the folder's (a saved, resolved run config) is not a request to check.
    resolved = isinstance(requested, dict) and requested.get("model_type") not in (None, *OWN_MODEL_TYPES)
    if wanted is not None and not resolved and wanted != _hidden_size(config):
        raise ConfigError(f"{config_file}: hidden size {_hidden_size(config)} does not fit "
                          f"model.{PART_CONFIG_KEYS[part]}.hidden_size={wanted}; drop that key (the folder sets it) "
                          "or use a folder of that size.")


def tower_model_configs(run_config):
    """{`model` key: the pretrained tower's config as a dict} for every tower with `from` (see `resolve_towers`)."""
    from transformers import AutoConfig

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
        truncate_whisper_window(model, settings["window_seconds"])
    return model


def build_composed_model(config, tokenizer, cls, attention, target_tokenizer=None):
    """`config.towers` made real: pretrained towers loaded, the rest fresh from `config.model`, the frozen
    parts frozen and LoRA adapters on the `train: lora` parts (projections, fusion and heads train in full)."""
    towers = config.towers.parts()
    kwargs = configure_tokens(config.model, tokenizer, config.data, target_tokenizer)
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
        full = [part for part in PARTS if towers.get(part, {"train": "full"})["train"] == "full"]
        model = apply_lora(model, config.lora, config.task, train_in_full=full)
    report_trainable(model, config)
    return model


def part_modules(model, part):
    """The modules of one tower part (for the decoder: its layers and the LM head)."""
    base = getattr(model, "xmodal", model)
    if part == "decoder":
        return [m for m in (getattr(model, "decoder", None), getattr(model, "lm_head", None),
                            getattr(model, "decoder_bridges", None)) if m is not None]
    tower = getattr(base, MODALITIES[part].tower, None)
    return [tower] if tower is not None else []


def trainable_parameter_counts(model):
    """{part: {"trainable": n, "total": n}}; LoRA adapters count in the part they adapt."""
    counts = {}
    for name, parameter in model.named_parameters():
        entry = counts.setdefault(parameter_part(name), {"trainable": 0, "total": 0})
        entry["total"] += parameter.numel()
        entry["trainable"] += parameter.numel() if parameter.requires_grad else 0
    return {part: counts[part] for part in (*PARTS, "other") if part in counts}


def counts_table(counts):
    lines = ["| part | trainable | total |", "|---|---:|---:|"]
    for part, entry in counts.items():
        lines.append(f"| {part} | {entry['trainable']:,} | {entry['total']:,} |")
    trainable, total = (sum(e[k] for e in counts.values()) for k in ("trainable", "total"))
    lines.append(f"| all | {trainable:,} | {total:,} |")
    return "\n".join(lines)


def report_trainable(model, config):
    """Prints the trainable parameters per part (main process); the model card counts them again at the end."""
    from accelerate import PartialState

    counts = trainable_parameter_counts(model)
    if PartialState().is_main_process:
        print("Trainable parameters per part:\n" + counts_table(counts), flush=True)
    return counts


def card_section(config, counts=None):
    """Markdown for the model card: which towers were pretrained (credited with their licences), how each
    trained, and `counts` (trainable parameters per part, counted on the saved model)."""
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
    if counts:
        lines += ["", "Trainable parameters per part:", "", counts_table(counts)]
    return "\n".join(lines) + "\n\n"
