"""Tokenizer: the default corpus, training, special tokens and template, caching, AutoTokenizer
loading, bad arguments, and fuzzing."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from xmodal.processing.tokenization_xmodal import (
    CAPTION_WORDS,
    NUMBER_WORDS,
    SPECIAL_TOKENS,
    default_corpus,
    emoji_names,
    load_default_tokenizer,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_default_tokenizer(cache_dir=tmp_path_factory.mktemp("cache"))


def test_default_corpus_is_deterministic_and_covers_caption_words():
    corpus = default_corpus()
    assert corpus == default_corpus()
    words = set(" ".join(corpus).split())
    required = ["a", "an", "and", "the", "to", "left", "right", "of", "above", "below", "next", "big", "small",
                "large", "tiny", "handwritten", "one", "two", "three", "zero", "nine"]
    assert set(required) <= words
    assert {"grinning", "face", "banana", "zebra"} <= words
    assert len(emoji_names()) > 1000


def test_special_tokens_match_the_decoder_config(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0, 1, 2, 3)
    assert tokenizer.model_max_length == 64
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]


def test_template_adds_bos_and_eos_and_lower_cases(tokenizer):
    ids = tokenizer("Two GRINNING faces to the left of a Piñata")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "two grinning faces to the left of a pinata"
    assert tokenizer("")["input_ids"] == [1, 2]
    pair = tokenizer("a cat", "a dog")["input_ids"]
    assert pair[0] == 1 and pair.count(2) == 2


def test_caption_words_are_single_tokens(tokenizer):
    for word in CAPTION_WORDS + NUMBER_WORDS + ["grinning", "banana", "zebra", "women", "knives"]:
        tokens = tokenizer.tokenize(word)
        assert tokens == [word], (word, tokens)


def test_corpus_sentences_round_trip_without_unknowns(tokenizer):
    for sentence in default_corpus()[::97]:
        ids = tokenizer(sentence)["input_ids"]
        assert tokenizer.unk_token_id not in ids, sentence
        normalized = tokenizer.backend_tokenizer.normalizer.normalize_str(sentence)
        assert tokenizer.decode(ids, skip_special_tokens=True) == normalized


def test_truncation_keeps_eos(tokenizer):
    ids = tokenizer("cat " * 10_000, truncation=True)["input_ids"]
    assert len(ids) == 64 and ids[-1] == tokenizer.eos_token_id


def test_padding_is_right_with_pad_id_zero(tokenizer):
    batch = tokenizer(["a cat", "two big bananas above a zebra"], padding=True)
    assert batch["input_ids"][0][-1] == 0 and batch["attention_mask"][0][-1] == 0


def test_cache_is_reused(tmp_path):
    first = load_default_tokenizer(cache_dir=tmp_path)
    folders = list((tmp_path / "tokenizer").iterdir())
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()
    second = load_default_tokenizer(cache_dir=tmp_path)
    assert second.get_vocab() == first.get_vocab()
    assert list((tmp_path / "tokenizer").iterdir()) == folders


def test_train_save_and_auto_tokenizer(tmp_path):
    texts = ["a red apple", "two green apples", "the apple is left of the pear"] * 3
    trained = train_tokenizer(texts, vocab_size=100, save_dir=tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in texts + ["an unseen word!"]:
        assert loaded(text)["input_ids"] == trained(text)["input_ids"]
    assert len(loaded) <= 100 and loaded.eos_token == "[EOS]"


def test_training_is_deterministic():
    texts = default_corpus()[:500]
    first = train_tokenizer(texts, vocab_size=300)
    assert first.get_vocab() == train_tokenizer(list(reversed(texts)), vocab_size=300).get_vocab()
    assert len(first) == 300


def test_vocabulary_order_and_fallback():
    tokenizer = train_tokenizer(["bag a a", "bag cat", "sea"], vocab_size=100)
    vocab = tokenizer.get_vocab()
    assert sorted(vocab, key=vocab.get)[:4] == SPECIAL_TOKENS
    assert vocab["a"] < vocab["##a"] < vocab["bag"]
    assert tokenizer.tokenize("bags") == ["bag", "##s"]
    assert tokenizer.tokenize("cab") == ["c", "##a", "##b"]
    assert tokenizer.tokenize("xyz") == ["[UNK]"]


@pytest.mark.parametrize("texts, vocab_size", [([], 100), ("one string", 100), ([1, 2], 100), (["a b"], 3),
                                               (["a b"], "big")])
def test_bad_training_arguments(texts, vocab_size):
    with pytest.raises(ValueError):
        train_tokenizer(texts, vocab_size=vocab_size)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_any_text_encodes_within_limits(text):
    tokenizer = test_fuzz_any_text_encodes_within_limits.tokenizer
    ids = tokenizer(text, truncation=True)["input_ids"]
    assert 2 <= len(ids) <= 64 and ids[0] == 1 and ids[-1] == 2
    assert all(0 <= i < len(tokenizer) for i in ids)
    assert isinstance(tokenizer.decode(ids), str)


@pytest.fixture(autouse=True, scope="module")
def _share_tokenizer_with_fuzz(tokenizer):
    test_fuzz_any_text_encodes_within_limits.tokenizer = tokenizer
