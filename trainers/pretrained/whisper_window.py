"""A shorter audio window for Whisper encoders.

Whisper's encoder always reads a 30-second window (3,000 log-mel frames, 1,500 positions): a 3-second
clip costs as much as a 30-second one. Keeping only the first positions of its (sinusoidal, frozen)
position table makes a shorter window: a 10-second window runs ~6x faster here, and the positions it
keeps are exactly the ones short clips used anyway. The decoder is untouched.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

SAMPLING_RATE, HOP_LENGTH = 16_000, 160  # Whisper's log-mel: 100 frames per second
INPUT_STRIDE = 2  # the encoder's second convolution halves the frame rate


def _encoder(model_or_encoder):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if isinstance(model_or_encoder, WhisperEncoder):
        return model_or_encoder
    get_encoder = getattr(model_or_encoder, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else getattr(model_or_encoder, "model", None)
    if not isinstance(encoder, WhisperEncoder):
        raise TypeError("truncate_whisper_window needs a Whisper model or encoder, "
                        f"got {type(model_or_encoder).__name__}")
    return encoder


def window_positions(seconds) -> int:
    """Encoder positions of a window of `seconds` (whole seconds: the feature extractor counts in them)."""
    if isinstance(seconds, bool) or not float(seconds).is_integer() or seconds < 1:
        raise ValueError(f"seconds must be a whole number of seconds >= 1, got {seconds!r}")
    return int(seconds) * SAMPLING_RATE // HOP_LENGTH // INPUT_STRIDE


def truncate_whisper_window(model_or_encoder, seconds, feature_extractor=None):
    """Cuts a Whisper encoder's window to its first `seconds`, in place, and returns the model.

    Takes a `WhisperForConditionalGeneration`, a `WhisperModel`, a `WhisperEncoder` or anything whose
    `get_encoder()` (or `.model`) is one. It keeps the first `50 * seconds` position embeddings and sets
    `config.max_source_positions`, so `save_pretrained` writes a folder that loads with that window and
    `generate` pads to it. Pass the whole model, not only its encoder, when the model has its own config
    object. With `feature_extractor` (a `WhisperFeatureExtractor`), sets its `chunk_length`, `n_samples`
    and `nb_max_frames` to match, so it pads clips to the same window.
    """
    encoder = _encoder(model_or_encoder)
    positions = window_positions(seconds)
    current = encoder.embed_positions.num_embeddings
    if positions > current:
        current_seconds = current * INPUT_STRIDE * HOP_LENGTH // SAMPLING_RATE
        raise ValueError(f"this encoder's window is {current} positions ({current_seconds} s); "
                         f"it cannot grow to {positions} positions ({seconds} s)")
    if feature_extractor is not None and (feature_extractor.sampling_rate, feature_extractor.hop_length) != (
            SAMPLING_RATE, HOP_LENGTH):
        raise ValueError(f"expected a Whisper feature extractor at {SAMPLING_RATE} Hz with hop {HOP_LENGTH}, got "
                         f"{feature_extractor.sampling_rate} Hz with hop {feature_extractor.hop_length}")
    old = encoder.embed_positions
    table = nn.Embedding(positions, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    table.weight.data.copy_(old.weight.data[:positions])
    table.requires_grad_(old.weight.requires_grad)
    encoder.embed_positions = table
    encoder.max_source_positions = positions
    for config in (encoder.config, getattr(model_or_encoder, "config", None)):
        if config is not None:
            config.max_source_positions = positions
    if feature_extractor is not None:
        feature_extractor.chunk_length = int(seconds)
        feature_extractor.n_samples = int(seconds) * SAMPLING_RATE
        feature_extractor.nb_max_frames = feature_extractor.n_samples // HOP_LENGTH
    return model_or_encoder


def save_whisper_window(model_dir, out_dir, seconds) -> Path:
    """Copies a saved `WhisperForConditionalGeneration` folder (model, generation config, tokenizer,
    feature extractor) with its window cut to `seconds`. Returns `out_dir`."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    model = WhisperForConditionalGeneration.from_pretrained(model_dir)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
    truncate_whisper_window(model, seconds, feature_extractor)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    feature_extractor.save_pretrained(out_dir)
    WhisperTokenizerFast.from_pretrained(model_dir).save_pretrained(out_dir)
    return out_dir
