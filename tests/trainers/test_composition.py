"""Composition metrics: false captions that differ from the true one in one way, and the accuracy of preferring
the true one, on hand-made cases with known answers."""

import pytest
import torch

from xmodal.trainers.composition import caption_variants, composition_metrics, composition_triples, preference_accuracy


@pytest.mark.parametrize("caption, expected", [
    ("a big cat to the left of a dog", {
        "swap_objects": "a dog to the left of a big cat",
        "swap_relation": "a big cat to the right of a dog",
        "size": "a small cat to the left of a dog"}),
    ("there are two small bananas above a zebra", {
        "swap_objects": "there is a zebra above two small bananas",
        "swap_relation": "there are two small bananas below a zebra",
        "count": "there are three small bananas above a zebra",
        "size": "there are two big bananas above a zebra"}),
    ("three dogs to the right of an owl", {
        "swap_objects": "an owl to the right of three dogs",
        "swap_relation": "three dogs to the left of an owl",
        "count": "two dogs to the right of an owl"}),
    ("two little cats are to the left of a dog", {  # the verb agrees with the new first noun phrase
        "swap_objects": "a dog is to the left of two little cats",
        "swap_relation": "two little cats are to the right of a dog",
        "count": "three little cats are to the left of a dog",
        "size": "two large cats are to the left of a dog"}),
    ("a picture of a large owl above two dogs", {
        "swap_objects": "a picture of two dogs above a large owl",
        "swap_relation": "a picture of a large owl below two dogs",
        "size": "a picture of a little owl above two dogs"}),
    ("a right anger bubble below a cat", {  # "right" in a name is not a relation
        "swap_objects": "a cat below a right anger bubble",
        "swap_relation": "a right anger bubble above a cat"}),
])
def test_variants_of_two_object_captions(caption, expected):
    assert caption_variants(caption) == expected


@pytest.mark.parametrize("caption", [
    "a cat", "there are two cats", "a cat, a dog and an owl from left to right", "a cat to the left of a dog and an owl",
    "an owl between a cat and a dog", "a cat to the left of a cat", "a picture of a cat",
    "a dog with a cat to the left of it", "to the left of a dog there is a cat",  # held-out phrasings
])
def test_other_captions_have_no_variants(caption):
    assert caption_variants(caption) == {}


def test_every_variant_of_a_generated_scene_is_false_of_it(tiny_scenes):
    split = tiny_scenes["test"]
    triples = composition_triples(split["caption"])
    assert {kind for _, _, kind, _ in triples} >= {"swap_objects", "swap_relation"}
    for row, caption, kind, false in triples:
        assert caption in split[row]["captions"]
        assert false not in split[row]["captions"], (caption, kind, false)


def test_preference_accuracy_counts_strict_wins():
    assert preference_accuracy([0.9, 0.2, 0.5], [0.1, 0.3, 0.5]) == pytest.approx(1 / 3)


def test_composition_metrics_from_known_scores():
    captions = ["a cat to the left of a dog", "two owls above a zebra", "a cat"]
    triples = composition_triples(captions)
    assert [t[0] for t in triples] == [0, 0, 1, 1, 1]  # the one-object caption gives none
    images = torch.eye(4)
    truth = {caption: index for index, caption in enumerate(captions)}

    def embed_texts(texts):  # a true caption lies on its image's axis, a false one on the spare axis
        return torch.stack([images[truth[t]] if t in truth else images[3] for t in texts])

    metrics = composition_metrics(triples, images, embed_texts, match_probability=lambda rows, texts: torch.tensor(
        [0.2 if t in truth else 0.8 for t in texts]))  # a matching head that prefers every false caption
    assert metrics == {"composition_swap_objects_contrastive": 1.0, "composition_swap_objects_matching": 0.0,
                       "composition_swap_objects_pairs": 2, "composition_swap_relation_contrastive": 1.0,
                       "composition_swap_relation_matching": 0.0, "composition_swap_relation_pairs": 2,
                       "composition_count_contrastive": 1.0, "composition_count_matching": 0.0,
                       "composition_count_pairs": 1}
