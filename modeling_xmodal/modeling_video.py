"""Video pre-training: where in a clip a sentence, a picture or a sound belongs.

One head trains the four video tasks together. Pictures, sentences and sound are embedded as the base model embeds them
(`get_embeddings`); each frame-level task reads the video tower's per-frame states through a projection of its own
(`VideoHeads`, `get_frame_embeddings`):

- text <-> video: the clip caption against the clip (CLIP's InfoNCE, `XModalModel.contrastive_loss`);
- image -> moment: a picture taken from the clip against each of its frames (cross-entropy over the frames, every
  frame showing the same picture a positive);
- sentence -> moment (temporal grounding): an event's sentence against each frame, inside its span or not (per-frame
  binary cross-entropy with a learned scale and bias), plus which frames against the clip's others (cross-entropy over
  the frames, every frame of the span a positive: the profile that `predict_segments` reads);
- audio-video sync (SyncNet's idea on per-frame embeddings): the soundtrack's states pooled to the frame rate; the mean
  similarity of frame t with sound step t + d for every offset d in +-`video_sync_max_offset` frames is a logit, and
  the true offset (the data shifts the sound) is the class.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .configuration_xmodal import XModalConfig
from .losses import weighted_total
from .modeling_base import XModalModel, XModalPreTrainedModel
from .modeling_outputs import XModalForVideoPreTrainingOutput, finish, output_options, tower_outputs

VIDEO_LOSS_PARTS = ("contrastive", "moment", "grounding", "sync")


def pool_to_frames(states, state_mask, frame_mask):
    """(batch, frames, width): each clip's real sound states split evenly into as many bins as it has real frames,
    averaged per bin. The soundtrack spans the clip, so bin t is the sound heard while frame t shows; padding frames
    get zeros. `state_mask` None means every state is real."""
    batch, steps = states.shape[:2]
    frames = frame_mask.shape[1]
    lengths = state_mask.sum(1) if state_mask is not None else torch.full((batch,), steps, device=states.device)
    counts = frame_mask.sum(1).clamp(min=1)
    frame = torch.arange(frames, device=states.device)[None, :, None]  # (1, frames, 1)
    step = torch.arange(steps, device=states.device)[None, None, :]  # (1, 1, steps)
    lengths, counts = lengths[:, None, None].float(), counts[:, None, None].float()
    start = torch.floor(frame * lengths / counts)
    end = torch.maximum(torch.floor((frame + 1) * lengths / counts), start + 1)
    weights = ((step >= start) & (step < end) & (step < lengths)).to(states.dtype)
    weights = weights * frame_mask[:, :, None].to(states.dtype)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
    return weights @ states


def offset_similarity(audio, video, audio_mask, video_mask, max_offset):
    """(batch, 2 * max_offset + 1): the mean cosine of video frame t with audio step t + d over the frames where both
    are real, for d = -max_offset..max_offset (positive d: the sound is late); -inf where nothing overlaps.
    Differentiable: the sync loss trains on it and `xmodal.trainers.video_metrics` estimates offsets with it."""
    audio, video = F.normalize(audio.float(), dim=-1), F.normalize(video.float(), dim=-1)
    audio_mask, video_mask = audio_mask.bool(), video_mask.bool()
    steps, columns = video.shape[1], []
    for d in range(-max_offset, max_offset + 1):
        lo, hi = max(0, -d), min(steps, steps - d)  # frames t whose sound step t + d lies inside the clip
        if lo >= hi:
            columns.append(video.new_full((video.shape[0],), float("-inf")))
            continue
        both = (video_mask[:, lo:hi] & audio_mask[:, lo + d:hi + d]).float()
        cosine = (video[:, lo:hi] * audio[:, lo + d:hi + d]).sum(-1)
        count = both.sum(1)
        mean = (cosine * both).sum(1) / count.clamp(min=1)
        columns.append(mean.masked_fill(count == 0, float("-inf")))
    return torch.stack(columns, dim=1)


def _multi_positive_loss(logits, positives):
    """Cross-entropy with every positive column a right answer (-log of their summed probability), over the rows that
    have a positive; None when none does."""
    rows = positives.any(dim=1)
    if not bool(rows.any()):
        return None
    logits, positives = logits[rows].float(), positives[rows]
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)).mean()


class VideoHeads(nn.Module):
    """A projection of the temporal states per frame-level task (a frame must look like the picture taken from it,
    mean what the event's sentence says, and sound like its moment: three different questions, each in its own
    space against the shared embeddings of pictures, sentences and sound), with the learned temperatures (log scale)
    of their scores and the grounding bias."""

    TASKS = ("moment", "grounding", "sync")

    def __init__(self, config, frame_width):
        super().__init__()
        width = config.video_config.hidden_size
        self.projections = nn.ModuleDict({task: nn.Linear(width, config.projection_dim, bias=False)
                                          for task in self.TASKS})
        # A picture is found by what the frame looks like: the moment head also reads the frame encoder's vector,
        # before the Transformer mixes in time and motion (which a still picture does not have).
        self.appearance = nn.Linear(frame_width, config.projection_dim, bias=False)
        init = torch.tensor(config.logit_scale_init_value)
        self.moment_scale = nn.Parameter(init.clone())
        self.grounding_scale = nn.Parameter(init.clone())
        self.grounding_bias = nn.Parameter(torch.tensor(-2.0))
        self.sync_scale = nn.Parameter(init.clone() + 1.0)  # a mean over frames: differences between offsets are small

    def forward(self, video_output, video_frame_mask):
        """{task: (batch, frames, projection_dim)} normalised frame embeddings, zero on padding frames."""
        mask = video_frame_mask.unsqueeze(-1).float()
        embeds = {task: projection(video_output.last_hidden_state) for task, projection in self.projections.items()}
        embeds["moment"] = embeds["moment"] + self.appearance(video_output.frame_features)
        return {task: F.normalize(value.float(), dim=-1) * mask for task, value in embeds.items()}


class XModalForVideoPreTraining(XModalPreTrainedModel):
    """Text <-> video contrastive, image -> moment, sentence -> moment and audio-video sync, weighted by
    `config.loss_weights` and each returned by name (see the module docstring). Every input but the frames is
    optional: a part whose inputs are missing is left out.

    Args beyond the towers' own:
        pixel_values: (batch, 3, H, W) one picture from each clip, with `moment_labels` (batch, frames), 1 where a
            frame shows it.
        event_input_ids, event_attention_mask: (batch, events, length) sentences of the clip's events, an all-zero
            mask for a padding event, with `event_labels` (batch, events, frames): 1 inside the event's span.
        input_features, feature_attention_mask: the clip's soundtrack, shifted by `audio_offsets` (batch,) frames
            (positive: late).
    """

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        if config.video_config is None:
            raise ValueError("XModalForVideoPreTraining needs a video tower: set XModalConfig.video_config.")
        self.xmodal = XModalModel(config)
        self.video_heads = VideoHeads(config, frame_width=self.xmodal.video_model.frame_projection.in_features)
        self.post_init()

    @torch.no_grad()
    def get_frame_embeddings(self, pixel_values_videos, video_frame_mask=None, video_timestamps=None):
        """{task: (batch, frames, projection_dim)} each frame's embedding for `moment`, `grounding` and `sync`, to
        score pictures, sentences and sound against (`moment_logits`, `grounding_logits`, `sync_logits`), and
        `clip`: (batch, projection_dim) the clip's embedding in the shared space (normalised), from the same pass."""
        if video_frame_mask is None:
            video_frame_mask = torch.ones(pixel_values_videos.shape[:2], dtype=torch.long,
                                          device=pixel_values_videos.device)
        video = self.xmodal.run_tower("video", {"pixel_values_videos": pixel_values_videos,
                                                "video_frame_mask": video_frame_mask,
                                                "video_timestamps": video_timestamps})
        embeds = self.video_heads(video, video_frame_mask)
        embeds["clip"] = self.xmodal.project("video", video).float()
        return embeds

    def moment_logits(self, image_embeds, frame_embeds, video_frame_mask):
        """(batch, frames): each picture against the frames of its own clip; padding frames at -inf."""
        logits = self.video_heads.moment_scale.exp() * torch.einsum("bd,btd->bt", image_embeds, frame_embeds)
        return logits.masked_fill(~video_frame_mask.bool(), float("-inf"))

    def grounding_logits(self, event_embeds, frame_embeds):
        """(batch, events, frames): whether each frame lies inside each event's span, as a logit."""
        cosine = torch.einsum("bed,btd->bet", event_embeds, frame_embeds)
        return self.video_heads.grounding_scale.exp() * cosine + self.video_heads.grounding_bias

    def sound_frames(self, audio_output, video_frame_mask):
        """(batch, frames, projection_dim): the soundtrack's states pooled to the frames, projected, normalised."""
        pooled = pool_to_frames(audio_output.last_hidden_state, audio_output.attention_mask, video_frame_mask)
        return F.normalize(self.xmodal.audio_projection(pooled).float(), dim=-1)

    def sync_logits(self, sound_frames, frame_embeds, video_frame_mask):
        """(batch, 2 * video_sync_max_offset + 1): one logit per candidate offset of the sound, -max..+max frames."""
        similarity = offset_similarity(sound_frames, frame_embeds, video_frame_mask, video_frame_mask,
                                       self.config.video_sync_max_offset)
        return self.video_heads.sync_scale.exp() * similarity

    def forward(self, pixel_values_videos=None, video_frame_mask=None, video_timestamps=None, input_ids=None,
                attention_mask=None, pixel_values=None, moment_labels=None, event_input_ids=None,
                event_attention_mask=None, event_labels=None, input_features=None, feature_attention_mask=None,
                audio_offsets=None, output_attentions=None, output_hidden_states=None,
                return_dict=None) -> XModalForVideoPreTrainingOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        if pixel_values_videos is None:
            raise ValueError("XModalForVideoPreTraining needs `pixel_values_videos` (batch, frames, 3, H, W).")
        if video_frame_mask is None:
            video_frame_mask = torch.ones(pixel_values_videos.shape[:2], dtype=torch.long,
                                          device=pixel_values_videos.device)
        base = self.xmodal(input_ids=input_ids, attention_mask=attention_mask, return_loss=input_ids is not None,
                           pixel_values_videos=pixel_values_videos, video_frame_mask=video_frame_mask,
                           video_timestamps=video_timestamps, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, return_dict=True)
        towers = {"video": base.video_model_output}
        if base.text_model_output is not None:
            towers["text"] = base.text_model_output
        frames = self.video_heads(base.video_model_output, video_frame_mask)
        parts = dict.fromkeys(VIDEO_LOSS_PARTS)
        parts["contrastive"] = base.loss
        moment = grounding = sync = None
        if pixel_values is not None:
            image = self.xmodal.get_embeddings(pixel_values=pixel_values)["image"]
            moment = self.moment_logits(image, frames["moment"], video_frame_mask)
            if moment_labels is not None:
                positives = moment_labels.bool() & video_frame_mask.bool()
                parts["moment"] = _multi_positive_loss(moment, positives)
        if event_input_ids is not None:
            batch, events, length = event_input_ids.shape
            if event_attention_mask is None:
                event_attention_mask = torch.ones_like(event_input_ids)
            real = event_attention_mask.sum(-1) > 0  # (batch, events)
            embeds = frames["grounding"].new_zeros(batch, events, frames["grounding"].shape[-1])
            if bool(real.any()):
                text = self.xmodal.get_embeddings(input_ids=event_input_ids[real],
                                                  attention_mask=event_attention_mask[real])["text"]
                embeds = embeds.index_put((real,), text)
            grounding = self.grounding_logits(embeds, frames["grounding"])
            if event_labels is not None and bool(real.any()):
                counted = real[:, :, None] & video_frame_mask.bool()[:, None, :]
                inside = F.binary_cross_entropy_with_logits(grounding[counted], event_labels[counted].float())
                # and which frames, against the clip's others (the span's shape, as the half-maximum reads it)
                spans = grounding.masked_fill(~counted, float("-inf"))[real]
                spread = _multi_positive_loss(spans, event_labels[real].bool() & counted[real])
                parts["grounding"] = inside if spread is None else inside + spread
        if input_features is not None:
            audio = self.xmodal.run_tower("audio", {"input_features": input_features,
                                                   "feature_attention_mask": feature_attention_mask})
            towers["audio"] = audio
            sync = self.sync_logits(self.sound_frames(audio, video_frame_mask), frames["sync"], video_frame_mask)
            if audio_offsets is not None:
                target = audio_offsets.long() + self.config.video_sync_max_offset
                if bool(((target < 0) | (target >= sync.shape[1])).any()):
                    raise ValueError(f"audio_offsets must lie in +-video_sync_max_offset="
                                     f"{self.config.video_sync_max_offset} frames; got {audio_offsets.tolist()}.")
                parts["sync"] = F.cross_entropy(sync, target)
        computed = {k: v for k, v in parts.items() if v is not None}
        total = weighted_total(computed, self.config.loss_weights) if computed else None
        return finish(XModalForVideoPreTrainingOutput(
            loss=total, contrastive_loss=parts["contrastive"], moment_loss=parts["moment"],
            grounding_loss=parts["grounding"], sync_loss=parts["sync"], logits_text_video=base.logits_text_video,
            moment_logits=moment, grounding_logits=grounding, sync_logits=sync, text_embeds=base.text_embeds,
            video_embeds=base.video_embeds,
            **tower_outputs(towers, output_attentions, output_hidden_states),
        ), return_dict)


__all__ = ["VIDEO_LOSS_PARTS", "XModalForVideoPreTraining", "offset_similarity", "pool_to_frames"]
