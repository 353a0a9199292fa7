"""The held-out everyday sentences: what a fine-tuned speech tower should still transcribe (issue 17)."""

import json
import subprocess
import sys

import numpy as np

from xmodal.processing.held_out_sentences import (
    HELD_OUT_SENTENCES, SENTENCE_VOICES, build_sentence_dataset, sentence_requests,
)
from xmodal.processing.speech import PITCH_RANGE, RATE_RANGE, TRAIN_VOICES, decode_audio
from xmodal.trainers.metrics import normalize_text


def test_sentences_are_in_the_form_the_error_rates_compare():
    assert len(HELD_OUT_SENTENCES) == len(set(HELD_OUT_SENTENCES)) >= 50
    for sentence in HELD_OUT_SENTENCES:
        assert normalize_text(sentence) == sentence, sentence  # lower case, no punctuation
        assert 5 <= len(sentence.split()) <= 11 and not any(c.isdigit() for c in sentence), sentence
    # not the scenes' template: no caption relation phrase
    assert not [s for s in HELD_OUT_SENTENCES if "to the left of" in s or "to the right of" in s]


def test_voices_are_none_that_training_uses():
    assert not set(SENTENCE_VOICES) & set(TRAIN_VOICES)
    assert {voice.split(":")[0] for voice in SENTENCE_VOICES if ":" in voice} == {"pico"}  # another engine


def test_requests_cover_every_sentence_in_every_voice_reproducibly():
    requests = sentence_requests(seed=3)
    assert requests == sentence_requests(seed=3) != sentence_requests(seed=4)
    assert len(requests) == len(HELD_OUT_SENTENCES) * len(SENTENCE_VOICES)
    assert {(text, voice) for text, voice, _, _ in requests} == {
        (text, voice) for text in HELD_OUT_SENTENCES for voice in SENTENCE_VOICES}
    assert all(RATE_RANGE[0] <= rate <= RATE_RANGE[1] and PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]
               for _, _, rate, pitch in requests)


def test_dataset_holds_wav_clips_that_fit_a_six_second_window():
    voices = ("pico:en-GB", "en-gb-scotland+f3")
    dataset = build_sentence_dataset(voices=voices)
    assert dataset.column_names == ["caption", "audio", "sampling_rate", "voice"]
    assert len(dataset) == 2 * len(HELD_OUT_SENTENCES) and set(dataset["voice"]) == set(voices)
    for row in dataset.select(range(0, len(dataset), 7)):
        audio, rate = decode_audio(row["audio"])
        words = len(row["caption"].split())
        assert rate == row["sampling_rate"] == 16_000 and np.abs(audio).max() > 0.01
        assert 0.15 * words < audio.size / rate < min(6.0, 0.8 * words + 0.5), (row["caption"], audio.size / rate)


def test_command_writes_an_audiofolder_and_refuses_an_occupied_folder(tmp_path):
    out = tmp_path / "sentences"
    command = [sys.executable, "-m", "xmodal.trainers.cli", "data", "sentences", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "test" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == len(HELD_OUT_SENTENCES) * len(SENTENCE_VOICES)
    assert (out / "test" / rows[0]["file_name"]).read_bytes()[:4] == b"RIFF"
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already exists and is not empty" in again.stderr and "--overwrite" in again.stderr
