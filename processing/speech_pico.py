"""A second speech engine, held out of every split: SVOX Pico (`test:unseen-engine`).

The built-in data is spoken by eSpeak NG only; a model that learnt "speech" and not "eSpeak" should
still hear the same captions from another synthesiser. Pico (Apache-2.0, the Android engine; the pip
package `ttspico` builds it from source and ships its US and British English voices) is a different
kind of synthesiser from eSpeak's formant one, and no training split, data build or tuning choice uses it.
An engine is created for every utterance: one engine's second rendering of a text differs slightly from
its first, and a fresh one makes every sample reproducible.
"""

from __future__ import annotations

import numpy as np

PICO_SAMPLING_RATE = 16_000  # Pico speaks 16-bit mono PCM at 16 kHz
UNSEEN_ENGINE_VOICES = ("pico:en-US", "pico:en-GB")
# Pico's rate and pitch are percentages of its defaults; eSpeak's words per minute and 0-100 pitch
# (the ranges the data draws from) map onto them around eSpeak's defaults (175 wpm, pitch 50).
_ESPEAK_DEFAULT_RATE, _ESPEAK_DEFAULT_PITCH = 175, 50


def is_pico_voice(voice: str) -> bool:
    return voice.startswith("pico:")


def require_pico():
    """The `ttspico` module, or an ImportError that says how to install it."""
    try:
        import ttspico
    except ImportError as error:
        raise ImportError("The held-out speech engine is SVOX Pico: pip install 'xmodal[unseen-engine]' "
                          "(`ttspico`, built from source: needs a C compiler).") from error
    return ttspico


def speak_pico(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """float32 samples at 16 kHz, for an eSpeak-scale `rate` (words per minute) and `pitch` (0-100);
    `speech.speak_here` trims their silence as it does eSpeak's."""
    ttspico = require_pico()
    if voice not in UNSEEN_ENGINE_VOICES:
        raise ValueError(f"Pico has no voice {voice!r}; its voices are {UNSEEN_ENGINE_VOICES}")
    engine = ttspico.TtsEngine(voice.split(":", 1)[1])
    engine.rate = int(round(100 * rate / _ESPEAK_DEFAULT_RATE))
    engine.pitch = int(round(100 + 0.5 * (pitch - _ESPEAK_DEFAULT_PITCH)))  # 30..70 -> 90..110 %
    pcm = engine.speak(text) or b""
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
