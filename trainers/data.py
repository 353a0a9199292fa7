"""Data for training and evaluation: the built-in datasets, the processor, encoded tensors, the collator.

The training loop encodes each split once (images to pixels, speech to log-mel frames, text to ids)
and caches the tensors next to the dataset, so a 2-core machine spends its time on the model. The
collator takes either such encoded rows or raw dataset rows (a `PIL` image, a caption, audio
bytes) and emits exactly the model's `forward` argument names, so `transformers.Trainer` can use it
unchanged.
"""

import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from .config import TASKS

ENCODED_KEYS = ("input_ids", "attention_mask", "pixel_values", "input_features", "feature_attention_mask", "labels")
# Padded (batch, length) tensors and the mask that says how long each row really is.
TRIM_BY_MASK = {"input_ids": "attention_mask", "attention_mask": "attention_mask",
                "input_features": "feature_attention_mask", "feature_attention_mask": "feature_attention_mask"}
CACHE_VERSION = 1
# The forward arguments that carry each modality (and the text targets).
MODALITY_INPUTS = {"text": ("input_ids", "attention_mask", "token_type_ids"), "image": ("pixel_values",),
                   "audio": ("input_features", "feature_attention_mask"), "labels": ("labels",)}


class DataError(ValueError):
    """Data that cannot be found or used as configured."""


# ----------------------------------------------------------------------------- raw datasets
def load_raw_dataset(data_config):
    """The configured dataset as a `DatasetDict`; builds it first when it is missing and `build` is set."""
    from datasets import DatasetDict, load_from_disk

    path = Path(data_config.path)
    if data_config.name == "digits":
        from xmodal.processing import build_digits_dataset

        if not _is_saved_dataset(path):
            if not data_config.build:
                raise _missing(data_config)
            _atomic_build(path, lambda out: build_digits_dataset(**data_config.build_args).save_to_disk(out))
        return load_from_disk(str(path))
    from xmodal.processing import build_scene_dataset, load_scene_dataset

    if data_config.build:  # reuses an earlier build with the same parameters
        dataset = build_scene_dataset(str(path), progress=False, **data_config.build_args)
    else:
        try:
            dataset = load_scene_dataset(str(path))
        except FileNotFoundError as error:
            raise _missing(data_config) from error
    return dataset if isinstance(dataset, DatasetDict) else DatasetDict(dataset)


def _is_saved_dataset(path):
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _missing(data_config):
    return DataError(
        f"No dataset at data.path={data_config.path!r} ({Path(data_config.path).resolve()}). Build it with "
        f"`xmodal data build --out {data_config.path}`, or set data.build: true to build it on the fly."
    )


def _atomic_build(path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


UNSEEN_VOICE_SUFFIX = ":unseen-voice"


def select_split(dataset, name, max_samples=None):
    """A split by name; `<split>:unseen-voice` is that split's scenes spoken again by voices that no
    split uses (`xmodal.processing.speech.UNSEEN_VOICES`), to test speech from an unheard voice."""
    base = name[: -len(UNSEEN_VOICE_SUFFIX)] if name.endswith(UNSEEN_VOICE_SUFFIX) else name
    if base not in dataset:
        raise DataError(f"The dataset has no split {base!r}; it has {sorted(dataset)} (each also as "
                        f"'<split>{UNSEEN_VOICE_SUFFIX}' where it has speech).")
    split = dataset[base]
    if max_samples is not None and max_samples < len(split):
        split = split.select(range(max_samples))
    if base != name:
        from xmodal.processing.scenes import respeak_split

        if "audio" not in split.column_names or "caption" not in split.column_names:
            raise DataError(f"{name!r} needs a split with captions and speech; {base!r} has "
                            f"{split.column_names}.")
        split = respeak_split(split)
    return split


# ----------------------------------------------------------------------------- tokenizer and processor
def make_tokenizer(data_config, train_split=None):
    """`train`: a WordPiece tokenizer fitted to the training texts; `default`: the built-in one; else a folder."""
    from xmodal.processing import load_default_tokenizer, train_tokenizer

    choice = data_config.tokenizer
    if choice == "default":
        return load_default_tokenizer()
    if choice == "train":
        if train_split is None:
            raise DataError("data.tokenizer: train needs the training split.")
        texts = list(train_split[data_config.text_column])
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
    from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor

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
    return XModalProcessor(image_processor=image_processor, feature_extractor=feature_extractor,
                           tokenizer=input_tokenizer, target_tokenizer=target_tokenizer)


def whisper_feature_extractor(audio_config, max_seconds):
    """`XModalFeatureExtractor` with a Whisper encoder's log-mel settings (its folder's feature extractor: 80 mel
    bins, n_fft 400, hop 160 at 16 kHz), clips cut at its window. Its log-mel scaling is Whisper's, and the
    tower pads to the window with Whisper's silence value, so the encoder sees Whisper's own features."""
    import json

    from xmodal.processing import XModalFeatureExtractor

    settings = {"feature_size": audio_config.num_mel_bins, "n_fft": 400, "hop_length": 160, "sampling_rate": 16000}
    saved = Path(audio_config.name_or_path or "") / "preprocessor_config.json"
    if audio_config.name_or_path and saved.is_file():
        values = json.loads(saved.read_text())
        settings.update({k: values[k] for k in settings if k in values})
    window = 2 * audio_config.max_source_positions * settings["hop_length"] / settings["sampling_rate"]
    return XModalFeatureExtractor(**settings, max_duration=min(max_seconds, window))


def configure_tokens(model_kwargs, tokenizer, data_config):
    """Fills vocabulary sizes, special token ids and lengths of the model config from the tokenizer."""
    kwargs = dict(model_kwargs)
    vocab = len(tokenizer)
    for key in ("text_config", "decoder_config"):
        if key in kwargs and kwargs[key] is None:
            continue
        sub = dict(kwargs.get(key) or {})
        if sub.get("model_type") not in (None, "xmodal_text_model", "xmodal_decoder"):
            continue  # a `transformers` tower keeps its own vocabulary
        if sub.setdefault("vocab_size", vocab) < vocab:
            raise DataError(f"model.{key}.vocab_size={sub['vocab_size']} is smaller than the tokenizer's {vocab}.")
        sub["pad_token_id"] = tokenizer.pad_token_id
        if key == "decoder_config":
            sub["bos_token_id"] = tokenizer.bos_token_id
            sub["eos_token_id"] = tokenizer.eos_token_id
            sub["decoder_start_token_id"] = tokenizer.bos_token_id
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
def target_labels(processor, texts, max_length):
    """Decoder targets from the processor: ids ending in EOS, without the start token, padded with -100."""
    return processor(text_target=list(texts), max_length=max_length, return_tensors="pt")["labels"]


def _audio_value(value):
    """Audio as the feature extractor takes it: bytes, a path, or a {"array", "sampling_rate"} dict."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        return value["bytes"]
    if isinstance(value, dict) and "array" not in value and value.get("path"):
        return value["path"]
    return value


def encode_rows(rows, processor, data_config, task, modalities):
    """Raw rows (a list of dicts) -> model inputs as tensors."""
    batch = {}
    if "text" in modalities:
        texts = [row[data_config.text_column] for row in rows]
        batch.update(processor.tokenizer(texts, padding="longest", truncation=True,
                                         max_length=data_config.max_text_length, return_tensors="pt"))
        batch.pop("token_type_ids", None)
    if "image" in modalities:
        batch.update(processor.image_processor([row["image"] for row in rows], return_tensors="pt"))
    if "audio" in modalities:
        audio = [_audio_value(row["audio"]) for row in rows]
        rates = {row.get("sampling_rate") for row in rows}
        rate = rates.pop() if len(rates) == 1 else None
        kwargs = {"sampling_rate": rate} if rate and not isinstance(audio[0], (bytes, str, dict)) else {}
        batch.update(processor.feature_extractor(audio, return_tensors="pt", **kwargs))
    kind = TASKS[task][1]
    if kind == "target" and data_config.target_column:
        batch["labels"] = target_labels(processor, [row[data_config.target_column] for row in rows],
                                        data_config.max_target_length)
    elif kind == "column":
        batch["labels"] = torch.tensor([row[data_config.label_column] for row in rows])
    return batch


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded tensors (rows padded to the split's longest) plus plain metadata columns."""

    def __init__(self, tensors, metadata=None):
        self.tensors = tensors
        self.metadata = metadata or {}
        self.length = len(next(iter(tensors.values())))

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return {key: value[index] for key, value in self.tensors.items()}


def _pad_to(tensor, length, value):
    if tensor.shape[-1] == length:
        return tensor
    pad = tensor.new_full((*tensor.shape[:-1], length - tensor.shape[-1]), value)
    return torch.cat([tensor, pad], dim=-1)


def _pad_value(key, tokenizer):
    return {"labels": -100, "input_ids": tokenizer.pad_token_id or 0}.get(key, 0)


def encode_split(split, processor, data_config, task, modalities, cache_dir=None, chunk_size=256, progress=None):
    """Encodes a whole split (in chunks), storing pixels and log-mels as float16 to halve memory; cached on disk."""
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(split, processor, data_config, task, modalities)
        cache_file = Path(cache_dir) / f"{key}.pt"
        if cache_file.is_file():
            return EncodedDataset(**torch.load(cache_file, weights_only=True))
    chunks, truncated = [], []
    for start in range(0, len(split), chunk_size):
        rows = split.select(range(start, min(start + chunk_size, len(split))))
        rows = [dict(zip(rows.column_names, values)) for values in zip(*(rows[c] for c in rows.column_names))]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoded = encode_rows(rows, processor, data_config, task, modalities)
        truncated += [w for w in caught if "Truncated" in str(w.message)]
        for name in ("pixel_values", "input_features"):
            if name in encoded:
                encoded[name] = encoded[name].to(torch.float16)
        chunks.append(encoded)
        if progress is not None:
            progress(min(start + chunk_size, len(split)), len(split))
    if truncated:
        print(f"  note: some clips in {len(truncated)} chunk(s) were longer than data.max_audio_seconds="
              f"{data_config.max_audio_seconds} and were truncated", file=sys.stderr)
    tensors = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].dim() > 1 and key != "pixel_values":
            longest = max(p.shape[-1] for p in parts)
            parts = [_pad_to(p, longest, _pad_value(key, processor.tokenizer)) for p in parts]
        tensors[key] = torch.cat(parts)
    metadata = {c: list(split[c]) for c in ("scene_id", "caption", "captions", "label", "match", "voice")
                if c in split.column_names}
    dataset = EncodedDataset(tensors, metadata)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".tmp-{os.getpid()}")
        torch.save({"tensors": tensors, "metadata": metadata}, partial)
        os.replace(partial, cache_file)
    return dataset


def _cache_key(split, processor, data_config, task, modalities):
    tokenizer = processor.tokenizer
    parts = {
        "version": CACHE_VERSION,
        "fingerprint": getattr(split, "_fingerprint", None),
        "rows": len(split),
        "image": processor.image_processor.to_dict() if "image" in modalities else None,
        "audio": processor.feature_extractor.to_dict() if "audio" in modalities else None,
        "vocab": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(),
        "data": {k: getattr(data_config, k) for k in ("text_column", "target_column", "label_column",
                                                      "max_text_length", "max_target_length")},
        "labels": TASKS[task][1],
        "modalities": sorted(modalities),
    }
    if getattr(processor, "has_target_tokenizer", False):  # labels in the decoder's own vocabulary
        target = processor.target_tokenizer.get_vocab()
        parts["target_vocab"] = hashlib.sha256(json.dumps(sorted(target.items())).encode()).hexdigest()
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- batching
class XModalDataCollator:
    """Rows -> a batch keyed by exactly the names of `forward`'s arguments.

    Rows may be encoded (from `EncodedDataset`: padded tensors, trimmed here to the batch's
    longest) or raw dataset rows, which the processor encodes. Keys the model does not take are
    dropped, so the same collator serves every head.
    """

    def __init__(self, processor, data_config, task, modalities, forward_names=None):
        self.processor = processor
        self.data_config = data_config
        self.task = task
        self.modalities = list(modalities)
        self.forward_names = list(forward_names) if forward_names is not None else None

    def __call__(self, rows):
        if "input_ids" in rows[0] or "pixel_values" in rows[0] or "input_features" in rows[0]:
            batch = self._stack(rows)
        else:
            batch = encode_rows(rows, self.processor, self.data_config, self.task, self.modalities)
        for name in ("pixel_values", "input_features"):
            if name in batch:
                batch[name] = batch[name].float()
        if self.forward_names is not None:
            batch = {k: v for k, v in batch.items() if k in self.forward_names}
            if self.task == "contrastive" and "return_loss" in self.forward_names:
                batch["return_loss"] = True
        return batch

    @staticmethod
    def _stack(rows):
        batch = {key: torch.stack([row[key] for row in rows]) for key in rows[0] if key in ENCODED_KEYS}
        for key, mask_key in TRIM_BY_MASK.items():
            if key in batch and mask_key in batch:
                length = int(batch[mask_key].sum(dim=1).max())
                batch[key] = batch[key][..., :max(length, 1)]
        if "labels" in batch and batch["labels"].dim() == 2:
            valid = (batch["labels"] != -100).any(dim=0).nonzero()
            batch["labels"] = batch["labels"][:, :int(valid.max()) + 1 if len(valid) else 1]
        return batch


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A fresh permutation per epoch that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, num_samples, seed):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())
