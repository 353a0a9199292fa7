"""The video tower (CLIP4Clip's "seqTransf"): every frame through an image tower, then a Transformer over time.

Its own file because it builds on towers.py: the frame encoder is any image tower `build_tower` makes, or the
model's vision tower itself (`XModalConfig.share_vision_tower`).
"""

import torch
from torch import nn

from .configuration_xmodal import XModalVideoConfig
from .input_checks import is_tracing
from .modeling_outputs import XModalVideoTowerOutput
from .towers import _shape_error, _TransformerTower, build_tower, tower_output_size


def check_video_inputs(config, frame_config, pixel_values_videos, video_frame_mask=None, video_timestamps=None):
    """(batch, frames, channels, size, size) frames of the frame encoder's image size (`frame_config`), then
    `check_video_frames`."""
    channels = getattr(frame_config, "num_channels", 3)
    size = getattr(frame_config, "image_size", None)
    size = size if size is None or isinstance(size, int) else tuple(size)[0]
    shape = tuple(pixel_values_videos.shape)
    if len(shape) != 5 or shape[2] != channels or (size is not None and shape[3:] != (size, size)):
        frame = f"{size}, {size}" if size is not None else "height, width"
        raise _shape_error("pixel_values_videos", f"(batch_size, num_frames, {channels}, {frame})", shape)
    check_video_frames(config, shape[:2], video_frame_mask, video_timestamps)


def check_video_frames(config, batch_and_frames, video_frame_mask=None, video_timestamps=None):
    """At most `max_frames` frames, masks and times of (batch, frames), and at least one real frame per clip."""
    batch, frames = batch_and_frames
    if frames == 0:
        raise ValueError("`pixel_values_videos` has no frames; a clip needs at least one.")
    if frames > config.max_frames:
        raise ValueError(f"`pixel_values_videos` has {frames} frames but the video tower takes at most "
                         f"max_frames={config.max_frames}; sample fewer in the video processor (max_frames, fps or "
                         "num_frames).")
    for name, value in (("video_frame_mask", video_frame_mask), ("video_timestamps", video_timestamps)):
        if value is not None and tuple(value.shape) != (batch, frames):
            raise _shape_error(name, (batch, frames), value.shape)
    if video_frame_mask is not None and not is_tracing() and not bool(video_frame_mask.bool().any(dim=1).all()):
        raise ValueError("`video_frame_mask` has a clip with no real frame (a row of zeros); every clip needs at "
                         "least one frame marked 1.")


def encode_frames(encoder, pixel_values_videos, video_frame_mask=None):
    """(batch, frames, width): the pooled vector of every frame through an image tower. Padding frames are skipped
    (their rows are zeros) except while tracing, where a shape may not depend on the mask's values."""
    batch, frames = pixel_values_videos.shape[:2]
    images = pixel_values_videos.flatten(0, 1)
    if video_frame_mask is None or is_tracing() or bool(video_frame_mask.all()):
        pooled = encoder(pixel_values=images).pooler_output
    else:
        real = video_frame_mask.flatten().bool()
        encoded = encoder(pixel_values=images[real]).pooler_output
        pooled = encoded.new_zeros(images.shape[0], encoded.shape[-1])
        pooled[real] = encoded
    return pooled.reshape(batch, frames, -1)


def shared_frame_features(config, frame_encoder, pixel_values_videos, video_frame_mask=None, video_timestamps=None):
    """The `frame_features` a video tower that shares the vision tower (`frame_encoder`) takes: its frames checked
    and encoded by that tower. The model passes these vectors, not the tower, to the video tower: a module among a
    call's arguments would be moved (weights and all) by `accelerate`'s device hooks."""
    check_video_inputs(config, frame_encoder.config, pixel_values_videos, video_frame_mask, video_timestamps)
    return encode_frames(frame_encoder, pixel_values_videos, video_frame_mask)


class XModalVideoTransformer(_TransformerTower):
    """Frames -> the frame encoder's pooled vectors -> projected to `hidden_size` (+ the change from the previous frame,
    projected, with `frame_differences`) + a learned position per frame
    index -> a pre-LN Transformer over the frames, attending to real frames only -> the mean over real frames.

    `last_hidden_state` holds one state per frame (for finding moments), `pooler_output` the clip vector,
    `frame_features` the frame encoder's vectors it started from. Positions
    are frame indices, not `video_timestamps`: the processor samples at a fixed rate, so an index is a time. Padding
    frames are not encoded (eagerly; a traced graph encodes them and masks them out, with the same result), so a clip
    padded with extra masked frames gives the same output on its real ones. Hidden states and attentions are those
    of the temporal Transformer.

    With `shared_frame_width` set, the tower has no frame encoder: the model's vision tower encodes the frames
    (`shared_frame_features`) and `forward` takes the vectors as `frame_features`. The weights are then saved once,
    under the vision tower, and a vision tower replaced later (`from_towers_pretrained`) is the one the frames see.
    """

    main_input_name = "pixel_values_videos"

    def __init__(self, config: XModalVideoConfig, shared_frame_width=None):
        super().__init__(config)
        if shared_frame_width is None:
            self.frame_encoder = build_tower(config.frame_config, "image")
            shared_frame_width = tower_output_size(config.frame_config)
        else:
            self.frame_encoder = None
        self.frame_projection = nn.Linear(shared_frame_width, config.hidden_size)
        self.difference_projection = (nn.Linear(shared_frame_width, config.hidden_size, bias=False)
                                      if config.frame_differences else None)
        self.embed_positions = nn.Embedding(config.max_frames, config.hidden_size)

    def forward(self, pixel_values_videos=None, video_frame_mask=None, video_timestamps=None, frame_features=None,
                output_attentions=False, output_hidden_states=False):
        if frame_features is None:
            if self.frame_encoder is None:
                raise ValueError("This video tower shares the model's vision tower (share_vision_tower=True): call it "
                                 "through XModalModel, or pass frame_features=shared_frame_features(...).")
            check_video_inputs(self.config, self.frame_encoder.config, pixel_values_videos, video_frame_mask,
                               video_timestamps)
            frame_features = encode_frames(self.frame_encoder, pixel_values_videos, video_frame_mask)
        else:
            check_video_frames(self.config, frame_features.shape[:2], video_frame_mask, video_timestamps)
        states = self.frame_projection(frame_features)
        if self.difference_projection is not None:  # the first frame, and a padding frame, changed by nothing
            change = frame_features - torch.cat([frame_features[:, :1], frame_features[:, :-1]], dim=1)
            if video_frame_mask is not None:
                change = change * video_frame_mask.unsqueeze(-1).to(change.dtype)
            states = states + self.difference_projection(change)
        states = states + self.embed_positions(torch.arange(states.shape[1], device=states.device))
        output = self._encode(states, video_frame_mask, "mean", output_attentions, output_hidden_states)
        return XModalVideoTowerOutput(**output, frame_features=frame_features)


__all__ = ["XModalVideoTransformer", "check_video_frames", "check_video_inputs", "encode_frames",
           "shared_frame_features"]
