"""Composition: does the model read a caption, or a bag of its words?

For every two-object scene caption ("a big cat to the left of a dog"), false captions that differ from
it in one way only: the two objects swapped ("a dog to the left of a big cat"), the relation turned
round ("a big cat to the right of a dog"), the first object's count or size changed ("two ..." <->
"three ...", "big" <-> "small"). A model reads the caption when it prefers the true one: the accuracy
is the share of (image, true, false) triples where the true caption scores higher, by the contrastive
similarity and by the matching head. A bag-of-words model sits near 0.5 on the swaps (Yuksekgonul et
al., ICLR 2023). The captions come from the scene generator's phrasings (`processing.scene_plan`);
captions of one or three objects, or in other phrasings, are left out.
"""

import random

import torch
from xmodal.processing.scene_plan import NUMBER_WORDS, RELATIONS, SIZE_SYNONYMS, SIZE_WORDS

KINDS = ("swap_objects", "swap_relation", "count", "size")
_COUNTS = {word: other for word, other in zip(NUMBER_WORDS.values(), list(NUMBER_WORDS.values())[::-1])}
_SIZES = {"big": "small", "small": "big", "large": "little", "little": "large"}
_PREFIXES = ("there is ", "there are ", "a picture of ")
_VERBS = (" is", " are")
assert set(_SIZES) == {word for table in (SIZE_WORDS, SIZE_SYNONYMS) for word in table.values() if word}, \
    "a size word without its opposite"


def _plural(phrase):
    return phrase.split(" ", 1)[0] in _COUNTS


def _noun_phrase(phrase):
    """Starts as the generator's noun phrases do: an article or a count word ("it", "" do not)."""
    return phrase.split(" ", 1)[0] in ("a", "an", *_COUNTS)


def _agree(prefix, verb, phrase):
    """The prefix ("there is") and verb (" is") that agree with a new first noun phrase."""
    if prefix.startswith("there "):
        prefix = "there are " if _plural(phrase) else "there is "
    if verb:
        verb = " are" if _plural(phrase) else " is"
    return prefix, verb


def caption_variants(caption):
    """{kind: false caption} for a two-object caption "[there is|are|a picture of] A [is|are] <relation> B";
    {} for any other."""
    for before, after, _ in RELATIONS.values():
        for relation, opposite in ((before, after), (after, before)):
            parts = caption.split(f" {relation} ")
            if len(parts) != 2:
                continue
            first, second = parts
            prefix = next((p for p in _PREFIXES if first.startswith(p)), "")
            verb = next((v for v in _VERBS if first.endswith(v)), "")
            first = first[len(prefix):len(first) - len(verb)]
            if (first == second or not _noun_phrase(first) or not _noun_phrase(second) or " and " in second
                    or "," in first or " with " in first):
                return {}
            swapped_prefix, swapped_verb = _agree(prefix, verb, second)
            variants = {
                "swap_objects": f"{swapped_prefix}{second}{swapped_verb} {relation} {first}",
                "swap_relation": f"{prefix}{first}{verb} {opposite} {second}",
            }
            words = first.split(" ")
            if words[0] in _COUNTS:  # "two big cats" -> "three big cats"
                variants["count"] = f"{prefix}{' '.join([_COUNTS[words[0]], *words[1:]])}{verb} {relation} {second}"
            if len(words) > 1 and words[1] in _SIZES:  # the word after the article or count is its size
                changed = [words[0], _SIZES[words[1]], *words[2:]]
                variants["size"] = f"{prefix}{' '.join(changed)}{verb} {relation} {second}"
            return variants
    return {}


def false_caption(caption, seed):
    """One false variant of `caption`, its kind drawn by `seed` (a training hard negative), or None when it has
    none."""
    variants = caption_variants(caption)
    if not variants:
        return None
    return variants[random.Random(seed).choice(sorted(variants))]


def preference_accuracy(true_scores, false_scores):
    """Share of pairs in which the true caption scores strictly higher than its false variant."""
    true_scores, false_scores = torch.as_tensor(true_scores), torch.as_tensor(false_scores)
    return float((true_scores > false_scores).float().mean())


def composition_triples(captions):
    """[(row, true caption, kind, false caption)] for the rows whose caption has variants."""
    return [(row, caption, kind, false) for row, caption in enumerate(captions)
            for kind, false in caption_variants(caption).items()]


@torch.no_grad()
def composition_metrics(triples, image_embeds, embed_texts, match_probability=None, batch_size=256):
    """Accuracy of preferring the true caption, per kind: `composition_<kind>_contrastive` from the
    similarity of `image_embeds[row]` (normalised) with `embed_texts(texts)`, `composition_<kind>_matching`
    from `match_probability(rows, texts)` (the matching head's P(match)), and `composition_<kind>_pairs`."""
    metrics = {}
    for kind in KINDS:
        chosen = [t for t in triples if t[2] == kind]
        if not chosen:
            continue
        scores = {"contrastive": ([], [])}
        if match_probability is not None:
            scores["matching"] = ([], [])
        for start in range(0, len(chosen), batch_size):
            rows = [t[0] for t in chosen[start:start + batch_size]]
            for index, texts in enumerate(([t[1] for t in chosen[start:start + batch_size]],
                                           [t[3] for t in chosen[start:start + batch_size]])):
                if image_embeds is not None:
                    similarity = (image_embeds[rows] * embed_texts(texts)).sum(-1)
                    scores["contrastive"][index].append(similarity.float())
                if match_probability is not None:
                    scores["matching"][index].append(match_probability(rows, texts).float())
        for name, (true_parts, false_parts) in scores.items():
            if true_parts:
                metrics[f"composition_{kind}_{name}"] = preference_accuracy(torch.cat(true_parts),
                                                                            torch.cat(false_parts))
        metrics[f"composition_{kind}_pairs"] = len(chosen)
    return metrics
