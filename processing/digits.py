"""The classic: scikit-learn's handwritten digits as image-caption pairs.

1,797 8x8 digits (the UCI ML hand-written digits data, CC BY 4.0, bundled with scikit-learn, so
no download) become small RGB images captioned "a handwritten seven". Each row also carries a
`match_caption`, with `match` saying whether it is the image's own, for a binary image-text matching
example: by default one row per image, right or wrong at random; with `balanced_pairs`, two rows per
image, one right and one wrong.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
MATCH_NAMES = ("mismatch", "match")
LICENSE = "CC BY 4.0 (UCI ML hand-written digits data, via scikit-learn's load_digits)"


def digit_captions(label: int) -> list[str]:
    """The phrasings of one digit; the first is the `caption` column."""
    word = DIGIT_WORDS[label]
    return [f"a handwritten {word}", f"the digit {word}", f"a picture of the number {word}", word]


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) with values 0-16, labels): the data of `sklearn.datasets.load_digits`,
    read from the CSV it ships, since importing scikit-learn itself takes seconds."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("The digits dataset needs scikit-learn: pip install 'xmodal[train]'")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a future layout: take the slow, public road
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target.astype(int)
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _stratified_splits(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Row indices per split, with every digit in the same proportions in each split."""
    parts: dict[str, list] = {split: [] for split in SPLIT_FRACTIONS}
    for label in range(len(DIGIT_WORDS)):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_train = round(SPLIT_FRACTIONS["train"] * rows.size)
        n_validation = round(SPLIT_FRACTIONS["validation"] * rows.size)
        parts["train"].append(rows[:n_train])
        parts["validation"].append(rows[n_train : n_train + n_validation])
        parts["test"].append(rows[n_train + n_validation :])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def _png(pixels: np.ndarray, image_size: int) -> bytes:
    """Dark ink on white paper, upscaled smoothly from 8x8 (values 0-16) and stored as PNG."""
    from PIL import Image

    ink = np.round(255 - pixels * (255 / 16)).astype(np.uint8)
    image = Image.fromarray(ink, "L").resize((image_size, image_size), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_digits_dataset(seed: int = 0, image_size: int = 32, balanced_pairs: bool = False):
    """A `DatasetDict` (train / validation / test, 70/15/15, stratified) of digit images with
    `caption`, `captions`, `label`, `match_caption` and `match`; deterministic from `seed`.

    `balanced_pairs`: every image twice, with its own caption (match) and with another digit's (mismatch).
    Then neither the image nor the caption alone says whether a pair matches, so a matching model cannot
    fit the training pairs by remembering which images came with a wrong caption: it has to compare them.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value

    images, labels = load_digit_arrays()
    rng = np.random.default_rng(seed)
    splits = _stratified_splits(labels, rng)
    features = Features({
        "image": Image(),
        "caption": Value("string"),
        "captions": List(Value("string")),
        "label": ClassLabel(names=list(DIGIT_WORDS)),
        "match_caption": Value("string"),
        "match": ClassLabel(names=list(MATCH_NAMES)),
    })
    dataset = {}
    for split, rows in splits.items():
        matches = rng.random(rows.size) < 0.5
        # a wrong digit: any of the nine others, uniformly
        others = (labels[rows] + rng.integers(1, len(DIGIT_WORDS), size=rows.size)) % len(DIGIT_WORDS)
        if balanced_pairs:  # the draws above, as in the default build: the same splits and wrong digits
            rows, others = np.repeat(rows, 2), np.repeat(others, 2)
            matches = np.tile([True, False], rows.size // 2)
        paired = np.where(matches, labels[rows], others)
        columns = {
            "image": [{"bytes": _png(images[i], image_size), "path": None} for i in rows],
            "caption": [digit_captions(labels[i])[0] for i in rows],
            "captions": [digit_captions(labels[i]) for i in rows],
            "label": [int(labels[i]) for i in rows],
            "match_caption": [digit_captions(int(p))[0] for p in paired],
            "match": [int(m) for m in matches],
        }
        info = DatasetInfo(description=__doc__, license=LICENSE, features=features)
        dataset[split] = Dataset.from_dict(columns, features=features, info=info, split=split)
    return DatasetDict(dataset)
