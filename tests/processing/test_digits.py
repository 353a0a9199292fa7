"""The handwritten-digits classic: captions match labels, matching pairs, deterministic splits."""

import numpy as np
import pytest

from xmodal.processing import build_digits_dataset
from xmodal.processing.digits import DIGIT_WORDS, _stratified_splits, load_digit_arrays


@pytest.fixture(scope="module")
def digits():
    return build_digits_dataset(seed=0)


def test_splits_cover_every_image_once_with_every_digit(digits):
    assert list(digits) == ["train", "validation", "test"]
    assert sum(len(split) for split in digits.values()) == 1797
    for split in digits.values():
        assert set(split["label"]) == set(range(10))
    assert len(digits["train"]) > 4 * len(digits["test"])


def test_captions_match_labels(digits):
    for split in digits.values():
        for caption, captions, label in zip(split["caption"], split["captions"], split["label"]):
            assert caption == f"a handwritten {DIGIT_WORDS[label]}"
            assert caption == captions[0] and all(DIGIT_WORDS[label] in c.split() for c in captions)
    assert digits["train"].features["label"].int2str(7) == "seven"


def test_matching_pairs(digits):
    train = digits["train"]
    match = np.array(train["match"])
    assert 0.4 < match.mean() < 0.6
    for caption, paired, is_match in zip(train["caption"], train["match_caption"], train["match"]):
        assert (caption == paired) == bool(is_match)
        assert paired.startswith("a handwritten ")


def test_images_and_determinism(digits):
    image = digits["test"][0]["image"]
    assert image.size == (32, 32) and image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels.min() < 80 and pixels.max() > 200  # dark ink on white
    again = build_digits_dataset(seed=0)
    assert again["train"].data.table.equals(digits["train"].data.table)
    _, labels = load_digit_arrays()
    seeds = [_stratified_splits(labels, np.random.default_rng(seed))["test"] for seed in (0, 1)]
    assert not np.array_equal(*seeds)


def test_arrays_are_scikit_learns():
    from sklearn.datasets import load_digits

    images, labels = load_digit_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


def test_balanced_pairs_show_every_image_with_its_caption_and_a_wrong_one(digits):
    balanced = build_digits_dataset(seed=0, balanced_pairs=True)
    for name, split in balanced.items():
        assert len(split) == 2 * len(digits[name])
        match, label = np.array(split["match"]), np.array(split["label"])
        assert match.tolist() == [1, 0] * len(digits[name]) and np.array_equal(label[::2], label[1::2])
        assert split["match_caption"][::2] == split["caption"][::2] == digits[name]["caption"]
        assert all(wrong != own for wrong, own in zip(split["match_caption"][1::2], split["caption"][1::2]))
        # the same images, splits and wrong digits as the default build
        assert split["image"][::2] == digits[name]["image"]
        wrong = [c for c, m in zip(digits[name]["match_caption"], digits[name]["match"]) if not m]
        assert [c for c, m in zip(split["match_caption"][1::2], digits[name]["match"]) if not m] == wrong
