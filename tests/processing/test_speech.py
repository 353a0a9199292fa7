"""eSpeak NG speech: 16 kHz float32, reproducible, voices, and the audio storage round trip."""

import io

import numpy as np
import pytest
import soundfile

from xmodal.processing import synthesize_speech
from xmodal.processing.speech import TRAIN_VOICES, UNSEEN_VOICES, decode_audio, encode_audio


def test_speech_is_16khz_float32_and_not_silent():
    short, long = synthesize_speech(["a zebra", "two big bananas to the left of a small zebra"])
    for audio in (short, long):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.sqrt(np.mean(audio**2)) > 0.01 and np.abs(audio).max() <= 1.0
    assert 0.3 < len(short) / 16_000 < 2.0
    assert len(long) > 2 * len(short)


def test_speech_is_reproducible_across_calls():
    texts = ["a small banana above a zebra", "three owls"] * 2
    first = synthesize_speech(texts, voice="en-us+f3", rate=180, pitch=60)
    second = synthesize_speech(texts, voice="en-us+f3", rate=180, pitch=60)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_voices_rates_and_pitches_change_the_sound():
    text = ["a picture of a red apple"]
    base = synthesize_speech(text)[0]
    slower = synthesize_speech(text, rate=120)[0]
    assert len(slower) > 1.2 * len(base)
    for kwargs in ({"voice": "en-gb-x-rp+m3"}, {"pitch": 90}):
        other = synthesize_speech(text, **kwargs)[0]
        assert len(other) != len(base) or not np.array_equal(other, base)


def test_every_listed_voice_exists_and_unseen_voices_are_separate():
    assert not set(UNSEEN_VOICES) & set(TRAIN_VOICES)
    voices = list(TRAIN_VOICES) + list(UNSEEN_VOICES)
    audios = synthesize_speech(["hello"] * len(voices), voice=voices, num_proc=2)
    assert all(np.abs(audio).max() > 0.05 for audio in audios)
    with pytest.raises(ValueError, match="no voice"):
        synthesize_speech(["hello"], voice="xx-nonexistent")
    with pytest.raises(ValueError, match="entries"):
        synthesize_speech(["a", "b"], voice=["en-us"])


@pytest.mark.parametrize("audio_format", ["wav", "flac"])
def test_audio_bytes_round_trip(audio_format):
    samples = (0.5 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    data = encode_audio(samples, 16_000, audio_format)
    info = soundfile.info(io.BytesIO(data))
    assert info.format == audio_format.upper() and info.subtype == "PCM_16" and info.samplerate == 16_000
    decoded, rate = decode_audio(data)
    assert rate == 16_000 and decoded.dtype == np.float32
    assert np.abs(decoded - samples).max() < 1e-4
    assert np.array_equal(decode_audio({"bytes": data, "path": None})[0], decoded)
    array, rate = decode_audio({"array": samples.astype(np.float64), "sampling_rate": 8_000})
    assert rate == 8_000 and array.dtype == np.float32
