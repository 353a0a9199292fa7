"""Planning the emoji scenes: which emoji, how many, how big, where, and the captions that say so.

Every scene is drawn from its own seeded generator, so a plan is a pure function of its parameters.
`test_novel` holds scenes whose emoji pairs never appear together in the other splits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .emoji_assets import emoji_catalogue, indefinite_article
from .speech import PITCH_RANGE, RATE_RANGE, TRAIN_VOICES

SPLITS = ("train", "validation", "test", "test_novel")
DATA_VERSION = 2  # bump when a change alters the output of an unchanged call (2: more phrasings)
DEFAULT_IMAGE_SIZE = 64  # the defaults build what configs/default.yaml trains on
DEFAULT_NUM_EMOJI = 20
DEFAULT_SIZES = {"train": 10_000, "validation": 1_000, "test": 1_000, "test_novel": 1_000}
NOVEL_PAIR_FRACTION = 0.1  # share of emoji pairs held out of train/validation/test

# Object sizes as fractions of the image side; the gaps keep "big" and "small" unambiguous.
SIZE_RANGES = {"small": (0.20, 0.26), "medium": (0.30, 0.36), "big": (0.42, 0.50)}
SIZE_WORDS = {"small": "small", "medium": None, "big": "big"}
SIZE_SYNONYMS = {"small": "little", "medium": None, "big": "large"}  # the captions use both words
NUMBER_WORDS = {2: "two", 3: "three"}
_KIND_WEIGHTS = {1: 0.35, 2: 0.45, 3: 0.20}  # distinct emoji per scene (train, validation, test)
_NOVEL_KIND_WEIGHTS = {2: 0.7, 3: 0.3}
_COUNT_WEIGHTS = {1: 0.5, 2: 0.3, 3: 0.2}  # copies in a one-emoji scene
_MARGIN, _GAP = 1, 2  # pixels: from the border, and between neighbours along the axis
_PERPENDICULAR_JITTER = 0.12  # how far objects stray from a shared line, as a fraction of the side
RELATIONS = {"horizontal": ("to the left of", "to the right of", "from left to right"),
              "vertical": ("above", "below", "from top to bottom")}


# ---------------------------------------------------------------------------------------
# Scenes and captions
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """`count` copies of one emoji, all in one size class."""

    emoji_id: int
    count: int
    size: str


@dataclass
class Scene:
    """Everything a row is made from; objects run along `axis` in order (left to right, or
    top to bottom), and groups occupy them in that order."""

    scene_id: str
    groups: list[Group]
    axis: str
    boxes: list[tuple[int, int, int, int]]
    captions: list[str]
    caption: str
    voice: str
    rate: int
    pitch: int
    background_seed: int

    @property
    def emoji_ids(self) -> list[int]:
        return [group.emoji_id for group in self.groups for _ in range(group.count)]


def _noun_phrase(group: Group, words: dict | None = SIZE_WORDS) -> str:
    """"a big zebra", "two little cats": the group's count, its size word from `words` (None: no size)."""
    info = emoji_catalogue()[group.emoji_id]
    adjective = words[group.size] if words else None
    noun = info.name if group.count == 1 else info.plural
    phrase = f"{adjective} {noun}" if adjective else noun
    if group.count == 1:
        return f"{indefinite_article(phrase)} {phrase}"
    return f"{NUMBER_WORDS[group.count]} {phrase}"


def _be(group: Group) -> str:
    return "are" if group.count > 1 else "is"


def _phrasings(groups: list[Group], axis: str, templates) -> list[str]:
    """Every caption `templates(phrases, be, relations)` writes, with each size vocabulary (the main
    size words, their synonyms, none), without repeats."""
    captions = []
    for words in (SIZE_WORDS, SIZE_SYNONYMS, None):
        phrases = [_noun_phrase(group, words) for group in groups]
        captions += templates(phrases, [_be(group) for group in groups], RELATIONS[axis])
    return list(dict.fromkeys(captions))  # unsized phrasings repeat when no group has a size word


def _training_templates(phrases, be, relations) -> list[str]:
    before, after, in_order = relations
    there = f"there {be[0]}"
    if len(phrases) == 1:
        (a,) = phrases
        return [a, f"{there} {a}", f"a picture of {a}", f"{a} {be[0]} in the picture"]
    if len(phrases) == 2:
        a, b = phrases
        return [f"{a} {before} {b}", f"{b} {after} {a}", f"{there} {a} {before} {b}",
                f"{a} {be[0]} {before} {b}", f"{b} {be[1]} {after} {a}", f"a picture of {a} {before} {b}"]
    a, b, c = phrases
    return [f"{a}, {b} and {c} {in_order}", f"{a} {before} {b} and {c}", f"{c} {after} {a} and {b}",
            f"{b} between {a} and {c}", f"{b} {be[1]} between {a} and {c}"]


def _held_out_templates(phrases, be, relations) -> list[str]:
    """Word orders and clause structures that no split's captions use (fronted relations, "on the
    left ...", "with ... it", "first ..., then ..."), in words the training captions do use."""
    before, after, in_order = relations
    first_side, last_side = ("on the left", "on the right") if before == "to the left of" else ("at the top", "at the bottom")
    if len(phrases) == 1:
        (a,) = phrases
        return [f"this is {a}", f"an image of {a}", f"in the picture there {be[0]} {a}"]
    if len(phrases) == 2:
        a, b = phrases
        pronoun = "them" if be[1] == "are" else "it"
        return [f"{before} {b} there {be[0]} {a}", f"{first_side} {be[0]} {a} and {last_side} {be[1]} {b}",
                f"{b} with {a} {before} {pronoun}", f"{a} and {b} {in_order}"]
    a, b, c = phrases
    return [f"first {a}, then {b}, then {c}, {in_order}", f"between {a} and {c} there {be[1]} {b}",
            f"{first_side} {be[0]} {a} and {last_side} {be[2]} {c}, with {b} between them"]


def scene_captions(groups: list[Group], axis: str) -> list[str]:
    """All training phrasings of a scene: counts, sizes ("a big zebra", "a large zebra") and relative
    positions, in several clause structures, with and without size words. Every one is true of the layout
    `plan_scenes` draws."""
    return _phrasings(groups, axis, _training_templates)


def held_out_captions(groups: list[Group], axis: str) -> list[str]:
    """Phrasings of the same facts that no split uses (`test:unseen-phrasing`): new word orders and clause
    structures, in the training captions' words. None of them is ever a training phrasing of any scene."""
    return _phrasings(groups, axis, _held_out_templates)


def scene_groups(emoji_ids: list[int], boxes: list, captions: list[str], image_side: int) -> tuple[list[Group], str]:
    """(groups, axis) of a built scene, read back from its row: runs of the same emoji are a group, a box's
    side gives its size class, and the captions' relation words give the axis."""
    centres = {name: (low + high) / 2 * image_side for name, (low, high) in SIZE_RANGES.items()}
    groups: list[Group] = []
    for emoji_id, box in zip(emoji_ids, boxes):
        if groups and groups[-1].emoji_id == emoji_id:
            groups[-1] = Group(emoji_id, groups[-1].count + 1, groups[-1].size)
            continue
        side = box[2] - box[0]
        groups.append(Group(int(emoji_id), 1, min(centres, key=lambda name: abs(centres[name] - side))))
    vertical = [f" {word} " for word in RELATIONS["vertical"][:2]] + [RELATIONS["vertical"][2]]
    axis = "vertical" if any(word in f" {c} " for c in captions for word in vertical) else "horizontal"
    return groups, axis


def weighted(rng: random.Random, weights: dict):
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def novel_pairs(num_emoji: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(emoji ids in the subset, held-out pair mask over subset positions), from the seed."""
    rng = np.random.default_rng([seed, 0x5E7])
    catalogue_size = len(emoji_catalogue())
    if not 1 <= num_emoji <= catalogue_size:
        raise ValueError(f"num_emoji must be between 1 and {catalogue_size}, got {num_emoji}")
    subset = np.sort(rng.choice(catalogue_size, size=num_emoji, replace=False))
    held_out = np.zeros((num_emoji, num_emoji), dtype=bool)
    rows, cols = np.triu_indices(num_emoji, k=1)
    if rows.size:
        count = max(1, round(NOVEL_PAIR_FRACTION * rows.size))
        chosen = rng.choice(rows.size, size=count, replace=False)
        held_out[rows[chosen], cols[chosen]] = True
        held_out |= held_out.T
    return subset, held_out


def pick_emoji(rng: random.Random, kinds: int, held_out: np.ndarray, novel: bool) -> list[int]:
    """Subset positions of `kinds` distinct emoji whose pairs are all held out (novel) or all
    allowed (otherwise); fewer kinds when no such emoji remain."""
    candidates = np.flatnonzero(held_out.any(axis=1)) if novel else np.arange(held_out.shape[0])
    picked: list[int] = []
    while len(picked) < kinds and candidates.size:
        picked.append(int(candidates[rng.randrange(candidates.size)]))
        mask = held_out[picked[-1]].copy() if novel else ~held_out[picked[-1]]
        mask[picked] = False
        candidates = candidates[mask[candidates]]
    return picked


def _layout(rng: random.Random, sizes: list[int], axis: str, side: int) -> list[tuple[int, int, int, int]]:
    """Boxes in order along `axis`, not overlapping along it, near a shared random line."""
    free = side - sum(sizes) - 2 * _MARGIN - _GAP * (len(sizes) - 1)
    weights = [rng.random() for _ in range(len(sizes) + 1)]
    gaps = [int(free * w / sum(weights)) for w in weights]
    line = rng.uniform(0.2, 0.8) * side
    jitter = _PERPENDICULAR_JITTER * side
    boxes, along = [], _MARGIN
    for size, gap in zip(sizes, gaps):
        along += gap
        across = min(max(round(line + rng.uniform(-jitter, jitter) - size / 2), 0), side - size)
        boxes.append((along, across, along + size, across + size) if axis == "horizontal"
                     else (across, along, across + size, along + size))
        along += size + _GAP
    return boxes


def _sample_sizes(rng: random.Random, counts: list[int], side: int) -> tuple[list[str], list[int]]:
    """A size class per group and a pixel size per object that fit along one axis."""
    room = side - 2 * _MARGIN - _GAP * (sum(counts) - 1)
    for attempt in range(20):
        classes = [rng.choice(list(SIZE_RANGES)) if attempt < 19 else "small" for _ in counts]
        sizes = [round(rng.uniform(*SIZE_RANGES[cls]) * side) for cls, count in zip(classes, counts)
                 for _ in range(count)]
        if sum(sizes) <= room:
            return classes, sizes
    raise ValueError(f"image_size {side} is too small for {sum(counts)} emoji")


def _sample_scene(scene_id: str, rng: random.Random, subset, held_out, novel: bool, side: int) -> Scene:
    kinds = weighted(rng, _NOVEL_KIND_WEIGHTS if novel else _KIND_WEIGHTS)
    picked = pick_emoji(rng, kinds, held_out, novel)
    if len(picked) == 1:
        counts = [weighted(rng, _COUNT_WEIGHTS)]
    elif len(picked) == 2:
        counts = rng.choices([[1, 1], [2, 1], [1, 2]], weights=[0.6, 0.2, 0.2])[0]
    else:
        counts = [1] * len(picked)
    classes, sizes = _sample_sizes(rng, counts, side)
    groups = [Group(int(subset[p]), count, cls) for p, count, cls in zip(picked, counts, classes)]
    axis = rng.choice(["horizontal", "vertical"])
    boxes = _layout(rng, sizes, axis, side)
    captions = scene_captions(groups, axis)
    return Scene(
        scene_id=scene_id, groups=groups, axis=axis, boxes=boxes, captions=captions,
        caption=rng.choice(captions), voice=rng.choice(TRAIN_VOICES),
        rate=rng.randint(*RATE_RANGE), pitch=rng.randint(*PITCH_RANGE),
        background_seed=rng.getrandbits(63),
    )


def plan_scenes(
    *, seed: int = 0, num_emoji: int = DEFAULT_NUM_EMOJI, sizes: dict[str, int] | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> dict[str, list[Scene]]:
    """Every scene of a build, per split, without drawing or speaking anything (fast)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    subset, held_out = novel_pairs(num_emoji, seed)
    if sizes["test_novel"] and not held_out.any():
        raise ValueError("test_novel needs at least 2 emoji (num_emoji >= 2)")
    if not any(sizes[split] for split in SPLITS):
        raise ValueError(f"Every split size is 0 ({sizes}); ask for at least one scene.")
    plan = {}
    for split in (s for s in SPLITS if sizes[s]):  # a split of size 0 is left out, not saved empty
        plan[split] = [
            # one generator per scene (Python's: 10x cheaper per draw than numpy's), seeded by a
            # string, so a scene never depends on how many came before it
            _sample_scene(f"{split}-{i:07d}", random.Random(f"xmodal-scenes/{seed}/{split}/{i}"),
                          subset, held_out, split == "test_novel", image_size)
            for i in range(sizes[split])
        ]
    return plan
