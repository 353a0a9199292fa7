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
"""

import re

SELF_ATTENTION_AND_MLP = ["qkv_proj", "out_proj", "fc1", "fc2"]
WITH_CROSS_ATTENTION = ["qkv_proj", "q_proj", "kv_proj", "out_proj", "fc1", "fc2"]
LORA_TARGET_MODULES = {
    "text": ("text_model", SELF_ATTENTION_AND_MLP),
    "image": ("vision_model", SELF_ATTENTION_AND_MLP),
    "audio": ("audio_model", SELF_ATTENTION_AND_MLP),
    "fusion": ("fusion", WITH_CROSS_ATTENTION),
    "decoder": ("decoder", WITH_CROSS_ATTENTION),
}
# The freshly initialised head of each task is trained in full next to the adapters.
TASK_HEADS = {"matching": ["itm_head"], "classification": ["classifier"], "pretraining": ["itm_head"]}


def target_modules_pattern(parts, modules=None):
    """One regular expression selecting the listed modules inside the listed parts."""
    unknown = set(parts) - set(LORA_TARGET_MODULES)
    if unknown:
        raise ValueError(f"lora.parts has unknown parts {sorted(unknown)}; choose from {sorted(LORA_TARGET_MODULES)}.")
    alternatives = []
    for part in parts:
        prefix, default_modules = LORA_TARGET_MODULES[part]
        names = "|".join(re.escape(m) for m in (modules or default_modules))
        alternatives.append(rf"(.*\.)?{prefix}\..*\.({names})")
    return "|".join(f"({a})" for a in alternatives)


def apply_lora(model, settings, task):
    """Wraps `model` in a `PeftModel` with LoRA adapters as `settings` (a `LoraSettings`) says."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs peft: pip install 'xmodal[train]'") from error
    pattern = target_modules_pattern(settings.parts, settings.modules)
    if not any(re.fullmatch(pattern, name) for name, _ in model.named_modules()):
        raise ValueError(f"No module of this model matches the LoRA parts {settings.parts} "
                         f"(modules {settings.modules or 'default'}); see xmodal.trainers.lora.LORA_TARGET_MODULES.")
    modules_to_save = settings.modules_to_save if settings.modules_to_save is not None else TASK_HEADS.get(task)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=pattern, modules_to_save=modules_to_save or None)
    return get_peft_model(model, config)
