"""Raw rows to model inputs: each split encoded once (images to pixels, speech to log-mel frames, text to
ids) into tensors, stored as float16 and cached next to the dataset, so a 2-core machine spends its time
on the model.

Every row is first made ready by `rows.prepare_row` (images and audio decoded from whatever the source
holds); a row that cannot be used is skipped and counted by reason (`data.on_error: skip`) or stops the
run naming the row (`raise`). A text column may hold several captions per item (Flickr30k / COCO): all
are encoded, training reads one per item, drawn anew each epoch, and retrieval scores every caption.
"""

import hashlib
import json
import os
import random
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch

from ..composition import false_caption
from ..config import TASKS
from ..metrics import normalize_text
from .errors import DataError
from .rows import RowError, prepare_row

ENCODED_KEYS = ("input_ids", "attention_mask", "pixel_values", "input_features", "feature_attention_mask", "labels",
                "negative_input_ids", "negative_attention_mask", "caption_hashes", "true_caption_hashes")
# One row per caption when items have several; a false caption (`data.negative_captions`) follows its caption.
CAPTION_KEYS = ("input_ids", "attention_mask", "negative_input_ids", "negative_attention_mask")
CACHE_VERSION = 2


def target_labels(processor, texts, max_length):
    """Decoder targets from the processor: ids ending in EOS, without the start token, padded with -100."""
    return processor(text_target=list(texts), max_length=max_length, return_tensors="pt")["labels"]


def label_roles(task, data_config):
    """The roles besides the modalities a task reads: the decoder target or the label column."""
    kind = TASKS[task][1]
    if kind == "target" and data_config.column("target"):
        return ("target",)
    return ("label",) if kind == "column" else ()


def tokenize_texts(processor, texts, data_config):
    """Captions as model inputs (`input_ids`, `attention_mask`), padded to the longest, cut at
    `data.max_text_length`: the one way training, evaluation and its composition variants tokenize."""
    inputs = dict(processor.tokenizer(list(texts), padding="longest", truncation=True,
                                      max_length=data_config.max_text_length, return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    return inputs


def negative_caption_inputs(processor, texts, data_config):
    """`negative_input_ids` / `negative_attention_mask`: for each caption one false variant (objects swapped,
    relation turned round, count or size changed; its kind drawn by the caption's position and text), or an
    all-padding row with a zero mask when the caption has none (one or three objects, another phrasing)."""
    negatives = [false_caption(text, f"{row}:{text}") for row, text in enumerate(texts)]
    inputs = tokenize_texts(processor, [n or "" for n in negatives], data_config)
    missing = torch.tensor([n is None for n in negatives])
    inputs["input_ids"][missing] = processor.tokenizer.pad_token_id or 0
    inputs["attention_mask"][missing] = 0
    return {"negative_input_ids": inputs["input_ids"], "negative_attention_mask": inputs["attention_mask"]}


def encode_prepared(prepared, processor, data_config, task, modalities):
    """Rows made ready by `prepare_row` -> model inputs as tensors. With several captions per item the
    caption tensors have one row per caption, and `caption_owner` says whose each is."""
    batch = {}
    if "text" in modalities:
        texts = [p["text"] for p in prepared]
        if any(isinstance(t, list) for t in texts):
            owners = [i for i, t in enumerate(texts) for _ in (t if isinstance(t, list) else [t])]
            texts = [c for t in texts for c in (t if isinstance(t, list) else [t])]
            batch["caption_owner"] = torch.tensor(owners)
        batch.update(tokenize_texts(processor, texts, data_config))
        if data_config.negative_captions:
            batch.update(negative_caption_inputs(processor, texts, data_config))
    if "image" in modalities:
        batch.update(processor.image_processor([p["image"] for p in prepared], return_tensors="pt"))
    if "audio" in modalities:
        batch.update(processor.feature_extractor([p["audio"] for p in prepared], return_tensors="pt"))
    if "target" in label_roles(task, data_config):
        targets = [p["target"] if isinstance(p["target"], str) else p["target"][0] for p in prepared]
        batch["labels"] = target_labels(processor, targets, data_config.max_target_length)
    elif "label" in label_roles(task, data_config):
        batch["labels"] = torch.tensor([p["label"] for p in prepared])
    return batch


def encode_rows(rows, processor, data_config, task, modalities, base_dir=None):
    """Raw rows (a list of dicts) -> model inputs; a row that cannot be used is a `DataError` naming it."""
    prepared, columns, roles = [], data_config.resolved_columns(), label_roles(task, data_config)
    for index, row in enumerate(rows):
        try:
            prepared.append(prepare_row(row, columns, modalities, roles, base_dir))
        except RowError as error:
            raise DataError(f"Row {index} of the batch cannot be used: {error}.") from None
    return encode_prepared(prepared, processor, data_config, task, modalities)


def caption_hash(text):
    """A stable non-negative int64 of a caption after `normalize_text` (-1 is left for padding)."""
    digest = hashlib.blake2b(normalize_text(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def add_caption_hashes(dataset, data_config):
    """Gives each item `caption_hashes` (its caption's) and `true_caption_hashes` (those of every caption true of
    its scene, the `captions` column where the data has one, else its own; -1 pads), with which the model does not
    count in-batch samples that match all the same as negatives (`data.mask_false_negatives`). Needs one caption per
    item in a `caption` column that is the text; returns whether the hashes were added."""
    said = dataset.metadata.get("caption")
    if data_config.column("text") != "caption" or said is None or dataset.offsets is not None or \
            not all(isinstance(caption, str) for caption in said):
        return False
    true = dataset.metadata.get("captions") or [[caption] for caption in said]
    sets = [sorted({caption_hash(c) for c in options} | {caption_hash(own)}) for options, own in zip(true, said)]
    padded = torch.full((len(sets), max(map(len, sets))), -1, dtype=torch.long)
    for row, hashes in enumerate(sets):
        padded[row, :len(hashes)] = torch.tensor(hashes)
    dataset.tensors.update(caption_hashes=torch.tensor([caption_hash(c) for c in said]), true_caption_hashes=padded)
    return True


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded tensors (rows padded to the split's longest) plus plain metadata columns and the count of
    skipped rows per reason. With several captions per item, `caption_offsets` (items + 1) indexes the
    caption rows, and item i reads caption `offsets[i] + draw` where the draw depends only on (item, epoch)."""

    def __init__(self, tensors, metadata=None, skipped=None):
        self.tensors = tensors
        self.metadata = metadata or {}
        self.skipped = dict(skipped or {})
        self.offsets = tensors.get("caption_offsets")
        self.length = len(self.offsets) - 1 if self.offsets is not None else len(next(iter(tensors.values())))
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.length

    def caption_index(self, index):
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return start + random.Random(self.epoch * 1_000_003 + index).randrange(end - start)

    def __getitem__(self, index):
        if self.offsets is None:
            return {key: value[index] for key, value in self.tensors.items()}
        caption = self.caption_index(index)
        return {key: value[caption if key in CAPTION_KEYS else index] for key, value in self.tensors.items()
                if key in ENCODED_KEYS}

    def caption_rows(self):
        """(every caption's tensors, the item each belongs to): what retrieval scores, one query per caption."""
        owner = self.tensors.get("caption_owner")
        if owner is None:
            return {k: self.tensors[k] for k in CAPTION_KEYS if k in self.tensors}, torch.arange(self.length)
        return {k: self.tensors[k] for k in CAPTION_KEYS if k in self.tensors}, owner


def pad_to(tensor, length, value):
    """`tensor` with its last dimension padded to `length` with `value`."""
    if tensor.shape[-1] == length:
        return tensor
    pad = tensor.new_full((*tensor.shape[:-1], length - tensor.shape[-1]), value)
    return torch.cat([tensor, pad], dim=-1)


def pad_value(key, tokenizer):
    """What pads `key`: -100 for labels, the pad token for token ids (0 without a tokenizer), else 0."""
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    return {"labels": -100, "input_ids": pad, "negative_input_ids": pad}.get(key, 0)


def encode_split(split, processor, data_config, task, modalities, cache_dir=None, chunk_size=256, progress=None,
                 base_dir=None, name="split"):
    """Encodes a whole split (in chunks), storing pixels and log-mels as float16 to halve memory; cached on disk.
    Rows that cannot be used are skipped and counted (`EncodedDataset.skipped`), or raise (`data.on_error`)."""
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(split, processor, data_config, task, modalities)
        cache_file = Path(cache_dir) / f"{key}.pt"
        if cache_file.is_file():
            return EncodedDataset(**torch.load(cache_file, weights_only=True))
    columns, roles = data_config.resolved_columns(), label_roles(task, data_config)
    chunks, truncated, kept, skipped = [], [], [], Counter()
    for start in range(0, len(split), chunk_size):
        rows = split.select(range(start, min(start + chunk_size, len(split))))
        rows = [dict(zip(rows.column_names, values)) for values in zip(*(rows[c] for c in rows.column_names))]
        prepared = []
        for offset, row in enumerate(rows):
            try:
                prepared.append(prepare_row(row, columns, modalities, roles, base_dir))
                kept.append(start + offset)
            except RowError as error:
                if data_config.on_error == "raise":
                    raise DataError(f"Row {start + offset} of the {name!r} split cannot be used: {error} "
                                    "(data.on_error: skip leaves such rows out and counts them).") from None
                skipped[error.reason] += 1
        if prepared:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                encoded = encode_prepared(prepared, processor, data_config, task, modalities)
            truncated += [w for w in caught if "Truncated" in str(w.message)]
            for key in ("pixel_values", "input_features"):
                if key in encoded:
                    encoded[key] = encoded[key].to(torch.float16)
            if "caption_owner" in encoded:  # owners within the chunk -> within the split
                encoded["caption_owner"] += len(kept) - len(prepared)
            chunks.append(encoded)
        if progress is not None:
            progress(min(start + chunk_size, len(split)), len(split))
    if skipped:
        print(f"  {name}: skipped {sum(skipped.values())} of {len(split)} rows ("
              + ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) + ")", file=sys.stderr)
    if not chunks:
        raise DataError(f"No usable row in the {name!r} split: all {len(split)} were skipped "
                        f"({dict(skipped)}).")
    if truncated:
        print(f"  note: some clips in {len(truncated)} chunk(s) were longer than data.max_audio_seconds="
              f"{data_config.max_audio_seconds} and were truncated", file=sys.stderr)
    tensors = _concatenate(chunks, processor.tokenizer)
    metadata = {c: [split[c][i] for i in kept] if len(kept) < len(split) else list(split[c])
                for c in ("scene_id", "caption", "captions", "label", "match", "voice") if c in split.column_names}
    skipped = dict(sorted(skipped.items()))
    dataset = EncodedDataset(tensors, metadata, skipped)
    if cache_file is not None:
        save_encoded(cache_file, {"tensors": tensors, "metadata": metadata, "skipped": skipped})
    return dataset


def _concatenate(chunks, tokenizer):
    tensors = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].dim() > 1 and key != "pixel_values":
            longest = max(p.shape[-1] for p in parts)
            parts = [pad_to(p, longest, pad_value(key, tokenizer)) for p in parts]
        tensors[key] = torch.cat(parts)
    if "caption_owner" in tensors:
        counts = torch.bincount(tensors["caption_owner"])
        tensors["caption_offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return tensors


def save_encoded(cache_file, payload):
    """Writes an encoded split's cache file whole or not at all (a partial file renamed into place)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".tmp-{os.getpid()}")
    torch.save(payload, partial)
    os.replace(partial, cache_file)


def digest(value):
    """A short, stable hash of JSON-able `value` (dict keys sorted): what a cache file is named by."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def vocab_digest(tokenizer):
    """The hash of a tokenizer's vocabulary: a cache encoded with another vocabulary is another file."""
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


def _cache_key(split, processor, data_config, task, modalities):
    tokenizer = processor.tokenizer
    parts = {
        "version": CACHE_VERSION,
        "fingerprint": getattr(split, "_fingerprint", None),
        "rows": len(split),
        "image": processor.image_processor.to_dict() if "image" in modalities else None,
        "audio": processor.feature_extractor.to_dict() if "audio" in modalities else None,
        "vocab": vocab_digest(tokenizer),
        "data": {"columns": data_config.resolved_columns(), "on_error": data_config.on_error,
                 **{k: getattr(data_config, k) for k in ("max_text_length", "max_target_length")}},
        # only when set, so that the caches encoded before the option existed stay valid
        **({"negative_captions": True} if data_config.negative_captions else {}),
        "labels": TASKS[task][1],
        "modalities": sorted(modalities),
    }
    if getattr(processor, "has_target_tokenizer", False):  # labels in the decoder's own vocabulary
        parts["target_vocab"] = vocab_digest(processor.target_tokenizer)
    return digest(parts)
