"""task: video — the data of a run and its evaluation: text <-> video retrieval, image -> moment, sentence -> moment
(temporal grounding) and audio-video sync, each scored by `video_metrics` on a held-out split.

The evaluation asks each question the way a user would: the caption against every clip; each picture (one shown only
once in its clip, `video_encoding.unique_moments`) against its clip's frames; each event's sentence against its
clip's frames, the span read off by `predict_segments`; and each clip's sound shifted in the waveform by a known
number of frames, the offset found by `estimate_offsets` over the frame embeddings.
"""

import torch

from .data.collator import VideoCollator
from .data.video_encoding import encode_video_split
from .video_metrics import estimate_offsets, grounding_metrics, image_moment_metrics, sync_metrics, \
    video_retrieval_metrics

EVALUATION_SEED = 0  # the pictures and offsets a split is measured on never depend on the run's settings
EVAL_BATCH_CLIPS = 32  # clips per forward when evaluating (each is up to max_frames pictures)


def mel_per_frame(processor):
    """Log-mel steps per video frame: the sync task shifts the sound by whole frames."""
    extractor, video = processor.feature_extractor, processor.video_processor
    steps = extractor.sampling_rate / extractor.hop_length / video.fps
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError(f"task: video shifts the sound by whole frames: the log-mel rate (sampling_rate / "
                         f"audio_hop_length = {extractor.sampling_rate}/{extractor.hop_length}) must be a whole "
                         f"multiple of data.video_fps={video.fps}; got {steps:g} steps per frame.")
    return int(round(steps))


def video_splits(config, raw, train_split, validation_name, processor, report, max_offset):
    """(training `VideoDataset`, validation `VideoDataset` or None, the collator)."""
    from .data import encoded_cache_dir, select_split

    data = config.data
    cache = encoded_cache_dir(data)
    train = encode_video_split(train_split, processor, data, max_offset, evaluation=False, cache_dir=cache,
                               max_events=data.max_events, progress=report("train"), name="train",
                               seed=config.training.seed)
    evaluation = None
    if validation_name is not None:
        split = select_split(raw, "validation", data.max_eval_samples, data)
        evaluation = encode_video_split(split, processor, data, max_offset, evaluation=True, cache_dir=cache,
                                        max_events=data.max_events, progress=report(validation_name),
                                        name=validation_name, seed=EVALUATION_SEED)
    return train, evaluation, VideoCollator(mel_per_frame(processor))


@torch.no_grad()
def evaluate_video(model, dataset, recall_at=(1, 5, 10)):
    """The four tasks' metrics of `model` (an `XModalForVideoPreTraining`) on an evaluation `VideoDataset`."""
    model.eval()
    tensors, max_offset = dataset.tensors, model.config.video_sync_max_offset
    captions, clips, moment, grounding, offsets = [], [], [], [], []
    for start in range(0, len(dataset), EVAL_BATCH_CLIPS):
        rows = slice(start, start + EVAL_BATCH_CLIPS)
        mask, times = tensors["video_frame_mask"][rows], tensors["video_timestamps"][rows]
        video = tensors["pixel_values_videos"][rows].float()
        frames = model.get_frame_embeddings(video, mask, times)
        clips.append(frames["clip"])
        captions.append(model.xmodal.get_embeddings(input_ids=tensors["input_ids"][rows],
                                                    attention_mask=tensors["attention_mask"][rows])["text"])
        query_times = tensors["query_times"][rows]
        for q in range(query_times.shape[1]):
            real = query_times[:, q] >= 0
            if bool(real.any()):
                image = model.xmodal.get_embeddings(pixel_values=tensors["queries"][rows][real, q].float())["image"]
                scores = torch.einsum("bd,btd->bt", image, frames["moment"][real])
                moment.append((scores, times[real], mask[real], query_times[real, q]))
        event_mask = tensors["event_attention_mask"][rows]
        events = event_mask.sum(-1) > 0
        if bool(events.any()):
            sentences = model.xmodal.get_embeddings(input_ids=tensors["event_input_ids"][rows][events],
                                                    attention_mask=event_mask[events])["text"]
            clip_of = events.nonzero()[:, 0]
            scores = torch.einsum("nd,ntd->nt", sentences, frames["grounding"][clip_of])
            grounding.append((scores, times[clip_of], mask[clip_of], tensors["event_segments"][rows][events]))
        audio = model.xmodal.run_tower("audio", {"input_features": tensors["input_features"][rows].float(),
                                                 "feature_attention_mask": tensors["feature_attention_mask"][rows]})
        sound = model.sound_frames(audio, mask)
        offsets.append(estimate_offsets(sound, frames["sync"], mask, mask, max_offset))
    metrics = {}
    texts = dataset.metadata.get("caption")
    relevant = None
    if texts:  # clips with the same caption are each a right answer for it
        relevant = torch.tensor([[a == b for b in texts] for a in texts])
    metrics.update(video_retrieval_metrics(torch.cat(captions), torch.cat(clips), ks=tuple(recall_at),
                                           relevant=relevant))
    if moment:
        metrics.update(image_moment_metrics(*_joined(moment)))
        metrics["image_to_moment_queries"] = sum(len(m[0]) for m in moment)
    if grounding:
        metrics.update(grounding_metrics(*_joined(grounding)))
        metrics["grounding_queries"] = sum(len(g[0]) for g in grounding)
    metrics.update(sync_metrics(torch.cat(offsets), tensors["audio_offsets"]))
    metrics["av_offset_max_frames"] = max_offset
    metrics["video_fps"] = float(1.0 / tensors["video_timestamps"][0].diff()[0]) \
        if tensors["video_timestamps"].shape[1] > 1 else None
    return metrics


def _joined(parts):
    """Per-batch (scores, times, mask, targets) -> one of each, frame columns padded to the widest batch (the split's
    tensors share one width, so this only concatenates)."""
    return tuple(torch.cat([p[i] for p in parts]) for i in range(4))
