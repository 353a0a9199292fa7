"""`xmodal train --lora`: adapters saved as adapter_model.safetensors, loadable by PEFT, merged == adapter."""

import re

import pytest
import torch

import xmodal
from xmodal.trainers.config import config_from_dict
from xmodal.trainers.lora import LORA_TARGET_MODULES, target_modules_pattern
from xmodal.trainers.loop import train

from tests.modeling.tiny import CTC_LOSS_WEIGHTS, tiny_config as tiny_model_config, tiny_video_config

from .helpers import tiny_config


def test_target_modules_per_part():
    model = xmodal.XModalForPreTraining(tiny_model_config(video_config=tiny_video_config()))
    names = [name for name, _ in model.named_modules()]
    for part, (prefix, modules) in LORA_TARGET_MODULES.items():
        chosen = [n for n in names if re.fullmatch(target_modules_pattern([part]), n)]
        assert chosen and all(f"{prefix}." in n and n.rsplit(".", 1)[1] in modules for n in chosen), part
    text_only = [n for n in names if re.fullmatch(target_modules_pattern(["text"]), n)]
    assert {n.rsplit(".", 1)[1] for n in text_only} == {"qkv_proj", "out_proj", "fc1", "fc2"}
    with pytest.raises(ValueError, match="unknown parts"):
        target_modules_pattern(["nose"])


def test_pretraining_heads_train_in_full_beside_the_adapters():
    from xmodal.trainers.config import LoraSettings
    from xmodal.trainers.lora import apply_lora

    for with_ctc in (False, True):
        weights = {"loss_weights": CTC_LOSS_WEIGHTS} if with_ctc else {}
        model = xmodal.XModalForPreTraining(tiny_model_config(**weights))
        peft_model = apply_lora(model, LoraSettings(enabled=True, parts=["text"]), "pretraining")
        trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
        assert any("itm_head" in n for n in trainable)
        assert any("ctc_head" in n for n in trainable) == with_ctc


@pytest.mark.slow
def test_lora_run_saves_adapters_and_merged_equals_adapter(tmp_path, tiny_scenes):
    from peft import PeftModel

    base_values = tiny_config(tmp_path / "base", task="contrastive", modalities=("text", "image"),
                              training={"max_steps": 2})
    train(config_from_dict(base_values))
    base_dir = tmp_path / "base" / "model"
    lora_values = tiny_config(tmp_path / "lora", task="contrastive", modalities=("text", "image"),
                              training={"max_steps": 8, "learning_rate": 1e-2, "pretrained": str(base_dir)},
                              lora={"enabled": True, "r": 4, "alpha": 8, "parts": ["text", "image"]})
    train(config_from_dict(lora_values))
    adapter_dir = tmp_path / "lora" / "model"
    assert (adapter_dir / "adapter_model.safetensors").is_file() and (adapter_dir / "adapter_config.json").is_file()
    assert not (adapter_dir / "model.safetensors").exists()

    from xmodal.processing import XModalProcessor

    processor = XModalProcessor.from_pretrained(adapter_dir)
    rows = tiny_scenes["test"].select(range(6))
    batch = processor(text=list(rows["caption"]), images=list(rows["image"]), return_tensors="pt")
    peft_model = PeftModel.from_pretrained(xmodal.XModalModel.from_pretrained(base_dir), adapter_dir).eval()
    lora_weights = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_weights and any(p.abs().sum() > 0 for p in lora_weights), "the adapters did not train"
    with torch.no_grad():
        adapter_logits = peft_model(**batch).logits_per_image
        merged = peft_model.merge_and_unload()
        merged_logits = merged(**batch).logits_per_image
        saved_logits = xmodal.XModalModel.from_pretrained(adapter_dir / "merged").eval()(**batch).logits_per_image
        base_logits = xmodal.XModalModel.from_pretrained(base_dir).eval()(**batch).logits_per_image
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(saved_logits, adapter_logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-3)
    # `xmodal eval --model <run>/model` scores the merged model a LoRA run keeps in merged/
    from xmodal.trainers.evaluate import evaluate_checkpoint

    scores = evaluate_checkpoint(adapter_dir, split="test", max_samples=16)
    assert scores == evaluate_checkpoint(adapter_dir / "merged", split="test", max_samples=16)
    assert scores["samples"] == 16 and 0.0 <= scores["text_to_image_R@1"] <= 1.0
