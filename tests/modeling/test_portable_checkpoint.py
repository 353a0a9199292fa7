"""Checkpoints that work anywhere: a saved model and processor load, process and generate, with
`trust_remote_code=True`, in a Python environment where xmodal is not installed, bit for bit as
xmodal does; and a decoder head's checkpoint generates with no token-id arguments."""

import json
import os
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSpeechSeq2Seq

import xmodal
from xmodal import XModalForConditionalGeneration, XModalForPreTraining
from xmodal.modeling_xmodal import GENERATION_TOKEN_FIELDS
from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor
from xmodal.processing.tokenization_xmodal import train_tokenizer

from .tiny import VOCAB, tiny_config, tiny_inputs

SR = 16000
CAPTIONS = ["a grinning face", "two big bananas to the left of a zebra", "a cat"]
# What each generation call reads, by source.
SOURCES = {
    "image": ("pixel_values",),
    "audio": ("input_features", "feature_attention_mask"),
    "all": ("input_ids", "attention_mask", "pixel_values", "input_features", "feature_attention_mask"),
}

WITHOUT_XMODAL = textwrap.dedent(
    """
    import importlib.util, json, sys

    import numpy as np
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    assert importlib.util.find_spec("xmodal") is None, "xmodal is importable in the fresh environment"
    try:
        import xmodal  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("import xmodal worked in the fresh environment")

    folder, sources = sys.argv[1], json.loads(sys.argv[2])
    text = json.load(open(f"{folder}/raw.json"))
    arrays = np.load(f"{folder}/raw.npz")
    images = [arrays[f"image_{i}"] for i in range(len(text["text"]))]
    audio = [arrays[f"audio_{i}"] for i in range(len(text["text"]))]

    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True).eval()
    processed = processor(text=text["text"], images=images, audio=audio, sampling_rate=text["sampling_rate"],
                          text_target=text["text_target"], return_tensors="pt")
    with torch.no_grad():
        generated = {source: model.generate(**{k: processed[k] for k in keys}) for source, keys in sources.items()}
    torch.save({"processed": dict(processed), "generated": generated}, f"{folder}/remote.pt")
    for part in (processor, processor.image_processor, processor.feature_extractor, model):
        print(type(part).__name__, type(part).__module__)
    assert not any(name == "xmodal" or name.startswith("xmodal.") for name in sys.modules)
    """
)


def python_without_xmodal(folder):
    """A Python that imports this environment's third-party packages but not xmodal.

    A bare venv whose `.pth` file appends our site-packages to `sys.path`. `site` reads `.pth` files only
    in the site directories it adds itself, not in a directory that a `.pth` line appends, so xmodal's
    editable-install hook (`__editable__.xmodal-*.pth`, which installs an import finder) never runs there.
    """
    site_dirs = [Path(path) for path in site.getsitepackages()]
    if any(Path(xmodal.__file__).resolve().is_relative_to(path.resolve()) for path in site_dirs):
        pytest.skip("xmodal is installed into site-packages (not editable): no environment hides it cheaply.")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = str(Path(folder) / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "parent_site_packages.pth").write_text("".join(f"{path}\n" for path in site_dirs))
    return python


def tiny_processor():
    """Parts sized for `tiny_config`: 32 px images, 16 mel bins and at most 50 frames (the audio tower
    takes 64), a tokenizer whose ids fit its vocabulary of 99 with [PAD] 0, [BOS] 1, [EOS] 2."""
    tokenizer = train_tokenizer(CAPTIONS * 3, vocab_size=VOCAB, model_max_length=16)
    assert len(tokenizer) <= VOCAB and (tokenizer.pad_token_id, tokenizer.bos_token_id) == (0, 1)
    return XModalProcessor(XModalImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                           XModalFeatureExtractor(feature_size=16, max_duration=0.5), tokenizer)


def raw_inputs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8) for i in range(len(CAPTIONS))]
    audio = [(0.1 * rng.standard_normal(SR * (2 + i) // 10)).astype(np.float32) for i in range(len(CAPTIONS))]
    return {"text": CAPTIONS, "images": images, "audio": audio, "sampling_rate": SR, "text_target": CAPTIONS}


def distinct_model(head):
    """A random model whose greedy outputs differ between inputs (at the default scale they all repeat one
    token), so that equal ids say something."""
    torch.manual_seed(0)
    model = head(tiny_config(initializer_range=0.5)).eval()
    return model


@pytest.mark.slow
def test_checkpoint_processes_and_generates_without_xmodal_installed(tmp_path):
    folder = tmp_path / "checkpoint"
    processor = tiny_processor()
    # A pre-training checkpoint, the one that saved no generation config before.
    distinct_model(XModalForPreTraining).save_pretrained(folder)
    processor.save_pretrained(folder)

    code_files = {path.name for path in folder.glob("*.py")}
    assert {"processing_xmodal.py", "image_processing_xmodal.py", "feature_extraction_xmodal.py",
            "modeling_xmodal.py", "configuration_xmodal.py"} <= code_files
    assert "registration.py" not in code_files  # registration stays with the installed package
    for path in folder.glob("*.py"):  # the copied code is closed under its relative imports
        source = path.read_text()
        assert not re.search(r"^\s*from\s+\.+\s+import", source, re.MULTILINE), path.name
        for module in re.findall(r"^\s*from\s+\.(\S+)\s+import", source, re.MULTILINE):
            assert f"{module}.py" in code_files, (path.name, module)
    auto_maps = json.loads((folder / "processor_config.json").read_text())
    assert auto_maps["auto_map"]["AutoProcessor"] == "processing_xmodal.XModalProcessor"
    assert auto_maps["image_processor"]["auto_map"]["AutoImageProcessor"] == "image_processing_xmodal.XModalImageProcessor"

    raw = raw_inputs()
    (folder / "raw.json").write_text(json.dumps({k: raw[k] for k in ("text", "text_target", "sampling_rate")}))
    np.savez(folder / "raw.npz", **{f"image_{i}": image for i, image in enumerate(raw["images"])},
             **{f"audio_{i}": clip for i, clip in enumerate(raw["audio"])})
    processed = processor(**raw, return_tensors="pt")
    model = XModalForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        generated = {source: model.generate(**{k: processed[k] for k in keys}) for source, keys in SOURCES.items()}
    assert len({tuple(row) for ids in generated.values() for row in ids.tolist()}) > 1, "degenerate model"

    python = python_without_xmodal(tmp_path / "venv")
    (tmp_path / "remote.py").write_text(WITHOUT_XMODAL)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([python, str(tmp_path / "remote.py"), str(folder), json.dumps(SOURCES)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("XModalProcessor", "XModalImageProcessor", "XModalFeatureExtractor",
                 "XModalForConditionalGeneration"):
        assert f"{name} transformers_modules." in result.stdout, result.stdout

    remote = torch.load(folder / "remote.pt")
    assert remote["processed"].keys() == processed.keys()
    for key, value in processed.items():
        assert torch.equal(remote["processed"][key], value), key
    for source, ids in generated.items():
        assert torch.equal(remote["generated"][source], ids), source


@pytest.mark.parametrize("head", [XModalForConditionalGeneration, XModalForPreTraining])
def test_a_saved_decoder_head_generates_with_no_token_id_arguments(head, tmp_path):
    model = distinct_model(head)
    model.save_pretrained(tmp_path)
    decoder = model.config.decoder_config
    expected = {name: getattr(decoder, name) for name in GENERATION_TOKEN_FIELDS}
    # As transformers does, only a head that generates saves a generation config; the other one's checkpoint gets
    # the decoder's when loaded to generate.
    assert (tmp_path / "generation_config.json").is_file() == head.can_generate()
    if head.can_generate():
        saved = json.loads((tmp_path / "generation_config.json").read_text())
        assert {name: saved.get(name) for name in expected} == expected and saved["max_length"] == 24

    loaded = AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path).eval()
    assert type(loaded) is XModalForConditionalGeneration
    inputs = tiny_inputs(("image", "audio"), batch_size=2)
    with torch.no_grad():
        generated = loaded.generate(**inputs)
        by_hand = loaded.generate(**inputs, **expected, max_length=24)
    assert torch.equal(generated, by_hand)
    assert (generated[:, 0] == decoder.decoder_start_token_id).all() and generated.shape[1] <= 24


def test_a_checkpoint_without_generation_config_still_generates(tmp_path):
    """A checkpoint without `generation_config.json` (a head that does not generate saves none) gets the decoder's
    token ids."""
    model = distinct_model(XModalForConditionalGeneration)
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    loaded = XModalForConditionalGeneration.from_pretrained(tmp_path).eval()
    decoder = model.config.decoder_config
    assert {name: getattr(loaded.generation_config, name) for name in (*GENERATION_TOKEN_FIELDS, "max_length")} == {
        **{name: getattr(decoder, name) for name in GENERATION_TOKEN_FIELDS}, "max_length": 24}
    with torch.no_grad():
        generated = loaded.generate(**tiny_inputs(("audio",), batch_size=2))
    assert (generated[:, 0] == decoder.decoder_start_token_id).all()


def test_generation_starts_from_the_decoder_prompt_and_stays_inside_the_position_table(tmp_path):
    torch.manual_seed(0)
    XModalForConditionalGeneration(tiny_config(decoder_prompt_ids=[5, 6])).save_pretrained(tmp_path)
    loaded = XModalForConditionalGeneration.from_pretrained(tmp_path).eval()
    inputs = tiny_inputs(("image",), batch_size=2)
    with torch.no_grad():
        generated = loaded.generate(**inputs, eos_token_id=None)
        capped = loaded.generate(**inputs, eos_token_id=None, max_new_tokens=100)
    assert generated[:, :3].tolist() == [[1, 5, 6]] * 2
    assert generated.shape[1] == capped.shape[1] == 24  # the start token and the prompt take positions too


@pytest.mark.parametrize("with_file", [True, False], ids=["saved", "legacy"])
def test_a_whisper_decoder_keeps_its_suppressed_tokens(with_file, tmp_path):
    from transformers import WhisperConfig

    whisper = WhisperConfig(vocab_size=VOCAB + 10, d_model=32, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_target_positions=20, pad_token_id=100, bos_token_id=100,
                            eos_token_id=100, decoder_start_token_id=101, suppress_tokens=[7, 8],
                            begin_suppress_tokens=[9, 100])
    torch.manual_seed(0)
    # The pre-training head saves no generation config (it does not generate); the generation head does.
    head = XModalForConditionalGeneration if with_file else XModalForPreTraining
    head(tiny_config(decoder_config=whisper)).save_pretrained(tmp_path)
    assert (tmp_path / "generation_config.json").is_file() == with_file
    loaded = XModalForConditionalGeneration.from_pretrained(tmp_path).eval()
    generation = loaded.generation_config
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id) == (101, 100, 100)
    assert (generation.suppress_tokens, generation.begin_suppress_tokens, generation.max_length) == ([7, 8], [9, 100], 20)
    with torch.no_grad():
        generated = loaded.generate(**tiny_inputs(("audio",), batch_size=2))
    assert (generated[:, 0] == 101).all() and not torch.isin(generated[:, 1:], torch.tensor([7, 8])).any()
