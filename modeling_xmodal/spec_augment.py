"""Training-time augmentation of log-mel frames, applied by the built-in audio towers in `train()` mode only.

The built-in speech is synthesised by one engine; what differs between engines and speakers is mostly the
spectral envelope (vocal-tract length moves the formants, recording chains tilt the spectrum). Three changes,
each drawn per clip, make the tower hear more than one envelope:

- frequency warp (vocal tract length perturbation, Jaitly & Hinton 2013): the mel axis is stretched by a factor
  in `[1 - frequency_warp, 1 + frequency_warp]`, which moves every formant by the same ratio;
- spectral tilt: a smooth random equaliser (the first three cosines over the mel axis, each of amplitude up to
  `spectral_tilt` in feature units, where 1.0 is 40 dB) is added;
- SpecAugment masks (Park et al. 2019), with Whisper's and wav2vec 2.0's config names: spans of
  `mask_time_length` frames (covering about `mask_time_prob` of the clip) and of `mask_feature_length` mel bins
  (about `mask_feature_prob` of them) are set to zero.

Written in torch (not `transformers`' numpy `_compute_mask_indices`) so that a compiled step has no graph break;
the padded frames are left as they are, so masks and the lengths the losses read do not change.
"""

import math

import torch


def _spans(count, size, span, valid, device):
    """(batch, size) bool: `count` spans of up to `span` positions per row, starting inside each row's `valid`."""
    if count == 0 or span == 0:
        return torch.zeros(valid.shape[0], size, dtype=torch.bool, device=device)
    widths = torch.randint(0, span + 1, (valid.shape[0], count), device=device)
    room = (valid[:, None] - widths).clamp(min=0).float()
    starts = (torch.rand(valid.shape[0], count, device=device) * (room + 1)).floor().long()
    positions = torch.arange(size, device=device)[None, None]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(dim=1)


def warp_frequency(features, factors):
    """`features` (batch, mel, frames) read at mel positions `m * factor`, linearly interpolated; bins past
    the top repeat the last one."""
    num_mel = features.shape[1]
    positions = (torch.arange(num_mel, device=features.device, dtype=features.dtype)[None] * factors[:, None])
    positions = positions.clamp(0, num_mel - 1)
    low = positions.floor().long()
    high = (low + 1).clamp(max=num_mel - 1)
    weight = (positions - low.to(positions.dtype))[..., None]
    gather = lambda index: features.gather(1, index[..., None].expand(-1, -1, features.shape[2]))  # noqa: E731
    return gather(low) * (1 - weight) + gather(high) * weight


def spectral_tilt_curves(batch, num_mel, amplitude, device, dtype):
    """(batch, mel) random smooth equalisers: three cosines over the mel axis, amplitudes in `[-a, a]`."""
    orders = torch.arange(1, 4, device=device, dtype=dtype)
    grid = torch.linspace(0, math.pi, num_mel, device=device, dtype=dtype)
    weights = (torch.rand(batch, 3, device=device, dtype=dtype) * 2 - 1) * amplitude
    return weights @ torch.cos(orders[:, None] * grid[None])


def augment_log_mel(features, mask, config):
    """`features` (batch, mel, frames) augmented as `config` (an `XModalAudioConfig`) says; `mask` (batch,
    frames) marks the real frames, or None when every frame is real."""
    batch, num_mel, frames = features.shape
    device, dtype = features.device, features.dtype
    lengths = mask.sum(dim=-1) if mask is not None else torch.full((batch,), frames, device=device)
    out = features
    if config.frequency_warp > 0:
        factors = 1 + (torch.rand(batch, device=device, dtype=dtype) * 2 - 1) * config.frequency_warp
        out = warp_frequency(out, factors)
    if config.spectral_tilt > 0:
        out = out + spectral_tilt_curves(batch, num_mel, config.spectral_tilt, device, dtype)[..., None]
    time_spans = math.ceil(config.mask_time_prob * frames / config.mask_time_length) if config.mask_time_prob else 0
    feature_spans = (math.ceil(config.mask_feature_prob * num_mel / config.mask_feature_length)
                     if config.mask_feature_prob else 0)
    dropped = _spans(time_spans, frames, config.mask_time_length, lengths, device)[:, None, :]
    dropped = dropped | _spans(feature_spans, num_mel, config.mask_feature_length,
                               torch.full((batch,), num_mel, device=device), device)[:, :, None]
    out = out.masked_fill(dropped, 0.0)
    if mask is not None:  # padding keeps its value: the towers zero it, and nothing is drawn there
        out = torch.where(mask[:, None, :].bool(), out, features)
    return out
