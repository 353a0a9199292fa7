"""A tiny checkpoint, data split, gallery and upload files for the demo tests (hidden 32, 2 layers, 32 px).

The decoder is rigged to write "red" at every step (its final norm outputs a constant vector that
only the embedding of "red" aligns with), so generated text is known: `max_new_tokens=3` gives
"red red red". The CTC head is rigged to hear "blue" in every state, which greedy CTC reads as one
"blue". Everything else keeps its random weights.
"""

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square")
SIZES = ("big", "small")
GENERATED_WORD = "red"
HEARD_WORD = "blue"  # what the CTC head reads
MAX_DECODER_POSITIONS = 16


def shape_image(color, shape, size, side=48):
    image = Image.new("RGB", (side, side), "white")
    radius = side * (0.42 if size == "big" else 0.2)
    box = [side / 2 - radius, side / 2 - radius, side / 2 + radius, side / 2 + radius]
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
    return image


def tone(frequency, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _encode(samples, rate=16000, format="WAV", subtype=None):
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def build_data(folder):
    """A saved DatasetDict like the built-in scenes (image, caption, audio bytes, sampling_rate): 16 test rows."""
    from datasets import Dataset, DatasetDict, Features, Image as ImageFeature, Value

    rows = {"image": [], "caption": [], "audio": [], "sampling_rate": []}
    for color in COLORS:
        for shape in SHAPES:
            for size in SIZES:
                buffer = io.BytesIO()
                shape_image(color, shape, size).save(buffer, format="PNG")
                rows["image"].append({"bytes": buffer.getvalue(), "path": None})
                rows["caption"].append(f"a {size} {color} {shape}")
                rows["audio"].append(_encode(tone(200 + 40 * len(rows["audio"])), format="FLAC"))
                rows["sampling_rate"].append(16000)
    features = Features({"image": ImageFeature(), "caption": Value("string"), "audio": Value("binary"),
                         "sampling_rate": Value("int32")})
    split = Dataset.from_dict(rows, features=features)
    DatasetDict({"train": split, "test": split}).save_to_disk(str(folder))
    return rows["caption"]


def tiny_config(vocab_size, decoder=True, ctc=True):
    from xmodal import XModalAudioConfig, XModalConfig, XModalDecoderConfig, XModalTextConfig, XModalVisionConfig

    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return XModalConfig(
        text_config=XModalTextConfig(vocab_size=vocab_size, max_position_embeddings=32, **tower),
        vision_config=XModalVisionConfig(image_size=32, patch_size=8, **tower),
        audio_config=XModalAudioConfig(num_mel_bins=32, max_source_positions=256, **tower),
        decoder_config=(XModalDecoderConfig(vocab_size=vocab_size, max_position_embeddings=MAX_DECODER_POSITIONS,
                                            **tower) if decoder else None),
        projection_dim=16, fusion_hidden_size=32, fusion_num_layers=2, fusion_num_attention_heads=2,
        fusion_intermediate_size=64, loss_weights={"ctc": 1.0} if decoder and ctc else None,
    )


def _rig_decoder(model, token_id):
    import torch

    with torch.no_grad():
        direction = torch.zeros(model.decoder.embed_tokens.weight.shape[1])
        direction[0] = 1.0
        model.decoder.embed_tokens.weight[token_id] = 50 * direction  # tied to the LM head
        model.decoder.layers.norm.weight.zero_()
        model.decoder.layers.norm.bias.copy_(direction)


def _rig_ctc_head(model, token_id):
    import torch

    with torch.no_grad():
        model.ctc_head.weight.zero_()
        model.ctc_head.bias.zero_()
        model.ctc_head.bias[token_id] = 10.0


CARD = """---
license: apache-2.0
tags: [xmodal, test]
---

# Tiny xmodal test model

Random weights (hidden 32, 2 layers); its decoder always writes "red".

![training curve](training_curve.png)

## Data

- Test images are coloured shapes drawn with PIL; test speech is sine tones.

## Reproduce

`tests/demo/tiny_demo.py`
"""


def build_checkpoint(folder, data_folder, captions, head="pretraining", ctc=True):
    """Saves a tiny model (`pretraining`: every head, the CTC head only with `ctc`; `contrastive`: XModalModel
    only) with its processor."""
    import torch
    from xmodal import XModalForPreTraining, XModalModel
    from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor, train_tokenizer

    folder = Path(folder)
    tokenizer = train_tokenizer(captions + ["a cat", "two dogs"], vocab_size=200)
    torch.manual_seed(0)
    if head == "pretraining":
        model = XModalForPreTraining(tiny_config(len(tokenizer), ctc=ctc))
        _rig_decoder(model, tokenizer.convert_tokens_to_ids(GENERATED_WORD))
        if ctc:
            _rig_ctc_head(model, tokenizer.convert_tokens_to_ids(HEARD_WORD))
    else:
        model = XModalModel(tiny_config(len(tokenizer), decoder=False))
    model.save_pretrained(folder)
    XModalProcessor(XModalImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                    XModalFeatureExtractor(feature_size=32, max_duration=8.0), tokenizer).save_pretrained(folder)
    (folder / "README.md").write_text(CARD)
    (folder / "metrics.json").write_text(json.dumps({"test_recall@1_image_text": 0.25, "train_seconds": 0.6}))
    (folder / "training_config.yaml").write_text(f"task: {head}\ndata:\n  name: scenes\n  path: {data_folder}\n")
    return folder


def build_video_checkpoint(folder, captions):
    """Saves a tiny video model (`XModalForVideoPreTraining`, random weights) with its processor (4 fps, 32 px)."""
    import torch
    from xmodal import XModalConfig, XModalForVideoPreTraining, XModalVideoConfig
    from xmodal.processing import (
        XModalFeatureExtractor, XModalImageProcessor, XModalProcessor, XModalVideoProcessor, train_tokenizer,
    )

    folder = Path(folder)
    tokenizer = train_tokenizer(captions + ["a dog enters from the left"], vocab_size=200)
    base = tiny_config(len(tokenizer), decoder=False).to_dict()
    tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = XModalConfig(**{k: base[k] for k in ("text_config", "vision_config", "audio_config")},
                          video_config=XModalVideoConfig(frame_config=None, max_frames=16, **tower),
                          share_vision_tower=True, decoder_config=None, projection_dim=16)
    torch.manual_seed(0)
    XModalForVideoPreTraining(config).save_pretrained(folder)
    size = {"shortest_edge": 32}, {"height": 32, "width": 32}
    XModalProcessor(XModalImageProcessor(size=size[0], crop_size=size[1]),
                    XModalFeatureExtractor(feature_size=32, hop_length=250, max_duration=8.0), tokenizer,
                    video_processor=XModalVideoProcessor(fps=4, max_frames=16, size=size[0], crop_size=size[1])
                    ).save_pretrained(folder)
    (folder / "training_config.yaml").write_text("task: video\n")
    return folder


def moving_square_video(path, seconds=3.0, fps=8, sound=True):
    """An mp4 of a red square crossing a white frame left to right, with a beep at each second when `sound`."""
    from xmodal.processing.video_scenes import encode_clip

    frames = np.full((int(seconds * fps), 64, 64, 3), 255, dtype=np.uint8)
    for index in range(len(frames)):
        x = int(index / len(frames) * 48)
        frames[index, 24:40, x:x + 16] = (220, 30, 30)
    audio = None
    if sound:
        audio = np.zeros(int(seconds * 16000), dtype=np.float32)
        for start in range(int(seconds)):
            beep = tone(880, seconds=0.2)
            audio[start * 16000: start * 16000 + len(beep)] = beep
    Path(path).write_bytes(encode_clip(frames, fps, audio))
    return Path(path)


def build_uploads(folder):
    """Files a visitor might upload, good and bad; returns {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"image": folder / "shape.png", "speech": folder / "speech.wav", "text": folder / "notes.txt",
             "corrupt_audio": folder / "corrupt.wav", "long_audio": folder / "ten_minutes.wav",
             "too_big": folder / "huge.png"}
    shape_image("red", "circle", "big", side=64).save(files["image"])
    files["speech"].write_bytes(_encode(tone(440, seconds=1.0)))
    files["text"].write_text("this is a text file, not an image or a recording\n")
    files["corrupt_audio"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    # Ten minutes at 8 kHz, 8-bit: 4.8 MB, under the upload limit, so the duration check answers.
    files["long_audio"].write_bytes(_encode(np.zeros(8000 * 600, dtype=np.int16), rate=8000, subtype="PCM_U8"))
    files["too_big"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024))  # over the 10 MB limit
    gallery = folder / "gallery"
    gallery.mkdir(exist_ok=True)
    for index, (color, shape) in enumerate([("red", "square"), ("blue", "circle"), ("green", "square"),
                                            ("yellow", "circle"), ("blue", "square")]):
        shape_image(color, shape, "big").save(gallery / f"{index}_{color}_{shape}.png")
    files["gallery"] = gallery
    files["video"] = moving_square_video(folder / "square.mp4")
    files["silent_video"] = moving_square_video(folder / "silent.mp4", sound=False)
    files["square_frame"] = folder / "square_frame.png"
    frame = np.full((64, 64, 3), 255, dtype=np.uint8)
    frame[24:40, 24:40] = (220, 30, 30)  # the square half way across
    Image.fromarray(frame).save(files["square_frame"])
    return files
