"""Speech that no training split resembles: everyday sentences, spoken by voices and an engine no split uses.

The held-out variants (`held_out.py`) keep the scenes and their caption vocabulary. Fine-tuning a pretrained
speech model (Whisper in `configs/pretrained.yaml`) on the scenes' captions can teach it their template and
unteach English: its transcripts of anything else get worse. These sentences measure that. They share no
template with the captions (questions, commands, past and future tenses, names of everyday things), were
written for this file, and no training split, data build or tuning choice reads them. Each is spoken by every
voice of `SENTENCE_VOICES`: SVOX Pico (another engine) and eSpeak's unseen Scottish voices.

`xmodal data sentences --out DIR` writes them as an audiofolder; `xmodal eval --model M --data DIR` scores a
checkpoint's transcripts of them (`speech_to_text_wer`, `speech_to_text_cer`).
"""

from __future__ import annotations

import random

from .speech import PITCH_RANGE, RATE_RANGE, SAMPLING_RATE, UNSEEN_VOICES, speak_requests
from .speech_pico import UNSEEN_ENGINE_VOICES

SENTENCE_VOICES = UNSEEN_ENGINE_VOICES + UNSEEN_VOICES

# Short (at most eleven words: every clip fits a 6-second window), no digits or names that a transcript could
# spell another way, lower case without punctuation (the form `metrics.normalize_text` compares).
HELD_OUT_SENTENCES = (
    "please close the window before it starts to rain",
    "the train to the city leaves in a few minutes",
    "she bought fresh bread and a jar of honey",
    "can you help me carry these boxes upstairs",
    "the children played in the garden all afternoon",
    "we should leave early to avoid the traffic",
    "my brother works at the hospital near the river",
    "the coffee is too hot to drink right now",
    "they painted the kitchen a pale shade of green",
    "turn off the lights when you leave the room",
    "the meeting has been moved to next thursday",
    "he forgot his umbrella on the bus again",
    "the library opens early in the morning",
    "i have never seen snow this deep before",
    "would you like some tea or a glass of water",
    "the old bridge was closed for repairs last year",
    "our neighbours are planting apple trees this spring",
    "the teacher asked the students to read quietly",
    "a strong wind blew the leaves across the road",
    "please remember to water the plants while i am away",
    "the museum is free for visitors on sundays",
    "she plays the violin in the school orchestra",
    "we watched the sun set over the mountains",
    "the shop on the corner sells newspapers and sweets",
    "the doctor said he needs to rest for a week",
    "they are building a new school across the street",
    "i lost my keys somewhere in the house",
    "the soup needs a little more salt and pepper",
    "my sister is learning to drive this summer",
    "the farmer sold his vegetables at the market",
    "do not forget to lock the door tonight",
    "the flight was delayed because of the storm",
    "he reads the newspaper every morning with breakfast",
    "the baby finally fell asleep after lunch",
    "we need to buy milk eggs and butter",
    "the river flooded the fields after the heavy rain",
    "she wrote a long letter to her grandmother",
    "the concert was cancelled at the last minute",
    "please speak a little louder i cannot hear you",
    "the painter finished the portrait in a single day",
    "our team won the match by a narrow margin",
    "the kettle is boiling so the tea will be ready soon",
    "he fixed the broken chair with some glue",
    "the garden looks beautiful after the spring rain",
    "they spent the holiday walking along the coast",
    "the printer in the office has run out of paper",
    "my grandfather tells wonderful stories about the war",
    "the bakery opens early on saturday mornings",
    "she found an old photograph inside the book",
    "the students cheered when the exams were over",
    "i would rather walk than wait for the bus",
    "the cat knocked a glass off the kitchen table",
    "we are going camping in the forest next month",
    "the engineer explained how the machine works",
    "please put the dishes away after dinner",
    "the road to the village is narrow and winding",
    "he plays chess with his friends every friday",
    "the hotel room had a view of the harbour",
    "the nurse checked his temperature twice an hour",
    "the price of bread has gone up again",
)


def sentence_requests(seed: int = 0, voices=SENTENCE_VOICES):
    """`(sentence, voice, rate, pitch)` for every sentence in every voice, rate and pitch drawn from the training
    ranges (`seed`): the same list on every machine."""
    if not voices:
        raise ValueError("sentence_requests needs at least one voice")
    rng = random.Random(f"xmodal-sentences/{seed}")
    return [(sentence, voice, rng.randint(*RATE_RANGE), rng.randint(*PITCH_RANGE))
            for voice in voices for sentence in HELD_OUT_SENTENCES]


def build_sentence_dataset(seed: int = 0, voices=SENTENCE_VOICES, num_proc: int = 2):
    """A `datasets.Dataset` of the spoken sentences: `caption` (the sentence), `audio` (WAV bytes at 16 kHz),
    `sampling_rate` and `voice`, laid out like the scenes' speech columns."""
    from datasets import Dataset, Features, Value

    requests = sentence_requests(seed, voices)
    audios = speak_requests(requests, SAMPLING_RATE, "wav", num_proc)
    features = Features({"caption": Value("string"), "audio": Value("binary"), "sampling_rate": Value("int32"),
                         "voice": Value("string")})
    return Dataset.from_dict({"caption": [text for text, *_ in requests], "audio": audios,
                              "sampling_rate": [SAMPLING_RATE] * len(audios),
                              "voice": [voice for _, voice, _, _ in requests]}, features=features)
