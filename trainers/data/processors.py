"""The tokenizer and processor of a run, and the model config entries that follow from the tokenizer."""

import inspect
import json
from pathlib import Path

from .errors import DataError


def make_tokenizer(data_config, train_split=None):
    """`train`: a WordPiece tokenizer fitted to the training texts; `default`: the built-in one; else a folder."""
    from xmodal.processing import load_default_tokenizer, train_tokenizer

    choice = data_config.tokenizer
    if choice == "default":
        return load_default_tokenizer()
    if choice == "train":
        if train_split is None:
            raise DataError("data.tokenizer: train needs the training split.")
        texts = [t for value in train_split[data_config.column("text")]
                 for t in (value if isinstance(value, list) else [value]) if isinstance(t, str)]
        if "captions" in train_split.column_names:
            texts += [c for captions in train_split["captions"] for c in captions]
        return train_tokenizer(texts, vocab_size=data_config.tokenizer_vocab_size,
                               model_max_length=data_config.max_text_length)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(choice)


def make_processor(data_config, model_config, tokenizer):
    """An `XModalProcessor` whose image size, audio features and tokenizers match the model's towers.

    `tokenizer` (from `make_tokenizer`) serves the built-in text tower and decoder. A pretrained text tower
    reads with its own tokenizer and a pretrained decoder writes with its own (both from the folder its
    config came from, `name_or_path`); a pretrained Whisper encoder gets Whisper's log-mel settings.
    """
    from transformers import AutoTokenizer
    from xmodal.configuration_xmodal import is_own_config
    from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor, XModalVideoProcessor

    vision, audio, text, decoder = (model_config.vision_config, model_config.audio_config, model_config.text_config,
                                    model_config.decoder_config)
    size = getattr(vision, "image_size", 64) if vision is not None else 64
    image_processor = XModalImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    if audio is not None and not is_own_config(audio):
        feature_extractor = whisper_feature_extractor(audio, data_config.max_audio_seconds)
    else:
        mel_bins = getattr(audio, "num_mel_bins", 64) if audio is not None else 64
        hop = data_config.audio_hop_length
        max_seconds = data_config.max_audio_seconds
        if audio is not None and hasattr(audio, "max_input_frames"):
            max_seconds = min(max_seconds, audio.max_input_frames * hop / 16000)
        feature_extractor = XModalFeatureExtractor(feature_size=mel_bins, hop_length=hop, max_duration=max_seconds)
    input_tokenizer = tokenizer
    if text is not None and not is_own_config(text) and text.name_or_path:
        input_tokenizer = AutoTokenizer.from_pretrained(text.name_or_path)
    target_tokenizer = tokenizer if input_tokenizer is not tokenizer else None
    if decoder is not None and not is_own_config(decoder) and decoder.name_or_path:
        target_tokenizer = AutoTokenizer.from_pretrained(decoder.name_or_path)
    video_processor = None
    video = model_config.video_config
    if video is not None:  # frames at the vision tower's size when it encodes them, else the frame encoder's
        frame = vision if model_config.share_vision_tower else video.frame_config
        side = getattr(frame, "image_size", size)
        video_processor = XModalVideoProcessor(fps=data_config.video_fps, max_frames=video.max_frames,
                                               size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return XModalProcessor(image_processor=image_processor, feature_extractor=feature_extractor,
                           tokenizer=input_tokenizer, target_tokenizer=target_tokenizer, video_processor=video_processor)


def whisper_feature_extractor(audio_config, max_seconds):
    """`XModalFeatureExtractor` with a Whisper encoder's log-mel settings (its folder's feature extractor: 80 mel
    bins, n_fft 400, hop 160 at 16 kHz), clips cut at its window. Its log-mel scaling is Whisper's, and the
    tower pads to the window with Whisper's silence value, so the encoder sees Whisper's own features."""
    from xmodal.processing import XModalFeatureExtractor

    settings = {"feature_size": audio_config.num_mel_bins, "n_fft": 400, "hop_length": 160, "sampling_rate": 16000}
    saved = Path(audio_config.name_or_path or "") / "preprocessor_config.json"
    if audio_config.name_or_path and saved.is_file():
        values = json.loads(saved.read_text())
        settings.update({k: values[k] for k in settings if k in values})
    window = 2 * audio_config.max_source_positions * settings["hop_length"] / settings["sampling_rate"]
    return XModalFeatureExtractor(**settings, max_duration=min(max_seconds, window))


def configure_tokens(model_kwargs, tokenizer, data_config, target_tokenizer=None):
    """Fills vocabulary sizes, special token ids and lengths of the model config from the tokenizer; the decoder's
    from `target_tokenizer` when the labels have one of their own (a pretrained text tower reads with its own
    tokenizer, and the built-in decoder writes with the run's)."""
    kwargs = dict(model_kwargs)
    for key in ("text_config", "decoder_config"):
        if key in kwargs and kwargs[key] is None:
            continue
        sub = dict(kwargs.get(key) or {})
        if sub.get("model_type") not in (None, "xmodal_text_model", "xmodal_decoder"):
            continue  # a `transformers` tower keeps its own vocabulary
        if key == "decoder_config" and target_tokenizer is not None:
            tokenizer = target_tokenizer
        vocab = len(tokenizer)
        if sub.setdefault("vocab_size", vocab) < vocab:
            raise DataError(f"model.{key}.vocab_size={sub['vocab_size']} is smaller than the tokenizer's {vocab}.")
        sub["pad_token_id"] = tokenizer.pad_token_id
        if key == "decoder_config":
            # a BERT-style tokenizer (MiniLM's) has no BOS / EOS: its texts run [CLS] ... [SEP], and so do labels
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
            end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
            sub["bos_token_id"] = sub["decoder_start_token_id"] = start
            sub["eos_token_id"] = end
            sub.setdefault("max_position_embeddings", data_config.max_target_length + 1)
        else:
            sub.setdefault("max_position_embeddings", data_config.max_text_length)
        kwargs[key] = sub
    return kwargs


def forward_argument_names(model):
    """The argument names of `model.forward` (a model, PEFT wrapper or class)."""
    forward = getattr(model, "get_base_model", lambda: model)().forward
    return [name for name in inspect.signature(forward).parameters if name not in ("self", "kwargs")]


# ----------------------------------------------------------------------------- encoding
