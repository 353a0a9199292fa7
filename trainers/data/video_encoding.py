"""Video rows (the built-in narrated clips, or any dataset with their columns) to the inputs of video pre-training.

Each clip is decoded once, by the run's own processor: its frames at the video processor's `fps` (the model's
frames), every frame at the source rate (the pictures that image -> moment asks about), the soundtrack through the
feature extractor, the caption and each event's sentence through the tokenizer. Frames and log-mels are stored as
float16 and cached next to the dataset, as `encoding.encode_split` does for the other modalities.

A clip whose video cannot be decoded, or that has no sound track, is skipped and counted (`undecodable_video`,
`no_sound_track`: `rows.SKIP_REASONS`), or stops the run naming the row (`data.on_error: raise`). The sound's offsets for the sync task are drawn per (clip, epoch) and applied by shifting the log-mels
(training); evaluation splits hold the sound shifted in the waveform itself, one fixed offset per clip, so the
measured task is the real one.
"""

import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .encoding import digest, pad_to, save_encoded, tokenize_texts, vocab_digest
from .errors import DataError

VIDEO_COLUMNS = ("video", "caption", "events")  # what a row must hold; events: [{sentence, start, end}, ...]
VIDEO_CACHE_VERSION = 1
QUERIES_PER_CLIP = 4  # pictures per clip that image -> moment trains on (one drawn per epoch)
EVAL_QUERIES_PER_CLIP = 2  # and is measured on: pictures shown only once in the clip
SAME_PICTURE = 0.02  # mean absolute difference (pixels in [-1, 1]) under which two frames show the same picture
MOMENT_TOLERANCE = 0.25  # seconds: a frame this close to a picture's time counts as its moment


def frame_positives(query, frames, query_time, times, real):
    """(frames,) bool: the sampled frames that count as where `query` appears, those within `MOMENT_TOLERANCE`
    seconds of its time, and any frame showing the same picture (a still stretch shows it for longer)."""
    same = (frames.float() - query.float()).abs().mean(dim=(1, 2, 3)) < SAME_PICTURE
    near = (times - query_time).abs() <= MOMENT_TOLERANCE + 1e-6
    return (same | near) & real


def unique_moments(all_frames, all_times, count, rng):
    """Indices of up to `count` source frames whose picture differs from every frame more than `MOMENT_TOLERANCE`
    seconds away: the ones a viewer could place in time. Chosen at random among those."""
    difference = (all_frames.float()[:, None] - all_frames.float()[None]).abs().mean(dim=(2, 3, 4))
    far = (all_times[:, None] - all_times[None]).abs() > MOMENT_TOLERANCE + 1e-6
    unique = ~((difference < SAME_PICTURE) & far).any(dim=1)
    candidates = unique.nonzero().flatten().tolist()
    return sorted(rng.sample(candidates, min(count, len(candidates))))


def shift_waveform(samples, offset_seconds, sampling_rate):
    """The sound delayed by `offset_seconds` (negative: advanced), silence shifted in, the length kept."""
    shift = int(round(offset_seconds * sampling_rate))
    out = np.zeros_like(samples)
    if shift >= 0:
        out[shift:] = samples[:len(samples) - shift] if shift < len(samples) else out[shift:]
    else:
        out[:shift] = samples[-shift:]
    return out


class _NoSound(ValueError):
    """A clip without a readable sound track: the sync task has nothing to read."""


def _encode_clip(row, processor, max_offset, evaluation, rng):
    from xmodal.processing.video_processing_xmodal import load_video_audio, sample_frame_indices

    video = processor.video_processor
    every = video.read_clip(row["video"], fps=float(row.get("fps") or 1000), max_frames=10_000)
    pixels = torch.from_numpy(video.frame_processor()(every[0], return_tensors="np")["pixel_values"])
    source_times = torch.as_tensor(every[1], dtype=torch.float64)
    chosen = sample_frame_indices(every[1], video.fps, video.num_frames if video.fps is None else None,
                                  video.max_frames, "video")
    frames, times = pixels[chosen], source_times[chosen]
    real = torch.ones(len(chosen), dtype=torch.bool)
    if evaluation:
        picks = unique_moments(pixels, source_times, EVAL_QUERIES_PER_CLIP, rng)
    else:
        picks = [rng.randrange(len(pixels)) for _ in range(QUERIES_PER_CLIP)]
    try:
        samples, rate = load_video_audio(row["video"])
    except ValueError as error:
        raise _NoSound(str(error)) from None
    offset = rng.randint(-max_offset, max_offset) if evaluation else 0
    if offset:  # the measured task: the sound itself is late (or early) by whole frames
        samples = shift_waveform(samples, offset / video.fps, rate)
    events = [e for e in row["events"] if e.get("sentence")]
    return {
        "caption": row["caption"], "frames": frames.to(torch.float16), "times": times,
        "queries": pixels[picks].to(torch.float16), "query_times": source_times[picks],
        "query_positives": torch.stack([frame_positives(pixels[p], frames, source_times[p], times, real)
                                        for p in picks]) if picks else torch.zeros(0, len(chosen), dtype=torch.bool),
        "audio": {"array": samples, "sampling_rate": rate}, "audio_offset": offset,
        "sentences": [e["sentence"] for e in events],
        "segments": torch.tensor([[e["start"], e["end"]] for e in events], dtype=torch.float64).reshape(-1, 2),
    }


def _pad_stack(tensors, value=0):
    """Tensors of shapes (n_i, ...) -> (len, max n_i, ...) padded with `value`."""
    longest = max(t.shape[0] for t in tensors)
    out = tensors[0].new_full((len(tensors), longest, *tensors[0].shape[1:]), value)
    for i, t in enumerate(tensors):
        out[i, :len(t)] = t
    return out


def _collect(clips, processor, data_config, max_events):
    """Encoded clips -> the split's tensors (clips padded to the longest)."""
    frames = _pad_stack([c["frames"] for c in clips]).to(torch.float16)
    real = _pad_stack([torch.ones(len(c["times"]), dtype=torch.long) for c in clips])
    times = _pad_stack([c["times"] for c in clips]).float()
    tensors = {"pixel_values_videos": frames, "video_frame_mask": real, "video_timestamps": times}
    tensors.update(tokenize_texts(processor, [c["caption"] for c in clips], data_config))
    tensors["queries"] = _pad_stack([c["queries"] for c in clips]).to(torch.float16)
    tensors["query_times"] = _pad_stack([c["query_times"] for c in clips], -1.0)
    tensors["query_positives"] = _pad_stack([pad_to(c["query_positives"], frames.shape[1], False) for c in clips])
    sentences = [s for c in clips for s in c["sentences"][:max_events]]
    tokens = tokenize_texts(processor, sentences, data_config)
    width = tokens["input_ids"].shape[1]
    ids = torch.zeros(len(clips), max_events, width, dtype=torch.long)
    ids.fill_(processor.tokenizer.pad_token_id or 0)
    mask = torch.zeros(len(clips), max_events, width, dtype=torch.long)
    segments = torch.full((len(clips), max_events, 2), -1.0, dtype=torch.float64)
    labels = torch.zeros(len(clips), max_events, frames.shape[1], dtype=torch.long)
    row = 0
    for i, clip in enumerate(clips):
        for e, (start, end) in enumerate(clip["segments"][:max_events].tolist()):
            ids[i, e], mask[i, e] = tokens["input_ids"][row], tokens["attention_mask"][row]
            segments[i, e] = torch.tensor([start, end])
            clip_times = times[i, :len(clip["times"])]
            labels[i, e, :len(clip["times"])] = ((clip_times >= start - 1e-6) & (clip_times <= end + 1e-6)).long()
            row += 1
    tensors.update({"event_input_ids": ids, "event_attention_mask": mask, "event_segments": segments,
                    "event_labels": labels})
    audio = processor.feature_extractor([c["audio"] for c in clips], return_tensors="pt")
    tensors["input_features"] = audio["input_features"].to(torch.float16)
    tensors["feature_attention_mask"] = audio["feature_attention_mask"]
    tensors["audio_offsets"] = torch.tensor([c["audio_offset"] for c in clips])
    return tensors


class VideoDataset(torch.utils.data.Dataset):
    """Encoded clips; item i reads one of its training pictures and, for a training split, an offset of its sound,
    both drawn from (item, epoch) alone so that a resumed run sees the same. An evaluation split's sound is already
    shifted (`audio_offsets`) and its pictures are all kept for scoring (`queries`)."""

    ITEM_KEYS = ("pixel_values_videos", "video_frame_mask", "video_timestamps", "input_ids", "attention_mask",
                 "event_input_ids", "event_attention_mask", "event_labels", "input_features", "feature_attention_mask")

    def __init__(self, tensors, metadata=None, skipped=None, max_offset=4, shifted=False):
        self.tensors = tensors
        self.metadata = metadata or {}
        self.skipped = dict(skipped or {})
        self.max_offset = max_offset
        self.shifted = shifted  # the sound was shifted when encoded (evaluation splits)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.tensors["pixel_values_videos"])

    def __getitem__(self, index):
        item = {key: self.tensors[key][index] for key in self.ITEM_KEYS}
        draw = random.Random(self.epoch * 1_000_003 + index)
        queries = int((self.tensors["query_times"][index] >= 0).sum())
        pick = draw.randrange(queries) if queries else 0  # a clip without a picture: no positive, no moment loss
        item["pixel_values"] = self.tensors["queries"][index, pick]
        item["moment_labels"] = self.tensors["query_positives"][index, pick].long() * int(queries > 0)
        offset = int(self.tensors["audio_offsets"][index]) if self.shifted else draw.randint(-self.max_offset,
                                                                                               self.max_offset)
        item["audio_offsets"] = torch.tensor(offset)
        item["shift_features"] = torch.tensor(0 if self.shifted else offset)
        return item


def encode_video_split(split, processor, data_config, max_offset, evaluation, cache_dir=None, max_events=5,
                       progress=None, name="split", seed=0):
    """A split of video rows -> `VideoDataset`, cached on disk by the split, the processor and the settings."""
    missing = [c for c in VIDEO_COLUMNS if c not in split.column_names]
    if missing:
        raise DataError(f"The {name!r} split has no column(s) {missing}; video pre-training reads {list(VIDEO_COLUMNS)} "
                        f"(events: a list of {{sentence, start, end}} in seconds), as `xmodal data build --videos` "
                        f"writes. It has {split.column_names}.")
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(split, processor, data_config, max_offset, evaluation, max_events, seed)
        cache_file = Path(cache_dir) / f"video-{key}.pt"
        if cache_file.is_file():
            return VideoDataset(**torch.load(cache_file, weights_only=True, mmap=True), max_offset=max_offset,
                                shifted=evaluation)
    clips, kept, skipped = [], [], Counter()
    rng = random.Random(f"{seed}-{name}")
    for index in range(len(split)):
        row = split[index]
        try:
            clips.append(_encode_clip(row, processor, max_offset, evaluation, rng))
            kept.append(index)
        except ValueError as error:  # the processor's message names what is wrong with the video
            if data_config.on_error == "raise":
                raise DataError(f"Row {index} of the {name!r} split cannot be used: {error} (data.on_error: skip "
                                "leaves such rows out and counts them).") from None
            skipped["no_sound_track" if isinstance(error, _NoSound) else "undecodable_video"] += 1
        if progress is not None and ((index + 1) % 256 == 0 or index + 1 == len(split)):
            progress(index + 1, len(split))
    if skipped:
        print(f"  {name}: skipped {sum(skipped.values())} of {len(split)} rows ("
              + ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) + ")", file=sys.stderr)
    if not clips:
        raise DataError(f"No usable clip in the {name!r} split: all {len(split)} were skipped.")
    tensors = _collect(clips, processor, data_config, max_events)
    metadata = {"clip_id": [split[i]["clip_id"] for i in kept] if "clip_id" in split.column_names else kept,
                "caption": [c["caption"] for c in clips], "sentences": [c["sentences"][:max_events] for c in clips]}
    if cache_file is not None:
        save_encoded(cache_file, {"tensors": tensors, "metadata": metadata, "skipped": dict(skipped)})
    return VideoDataset(tensors, metadata, skipped, max_offset=max_offset, shifted=evaluation)


def _cache_key(split, processor, data_config, max_offset, evaluation, max_events, seed):
    parts = {
        "version": VIDEO_CACHE_VERSION, "fingerprint": getattr(split, "_fingerprint", None), "rows": len(split),
        "video": processor.video_processor.to_dict(), "audio": processor.feature_extractor.to_dict(),
        "vocab": vocab_digest(processor.tokenizer),
        "max_text_length": data_config.max_text_length, "max_offset": max_offset, "evaluation": evaluation,
        "max_events": max_events, "seed": seed, "on_error": data_config.on_error,
    }
    return digest(parts)
