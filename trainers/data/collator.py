"""Batches: the collator that names them exactly as `forward` does, and the per-epoch shuffle."""

import torch

from .encoding import ENCODED_KEYS, encode_rows, pad_to, pad_value

# Padded (batch, length) tensors and the mask that says how long each row really is.
TRIM_BY_MASK = {"input_ids": "attention_mask", "attention_mask": "attention_mask",
                "input_features": "feature_attention_mask", "feature_attention_mask": "feature_attention_mask",
                "negative_input_ids": "negative_attention_mask", "negative_attention_mask": "negative_attention_mask"}
# Inputs padded together to a length bucket (`length_buckets`), by the first of each group.
BUCKETED = {"input_ids": ("input_ids", "attention_mask"),
            "input_features": ("input_features", "feature_attention_mask"),
            "negative_input_ids": ("negative_input_ids", "negative_attention_mask"), "labels": ("labels",)}


class XModalDataCollator:
    """Rows -> a batch keyed by exactly the names of `forward`'s arguments.

    Rows may be encoded (from `EncodedDataset`: padded tensors, trimmed here to the batch's
    longest) or raw dataset rows, which the processor encodes. Keys the model does not take are
    dropped, so the same collator serves every head.
    """

    def __init__(self, processor, data_config, task, modalities, forward_names=None, length_buckets=None):
        self.processor = processor
        self.data_config = data_config
        self.task = task
        self.modalities = list(modalities)
        self.forward_names = list(forward_names) if forward_names is not None else None
        self.length_buckets = {k: sorted(v) for k, v in (length_buckets or {}).items() if k in BUCKETED}

    def __call__(self, rows):
        if "input_ids" in rows[0] or "pixel_values" in rows[0] or "input_features" in rows[0]:
            batch = self._stack(rows)
        else:
            batch = encode_rows(rows, self.processor, self.data_config, self.task, self.modalities)
        return self.for_model(self.pad_to_buckets(batch))

    def pad_to_buckets(self, batch):
        """Each input named in `length_buckets` padded up to the shortest of its bucket lengths that holds it: a
        compiled step then meets a handful of shapes and compiles once for each, not once per batch. Padding is
        masked (labels pad with -100), so the model's outputs do not change."""
        tokenizer = getattr(self.processor, "tokenizer", None)
        for lead, keys in BUCKETED.items():
            if lead not in batch or lead not in self.length_buckets:
                continue
            length = batch[lead].shape[-1]
            target = next((b for b in self.length_buckets[lead] if b >= length), length)
            for key in keys:
                if key in batch:
                    batch[key] = pad_to(batch[key], target, pad_value(key, tokenizer))
        return batch

    def for_model(self, batch):
        """A batch of model inputs named and typed as `forward` takes them (float32 pixels and features, only
        the arguments it has, `return_loss` for the contrastive task)."""
        for name in ("pixel_values", "input_features"):
            if name in batch:
                batch[name] = batch[name].float()
        if "negative_attention_mask" in batch:  # false captions of the samples that have one; `negative_rows`: whose
            rows = batch["negative_attention_mask"].any(dim=1).nonzero().squeeze(1)
            negatives = {k: batch.pop(k) for k in ("negative_input_ids", "negative_attention_mask")}
            if len(rows):
                batch.update({k: v[rows] for k, v in negatives.items()}, negative_rows=rows)
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
                # contiguous: a slice keeps the padded row stride, which `torch.compile` would guard on
                batch[key] = batch[key][..., :max(length, 1)].contiguous()
        if "labels" in batch and batch["labels"].dim() == 2:
            valid = (batch["labels"] != -100).any(dim=0).nonzero()
            batch["labels"] = batch["labels"][:, :int(valid.max()) + 1 if len(valid) else 1].contiguous()
        return batch


class VideoCollator:
    """Items of a `VideoDataset` -> a batch for `XModalForVideoPreTraining`: stacked, trimmed to the batch's longest
    clip, caption and sentence, frames and log-mels as float32, and each training clip's sound shifted by its
    drawn offset (`audio_offsets`, whole frames: `mel_per_frame` log-mel steps each; the log-mel steps shifted in
    take the clip's quietest value, its silence)."""

    def __init__(self, mel_per_frame):
        self.mel_per_frame = mel_per_frame

    def __call__(self, rows):
        batch = {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
        frames = max(int(batch["video_frame_mask"].sum(1).max()), 1)
        for key in ("pixel_values_videos", "video_frame_mask", "video_timestamps"):
            batch[key] = batch[key][:, :frames].contiguous()
        for key in ("moment_labels", "event_labels"):
            if key in batch:
                batch[key] = batch[key][..., :frames].contiguous()
        for key, mask in (("input_ids", "attention_mask"), ("event_input_ids", "event_attention_mask"),
                          ("input_features", "feature_attention_mask")):
            length = max(int(batch[mask].sum(-1).max()), 1)
            batch[key] = batch[key][..., :length].contiguous()
            batch[mask] = batch[mask][..., :length].contiguous()
        events = max(int((batch["event_attention_mask"].sum(-1) > 0).sum(1).max()), 1)
        for key in ("event_input_ids", "event_attention_mask", "event_labels"):
            batch[key] = batch[key][:, :events].contiguous()
        for key in ("pixel_values_videos", "pixel_values", "input_features"):
            if key in batch:
                batch[key] = batch[key].float()
        shifts = batch.pop("shift_features")
        if bool(shifts.any()):
            batch["input_features"] = self.shift(batch["input_features"], batch["feature_attention_mask"], shifts)
        return batch

    def shift(self, features, mask, offsets):
        """Each clip's log-mels delayed by its offset in frames (negative: advanced), within its real length."""
        out = features.clone()
        for row, offset in enumerate(offsets.tolist()):
            length, steps = int(mask[row].sum()), offset * self.mel_per_frame
            real = features[row, :, :length]
            silence = real.min()
            shifted = torch.full_like(real, float(silence))
            if 0 <= steps < length:
                shifted[:, steps:] = real[:, :length - steps]
            elif -length < steps < 0:
                shifted[:, :steps] = real[:, -steps:]
            out[row, :, :length] = shifted
        return out


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A fresh permutation per epoch that depends only on (seed, epoch), so a resumed run sees the same order.

    With `lengths` and `batch_size`, the permutation is grouped by length as transformers' `group_by_length`
    does (sorted within windows of 50 batches), so that a batch pads less."""

    def __init__(self, num_samples, seed, lengths=None, batch_size=None):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self.lengths = lengths
        self.batch_size = batch_size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.lengths is not None:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


def compile_length_buckets(data_config, feature_extractor, audio_every):
    """The lengths a compiled step's inputs pad up to (`XModalDataCollator.pad_to_buckets`): captions and their false
    variants to `max_text_length`, decoder labels to `max_target_length`, speech to multiples of `audio_every`
    frames below the longest clip `feature_extractor` keeps, then that one (every length when `audio_every` is 0;
    none when the extractor pads every clip to one length anyway, as Whisper's 30 s)."""
    buckets = {"input_ids": [data_config.max_text_length], "negative_input_ids": [data_config.max_text_length],
               "labels": [data_config.max_target_length]}
    max_samples = getattr(feature_extractor, "max_samples", None)
    if audio_every > 0 and max_samples is not None:
        longest = feature_extractor.num_frames(max_samples)
        buckets["input_features"] = sorted({*range(audio_every, longest, audio_every), longest})
    return buckets


def row_lengths(dataset):
    """Each item's padded-away work for `group_by_length`: its speech frames when it has speech (the longest
    input by far), else its text tokens; None when the rows hold neither."""
    tensors = getattr(dataset, "tensors", {})
    for mask in ("feature_attention_mask", "attention_mask"):
        if mask in tensors and (mask != "attention_mask" or tensors.get("caption_offsets") is None):
            return tensors[mask].sum(dim=1).tolist()
    return None
