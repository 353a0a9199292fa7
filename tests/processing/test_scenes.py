"""The emoji-scene dataset: determinism, schema, truthful captions, splits, voices, cache, CLI."""

import re

import numpy as np
import pytest
from datasets import Features
from huggingface_hub import DatasetCard

from xmodal.processing import build_scene_dataset, load_scene_dataset
from xmodal.processing import emoji_assets, scene_plan, scenes
from xmodal.processing.speech import TRAIN_VOICES, UNSEEN_ACCENT, UNSEEN_VOICES, decode_audio

TINY = dict(seed=3, num_emoji=12, num_train=40, num_validation=6, num_test=6, num_test_novel=12,
            image_size=64, progress=False)
SIZE_RANGES = scene_plan.SIZE_RANGES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return root, build_scene_dataset(root, **TINY)


@pytest.fixture(scope="module")
def dataset(built):
    return built[1]


def test_build_is_deterministic_bit_for_bit(built, tmp_path):
    again = build_scene_dataset(tmp_path, **{**TINY, "num_proc": 1})  # and whatever the worker count
    for split in scene_plan.SPLITS:
        first, second = built[1][split].data.table, again[split].data.table
        assert first.column_names == second.column_names
        for name in first.column_names:  # images (PNG bytes) and audio (WAV bytes) included
            assert first.column(name).equals(second.column(name)), (split, name)


def test_splits_sizes_and_column_types(dataset):
    assert list(dataset) == list(scene_plan.SPLITS)
    assert [len(dataset[s]) for s in scene_plan.SPLITS] == [40, 6, 6, 12]
    features = dataset["train"].features
    assert features == scenes.scene_features()
    assert type(features["image"]).__name__ == "Image"
    assert features["audio"].dtype == "binary" and features["sampling_rate"].dtype == "int32"
    row = dataset["train"][0]
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert row["caption"] in row["captions"] and len(row["captions"]) >= 3
    assert isinstance(row["audio"], bytes) and row["sampling_rate"] == 16_000
    assert row["scene_id"] == "train-0000000"
    names = emoji_assets.emoji_names()
    for row in dataset["train"]:
        assert row["emoji"] == [names[i] for i in row["emoji_ids"]]
        assert len(row["boxes"]) == len(row["emoji"]) and 1 <= len(row["emoji"]) <= 3
        assert all(0 <= v <= 64 for box in row["boxes"] for v in box)


def _groups(row):
    """(name, count, boxes) runs of one emoji, in layout order."""
    groups = []
    for name, box in zip(row["emoji"], row["boxes"]):
        if groups and groups[-1][0] == name:
            groups[-1][2].append(box)
        else:
            groups.append((name, 0, [box]))
    return [(name, len(boxes), boxes) for name, _, boxes in groups]


def _size_word(boxes, side):
    widths = [box[2] - box[0] for box in boxes]
    if all(w >= SIZE_RANGES["big"][0] * side - 1 for w in widths):
        return "big"
    if all(w <= SIZE_RANGES["small"][1] * side + 1 for w in widths):
        return "small"
    return None


def _phrases(name, count, boxes, side):
    """Every way a caption may truthfully name this group."""
    info = next(i for i in emoji_assets.emoji_catalogue() if i.name == name)
    nouns = [info.name] if count == 1 else [info.plural]
    size = _size_word(boxes, side)
    out = []
    for adjective in ([size, scene_plan.SIZE_SYNONYMS[size], None] if size else [None]):
        noun = f"{adjective} {nouns[0]}" if adjective else nouns[0]
        out.append(f"{emoji_assets.indefinite_article(noun)} {noun}" if count == 1 else
                   f"{ {2: 'two', 3: 'three'}[count]} {noun}")
    return out


def _before(a_boxes, b_boxes, axis):
    """Every box of `a` ends before any box of `b` starts, along the axis (0: x, 1: y)."""
    return max(box[axis + 2] for box in a_boxes) <= min(box[axis] for box in b_boxes)


RELATIONS = {"to the left of": (0, False), "to the right of": (0, True), "above": (1, False), "below": (1, True)}


def test_captions_state_true_counts_sizes_and_positions(dataset):
    checked = 0
    for split in scene_plan.SPLITS:
        for row in dataset[split]:
            groups = _groups(row)
            for caption in row["captions"]:
                # find each group's phrase in the caption, longest phrasing first
                found = {}
                for index, (name, count, boxes) in enumerate(groups):
                    for phrase in sorted(_phrases(name, count, boxes, 64), key=len, reverse=True):
                        match = re.search(rf"(^|\s){re.escape(phrase)}(\s|,|$)", caption)
                        if match:
                            found[index] = match.start()
                            break
                assert len(found) == len(groups), (caption, groups)
                order = sorted(found, key=found.get)  # groups in the order the caption names them
                boxes = [groups[i][2] for i in order]
                for words, (axis, reverse) in RELATIONS.items():
                    if f" {words} " in caption:  # "A <words> B [and C]": A against each of the others
                        for other in boxes[1:]:
                            first, second = (other, boxes[0]) if reverse else (boxes[0], other)
                            assert _before(first, second, axis), caption
                if "from left to right" in caption or "from top to bottom" in caption:
                    axis = 0 if "left" in caption else 1
                    assert all(_before(a, b, axis) for a, b in zip(boxes, boxes[1:])), caption
                if " between " in caption:  # "B between A and C": B is the middle one along some axis
                    b, a, c = boxes
                    assert any(_before(a, b, axis) and _before(b, c, axis) or
                               _before(c, b, axis) and _before(b, a, axis) for axis in (0, 1)), caption
                checked += 1
    assert checked > 100


def test_caption_wording():
    plural = emoji_assets.pluralize
    assert plural("banana") == "bananas" and plural("zebra") == "zebras"
    assert plural("face with tears of joy") == "faces with tears of joy"
    assert plural("man mountain biking") == "men mountain biking"
    assert plural("fork and knife") == "forks and knives"
    assert plural("japanese free of charge button") == "japanese free of charge buttons"
    assert plural("butterfly") == "butterflies" and plural("fox") == "foxes" and plural("fish") == "fish"
    articles = [emoji_assets.indefinite_article(w) for w in ("apple", "banana", "unicorn", "hourglass", "big owl")]
    assert articles == ["an", "a", "a", "an", "a"]
    for info in emoji_assets.emoji_catalogue():
        assert info.name == info.name.lower() and not re.search(r"[0-9:_()]", info.name), info.name
    groups = [scene_plan.Group(0, 2, "big"), scene_plan.Group(1, 1, "medium")]
    first, second = (emoji_assets.emoji_catalogue()[i] for i in (0, 1))
    captions = scene_plan.scene_captions(groups, "horizontal")
    article = emoji_assets.indefinite_article(second.name)
    assert captions[0] == f"two big {first.plural} to the left of {article} {second.name}"
    assert f"two {first.plural} to the left of" in captions[-1]


def test_test_novel_pairs_never_seen_together_in_other_splits(dataset):
    def pairs(row):
        ids = sorted(set(row["emoji_ids"]))
        return {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}

    seen = set().union(*(pairs(row) for split in ("train", "validation", "test") for row in dataset[split]))
    assert seen
    for row in dataset["test_novel"]:
        assert len(set(row["emoji_ids"])) >= 2
        assert not pairs(row) & seen, row["emoji"]
    used = {i for split in scene_plan.SPLITS for row in dataset[split] for i in row["emoji_ids"]}
    assert len(used) <= TINY["num_emoji"]


def test_skin_tone_variants_are_excluded():
    catalogue = emoji_assets.emoji_catalogue()
    assert len(catalogue) > 1500
    assert not any(emoji_assets.SKIN_TONES.intersection(info.char) for info in catalogue)
    assert not any("skin tone" in info.name for info in catalogue)
    assert len({info.name for info in catalogue}) == len(catalogue)


def test_glyphs_render_in_colour_and_blanks_are_rejected():
    sprite = np.asarray(emoji_assets.emoji_sprite("\U0001f34c"))  # banana
    opaque = sprite[sprite[..., 3] > 128][:, :3]
    assert len(opaque) > 500 and len(np.unique(opaque, axis=0)) > 5
    tofu = np.asarray(emoji_assets._draw_glyph(emoji_assets._TOFU_PROBE, emoji_assets._CHECK_FONT_SIZE))
    assert not emoji_assets._renders(emoji_assets._TOFU_PROBE, tofu)
    assert emoji_assets._renders("\U0001f34c", tofu)


def test_audio_is_16khz_speech_of_plausible_length(dataset):
    for row in dataset["validation"]:
        samples, rate = decode_audio(row["audio"])
        assert rate == row["sampling_rate"] == 16_000 and samples.dtype == np.float32
        assert np.sqrt(np.mean(samples**2)) > 0.01  # not silent
        words = len(row["caption"].split())
        seconds = len(samples) / rate
        assert 0.15 * words < seconds < 0.8 * words + 0.5, (row["caption"], seconds)


def test_unseen_voice_never_used(dataset):
    assert not set(UNSEEN_VOICES) & set(TRAIN_VOICES)
    for split in scene_plan.SPLITS:
        for voice in dataset[split]["voice"]:
            assert voice in TRAIN_VOICES and not voice.startswith(UNSEEN_ACCENT)


def test_cache_is_reused(built, monkeypatch):
    root, _ = built
    monkeypatch.setattr(scenes, "_write_splits", lambda *a, **k: pytest.fail("rebuilt a cached dataset"))
    again = build_scene_dataset(root, **TINY)
    assert len(again["train"]) == TINY["num_train"]
    assert len(load_scene_dataset(root)["test_novel"]) == TINY["num_test_novel"]  # root with one build


def test_dataset_card_and_parameters_are_written(built):
    root, _ = built
    (folder,) = [p for p in root.iterdir() if p.name.startswith("scenes-")]
    card = (folder / "README.md").read_text()
    for needle in ("CC BY-SA 4.0", "OpenMoji", "GPL-3.0", "espeakng-loader", "WAV bytes", "| test_novel | 12 |",
                   "torchcodec", "decode_audio"):
        assert needle in card
    assert (folder / "build_params.json").is_file()
    # metadata the Hub indexes, read back by huggingface_hub
    data = DatasetCard.load(folder / "README.md").data
    assert (data.license, data.language, data.size_categories) == ("cc-by-sa-4.0", ["en"], ["n<1K"])
    assert "automatic-speech-recognition" in data.task_categories
    splits = {s["name"]: s["num_examples"] for s in data.dataset_info["splits"]}
    assert splits == {split: len(dataset) for split, dataset in load_scene_dataset(folder).items()}
    assert Features._from_yaml_list(data.dataset_info["features"]) == load_scene_dataset(folder)["train"].features


def test_missing_dataset_raises_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"xmodal data build --out .*nowhere"):
        load_scene_dataset(missing)


def test_cli_builds_without_speech(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--num-emoji", "5", "--num-train", "4", "--num-validation", "2",
            "--num-test", "2", "--num-test-novel", "2", "--image-size", "48", "--no-speech", "--quiet"]
    assert scenes.build_cli(argv) == 0
    assert "train: 4" in capsys.readouterr().out
    data = load_scene_dataset(tmp_path)
    assert data["train"][0]["audio"] is None and data["train"][0]["image"].size == (48, 48)


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_emoji"):
        build_scene_dataset(tmp_path, num_emoji=0, num_train=1, progress=False)
    with pytest.raises(ValueError, match="audio_format"):
        build_scene_dataset(tmp_path, audio_format="mp3", progress=False)


def test_without_raqm_only_single_code_point_emoji_are_kept(monkeypatch):
    monkeypatch.setattr(emoji_assets, "has_raqm", lambda: False)
    emoji_assets._font.cache_clear()
    try:
        basic = emoji_assets.emoji_catalogue.__wrapped__()
    finally:
        emoji_assets._font.cache_clear()
    assert len(basic) > 1000
    assert all(len(info.char.replace("\ufe0f", "")) == 1 for info in basic)


def test_splits_of_size_zero_are_left_out_and_all_zero_is_an_error():
    from xmodal.processing.scene_plan import plan_scenes

    plan = plan_scenes(num_emoji=6, sizes={"train": 5, "validation": 0, "test": 2, "test_novel": 0}, image_size=32)
    assert {split: len(scenes) for split, scenes in plan.items()} == {"train": 5, "test": 2}
    with pytest.raises(ValueError, match="Every split size is 0"):
        plan_scenes(num_emoji=6, sizes={"train": 0, "validation": 0, "test": 0, "test_novel": 0})
