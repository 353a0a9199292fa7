"""Raw rows to model inputs: each split encoded once (images to pixels, speech to log-mel frames, text to
ids) into tensors, stored as float16 and cached next to the dataset, so a 2-core machine spends its time
on the model."""

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from ..config import TASKS

ENCODED_KEYS = ("input_ids", "attention_mask", "pixel_values", "input_features", "feature_attention_mask", "labels")
CACHE_VERSION = 1


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
