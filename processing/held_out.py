"""Test variants that no training split, data build or tuning choice ever sees.

A model of the built-in scenes can learn one speech engine, a few voices and a handful of caption
templates instead of speech and English. Each variant keeps a split's scenes and images and changes one
thing that training never varied that way:

- `unseen-voice`: the captions spoken again by eSpeak voices that no split uses (`UNSEEN_VOICES`);
- `unseen-engine`: spoken again by another synthesiser, SVOX Pico (`speech_pico.UNSEEN_ENGINE_VOICES`);
- `unseen-phrasing`: captioned in word orders and clause structures that no split uses
  (`scene_plan.held_out_captions`), and spoken by the training voices.

The trainers name them `<split>:<variant>`, e.g. `test:unseen-phrasing`.
"""

from __future__ import annotations

import random

from .scene_plan import held_out_captions, scene_groups
from .speech import PITCH_RANGE, RATE_RANGE, SAMPLING_RATE, TRAIN_VOICES, UNSEEN_VOICES, speak_requests
from .speech_pico import UNSEEN_ENGINE_VOICES

HELD_OUT_VARIANTS = {
    "unseen-voice": "the captions spoken by eSpeak voices that no split uses",
    "unseen-engine": "the captions spoken by SVOX Pico, a speech engine that no split uses",
    "unseen-phrasing": "the scenes captioned in phrasings that no split uses, spoken by the training voices",
}


def respeak_split(split, voices=UNSEEN_VOICES, seed: int = 0, audio_format: str = "wav", num_proc: int = 2):
    """`split` with every caption spoken again by `voices` (one drawn per scene from `seed`, with a rate and
    pitch from the training ranges): the same scenes heard in a voice that training never used."""
    rng = random.Random(f"xmodal-respeak/{seed}")
    requests = [(caption, rng.choice(list(voices)), rng.randint(*RATE_RANGE), rng.randint(*PITCH_RANGE))
                for caption in split["caption"]]
    audios = speak_requests(requests, SAMPLING_RATE, audio_format, num_proc)
    from datasets import Value

    features = split.features  # the scenes' own column types, kept
    split = split.remove_columns([c for c in ("audio", "sampling_rate", "voice") if c in split.column_names])
    split = split.add_column("audio", audios, feature=features["audio"])
    split = split.add_column("sampling_rate", [SAMPLING_RATE] * len(audios),
                             feature=features.get("sampling_rate", Value("int32")))
    return split.add_column("voice", [voice for _, voice, _, _ in requests])


def rephrase_split(split, seed: int = 0, num_proc: int = 2):
    """`split` captioned again in held-out phrasings: `captions` holds every held-out phrasing of a scene
    (what retrieval counts as true of it) and `caption` one of them, drawn from `seed`, spoken by a training
    voice. The scenes are read back from their rows (emoji, boxes, captions; see `scene_groups`)."""
    rng = random.Random(f"xmodal-rephrase/{seed}")
    image_side = split[0]["image"].size[0]  # a build draws every image at one size
    phrasings = [held_out_captions(*scene_groups(ids, boxes, captions, image_side))
                 for ids, boxes, captions in zip(split["emoji_ids"], split["boxes"], split["captions"])]
    captions_type = split.features["captions"]
    split = split.remove_columns(["caption", "captions"])
    split = split.add_column("captions", phrasings, feature=captions_type)
    split = split.add_column("caption", [rng.choice(options) for options in phrasings])
    return respeak_split(split, voices=TRAIN_VOICES, seed=seed, num_proc=num_proc)


def held_out_variant(split, variant: str, seed: int = 0):
    """`split` turned into the named held-out variant (a key of `HELD_OUT_VARIANTS`)."""
    if variant == "unseen-voice":
        return respeak_split(split, voices=UNSEEN_VOICES, seed=seed)
    if variant == "unseen-engine":
        return respeak_split(split, voices=UNSEEN_ENGINE_VOICES, seed=seed)
    if variant == "unseen-phrasing":
        return rephrase_split(split, seed=seed)
    raise ValueError(f"Unknown held-out variant {variant!r}; the variants are {sorted(HELD_OUT_VARIANTS)}")
