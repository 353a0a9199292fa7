"""Planning the emoji video clips: who enters, moves, grows, shrinks and leaves, when, and the captions.

Pure logic, no drawing or speaking: a plan is a function of its parameters (one seeded generator
per clip), so the renderer in `video_scenes` only has to follow it. Geometry is in pixels of a
square frame (y grows downwards); an emoji off the frame simply has no visible box, so "not yet
entered" and "has left" need no flags. `test_novel` reuses the still scenes' held-out emoji pairs
(`scene_plan.novel_pairs`), so for one seed the same pairs are novel in images and in videos.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .emoji_assets import emoji_catalogue, indefinite_article
from .scene_plan import DEFAULT_IMAGE_SIZE, DEFAULT_NUM_EMOJI, SIZE_RANGES, SPLITS, pick_emoji, weighted, novel_pairs
from .speech import PITCH_RANGE, RATE_RANGE, SAMPLING_RATE, TRAIN_VOICES

VIDEO_DATA_VERSION = 1  # bump when a change alters the output of an unchanged call
FPS = 8
DEFAULT_VIDEO_SIZES = {"train": 2_000, "validation": 200, "test": 200, "test_novel": 200}

# What an event says, by (action, direction): the one vocabulary of captions and narration.
EVENT_PHRASES = {
    ("enter", "left"): "enters from the left", ("enter", "right"): "enters from the right",
    ("enter", "top"): "enters from the top", ("enter", "bottom"): "enters from the bottom",
    ("move", "left"): "moves left", ("move", "right"): "moves right",
    ("move", "up"): "moves up", ("move", "down"): "moves down",
    ("grow", None): "grows", ("shrink", None): "shrinks",
    ("leave", "left"): "leaves to the left", ("leave", "right"): "leaves to the right",
    ("leave", "top"): "leaves through the top", ("leave", "bottom"): "leaves through the bottom",
}
ACTIONS = ("enter", "move", "grow", "shrink", "leave")
# Unit steps in image coordinates: edges (where an emoji enters from or leaves through) and moves.
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "up": (0, -1), "down": (0, 1)}
EDGES = ("left", "right", "top", "bottom")
MOVES = ("left", "right", "up", "down")
SIZE_ORDER = ("small", "medium", "big")  # the keys of scene_plan.SIZE_RANGES, smallest first
EVENT_CAPTION = "{sentence} at {start:g} s"
CLIP_CAPTION = "{names}: {events}"
THEN = ", then "

DURATIONS = tuple(4.0 + 0.5 * i for i in range(9))  # 4 to 8 s
TIME_STEP = 0.5  # event starts and ends lie on this grid, so captions read "at 2.5 s"
MOTION_SECONDS = (1.0, 1.5)
MAX_EVENTS = 5
_KIND_WEIGHTS = {1: 0.3, 2: 0.45, 3: 0.25}  # distinct emoji per clip
_NOVEL_KIND_WEIGHTS = {2: 0.7, 3: 0.3}
_ACTION_WEIGHTS = {"move": 0.4, "grow": 0.2, "shrink": 0.2, "leave": 0.2}  # for an emoji in view
_OFF_AT_START = 0.4  # chance that an emoji is off the frame at first (its first event enters it)
_MIN_MOVE = 0.2  # shortest move, as a fraction of the side
# eSpeak's seconds per character at 60 words per minute, measured over 300 event sentences: median
# 0.16, worst 0.22. Events are spaced by the median (a longer sentence delays the next one a little,
# see `place_utterances`) and a clip is long enough for the worst, so no sentence is ever cut.
_SPEECH_SECONDS_PER_CHAR = {"typical": 0.16 * 60, "longest": 0.22 * 60}


# ---------------------------------------------------------------------------------------
# Clips and events
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One change of one emoji between `start` and `end` (seconds); `before` and `after` are its
    (centre x, centre y, side) in pixels, interpolated linearly in between."""

    emoji_index: int  # position in the clip's `emoji_ids`
    action: str
    direction: str | None
    start: float
    end: float
    before: tuple[float, float, float]
    after: tuple[float, float, float]
    sentence: str  # "a dog enters from the left": what the narration says at `start`

    @property
    def caption(self) -> str:
        return EVENT_CAPTION.format(sentence=self.sentence, start=self.start)


@dataclass
class Clip:
    """Everything a video row is made from."""

    clip_id: str
    emoji_ids: list[int]
    initial: list[tuple[float, float, float]]  # each emoji's (cx, cy, side) at t = 0
    events: list[Event]
    duration: float
    fps: int
    image_size: int
    caption: str
    background: tuple[int, int, int]
    voice: str
    rate: int
    pitch: int

    @property
    def num_frames(self) -> int:
        return round(self.duration * self.fps)

    @property
    def num_samples(self) -> int:
        return round(self.duration * SAMPLING_RATE)


def _noun(emoji_id: int) -> str:
    name = emoji_catalogue()[emoji_id].name
    return f"{indefinite_article(name)} {name}"


def clip_caption(emoji_ids: list[int], events: list[Event]) -> str:
    """"a dog and a cat: the dog enters from the left, then the cat grows"."""
    nouns = [_noun(i) for i in emoji_ids]
    names = nouns[0] if len(nouns) == 1 else f"{', '.join(nouns[:-1])} and {nouns[-1]}"
    said = [f"the {emoji_catalogue()[emoji_ids[e.emoji_index]].name} {EVENT_PHRASES[e.action, e.direction]}"
            for e in events]
    return CLIP_CAPTION.format(names=names, events=THEN.join(said))


# ---------------------------------------------------------------------------------------
# Geometry: where each emoji is at any time
# ---------------------------------------------------------------------------------------
def state_at(clip: Clip, emoji_index: int, t: float) -> tuple[float, float, float]:
    """(cx, cy, side) of one emoji at time `t`: its last event's end state, or the interpolation
    inside the event running at `t`."""
    state = clip.initial[emoji_index]
    for event in clip.events:
        if event.emoji_index != emoji_index or event.start > t:
            continue
        if t >= event.end:
            state = event.after
        else:
            p = (t - event.start) / (event.end - event.start)
            return tuple(a + p * (b - a) for a, b in zip(event.before, event.after))
    return state


def pixel_box(state: tuple[float, float, float]) -> tuple[int, int, int, int]:
    """The integer sprite box (x0, y0, x1, y1) of a state; it may reach past the frame."""
    cx, cy, side = state
    size = max(1, round(side))
    x0, y0 = round(cx - size / 2), round(cy - size / 2)
    return x0, y0, x0 + size, y0 + size


def visible_box(box: tuple[int, int, int, int], image_size: int) -> list[int] | None:
    """`box` clipped to the frame; None when nothing of it is in view."""
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], image_size), min(box[3], image_size)
    return [x0, y0, x1, y1] if x0 < x1 and y0 < y1 else None


def frame_boxes(clip: Clip) -> list[list[list[int] | None]]:
    """Per frame, per emoji: the visible box in pixels, or None while the emoji is off the frame."""
    return [[visible_box(pixel_box(state_at(clip, e, i / clip.fps)), clip.image_size)
             for e in range(len(clip.emoji_ids))] for i in range(clip.num_frames)]


def _off_frame(state, edge: str, side: int) -> tuple[float, float, float]:
    """`state` pushed along `edge`'s axis until its box just leaves the frame there."""
    cx, cy, size = state
    dx, dy = DIRECTIONS[edge]
    if dx:
        cx = -size / 2 if dx < 0 else side + size / 2
    else:
        cy = -size / 2 if dy < 0 else side + size / 2
    return cx, cy, size


def _inside(rng: random.Random, size: float, side: int) -> tuple[float, float, float]:
    return rng.uniform(size / 2, side - size / 2), rng.uniform(size / 2, side - size / 2), size


def _room(state, direction: str, side: int) -> float:
    """Pixels the box can travel towards `direction` and stay whole in the frame."""
    cx, cy, size = state
    dx, dy = DIRECTIONS[direction]
    centre = cx if dx else cy
    step = dx or dy
    return side - size / 2 - centre if step > 0 else centre - size / 2


def _size_class(size: float, side: int) -> str:
    return min(SIZE_ORDER, key=lambda name: abs(sum(SIZE_RANGES[name]) / 2 * side - size))


def _options(state, side: int, in_view: bool) -> dict[tuple[str, str | None], float]:
    """Feasible (action, direction) choices with their weights: off the frame, only entering."""
    if not in_view:
        return {("enter", edge): 1.0 for edge in EDGES}
    options = {("move", d): _ACTION_WEIGHTS["move"] / 4 for d in MOVES if _room(state, d, side) >= _MIN_MOVE * side}
    size_class = SIZE_ORDER.index(_size_class(state[2], side))
    if size_class < len(SIZE_ORDER) - 1:
        options["grow", None] = _ACTION_WEIGHTS["grow"]
    if size_class > 0:
        options["shrink", None] = _ACTION_WEIGHTS["shrink"]
    options.update({("leave", edge): _ACTION_WEIGHTS["leave"] / 4 for edge in EDGES})
    return options


def _motion(rng: random.Random, state, action: str, direction: str | None, side: int):
    """(before, after) states of an action: entering runs from just off its edge to a place inside
    (an emoji off the frame may wait anywhere: it is unseen), leaving the reverse; a move keeps the
    box whole; a size change picks a new size class and keeps the centre where the box fits."""
    cx, cy, size = state
    if action == "enter":
        inside = _inside(rng, size, side)
        return _off_frame(inside, direction, side), inside
    if action == "leave":
        return state, _off_frame(state, direction, side)
    if action == "move":
        dx, dy = DIRECTIONS[direction]
        distance = rng.uniform(_MIN_MOVE * side, _room(state, direction, side))
        return state, (cx + dx * distance, cy + dy * distance, size)
    index = SIZE_ORDER.index(_size_class(size, side)) + (1 if action == "grow" else -1)
    new_class = rng.choice(SIZE_ORDER[index:] if action == "grow" else SIZE_ORDER[: index + 1])
    new = rng.uniform(*SIZE_RANGES[new_class]) * side
    return state, (min(max(cx, new / 2), side - new / 2), min(max(cy, new / 2), side - new / 2), new)


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------
def speech_seconds_estimate(sentence: str, rate: int, bound: str = "longest") -> float:
    """How long eSpeak takes to say `sentence` at `rate` words per minute: "typical" or "longest"."""
    return len(sentence) * _SPEECH_SECONDS_PER_CHAR[bound] / rate


def _on_grid(seconds: float) -> float:
    return math.ceil(seconds / TIME_STEP - 1e-9) * TIME_STEP


def place_utterances(starts: list[float], lengths: list[int], total: int,
                     sampling_rate: int = SAMPLING_RATE) -> list[tuple[int, int]]:
    """(first, end) sample of each utterance in a track of `total` samples: at its event's start,
    or later when the one before is still speaking; cut at the track's end (rare: see the plan)."""
    placed, free = [], 0
    for start, length in zip(starts, lengths):
        first = min(max(round(start * sampling_rate), free), total)
        free = min(first + length, total)
        placed.append((first, free))
    return placed


def _sample_events(rng: random.Random, emoji_ids: list[int], side: int, rate: int):
    """(initial states, events, duration), or None when the first event of every emoji does not
    fit in the longest clip with its sentence said in time."""
    count = len(emoji_ids)
    sizes = [rng.uniform(*SIZE_RANGES[rng.choice(SIZE_ORDER)]) * side for _ in emoji_ids]
    states = [_inside(rng, size, side) for size in sizes]
    states = [_off_frame(s, rng.choice(EDGES), side) if rng.random() < _OFF_AT_START else s for s in states]
    initial = list(states)
    duration = rng.choice(DURATIONS)
    first_turns = rng.sample(range(count), count)  # every emoji acts at least once
    events, t, said = [], rng.choice((0.0, TIME_STEP)), 0.0  # said: when the narration is done at the latest
    while len(events) < MAX_EVENTS:
        required = len(events) < count
        who = first_turns[len(events)] if required else rng.randrange(count)
        in_view = visible_box(pixel_box(states[who]), side) is not None
        action, direction = weighted(rng, _options(states[who], side, in_view))
        sentence = f"{_noun(emoji_ids[who])} {EVENT_PHRASES[action, direction]}"
        motion = rng.choice(MOTION_SECONDS)
        slot = _on_grid(max(motion, speech_seconds_estimate(sentence, rate, "typical")))
        done = max(t + motion, max(t, said) + speech_seconds_estimate(sentence, rate))
        if done > duration:
            if not required:
                break
            if done > DURATIONS[-1]:
                return None
            duration = _on_grid(done)
        said = max(t, said) + speech_seconds_estimate(sentence, rate)
        before, after = _motion(rng, states[who], action, direction, side)
        events.append(Event(who, action, direction, t, t + motion, before, after, sentence))
        states[who] = after
        t += slot + rng.choice((0.0, 0.0, TIME_STEP))
    return initial, events, duration


def _sample_clip(clip_id: str, rng: random.Random, subset, held_out, novel: bool, side: int) -> Clip:
    for _ in range(100):
        picked = pick_emoji(rng, weighted(rng, _NOVEL_KIND_WEIGHTS if novel else _KIND_WEIGHTS), held_out, novel)
        emoji_ids = [int(subset[p]) for p in picked]
        rate = rng.randint(*RATE_RANGE)
        sampled = _sample_events(rng, emoji_ids, side, rate)
        if sampled is not None:  # else long names said slowly: draw the clip again
            initial, events, duration = sampled
            return Clip(
                clip_id=clip_id, emoji_ids=emoji_ids, initial=initial, events=events, duration=duration, fps=FPS,
                image_size=side, caption=clip_caption(emoji_ids, events),
                background=tuple(rng.randrange(256) for _ in range(3)), voice=rng.choice(TRAIN_VOICES),
                rate=rate, pitch=rng.randint(*PITCH_RANGE),
            )
    raise RuntimeError(f"could not plan {clip_id}: emoji names too long to narrate within {DURATIONS[-1]} s")


def plan_video_clips(
    *, seed: int = 0, num_emoji: int = DEFAULT_NUM_EMOJI, sizes: dict[str, int] | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> dict[str, list[Clip]]:
    """Every clip of a build, per split, without drawing or speaking (fast); splits of size 0 are left out."""
    sizes = {**DEFAULT_VIDEO_SIZES, **(sizes or {})}
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    subset, held_out = novel_pairs(num_emoji, seed)
    if sizes["test_novel"] and not held_out.any():
        raise ValueError("test_novel needs at least 2 emoji (num_emoji >= 2)")
    if not any(sizes[split] for split in SPLITS):
        raise ValueError(f"Every split size is 0 ({sizes}); ask for at least one clip.")
    return {
        split: [_sample_clip(f"{split}-{i:07d}", random.Random(f"xmodal-video/{seed}/{split}/{i}"),
                             subset, held_out, split == "test_novel", image_size) for i in range(sizes[split])]
        for split in SPLITS if sizes[split]
    }
