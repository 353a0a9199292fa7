"""A small WordPiece tokenizer for XModal captions, built with `tokenizers`.

Captions are short English phrases built from emoji names, number words and spatial words, so
a lower-casing WordPiece model whose vocabulary holds every caption word whole (with suffix and
character pieces for anything else) keeps sequences short. A post-processor template adds
`[BOS] ... [EOS]`, so encoded targets end with EOS. Special token ids match
`XModalDecoderConfig`: `[PAD]`=0, `[BOS]`=1, `[EOS]`=2, `[UNK]`=3.

Any other tokenizer loadable with `AutoTokenizer` works with `XModalProcessor` as well.
"""

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
DEFAULT_VOCAB_SIZE = 4096
DEFAULT_MAX_LENGTH = 64  # XModalTextConfig.max_position_embeddings
_FORMAT_VERSION = 2  # bump when training settings change, so stale caches are not reused

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
CAPTION_WORDS = [
    "a", "an", "and", "the", "to", "of", "on", "in", "at", "with", "is", "are", "there", "it", "this",
    "left", "right", "above", "below", "next", "beside", "near", "between", "under", "over", "top",
    "bottom", "middle", "center", "corner", "big", "small", "large", "tiny", "huge", "little",
    "medium", "from", "handwritten", "digit", "number", "emoji", "image", "picture", "photo", "drawing",
]
SUFFIXES = ["s", "es", "ed", "ing", "er", "ers", "ly", "y", "ies", "est"]
PUNCTUATION = ". , ! ? ; : ' \" - ( ) [ ] & # * + / % @ $"
# Blocks of the emoji that have single code points; names come from `unicodedata` (stdlib).
_EMOJI_BLOCKS = [(0x2600, 0x27BF), (0x1F300, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF)]


def emoji_names():
    """Sorted, de-duplicated lower-case emoji names: CLDR names from `emoji` (if installed) + Unicode names."""
    names = set()
    try:
        import emoji

        names.update(data["en"].strip(":").replace("_", " ") for data in emoji.EMOJI_DATA.values())
    except ImportError:
        pass
    for low, high in _EMOJI_BLOCKS:
        for code_point in range(low, high + 1):
            name = unicodedata.name(chr(code_point), "")
            if name and not name.startswith("CJK"):
                names.add(name)
    return sorted({" ".join(re.findall(r"[^\W_]+", name.lower())) for name in names} - {""})


def _plural_function():
    """The scene captions' own pluralizer ("men", "knives") when present; else append "s"."""
    try:
        from .emoji_assets import pluralize

        return pluralize
    except ImportError:
        return lambda name: name if name.endswith("s") else name + "s"


def default_corpus():
    """Deterministic caption-like sentences covering the vocabulary of the built-in data."""
    return list(_default_corpus())


@functools.lru_cache(maxsize=1)
def _default_corpus():
    names, plural = emoji_names(), _plural_function()
    corpus = [" ".join(CAPTION_WORDS), " ".join(NUMBER_WORDS), " ".join(str(d) for d in range(10)), PUNCTUATION]
    relations = ["to the left of", "to the right of", "above", "below", "next to"]
    sizes = ["big", "small", "large", "tiny"]
    for index, name in enumerate(names):
        other = names[(index * 7 + 3) % len(names)]
        count = NUMBER_WORDS[1 + index % 3]
        corpus.append(f"a {name}")
        corpus.append(f"{count} {plural(name)} and an {other}")
        corpus.append(f"the {sizes[index % 4]} {name} {relations[index % 5]} the {other}")
    for digit, word in enumerate(NUMBER_WORDS[:10]):
        corpus.append(f"a handwritten {word}")
        corpus.append(f"the handwritten digit {digit} next to a {word}")
    return tuple(corpus)


def _word_counts(texts, normalizer, pre_tokenizer):
    counts = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def build_vocabulary(counts, vocab_size, min_frequency=1):
    """Special tokens, every character (alone and as a `##` continuation), common suffixes, then
    whole words by falling count (ties alphabetical), up to `vocab_size` entries in all.

    Deterministic by construction: `tokenizers`' own trainers break frequency ties in hash-map
    order, and two runs on the same corpus gave different vocabularies, while the default
    tokenizer must give the same ids on every machine that rebuilds it.
    """
    alphabet = sorted(set("".join(counts)))
    pieces = alphabet + [f"##{c}" for c in alphabet]
    pieces += [f"##{s}" for s in SUFFIXES if set(s) <= set(alphabet)]
    base = list(dict.fromkeys(SPECIAL_TOKENS + pieces))
    if vocab_size < len(base):
        raise ValueError(f"vocab_size={vocab_size} is below the {len(base)} special tokens and characters "
                         "this corpus needs.")
    taken = set(base)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    words = [word for word, count in ranked if count >= min_frequency and word not in taken]
    return {token: index for index, token in enumerate(base + words[: vocab_size - len(base)])}


def train_tokenizer(texts, vocab_size=DEFAULT_VOCAB_SIZE, save_dir=None, model_max_length=DEFAULT_MAX_LENGTH,
                    min_frequency=1):
    """Build a lower-casing WordPiece tokenizer from `texts`; save it to `save_dir` if given.

    Words seen at least `min_frequency` times become single tokens (most frequent first); other
    words fall back to suffix and character pieces. Returns a `PreTrainedTokenizerFast`, loadable
    again with `AutoTokenizer.from_pretrained(save_dir)`.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, not one string.")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty iterable of strings.")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an int, got {vocab_size!r}.")
    normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.Whitespace()
    vocab = build_vocabulary(_word_counts(texts, normalizer, pre_tokenizer), vocab_size, min_frequency)
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    bos, eos = vocab["[BOS]"], vocab["[EOS]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", pair="[BOS] $A [EOS] $B:1 [EOS]:1", special_tokens=[("[BOS]", bos), ("[EOS]", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]",
        model_max_length=model_max_length, padding_side="right", truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )
    if save_dir is not None:
        fast.save_pretrained(save_dir)
    return fast


def default_cache_dir():
    """`$XMODAL_CACHE` or `~/.cache/xmodal`."""
    return Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal"))


def load_default_tokenizer(cache_dir=None):
    """The tokenizer trained on `default_corpus()`, cached under `<cache>/tokenizer/<corpus hash>`.

    The hash covers the corpus and the settings, so a different `emoji` version gets its own
    entry (and possibly other ids: a trained model's folder should carry its own tokenizer, as
    `XModalProcessor.save_pretrained` does). Writes are atomic renames, safe across processes.
    """
    corpus = default_corpus()
    settings = {"version": _FORMAT_VERSION, "vocab_size": DEFAULT_VOCAB_SIZE, "max_length": DEFAULT_MAX_LENGTH}
    digest = hashlib.sha256(json.dumps([settings, corpus]).encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / "tokenizer" / digest
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = train_tokenizer(corpus)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-")
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    except OSError:  # read-only home: use the tokenizer without caching it
        pass
    return tokenizer


__all__ = ["train_tokenizer", "load_default_tokenizer", "default_corpus", "emoji_names", "SPECIAL_TOKENS"]
