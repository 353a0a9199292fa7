"""Held-out test variants: an unheard voice, an unheard speech engine, unheard phrasings. Each keeps the
scenes, changes one thing, and never overlaps what the splits hold."""

import numpy as np
import pytest

from xmodal.processing import emoji_assets, scene_plan
from xmodal.processing.held_out import HELD_OUT_VARIANTS
from xmodal.processing.speech import TRAIN_VOICES, UNSEEN_VOICES, decode_audio, speak_here
from xmodal.processing.speech_pico import UNSEEN_ENGINE_VOICES
from xmodal.trainers.data import DataError, select_split

from ..trainers.helpers import ensure_tiny_scenes


@pytest.fixture(scope="module")
def dataset():
    return ensure_tiny_scenes()


def _check_respoken(original, respoken, voices):
    assert respoken["scene_id"] == original["scene_id"]
    assert set(respoken["voice"]) <= set(voices) and not set(respoken["voice"]) & set(TRAIN_VOICES)
    for before, after in zip(original, respoken):
        audio, rate = decode_audio(after["audio"])
        words = len(after["caption"].split())
        assert rate == 16_000 and np.abs(audio).max() > 0.01
        assert 0.1 * words < audio.size / rate < 0.8 * words + 0.5, (after["caption"], audio.size / rate)
        assert after["audio"] != before["audio"]


def test_unseen_voice_split_speaks_the_same_captions_in_voices_no_split_uses(dataset):
    original = dataset["test"]
    respoken = select_split(dataset, "test:unseen-voice")
    assert respoken["caption"] == original["caption"]
    _check_respoken(original, respoken, UNSEEN_VOICES)
    assert select_split(dataset, "test:unseen-voice")["audio"] == respoken["audio"]  # reproducible
    with pytest.raises(DataError, match="no split 'tset'"):
        select_split(dataset, "tset:unseen-voice")


def test_unseen_engine_split_speaks_the_same_captions_with_pico(dataset):
    original = dataset["test"]
    respoken = select_split(dataset, "test:unseen-engine")
    assert respoken["caption"] == original["caption"]
    assert set(respoken["voice"]) == set(UNSEEN_ENGINE_VOICES)  # both of Pico's English voices
    _check_respoken(original, respoken, UNSEEN_ENGINE_VOICES)
    assert select_split(dataset, "test:unseen-engine")["audio"] == respoken["audio"]  # reproducible


def test_pico_speaks_reproducibly_and_at_the_asked_rate():
    slow, fast, again = speak_here([("two cats above a dog", "pico:en-GB", 150, 50),
                                    ("two cats above a dog", "pico:en-GB", 230, 50),
                                    ("two cats above a dog", "pico:en-GB", 150, 50)])
    assert np.array_equal(slow, again) and slow.dtype == np.float32
    assert fast.size < 0.8 * slow.size
    with pytest.raises(ValueError, match="Pico has no voice 'pico:fr-FR'"):
        speak_here([("a cat", "pico:fr-FR", 175, 50)])


def test_rows_give_back_the_planned_scenes(dataset):
    """`scene_groups` reads a built row back into the groups and axis its captions were written from."""
    for split in scene_plan.SPLITS:
        for row in dataset[split]:
            groups, axis = scene_plan.scene_groups(row["emoji_ids"], row["boxes"], row["captions"], row["image"].size[0])
            assert scene_plan.scene_captions(groups, axis) == row["captions"], row["scene_id"]


def test_held_out_phrasings_are_never_training_phrasings(dataset):
    side = dataset["train"][0]["image"].size[0]
    training, held_out = set(), set()
    for split in scene_plan.SPLITS:
        for row in dataset[split]:
            training.update(row["captions"])
            groups, axis = scene_plan.scene_groups(row["emoji_ids"], row["boxes"], row["captions"], side)
            held_out.update(scene_plan.held_out_captions(groups, axis))
    assert len(held_out) > len(dataset["test"]) and not training & held_out


def test_held_out_phrasings_of_a_known_scene():
    cat, dog = emoji_assets.emoji_catalogue()[:2]
    groups = [scene_plan.Group(0, 2, "big"), scene_plan.Group(1, 1, "medium")]
    captions = scene_plan.held_out_captions(groups, "vertical")
    a = f"{emoji_assets.indefinite_article(dog.name)} {dog.name}"
    assert captions[:4] == [f"above {a} there are two big {cat.plural}",
                            f"at the top are two big {cat.plural} and at the bottom is {a}",
                            f"{a} with two big {cat.plural} above it",
                            f"two big {cat.plural} and {a} from top to bottom"]
    assert f"above {a} there are two large {cat.plural}" in captions
    assert f"above {a} there are two {cat.plural}" in captions
    assert not set(captions) & set(scene_plan.scene_captions(groups, "vertical"))


def test_unseen_phrasing_split_captions_and_speaks_the_scenes_anew(dataset):
    original = dataset["test"]
    rephrased = select_split(dataset, "test:unseen-phrasing")
    assert rephrased["scene_id"] == original["scene_id"] and rephrased["boxes"] == original["boxes"]
    for before, after in zip(original, rephrased):
        assert after["caption"] in after["captions"]
        assert not set(after["captions"]) & set(before["captions"])
        assert after["voice"] in TRAIN_VOICES and after["audio"] != before["audio"]
    assert select_split(dataset, "test:unseen-phrasing")["caption"] == rephrased["caption"]  # reproducible


def test_unknown_variants_and_missing_columns_are_named(dataset):
    with pytest.raises(DataError, match="Unknown held-out variant 'unseen-accent'.*`unseen-engine`"):
        select_split(dataset, "test:unseen-accent")
    bare = {"test": dataset["test"].remove_columns(["boxes"])}
    with pytest.raises(DataError, match=r"'test:unseen-phrasing' needs the columns .* lacks \['boxes'\]"):
        select_split(bare, "test:unseen-phrasing")
    assert set(HELD_OUT_VARIANTS) == {"unseen-voice", "unseen-engine", "unseen-phrasing"}


def test_a_run_that_scores_the_unseen_engine_without_pico_fails_before_training(tmp_path, monkeypatch, dataset):
    from xmodal.trainers.config import config_from_dict
    from xmodal.trainers.loop import train

    from ..trainers.helpers import tiny_config

    monkeypatch.setitem(__import__("sys").modules, "ttspico", None)  # as if not installed
    values = tiny_config(tmp_path, evaluation={"split": "test", "extra_splits": ["test:unseen-engine"]})
    with pytest.raises(DataError, match=r"^Split 'test:unseen-engine': .*pip install 'xmodal\[unseen-engine\]'"):
        train(config_from_dict(values))
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob("checkpoint*"))
    values["evaluation"]["extra_splits"] = ["test:unseen-dialect"]
    with pytest.raises(DataError, match="Unknown held-out variant 'unseen-dialect'"):
        train(config_from_dict(values))
