"""PEFT LoRA adapters on the XModal towers, fusion and decoder.

Target modules per part (regular expressions over module names, matched in full by PEFT):

| part    | modules                                  | layers                                     |
|---------|------------------------------------------|--------------------------------------------|
| text    | `qkv_proj`, `out_proj`, `fc1`, `fc2`     | `text_model.encoder.layers.*` (Transformer) |
| image   | `qkv_proj`, `out_proj`, `fc1`, `fc2`     | `vision_model.encoder.layers.*` (ViT)       |
| audio   | `qkv_proj`, `out_proj`, `fc1`, `fc2`     | `audio_model.encoder.layers.*` (Transformer)|
| fusion  | + `q_proj`, `kv_proj` (cross-attention)  | `fusion.encoder.layers.*`                   |
| decoder | + `q_proj`, `kv_proj` (cross-attention)  | `decoder.layers.layers.*`                   |

Self-attention uses one fused `qkv_proj`; cross-attention has `q_proj` and `kv_proj`; every
attention has `out_proj`; MLPs have `fc1` and `fc2`. The BiLSTM text tower, the LSTM audio tower and
the CNN vision tower have no such layers: adapt them by listing them in `modules_to_save`.

A part that is a pretrained `transformers` model (a tower from `towers.<part>.from`) is adapted in the
layers of its own architecture, looked up by its `model_type` in `PRETRAINED_LORA_TARGETS`:

| model_type      | layers                 | modules                                                 |
|-----------------|------------------------|---------------------------------------------------------|
| bert (MiniLM)   | `encoder.layer.N`      | `query`, `key`, `value`, `dense` (attention output, MLP) |
| whisper         | `layers.N`             | `q_proj`, `k_proj`, `v_proj`, `out_proj`, `fc1`, `fc2`   |

(BERT's pooler, which xmodal does not use, is left out.)
"""

import re

from xmodal.modalities import PART_CONFIG_KEYS, parameter_part

SELF_ATTENTION_AND_MLP = ["qkv_proj", "out_proj", "fc1", "fc2"]
WITH_CROSS_ATTENTION = ["qkv_proj", "q_proj", "kv_proj", "out_proj", "fc1", "fc2"]
LORA_TARGET_MODULES = {
    "text": ("text_model", SELF_ATTENTION_AND_MLP),
    "image": ("vision_model", SELF_ATTENTION_AND_MLP),
    "audio": ("audio_model", SELF_ATTENTION_AND_MLP),
    "video": ("video_model", SELF_ATTENTION_AND_MLP),
    "fusion": ("fusion", WITH_CROSS_ATTENTION),
    "decoder": ("decoder", WITH_CROSS_ATTENTION),
}
# model_type of a pretrained part -> (the path of its repeated layers, regex; the modules adapted in them)
PRETRAINED_LORA_TARGETS = {
    "bert": (r"encoder\.layer\.\d+", ["query", "key", "value", "dense"]),
    "whisper": (r"layers\.\d+", ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]),
}
# The freshly initialised head of each task is trained in full next to the adapters.
# The fresh heads each task trains in full beside the adapters, those the model has (`ctc_head` only with a CTC weight).
TASK_HEADS = {"matching": ["itm_head"], "classification": ["classifier"], "pretraining": ["itm_head", "ctc_head"],
              "video": ["video_heads"]}


def target_modules_pattern(parts, modules=None, pretrained=None):
    """One regular expression selecting the listed modules inside the listed parts; `pretrained` maps a part
    that is a pretrained `transformers` model to its `model_type` (see `PRETRAINED_LORA_TARGETS`)."""
    unknown = set(parts) - set(LORA_TARGET_MODULES)
    if unknown:
        raise ValueError(f"lora.parts has unknown parts {sorted(unknown)}; choose from {sorted(LORA_TARGET_MODULES)}.")
    alternatives = []
    for part in parts:
        prefix, default_modules = LORA_TARGET_MODULES[part]
        model_type = (pretrained or {}).get(part)
        if model_type is not None:
            if model_type not in PRETRAINED_LORA_TARGETS:
                raise ValueError(f"No LoRA targets for a pretrained {model_type!r} {part} part; known: "
                                 f"{sorted(PRETRAINED_LORA_TARGETS)} (or train it full / frozen).")
            layers, default_modules = PRETRAINED_LORA_TARGETS[model_type]
            names = "|".join(re.escape(m) for m in (modules or default_modules))
            alternatives.append(rf"(.*\.)?{prefix}\.(.*\.)?{layers}\.(.*\.)?({names})")
            continue
        names = "|".join(re.escape(m) for m in (modules or default_modules))
        alternatives.append(rf"(.*\.)?{prefix}\..*\.({names})")
    return "|".join(f"({a})" for a in alternatives)


def pretrained_parts(model):
    """{part: model_type} for the parts of an XModal model that are pretrained `transformers` models."""
    from xmodal.configuration_xmodal import is_own_config

    config = model.config
    return {part: getattr(config, key).model_type for part, key in PART_CONFIG_KEYS.items()
            if getattr(config, key, None) is not None and not is_own_config(getattr(config, key))}


def apply_lora(model, settings, task, train_in_full=None):
    """Wraps `model` in a `PeftModel` with LoRA adapters as `settings` (a `LoraSettings`) says.

    By default only the adapters and `modules_to_save` (the task head) train. With `train_in_full` (parts
    as in `xmodal.modalities.PARTS`: the `towers` section passes every part not frozen or
    adapted), the parameters of those parts keep training in full, as they did before wrapping.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs peft: pip install 'xmodal[train]'") from error
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model  # composed from `towers`: `build_model` adapted it already, with that section's plan
    pattern = target_modules_pattern(settings.parts, settings.modules, pretrained_parts(model))
    if not any(re.fullmatch(pattern, name) for name, _ in model.named_modules()):
        raise ValueError(f"No module of this model matches the LoRA parts {settings.parts} "
                         f"(modules {settings.modules or 'default'}); see xmodal.trainers.lora.LORA_TARGET_MODULES.")
    modules_to_save = settings.modules_to_save
    if modules_to_save is None and train_in_full is None:
        modules_to_save = [head for head in TASK_HEADS.get(task, []) if getattr(model, head, None) is not None]
    was_trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=pattern, modules_to_save=modules_to_save or None)
    model = get_peft_model(model, config)
    if train_in_full is not None:
        prefix = "base_model.model."
        for name, parameter in model.named_parameters():
            if "lora_" not in name and parameter_part(name) in train_in_full:
                parameter.requires_grad_(name[len(prefix):] in was_trainable)
    return model
