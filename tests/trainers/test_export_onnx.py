"""`xmodal export onnx`: each tower's graph, run with onnxruntime on processor outputs of real text, images and a
sine-wave clip, gives PyTorch's `get_embeddings` at two batch sizes and lengths; the CLI and its errors."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.modeling.tiny import tiny_config
from xmodal import XModalAudioConfig, XModalModel, XModalTextConfig
from xmodal.processing import XModalProcessor
from xmodal.trainers.cli import main as cli_main

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

RATE = 16000
# Two batches that differ in size and in length (tokens, frames): the graphs' dynamic axes.
CAPTIONS = (["a red circle", "two small blue squares left of a big green star"],
            ["a dog", "a yellow triangle above a red circle and a blue square", "green"])
SHAPES = ([("red", 40, 56), ("blue", 64, 64)], [("green", 32, 48), ("yellow", 80, 50), ("red", 33, 33)])
CLIPS = ([0.5, 0.3], [0.9, 0.2, 0.6])  # seconds


def image(color, width, height):
    picture = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(picture).ellipse([width / 4, height / 4, 3 * width / 4, 3 * height / 4], fill=color)
    return picture


def sine(seconds, frequency):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, load_default_tokenizer

    tokenizer = load_default_tokenizer()
    processor = XModalProcessor(
        image_processor=XModalImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        feature_extractor=XModalFeatureExtractor(feature_size=16, max_duration=1.0), tokenizer=tokenizer)
    text = XModalTextConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=32)
    audio = XModalAudioConfig(num_mel_bins=16, max_source_positions=32, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = XModalModel(tiny_config(decoder=False, text_config=text, audio_config=audio)).eval()
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    from xmodal.trainers.export_onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "graphs"
    return out, export_onnx(checkpoint[0], out)


def processed(processor, modality, batch):
    if modality == "text":
        return processor(text=CAPTIONS[batch], return_tensors="np")
    if modality == "image":
        return processor(images=[image(*shape) for shape in SHAPES[batch]], return_tensors="np")
    clips = [sine(seconds, 220 * (i + 1)) for i, seconds in enumerate(CLIPS[batch])]
    return processor(audio=clips, sampling_rate=RATE, return_tensors="np")


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_graph_matches_pytorch_on_processed_inputs(checkpoint, exported, modality):
    _, model, processor = checkpoint
    out, paths = exported
    session = onnxruntime.InferenceSession(str(paths[modality]), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    shapes = []
    for batch in (0, 1):
        inputs = {name: processed(processor, modality, batch)[name] for name in names}
        (actual,) = session.run(None, inputs)
        with torch.no_grad():
            expected = model.get_embeddings(**{k: torch.from_numpy(v) for k, v in inputs.items()})[modality]
        np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4, rtol=0)
        assert np.allclose(np.linalg.norm(actual, axis=-1), 1.0, atol=1e-5)
        shapes.append(inputs[names[0]].shape)
    assert shapes[0][0] != shapes[1][0]  # batch sizes differ
    if modality != "image":
        assert shapes[0][-1] != shapes[1][-1]  # and so do the token / frame counts


def test_folder_holds_processor_and_manifest(exported):
    out, paths = exported
    assert set(paths) == {"text", "image", "audio"}
    manifest = json.loads((out / "onnx_export.json").read_text())
    assert manifest["opset"] == 17
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir())
    graphs = manifest["graphs"]
    assert list(graphs["text"]["inputs"]) == ["input_ids", "attention_mask"]
    assert graphs["text"]["inputs"]["input_ids"] == {"dtype": "int64", "shape": ["batch", "sequence"]}
    assert graphs["audio"]["inputs"]["input_features"]["shape"] == ["batch", 16, "frames"]
    assert graphs["image"]["outputs"] == {"image_embeds": {"dtype": "float32", "shape": ["batch", 16]}}
    reloaded = XModalProcessor.from_pretrained(out)
    assert reloaded(text=CAPTIONS[0])["input_ids"] == processed(reloaded, "text", 0)["input_ids"].tolist()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_cli_writes_graphs(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["export", "onnx", "--model", str(checkpoint[0]), "--out", str(out), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    for modality in ("text", "image", "audio"):
        assert f"{modality}: {out / (modality + '.onnx')}" in printed
    assert json.loads((out / "onnx_export.json").read_text())["opset"] == 18


def test_cli_missing_model_is_one_line(tmp_path, capsys):
    assert cli_main(["export", "onnx", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmodal export onnx: No model at") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_rejects_an_unsupported_opset(checkpoint, tmp_path, capsys):
    assert cli_main(["export", "onnx", "--model", str(checkpoint[0]), "--out", str(tmp_path / "out"),
                     "--opset", "13"]) == 2
    assert capsys.readouterr().err == "xmodal export onnx: opset 13 is not supported: choose 14 to 20 (default 17).\n"


def test_cli_refuses_an_occupied_folder(checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert cli_main(["export", "onnx", "--model", str(checkpoint[0]), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("xmodal export onnx: ")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_missing_onnxruntime_names_the_extra(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    assert cli_main(["export", "onnx", "--model", str(checkpoint[0]), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime" in err and "xmodal[dev]" in err
