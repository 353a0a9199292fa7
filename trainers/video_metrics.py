"""Metrics for the video tasks: text–video retrieval, image→moment, sentence→moment (temporal grounding) and
audio–video synchronisation.

Pure functions of tensors (similarities, per-frame scores, timestamps, masks, embeddings) returning plain floats in
dicts, so evaluation, the Trainer and the demo share them. Frames come as the video processor gives them:
`timestamps` (batch, frames) in seconds and `frame_mask` (batch, frames), 1 for a real frame and 0 for padding;
a padding frame is never predicted, whatever its score.
"""

import torch
import torch.nn.functional as F

from xmodal.modeling_video import offset_similarity

from .metrics import recall_at_k

INTERPOLATIONS = ("nearest", "parabolic")
_SLACK = 1e-9  # float round-off allowed when a value sits exactly on a tolerance, an IoU threshold or a tie


def _check_frames(scores, timestamps, frame_mask):
    """The per-frame tensors as float64, float64, bool, once their shapes match and every clip has a real frame."""
    scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, frames), got shape {tuple(scores.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("empty batch: scores has no clips")
    if scores.shape[1] == 0:
        raise ValueError("scores has no frames")
    timestamps, frame_mask = torch.as_tensor(timestamps), torch.as_tensor(frame_mask)
    for name, value in (("timestamps", timestamps), ("frame_mask", frame_mask)):
        if value.shape != scores.shape:
            raise ValueError(f"{name} must have the shape of scores {tuple(scores.shape)}, got {tuple(value.shape)}")
    frame_mask = frame_mask.bool()
    empty = (~frame_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"frame_mask: clip(s) {empty} have no real frame")
    return scores.double(), timestamps.double(), frame_mask


def _check_targets(name, value, shape):
    value = torch.as_tensor(value, dtype=torch.float64)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (one per clip), got {tuple(value.shape)}")
    return value


# ---- text ↔ video retrieval ----------------------------------------------------------------------------------------

def video_retrieval_metrics(text_embeds, video_embeds, ks=(1, 5, 10), relevant=None):
    """Recall@k text→video and video→text, named as `retrieval_metrics` names its pairs ("text_to_video_R@1").

    Embeddings are compared by cosine (normalised here; already normalised ones are unchanged). `relevant` is a
    boolean (texts, videos) matrix, for several captions per video; without it text i matches video i only.
    """
    text_embeds, video_embeds = torch.as_tensor(text_embeds).float(), torch.as_tensor(video_embeds).float()
    for name, value in (("text_embeds", text_embeds), ("video_embeds", video_embeds)):
        if value.dim() != 2 or value.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (items, dim) matrix, got shape {tuple(value.shape)}")
    if text_embeds.shape[1] != video_embeds.shape[1]:
        raise ValueError(f"text_embeds and video_embeds must have the same width, got {text_embeds.shape[1]} "
                         f"and {video_embeds.shape[1]}")
    pairs = (len(text_embeds), len(video_embeds))
    if relevant is None:
        if pairs[0] != pairs[1]:
            raise ValueError(f"without relevant, text i pairs with video i: got {pairs[0]} texts and {pairs[1]} "
                             "videos; pass relevant (texts, videos)")
        relevant = torch.eye(pairs[0], dtype=torch.bool)
    relevant = torch.as_tensor(relevant).bool()
    if tuple(relevant.shape) != pairs:
        raise ValueError(f"relevant must have shape (texts, videos) = {pairs}, got {tuple(relevant.shape)}")
    similarity = F.normalize(text_embeds, dim=-1) @ F.normalize(video_embeds, dim=-1).t()
    metrics = {}
    directions = (("text_to_video", similarity, relevant), ("video_to_text", similarity.t(), relevant.t()))
    for name, matrix, mask in directions:
        for k, value in recall_at_k(matrix, ks, mask).items():
            metrics[f"{name}_R@{k}"] = value
    return metrics


# ---- image → moment ------------------------------------------------------------------------------------------------

def predict_image_moments(scores, timestamps, frame_mask, interpolation="nearest"):
    """The time (seconds) at which each query image appears in its video: the best real frame's timestamp.

    "parabolic" fits a parabola through the best frame and its two neighbours and moves to its vertex (at most half
    a frame interval): when frames are sparse and the similarity changes smoothly, the picture's true time usually
    lies between two sampled frames. It keeps the best frame's time at the clip's ends or beside padding.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    scores, timestamps, frame_mask = _check_frames(scores, timestamps, frame_mask)
    rows, frames = torch.arange(len(scores)), scores.shape[1]
    best = scores.masked_fill(~frame_mask, float("-inf")).argmax(dim=1)  # the first best frame on ties
    times = timestamps[rows, best]
    if interpolation == "nearest":
        return times
    left, right = (best - 1).clamp(min=0), (best + 1).clamp(max=frames - 1)
    inner = (best > 0) & (best < frames - 1) & frame_mask[rows, left] & frame_mask[rows, right]
    s_left, s_best, s_right = scores[rows, left], scores[rows, best], scores[rows, right]
    curvature = s_left - 2 * s_best + s_right  # < 0 at a strict peak; 0 when the three are equal (no vertex)
    peaked = inner & (curvature < 0)
    shift = torch.where(peaked, 0.5 * (s_left - s_right) / curvature.where(peaked, -1.0), 0.0).clamp(-0.5, 0.5)
    step = torch.where(shift >= 0, timestamps[rows, right] - times, times - timestamps[rows, left])
    return times + shift * step


def image_moment_metrics(scores, timestamps, frame_mask, true_times, tolerance=0.25, interpolation="nearest"):
    """Share of query images placed within ±`tolerance` seconds of their true time, and the mean absolute error.

    `scores` (batch, frames) are each image's similarities to the frames of its own video.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance}")
    predicted = predict_image_moments(scores, timestamps, frame_mask, interpolation)
    error = (predicted - _check_targets("true_times", true_times, predicted.shape)).abs()
    return {"image_to_moment_accuracy": float((error <= tolerance + _SLACK).double().mean()),
            "image_to_moment_mean_abs_error_s": float(error.mean())}


# ---- sentence → moment (temporal grounding) ------------------------------------------------------------------------

def temporal_iou(segment_a, segment_b):
    """Intersection over union of [start, end] segments (..., 2), broadcast; touching segments score 0.

    Two zero-length segments score 1 when they are the same instant, else 0.
    """
    a, b = torch.as_tensor(segment_a, dtype=torch.float64), torch.as_tensor(segment_b, dtype=torch.float64)
    for name, value in (("segment_a", a), ("segment_b", b)):
        if value.dim() == 0 or value.shape[-1] != 2:
            raise ValueError(f"{name} must be [start, end] pairs (..., 2), got shape {tuple(value.shape)}")
        if (value[..., 1] < value[..., 0]).any():
            raise ValueError(f"{name}: a segment ends before it starts")
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    same = (a == b).all(dim=-1).double()
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(torch.float64).tiny), same)


def predict_segments(scores, timestamps, frame_mask, threshold=0.5, frame_interval=None):
    """The segment [start, end] (seconds) of each clip that a sentence describes, from its per-frame scores.

    The frames above a level `threshold` of the way from the clip's lowest to its highest score count for the
    segment, those below against it: the prediction is the contiguous run of real frames with the largest sum of
    (score − level), the longest such run on ties (so equal scores give the whole clip). 0.5 is the half-maximum
    rule; the level is relative, so it does not depend on the scale of the scores. The ends are extended by half a
    frame interval, so a one-frame segment has a duration: `frame_interval` seconds if given, else the clip's median
    spacing (0 for a one-frame clip). A start before 0 s is clipped to 0.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a fraction in [0, 1] of the way from the lowest to the highest score, "
                         f"got {threshold}")
    if frame_interval is not None and frame_interval < 0:
        raise ValueError(f"frame_interval must be >= 0 seconds, got {frame_interval}")
    scores, timestamps, frame_mask = _check_frames(scores, timestamps, frame_mask)
    segments = torch.empty(len(scores), 2, dtype=torch.float64)
    for row, (score, times, real) in enumerate(zip(scores, timestamps, frame_mask)):
        start, end = _best_run(score, real, threshold)
        interval = frame_interval
        if interval is None:
            spacing = times[real].diff()
            interval = float(spacing.median()) if len(spacing) else 0.0
        segments[row, 0] = max(0.0, float(times[start]) - interval / 2)
        segments[row, 1] = float(times[end - 1]) + interval / 2
    return segments


def _best_run(score, real, threshold):
    """[start, end) frame indices of the run of real frames maximising sum(score − level); longest, then first."""
    low, high = score[real].min(), score[real].max()
    gain = (score - (low + threshold * (high - low))).masked_fill(~real, 0.0)
    zero = gain.new_zeros(1)
    total = torch.cat([zero, gain.cumsum(0)])
    padding = torch.cat([zero, (~real).double().cumsum(0)])
    sums = total[None, :] - total[:, None]  # [i, j]: the sum over frames i .. j-1
    starts, ends = torch.meshgrid(torch.arange(len(total)), torch.arange(len(total)), indexing="ij")
    allowed = (ends > starts) & (padding[None, :] == padding[:, None])  # no padding frame inside the run
    best = sums[allowed].max()
    length = torch.where(allowed & (sums >= best - _SLACK * (1 + best.abs())), ends - starts, -1)
    start, end = divmod(int(length.flatten().argmax()), len(total))
    return start, end


def grounding_metrics(scores, timestamps, frame_mask, true_segments, iou_thresholds=(0.3, 0.5, 0.7), threshold=0.5,
                      frame_interval=None):
    """Mean temporal IoU of the predicted segments with the true ones, and R@1 at each IoU threshold (IoU ≥ t)."""
    predicted = predict_segments(scores, timestamps, frame_mask, threshold, frame_interval)
    iou = temporal_iou(predicted, _check_targets("true_segments", true_segments, predicted.shape))
    metrics = {"grounding_mean_iou": float(iou.mean())}
    for t in iou_thresholds:
        metrics[f"grounding_R@1_IoU{t:g}"] = float((iou >= t - _SLACK).double().mean())
    return metrics


# ---- audio–video synchronisation -----------------------------------------------------------------------------------
# Sign convention: a positive offset means the audio is late, i.e. audio step t + offset belongs with video frame t.

def shift_audio(audio, offset, audio_mask=None):
    """Delay the audio by `offset` steps (negative: advance it), per clip or for all: out[:, t] = audio[:, t - offset].

    Steps shifted in from outside the clip are zero and masked out; the mask comes back as bool. Makes out-of-sync
    pairs with a known offset for training and evaluation.
    """
    audio = torch.as_tensor(audio)
    if audio.dim() != 3:
        raise ValueError(f"audio must be (batch, steps, dim), got shape {tuple(audio.shape)}")
    batch, steps = audio.shape[:2]
    offset = torch.as_tensor(offset, dtype=torch.long)
    offset = offset.expand(batch) if offset.dim() == 0 else offset
    if tuple(offset.shape) != (batch,):
        raise ValueError(f"offset must be one int or one per clip ({batch},), got shape {tuple(offset.shape)}")
    mask = _check_mask("audio_mask", audio_mask, batch, steps)
    source = torch.arange(steps)[None, :] - offset[:, None]
    inside = (source >= 0) & (source < steps)
    index = source.clamp(0, steps - 1)
    shifted = audio.gather(1, index[..., None].expand(-1, -1, audio.shape[2])).masked_fill(~inside[..., None], 0)
    return shifted, mask.gather(1, index) & inside


def _check_mask(name, mask, batch, steps):
    if mask is None:
        return torch.ones(batch, steps, dtype=torch.bool)
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != (batch, steps):
        raise ValueError(f"{name} must have shape (batch, steps) = {(batch, steps)}, got {tuple(mask.shape)}")
    return mask.bool()


def offset_scores(audio, video, audio_mask=None, video_mask=None, max_offset=8):
    """Mean cosine similarity of video frame t with audio step t + d over the steps where both are real, for each
    candidate offset d in −max_offset..+max_offset: (batch, 2 * max_offset + 1), column j is d = j − max_offset,
    −inf where nothing overlaps.

    SyncNet averages distances over sliding windows of 5 frames because its network sees 5 frames at once; with one
    embedding per frame, the mean over windows is the mean over frames (the edges weighted less), so it is left out.
    """
    audio, video = torch.as_tensor(audio).float(), torch.as_tensor(video).float()
    if video.dim() != 3 or video.shape[0] == 0:
        raise ValueError(f"video must be a non-empty (batch, steps, dim) tensor, got shape {tuple(video.shape)}")
    if audio.shape != video.shape:
        raise ValueError(f"audio must have the shape of video {tuple(video.shape)} (a common time grid), "
                         f"got {tuple(audio.shape)}")
    if isinstance(max_offset, bool) or not isinstance(max_offset, int) or max_offset < 0:
        raise ValueError(f"max_offset must be an int >= 0 (frames), got {max_offset!r}")
    batch, steps = video.shape[:2]
    audio_mask = _check_mask("audio_mask", audio_mask, batch, steps)
    video_mask = _check_mask("video_mask", video_mask, batch, steps)
    return offset_similarity(audio, video, audio_mask, video_mask, max_offset)  # the model's own, trained on


def estimate_offsets(audio, video, audio_mask=None, video_mask=None, max_offset=8):
    """Each clip's audio offset in steps (positive: audio late), the candidate with the highest `offset_scores`.

    Ties go to the smallest |offset| (in sync first), then to the negative one. `audio` and `video` are per-step
    embeddings (batch, steps, dim) on one time grid, e.g. ±8 frames at 8 fps for ±1 s.
    """
    scores = offset_scores(audio, video, audio_mask, video_mask, max_offset)
    candidates = torch.arange(-max_offset, max_offset + 1)
    order = candidates.abs().argsort(stable=True)  # 0, -1, +1, -2, +2, ...: argmax keeps the first of equals
    return candidates[order][scores[:, order].argmax(dim=1)]


def sync_metrics(predicted, true_offsets, tolerance=1):
    """Share of clips whose offset is found within ±`tolerance` frames, the mean absolute error in frames, and
    `av_in_sync_accuracy`: the share of in-sync clips (true offset 0) called in sync (|predicted| ≤ tolerance),
    present only when the batch has an in-sync clip (as `matching_roc_auc` is only with both labels).
    """
    predicted = torch.as_tensor(predicted, dtype=torch.float64)
    if predicted.dim() != 1 or len(predicted) == 0:
        raise ValueError(f"predicted must be a non-empty (batch,) tensor of offsets, "
                         f"got shape {tuple(predicted.shape)}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 frames, got {tolerance}")
    true_offsets = _check_targets("true_offsets", true_offsets, predicted.shape)
    error = (predicted - true_offsets).abs()
    metrics = {"av_offset_accuracy": float((error <= tolerance).double().mean()),
               "av_offset_mean_abs_error_frames": float(error.mean())}
    in_sync = true_offsets == 0
    if in_sync.any():
        metrics["av_in_sync_accuracy"] = float((predicted[in_sync].abs() <= tolerance).double().mean())
    return metrics
