"""Inputs that used to give silent wrong results: stereo arrays read as batches, unscaled PCM, absurd sampling
rates, NaN samples and pixels. Each is now a documented conversion (with a warning where it changes what the
caller passed) or a ValueError that says what was wrong and what is accepted."""

import warnings

import numpy as np
import pytest
import torch

from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor
from xmodal.processing.tokenization_xmodal import load_default_tokenizer

SR = 16000


@pytest.fixture(scope="module")
def extractor():
    return XModalFeatureExtractor()


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tokenizer = load_default_tokenizer(cache_dir=tmp_path_factory.mktemp("cache"))
    return XModalProcessor(XModalImageProcessor(), XModalFeatureExtractor(), tokenizer)


def tone(seconds=1.0, rate=SR, frequency=440.0, amplitude=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def mel(extractor, audio, **kwargs):
    return extractor(audio, sampling_rate=kwargs.pop("sampling_rate", SR), return_tensors="np", **kwargs)[
        "input_features"]


def quiet(function, *args, **kwargs):
    """Calls `function`, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


RATE = r"sampling_rate must be a positive number of Hz from 1000 to 384000 .*got {}\. Accepted: "
BAD_AUDIO = {
    "rate 1": (lambda: tone(), {"sampling_rate": 1}, RATE.format(1)),
    "rate 0": (lambda: tone(), {"sampling_rate": 0}, RATE.format(0)),
    "rate in kHz": (lambda: tone(), {"sampling_rate": 16}, RATE.format(16)),
    "rate 1 MHz": (lambda: tone(), {"sampling_rate": 1_000_000}, RATE.format(1000000)),
    "rate in a dict": (lambda: [tone(), {"array": tone(), "sampling_rate": 8}], {}, r"audio\[1\]: " + RATE.format(8)),
    "int64 samples": (lambda: np.round(tone() * 32767).astype(np.int64), {},
                      r"audio: int64 samples have no PCM scale \(integer PCM is 8, 16 or 32 bit\); convert with "
                      r"\.astype\(np\.int16\)"),
    "int64 tensor": (lambda: torch.zeros(SR, dtype=torch.int64), {}, "int64 samples have no PCM scale"),
    "NaN sample": (lambda: np.where(np.arange(SR) == 5, np.nan, tone()), {},
                   r"audio: the clip contains NaN or infinite samples\. Accepted: "),
    "inf in the second clip": (lambda: [tone(), np.full(SR, np.inf, np.float32)], {},
                               r"audio\[1\]: the clip contains NaN or infinite samples"),
    "empty 2-D array": (lambda: np.zeros((0, 2), np.float32), {}, r"audio: empty array of shape \(0, 2\)"),
}


@pytest.mark.parametrize("name", list(BAD_AUDIO))
def test_bad_audio_is_a_value_error_saying_what_is_accepted(extractor, name):
    make, kwargs, message = BAD_AUDIO[name]
    with pytest.raises(ValueError, match=message):
        extractor(make(), **{"sampling_rate": SR, **kwargs})


def test_absurd_rate_in_the_extractor_config():
    with pytest.raises(ValueError, match=r"sampling_rate from 1000 to 384000 Hz .*sampling_rate=16,"):
        XModalFeatureExtractor(sampling_rate=16)


@pytest.mark.parametrize("layout", ["samples, channels", "channels, samples"])
def test_bare_stereo_array_is_one_clip_mixed_down_with_a_warning(extractor, layout):
    left, right = tone(), tone(frequency=660.0)
    stereo = np.stack([left, right], axis=1 if layout == "samples, channels" else 0)
    shape = rf"\({stereo.shape[0]}, {stereo.shape[1]}\)"
    with pytest.warns(UserWarning, match=rf"audio of shape {shape} was read as one clip of 2 channels and mixed "
                                         r"down to mono .*pass a batch as a list of 1-D arrays"):
        got = mel(extractor, stereo)
    np.testing.assert_allclose(got, quiet(mel, extractor, (left + right) / 2), atol=1e-5)


def test_other_2d_arrays_stay_batches_and_mono_columns_are_one_clip(extractor):
    clips = np.stack([tone(), tone(frequency=660.0), tone(frequency=880.0)])
    assert quiet(mel, extractor, clips).shape[0] == 3  # (clips, samples): a batch, as before
    assert quiet(mel, extractor, [tone(), tone()]).shape[0] == 2  # a list of 1-D arrays is a batch
    np.testing.assert_array_equal(quiet(mel, extractor, tone()[:, None]), quiet(mel, extractor, tone()))
    surround = np.stack([tone()] * 6, axis=1)  # (samples, 6 channels): one clip, not 16000 clips of 6 samples
    with pytest.warns(UserWarning, match=r"read as one clip of 6 channels"):
        assert mel(extractor, surround).shape[0] == 1


@pytest.mark.parametrize("dtype, encode", [
    (np.int16, lambda x: np.round(x * 32767)),
    (np.int32, lambda x: np.round(x * 2147483647)),
    (np.int8, lambda x: np.round(x * 127)),
    (np.uint8, lambda x: np.round(x * 127) + 128),  # 8-bit WAV: unsigned, centred at 128
    (np.uint16, lambda x: np.round(x * 32767) + 32768),
])
def test_integer_pcm_is_scaled_by_its_dtype_range(extractor, dtype, encode):
    clip = tone()
    pcm = encode(clip).astype(dtype)
    reference = quiet(mel, extractor, clip)
    got = quiet(mel, extractor, pcm)
    # 8-bit PCM's quantisation noise sits ~48 dB down, inside the 80 dB the features keep: compare loud bins.
    loud = reference > reference.max() - 1.0
    tolerance = 0.1 if np.dtype(dtype).itemsize == 1 else 2e-3
    assert np.abs(got - reference)[loud].max() < tolerance


def test_int16_scaled_floats_warn(extractor):
    pcm_as_float = np.round(tone() * 32767).astype(np.float32)
    with pytest.warns(UserWarning, match=r"Float audio far outside \[-1, 1\]: audio \(peak 9\.83e\+03\)\. .*"
                                         r"divided by 32768 or passed as int16"):
        extractor(pcm_as_float, sampling_rate=SR)
    with pytest.warns(UserWarning, match=r"audio\[1\] \(peak 2\)"):
        extractor([tone(), np.full(SR, 2.0, np.float32)], sampling_rate=SR)
    quiet(extractor, np.full(SR, 1.2, np.float32), sampling_rate=SR)  # a little clipping is not warned about


BAD_IMAGES = {
    "NaN pixel": (lambda: np.where(np.arange(32 * 32 * 3).reshape(32, 32, 3) == 7, np.nan, 0.5),
                  r"^image: the image contains NaN or infinite pixels\. Accepted: "),
    "inf in a tensor of a batch": (lambda: [torch.rand(3, 32, 32), torch.full((3, 32, 32), float("inf"))],
                                   r"^images\[1\]: the image contains NaN or infinite pixels\. Accepted: "),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_non_finite_pixels_are_a_value_error_naming_the_image(name):
    make, message = BAD_IMAGES[name]
    with pytest.raises(ValueError, match=message):
        XModalImageProcessor()(make(), return_tensors="np")


def test_the_processor_passes_the_checks_through(processor):
    with pytest.raises(ValueError, match=RATE.format(1)):
        processor(audio=tone(), sampling_rate=1)
    with pytest.raises(ValueError, match=r"images\[0\]: the image contains NaN"):
        processor(text=["a cat"], images=[np.full((8, 8, 3), np.nan, np.float32)])
    with pytest.warns(UserWarning, match="read as one clip of 2 channels"):
        out = processor(text="a stereo clip", audio=np.stack([tone(), tone()], axis=1), sampling_rate=SR,
                        return_tensors="pt")
    assert out["input_features"].shape[0] == 1
