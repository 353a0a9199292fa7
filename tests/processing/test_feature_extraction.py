"""XModalFeatureExtractor: log-mel values against WhisperFeatureExtractor, masks, resampling and
mixdown, every accepted input form and every rejected one, truncation, save/load, Auto-class
resolution, and fuzzing."""

import io
import warnings

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from xmodal.processing import XModalFeatureExtractor

SR = 16000


@pytest.fixture(scope="module")
def extractor():
    return XModalFeatureExtractor()


def chirp(seconds=1.0, rate=SR, seed=0):
    """A decaying chirp plus a little noise: energy in many mel bands, a real dynamic range."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) * np.exp(-t) + 0.01 * noise).astype(np.float32)


def features(extractor, audio, **kwargs):
    kwargs.setdefault("sampling_rate", SR)
    return extractor(audio, return_tensors="np", **kwargs)


def test_matches_whisper_log_mel_to_1e_4():
    """Same settings as Whisper (80 mel, n_fft 400, hop 160, 16 kHz): equal to 1e-4 (float32
    FFTs differ by ~1e-5 on values in [-1.5, 1.5])."""
    whisper = WhisperFeatureExtractor()
    ours = XModalFeatureExtractor(feature_size=80, max_duration=30.0)
    for clip in (chirp(3.0), chirp(0.3, seed=1), chirp(4.0, seed=2)[:64000]):
        expected = whisper(clip, sampling_rate=SR, padding="max_length", max_length=64000,
                           return_tensors="np")["input_features"]
        got = features(ours, clip, padding="max_length", max_length=64000)["input_features"]
        assert got.shape == expected.shape == (1, 80, 400)
        np.testing.assert_allclose(got[..., :-1], expected[..., :-1], atol=1e-4)
        if len(clip) < 63800:  # Whisper reflects at the padded end, we pad with zeros: last frame differs
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_mel_filters_come_from_audio_utils(extractor):
    expected = mel_filter_bank(num_frequency_bins=201, num_mel_filters=64, min_frequency=0.0, max_frequency=8000.0,
                               sampling_rate=SR, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(extractor.mel_filters, expected, rtol=1e-6)


def test_shapes_dtypes_and_mask(extractor):
    lengths = [16000, 8000, 161, 1]
    out = features(extractor, [chirp(n / SR + 1e-9, seed=n) for n in lengths])
    assert out["input_features"].shape == (4, 64, 100) and out["input_features"].dtype == np.float32
    mask = out["feature_attention_mask"]
    assert mask.shape == (4, 100) and mask.dtype == np.int64
    assert mask.sum(axis=1).tolist() == [100, 50, 2, 1]
    assert (np.diff(mask, axis=1) <= 0).all()  # ones, then zeros


def test_clip_features_do_not_depend_on_the_batch(extractor):
    short, long = chirp(0.5), chirp(2.0, seed=3)
    alone = features(extractor, short)["input_features"][0]
    batched = features(extractor, [short, long])
    valid = batched["feature_attention_mask"][0].sum()
    assert valid == alone.shape[-1] == 50
    np.testing.assert_allclose(batched["input_features"][0, :, :valid], alone, atol=1e-5)


def test_silent_audio_is_the_floor(extractor):
    out = features(extractor, np.zeros(SR, np.float32))["input_features"]
    np.testing.assert_allclose(out, (-10.0 + 4.0) / 4.0)


def test_pt_tensors(extractor):
    out = extractor(chirp(), sampling_rate=SR, return_tensors="pt")
    assert isinstance(out["input_features"], torch.Tensor) and out["input_features"].dtype == torch.float32
    np.testing.assert_array_equal(out["input_features"].numpy(), features(extractor, chirp())["input_features"])


def test_input_forms_agree(extractor, tmp_path):
    clip = chirp()
    reference = features(extractor, clip)["input_features"]
    pcm16 = np.round(clip * 32767).astype(np.int16)
    for form in (torch.from_numpy(clip), clip.tolist(), clip.astype(np.float64), clip[None, :], [clip]):
        np.testing.assert_allclose(features(extractor, form)["input_features"], reference, atol=1e-5)
    as_dict = {"array": clip, "sampling_rate": SR, "path": None}
    np.testing.assert_allclose(features(extractor, as_dict, sampling_rate=None)["input_features"], reference,
                               atol=1e-5)
    np.testing.assert_allclose(features(extractor, pcm16)["input_features"], reference, atol=2e-3)
    for fmt, subtype in (("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        path = tmp_path / f"clip.{fmt.lower()}"
        soundfile.write(path, clip, SR, format=fmt, subtype=subtype)
        from_path = features(extractor, str(path), sampling_rate=None)["input_features"]
        from_bytes = features(extractor, path.read_bytes(), sampling_rate=None)["input_features"]
        from_dict = features(extractor, {"bytes": path.read_bytes(), "path": None})["input_features"]
        np.testing.assert_array_equal(from_path, from_bytes)
        np.testing.assert_array_equal(from_path, from_dict)
        tolerance = 0.2 if fmt == "OGG" else 2e-3  # Vorbis is lossy
        assert np.abs(from_path - reference).mean() < tolerance / 4
        assert from_path.shape[-1] == reference.shape[-1] or fmt == "OGG"


def test_stereo_is_mixed_down(extractor, tmp_path):
    left, right = chirp(), chirp(seed=9)
    mono = features(extractor, (left + right) / 2)["input_features"]
    for stereo in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        np.testing.assert_allclose(features(extractor, [stereo])["input_features"], mono, atol=1e-5)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(features(extractor, path)["input_features"], mono, atol=1e-5)


def test_resampling_8k_and_44k_stereo(extractor):
    def tone(rate, seconds=1.0):
        t = np.arange(int(seconds * rate)) / rate
        return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    reference = features(extractor, tone(SR))["input_features"]
    from_8k = features(extractor, {"array": tone(8000), "sampling_rate": 8000})["input_features"]
    stereo = np.stack([tone(44100), tone(44100)], axis=1)
    from_44k = features(extractor, {"array": stereo, "sampling_rate": 44100})["input_features"]
    for resampled in (from_8k, from_44k):
        assert resampled.shape == reference.shape == (1, 64, 100)
        inner = slice(3, -3)  # the resampler's filter edges differ from a tone generated at 16 kHz
        assert np.abs(resampled[..., inner] - reference[..., inner]).max() < 0.05
        assert (resampled[0, :, 50].argmax() == reference[0, :, 50].argmax())


def test_per_clip_sampling_rates_in_one_batch(extractor):
    batch = [{"array": chirp(1.0, rate=8000), "sampling_rate": 8000}, chirp(0.5)]
    out = features(extractor, batch)
    assert out["feature_attention_mask"].sum(axis=1).tolist() == [100, 50]


def test_ten_minutes_truncated_with_a_warning(extractor):
    long = np.tile(chirp(1.0), 600)
    with pytest.warns(UserWarning, match=r"Truncated to 8.00 s.*600.00 s"):
        out = features(extractor, long)
    assert out["input_features"].shape == (1, 64, 800) and out["feature_attention_mask"].all()
    with pytest.warns(UserWarning, match="Truncated"):
        resampled = features(extractor, {"array": np.tile(chirp(1.0, rate=44100), 60), "sampling_rate": 44100})
    assert resampled["input_features"].shape == (1, 64, 800)


def test_no_warning_when_within_limit(extractor):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features(extractor, np.zeros(8 * SR, np.float32))


def test_padding_options(extractor):
    clips = [chirp(1.0), chirp(0.5)]
    assert features(extractor, clips, padding="max_length")["input_features"].shape == (2, 64, 800)
    assert features(extractor, clips, padding="max_length", max_length=32000)["input_features"].shape[-1] == 200
    unpadded = extractor(clips, sampling_rate=SR, padding=False)
    assert [f.shape for f in unpadded["input_features"]] == [(64, 100), (64, 50)]
    with pytest.raises(ValueError, match="different lengths"):
        extractor(clips, sampling_rate=SR, padding=False, return_tensors="np")
    no_mask = extractor(clips, sampling_rate=SR, return_attention_mask=False)
    assert "feature_attention_mask" not in no_mask
    with pytest.warns(UserWarning, match="Truncated to 0.25 s"):
        cut = features(extractor, clips, max_length=4000)
    assert cut["input_features"].shape[-1] == 25


BAD_AUDIO = {
    "missing rate": (lambda: chirp(), {"sampling_rate": None}, "needs `sampling_rate=`"),
    "empty": (lambda: np.zeros(0, np.float32), {}, "empty"),
    "empty list": (lambda: [], {}, "empty list"),
    "nan": (lambda: np.array([0.0, np.nan, 0.0]), {}, "NaN or infinite"),
    "inf in batch": (lambda: [chirp(), np.array([np.inf])], {}, r"audio\[1\].*NaN or infinite"),
    "3-D array": (lambda: np.zeros((2, 2, 100)), {}, "1-D .* or 2-D"),
    "unknown type": (lambda: 3.5, {}, "unsupported type float"),
    "None in batch": (lambda: [chirp(), None], {}, r"audio\[1\]: unsupported type NoneType"),
    "corrupt bytes": (lambda: b"RIFF....WAVEfmt garbage", {}, "could not decode"),
    "missing file": (lambda: "/no/such/clip.wav", {}, "no audio file"),
    "dict without rate": (lambda: {"array": chirp()}, {}, "no 'sampling_rate'"),
    "dict without audio": (lambda: {"foo": 1}, {}, "a dict needs"),
    "bad rate": (lambda: chirp(), {"sampling_rate": -5}, "positive number"),
    "string samples": (lambda: np.array(["a", "b"]), {}, "dtype"),
    "complex": (lambda: torch.zeros(10, dtype=torch.complex64), {}, "complex"),
    "too many channels": (lambda: [np.zeros((20, 30))], {}, "channels"),
    "ragged": (lambda: [[[0.1, 0.2], [0.3]]], {}, "could not read samples"),
    "absurdly loud": (lambda: np.full(100, 1e20), {}, "peak amplitude"),
}


@pytest.mark.parametrize("name", list(BAD_AUDIO))
def test_bad_audio_raises_value_error(extractor, name):
    make, kwargs, message = BAD_AUDIO[name]
    kwargs = {"sampling_rate": SR, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        extractor(make(), **kwargs)
    assert "Accepted: a 1-D array" in str(error.value)


@pytest.mark.parametrize("kwargs", [{"padding": "sideways"}, {"max_length": 0}, {"unknown": 1}])
def test_bad_options(extractor, kwargs):
    with pytest.raises(ValueError):
        extractor(chirp(), sampling_rate=SR, **kwargs)


def test_bad_configuration():
    with pytest.raises(ValueError, match="hop_length"):
        XModalFeatureExtractor(hop_length=0)


def test_save_load_round_trip(tmp_path):
    extractor = XModalFeatureExtractor(feature_size=40, max_duration=2.0, hop_length=200)
    extractor.save_pretrained(tmp_path)
    reloaded = XModalFeatureExtractor.from_pretrained(tmp_path)
    assert "mel_filters" not in (tmp_path / "preprocessor_config.json").read_text()
    clip = chirp(3.0)
    with pytest.warns(UserWarning):
        expected = features(extractor, clip)
    with pytest.warns(UserWarning):
        got = features(reloaded, clip)
    assert got["input_features"].shape == (1, 40, 160)
    np.testing.assert_array_equal(got["input_features"], expected["input_features"])


def test_auto_feature_extractor_resolves_saved_folder(tmp_path):
    from transformers import AutoFeatureExtractor

    from xmodal.processing.registration import register_processing_auto_classes

    assert register_processing_auto_classes()
    XModalFeatureExtractor(feature_size=32).save_pretrained(tmp_path)
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is XModalFeatureExtractor and loaded.feature_size == 32


def test_wav_bytes_round_trip_through_soundfile(extractor):
    buffer = io.BytesIO()
    soundfile.write(buffer, chirp(), 22050, format="WAV", subtype="PCM_16")
    out = features(extractor, buffer.getvalue(), sampling_rate=None)
    assert out["input_features"].shape == (1, 64, -(-round(SR * SR / 22050) // 160))


@st.composite
def audio_like(draw):
    length = draw(st.integers(0, 3000))
    channels = draw(st.sampled_from([None, 1, 2, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.int64, np.float16, np.bool_]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (length,) if channels is None else ((length, channels) if draw(st.booleans()) else (channels, length))
    scale = draw(st.sampled_from([0.0, 1.0, 1000.0, 1e30]))
    with np.errstate(over="ignore", invalid="ignore"):
        samples = (rng.standard_normal(shape) * scale).astype(dtype)
    if draw(st.booleans()) and dtype not in (np.float16,):
        samples = torch.from_numpy(samples)
    rate = draw(st.sampled_from([None, 8000, 16000, 22050, 44100, 100, 1, 0, -1, 1e9]))
    wrap = draw(st.sampled_from(["raw", "list", "dict"]))
    if wrap == "dict":
        return {"array": samples, "sampling_rate": rate}, None
    return ([samples] if wrap == "list" else samples), rate


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio_like())
def test_fuzz_valid_output_or_value_error(case):
    audio, rate = case
    extractor = XModalFeatureExtractor(max_duration=1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = extractor(audio, sampling_rate=rate, return_tensors="np")
    except ValueError:
        return
    values, mask = out["input_features"], out["feature_attention_mask"]
    assert values.ndim == 3 and values.shape[1] == 64 and 1 <= values.shape[-1] <= 100
    assert mask.shape == (values.shape[0], values.shape[-1]) and mask[:, 0].all()
    assert np.isfinite(values).all() and values.dtype == np.float32
