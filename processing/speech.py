"""Spoken captions for the built-in data: eSpeak NG through ctypes, resampled to 16 kHz.

eSpeak NG (GPL-3.0) is called, not vendored: the pip package `espeakng-loader` ships the shared
library and its voice data. One engine lives in each worker process, and every chunk of texts
is spoken by a freshly forked worker, because eSpeak carries state from one utterance to the
next (pitch-flutter phase, echo buffer): a fresh engine is what makes the samples reproducible.
"""

from __future__ import annotations

import ctypes
import io
import struct
from collections.abc import Sequence

import numpy as np

from .speech_pico import PICO_SAMPLING_RATE, is_pico_voice, speak_pico
from .worker_processes import fresh_process_map

SAMPLING_RATE = 16_000
ESPEAK_SAMPLING_RATE = 22_050  # what espeak_Initialize reports; 16,000 / 22,050 = 320 / 441
CHUNK_SIZE = 400  # texts per fresh worker process: ~3 s of work, so forking costs <1%
AUDIO_FORMATS = ("wav", "flac")

# Accents and voice variants (eSpeak's "+variant" suffixes) drawn for the training data.
TRAIN_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VOICE_VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7")
TRAIN_VOICES = tuple(accent + variant for accent in TRAIN_ACCENTS for variant in VOICE_VARIANTS)
# One accent never used in any split, so a model can be evaluated on a voice it never heard.
UNSEEN_ACCENT = "en-gb-scotland"
UNSEEN_VOICES = (UNSEEN_ACCENT, UNSEEN_ACCENT + "+f3", UNSEEN_ACCENT + "+m3")
RATE_RANGE = (150, 230)  # words per minute; eSpeak's default is 175
PITCH_RANGE = (30, 70)  # eSpeak's 0-100 scale; default 50

_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3  # espeak_PARAMETER values
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_SILENCE = 1e-3  # amplitude below which leading and trailing samples are trimmed
_PADDING_S = 0.05  # silence kept around the trimmed speech

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Engine:
    """The process's eSpeak NG engine (synchronous mode; one per process, hence the fresh
    workers)."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("Speech synthesis needs `espeakng-loader`: pip install 'xmodal[train]'") from error
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate != ESPEAK_SAMPLING_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {ESPEAK_SAMPLING_RATE}")
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self._voice: str | None = None

    def _collect(self, wav, num_samples, events):
        if num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at 22,050 Hz."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r} (try one of TRAIN_VOICES)")
            self._voice = voice
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        self._lib.espeak_ng_SetRandSeed(1)  # noise (breath, fricatives) starts the same each time
        self._chunks.clear()
        encoded = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(encoded, len(encoded), 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        return np.frombuffer(b"".join(self._chunks), dtype=np.int16)


_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def trim_silence(audio: np.ndarray, sampling_rate: int) -> np.ndarray:
    """`audio` without its leading and trailing silence, `_PADDING_S` of it kept each side."""
    loud = np.flatnonzero(np.abs(audio) > _SILENCE)
    if loud.size:
        pad = int(_PADDING_S * sampling_rate)
        audio = audio[max(loud[0] - pad, 0) : loud[-1] + pad + 1]
    return audio


def _resample(samples: np.ndarray, sampling_rate: int) -> np.ndarray:
    """int16 at 22,050 Hz -> float32 at `sampling_rate`, leading/trailing silence trimmed."""
    import soxr

    audio = trim_silence(samples.astype(np.float32) / 32768.0, ESPEAK_SAMPLING_RATE)
    if sampling_rate != ESPEAK_SAMPLING_RATE:
        audio = soxr.resample(audio, ESPEAK_SAMPLING_RATE, sampling_rate, quality="MQ")
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _wav_bytes(pcm: np.ndarray, sampling_rate: int) -> bytes:
    """A canonical 44-byte-header PCM WAV, written directly: 10x cheaper than through libsndfile."""
    data = pcm.astype("<i2", copy=False).tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 1,
        sampling_rate, 2 * sampling_rate, 2, 16, b"data", len(data),
    )
    return header + data


def encode_audio(samples: np.ndarray, sampling_rate: int, audio_format: str = "wav") -> bytes:
    """16-bit mono WAV (default) or FLAC bytes: the dataset's storage (`datasets.Audio` needs
    torchcodec). FLAC is ~30% smaller but takes a third as long to encode as eSpeak to speak."""
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float32) * 32767.0), -32768, 32767).astype(np.int16)
    if audio_format == "wav":
        return _wav_bytes(pcm, sampling_rate)
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, sampling_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(value) -> tuple[np.ndarray, int]:
    """(float32 mono samples, sampling rate) from what an `audio` cell can hold: FLAC/WAV bytes,
    a `{"bytes": ...}` or `{"path": ...}` dict, a path, or an `Audio()`-decoded
    `{"array", "sampling_rate"}` dict."""
    if isinstance(value, dict) and value.get("array") is not None:
        return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if value is None:
        raise ValueError("decode_audio got an empty audio value")
    import soundfile

    source = io.BytesIO(value) if isinstance(value, (bytes, bytearray, memoryview)) else value
    samples, sampling_rate = soundfile.read(source, dtype="float32", always_2d=True)
    return samples.mean(axis=1).astype(np.float32), int(sampling_rate)


def speak_here(
    requests: Sequence[tuple[str, str, int, int]], sampling_rate: int = SAMPLING_RATE,
    audio_format: str | None = None,
) -> list:
    """Speak `(text, voice, rate, pitch)` requests with this process's engine (SVOX Pico for the held-out
    `UNSEEN_ENGINE_VOICES`, eSpeak NG for every other): float32 arrays,
    or encoded bytes when `audio_format` is "wav" or "flac". Reproducible only in a fresh
    process (see `fresh_process_map`)."""
    results: list = [None] * len(requests)
    # grouped by voice: switching voices reloads the voice files
    for index in sorted(range(len(requests)), key=lambda i: requests[i][1]):
        text, voice, rate, pitch = requests[index]
        if is_pico_voice(voice):  # the held-out engine (`test:unseen-engine`)
            audio = trim_silence(speak_pico(text, voice, rate, pitch), PICO_SAMPLING_RATE)
            if sampling_rate != PICO_SAMPLING_RATE:
                import soxr

                audio = soxr.resample(audio, PICO_SAMPLING_RATE, sampling_rate, quality="MQ").astype(np.float32)
        else:
            audio = _resample(_engine().speak(text, voice, rate, pitch), sampling_rate)
        results[index] = audio if audio_format is None else encode_audio(audio, sampling_rate, audio_format)
    return results


def _speak_job(job) -> list:
    return speak_here(*job)


def speak_requests(
    requests: Sequence[tuple[str, str, int, int]], sampling_rate: int = SAMPLING_RATE,
    audio_format: str | None = None, num_proc: int = 2,
) -> list:
    """`speak_here` over many requests, `CHUNK_SIZE` at a time, each chunk in a fresh worker process (so the
    result does not depend on `num_proc`); in the order of `requests`."""
    jobs = [(requests[start : start + CHUNK_SIZE], sampling_rate, audio_format)
            for start in range(0, len(requests), CHUNK_SIZE)]
    return [audio for chunk in fresh_process_map(_speak_job, jobs, num_proc) for audio in chunk]


def _per_text(value, count: int, name: str) -> list:
    if isinstance(value, (str, int, np.integer)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} texts")
    return values


def synthesize_speech(
    texts: Sequence[str],
    voice: str | Sequence[str] = "en-us",
    rate: int | Sequence[int] = 175,
    pitch: int | Sequence[int] = 50,
    sampling_rate: int = SAMPLING_RATE,
    num_proc: int = 1,
) -> list[np.ndarray]:
    """Speak each text with eSpeak NG; float32 mono arrays at `sampling_rate`.

    `voice` is an eSpeak voice name such as "en-us", "en-gb-x-rp+f3" (see `TRAIN_VOICES`,
    `UNSEEN_VOICES`); `rate` is in words per minute and `pitch` on eSpeak's 0-100 scale. Each
    may be one value or one per text. The same call always returns the same samples.
    """
    if isinstance(texts, str):
        raise TypeError("synthesize_speech takes a list of texts, not one string")
    count = len(texts)
    requests = list(
        zip(
            texts,
            _per_text(voice, count, "voice"),
            (int(r) for r in _per_text(rate, count, "rate")),
            (int(p) for p in _per_text(pitch, count, "pitch")),
        )
    )
    return speak_requests(requests, sampling_rate, num_proc=num_proc)
