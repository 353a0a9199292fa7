"""Training-time augmentation of log-mel frames: each change on hand-made spectra with known answers, train-only,
padding untouched, and the config checks."""

import pytest
import torch

from xmodal import XModalAudioConfig, XModalModel
from xmodal.spec_augment import augment_log_mel, spectral_tilt_curves, warp_frequency

from .tiny import tiny_config, tiny_inputs


def _config(**fields):
    return XModalAudioConfig(num_mel_bins=16, max_source_positions=16, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, apply_spec_augment=True, **fields)


def test_a_warp_of_one_is_the_identity_and_a_stretch_moves_a_peak_down_the_mel_axis():
    features = torch.zeros(2, 16, 3)
    features[:, 8] = 1.0  # one formant at bin 8
    same = warp_frequency(features, torch.tensor([1.0, 1.0]))
    assert torch.equal(same, features)
    warped = warp_frequency(features, torch.tensor([2.0, 0.5]))
    # read at m * 2: bin 4 reads bin 8; read at m * 0.5: bin 16 would, so the peak leaves the axis's top
    assert warped[0, :, 0].argmax() == 4 and warped[0, 4, 0] == 1.0
    assert warped[1, :, 0].max() < 1.0 and warped[1, 15, 0] == pytest.approx(0.5)


def test_tilt_curves_are_smooth_and_bounded_by_three_amplitudes():
    torch.manual_seed(0)
    curves = spectral_tilt_curves(64, 32, 0.1, "cpu", torch.float32)
    assert curves.shape == (64, 32)
    assert curves.abs().max() <= 0.3 + 1e-6 and curves.abs().max() > 0.05
    assert (curves[:, 1:] - curves[:, :-1]).abs().max() < 0.1  # no bin jumps: three cosines over 32 bins


def test_masks_zero_spans_inside_the_real_frames_only_and_leave_padding_as_it_was():
    torch.manual_seed(0)
    features = torch.full((8, 16, 40), 3.0)
    mask = torch.ones(8, 40, dtype=torch.long)
    mask[:, 25:] = 0
    features[:, :, 25:] = -7.0  # padding, recognisable
    out = augment_log_mel(features, mask, _config(mask_time_prob=0.2, mask_time_length=4))
    assert torch.equal(out[:, :, 25:], features[:, :, 25:])
    dropped = (out[:, 0, :25] == 0)
    assert dropped.any(dim=1).float().mean() > 0.5  # two spans of width 0..4 each (prob 0.2 of 40 frames)
    assert (out[:, :, :25][dropped[:, None, :].expand(-1, 16, -1)] == 0).all()  # a masked frame is masked in every bin
    assert dropped.sum(dim=1).max() <= 8
    kept = out[:, :, :25][~dropped[:, None, :].expand(-1, 16, -1)]
    assert (kept == 3.0).all()


def test_feature_masks_cover_whole_bins_across_time():
    torch.manual_seed(1)
    features = torch.ones(64, 16, 10)
    out = augment_log_mel(features, None, _config(mask_feature_prob=0.25, mask_feature_length=4))
    zero_bins = (out == 0).all(dim=2)
    # one span per clip, its width drawn from 0..4 (SpecAugment's uniform width): 4 in 5 clips lose bins
    assert 0.6 < zero_bins.any(dim=1).float().mean() < 0.95 and zero_bins.sum(dim=1).max() <= 4
    assert ((out == 0) == zero_bins[:, :, None]).all()  # a bin is masked over all its frames or none


def test_augmentation_runs_in_training_only_and_changes_the_speech_embedding():
    config = tiny_config(modalities=("audio",), decoder=False)
    config.audio_config.apply_spec_augment = True
    config.audio_config.frequency_warp = 0.2
    config.audio_config.spectral_tilt = 0.2
    config.audio_config.mask_time_prob = 0.1
    model = XModalModel(config)
    inputs = tiny_inputs(modalities=("audio",))
    model.eval()
    with torch.no_grad():
        first = model.get_audio_features(**inputs).pooler_output
        second = model.get_audio_features(**inputs).pooler_output
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        augmented = model.get_audio_features(**inputs).pooler_output
    assert not torch.allclose(augmented, first, atol=1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("frequency_warp", 1.5, r"frequency_warp=1.5 must be in \[0, 1\)"),
    ("spectral_tilt", 2.0, r"spectral_tilt=2.0 must be in \[0, 1\] \(feature units: 1.0 is 40 dB\)"),
    ("mask_time_length", 0, r"mask_time_length=0 must be a positive number"),
    ("mask_feature_prob", -0.1, r"mask_feature_prob=-0.1 must be in \[0, 1\)"),
])
def test_bad_augmentation_settings_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        _config(**{field: value})
