"""`transformers`' own pipelines on XModal checkpoints trained here until their predictions are right."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from xmodal import (
    XModalAudioConfig,
    XModalConfig,
    XModalDecoderConfig,
    XModalForConditionalGeneration,
    XModalModel,
    XModalTextConfig,
    XModalVisionConfig,
)
from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor, train_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30)}


def _square(colour, rng):
    """A coloured square at a random place and size on a random grey background."""
    grey = int(rng.integers(60, 200))
    image = Image.new("RGB", (48, 48), (grey, grey, grey))
    side = int(rng.integers(16, 32))
    x, y = (int(v) for v in rng.integers(0, 48 - side, size=2))
    image.paste(Image.new("RGB", (side, side), COLOURS[colour]), (x, y))
    return image


def _tiny(vocab_size, **towers):
    return XModalConfig(
        **towers, projection_dim=32, fusion_hidden_size=32, fusion_num_layers=1, fusion_num_attention_heads=2,
        fusion_intermediate_size=64, logit_scale_init_value=2.3,
    ) if towers else None


@pytest.mark.slow
def test_zero_shot_image_classification_pipeline(tmp_path):
    captions = [f"a photo of a {c} square" for c in COLOURS]
    tokenizer = train_tokenizer(captions, vocab_size=64)
    processor = XModalProcessor(XModalImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                                XModalFeatureExtractor(), tokenizer)
    config = _tiny(
        len(tokenizer),
        text_config=XModalTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=16),
        vision_config=XModalVisionConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, pooling="mean"),
    )
    torch.manual_seed(0)
    model = XModalModel(config)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    names = list(COLOURS)
    for _ in range(150):
        # One image per colour per batch: InfoNCE then has no duplicate captions among the negatives.
        batch = processor(text=captions, images=[_square(c, rng) for c in names], return_tensors="pt")
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path))
    assert isinstance(classifier.model, XModalModel)
    test_rng = np.random.default_rng(123)
    right = 0
    for colour in names * 3:
        result = classifier(_square(colour, test_rng), candidate_labels=names,
                            hypothesis_template="a photo of a {} square")
        assert len(result) == 4 and abs(sum(r["score"] for r in result) - 1) < 1e-4
        right += result[0]["label"] == colour
    assert right >= 11, f"only {right} of 12 held-out squares classified right"


SENTENCES = ["a red apple", "two green frogs", "a big blue whale", "three yellow stars"]


@pytest.mark.slow
def test_automatic_speech_recognition_pipeline(tmp_path):
    from xmodal.processing import synthesize_speech

    tokenizer = train_tokenizer(SENTENCES, vocab_size=64)
    extractor = XModalFeatureExtractor(feature_size=32, max_duration=4.0)
    processor = XModalProcessor(XModalImageProcessor(), extractor, tokenizer)
    voices, rates = ["en-us", "en-gb-x-rp"], [160, 200]
    texts, clip_voices, clip_rates = [], [], []
    for sentence in SENTENCES:
        for voice in voices:
            for rate in rates:
                texts.append(sentence)
                clip_voices.append(voice)
                clip_rates.append(rate)
    clips = synthesize_speech(texts, voice=clip_voices, rate=clip_rates)
    batch = processor(audio=clips, sampling_rate=16000, text_target=texts, return_tensors="pt")

    config = XModalConfig(
        audio_config=XModalAudioConfig(num_mel_bins=32, max_source_positions=100, hidden_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        decoder_config=XModalDecoderConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=128, max_position_embeddings=16,
                                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                           eos_token_id=tokenizer.eos_token_id,
                                           decoder_start_token_id=tokenizer.bos_token_id),
        fusion_hidden_size=64, fusion_num_layers=1, fusion_num_attention_heads=4, fusion_intermediate_size=128,
    )
    torch.manual_seed(0)
    model = XModalForConditionalGeneration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(250):  # ~120 steps reach it; Adam at lr 2e-3 can spike for a few steps near the end
        loss = model(input_features=batch["input_features"], feature_attention_mask=batch["feature_attention_mask"],
                     labels=batch["labels"]).loss
        if loss.item() < 0.05:
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    recognizer = pipeline("automatic-speech-recognition", model=str(tmp_path))
    assert recognizer.type == "seq2seq" and isinstance(recognizer.model, XModalForConditionalGeneration)
    # Speech at a rate between the two it was trained on, in each voice.
    held_out = synthesize_speech(SENTENCES * 2, voice=["en-us"] * 4 + ["en-gb-x-rp"] * 4, rate=180)
    for sentence, clip in zip(SENTENCES * 2, held_out):
        assert recognizer({"raw": clip, "sampling_rate": 16000})["text"].strip() == sentence
    # (Audio at another rate is resampled by the pipeline itself, which needs torchaudio; our feature
    # extractor resamples when called directly, see test_feature_extraction.)
