"""Retrieval split into which objects and which arrangement (`object_sets`), on hand-made similarities."""

import pytest
import torch

from xmodal.trainers.object_sets import object_set_metrics


def test_objects_and_details_are_scored_apart():
    # four scenes, three with the same two objects (listed in any order, repeats ignored) and one with another
    objects = [[1, 2], [2, 1], [1, 2, 2], [3]]
    image = torch.eye(4)  # text @ image.T is then the text rows themselves
    text = torch.tensor([[0.9, 0.5, 0.1, 0.95],  # top image has the wrong objects; beats both look-alikes
                         [0.8, 0.7, 0.2, 0.0],  # right objects, wrong scene; beats one look-alike of two
                         [0.3, 0.3, 0.3, 0.0],  # ties: the first is taken (right objects), each tie counts half
                         [0.0, 0.0, 0.0, 1.0]])  # nothing else has its objects: no pair to compare
    metrics = object_set_metrics({"text": text, "image": image}, lambda q, g: torch.eye(4, dtype=torch.bool), objects)
    # against other objects: text 0 loses to scene 3, texts 1 and 2 beat it, text 3 beats all three others
    assert metrics == pytest.approx({"text_to_image_R@1_objects": 3 / 4, "text_to_image_objects_pairwise": 5 / 6,
                                     "text_to_image_details_pairwise": 4 / 6})


def test_a_scene_the_caption_is_also_true_of_is_no_distractor():
    objects = [[1, 2], [1, 2]]
    text, image = torch.tensor([[0.1, 0.9], [0.0, 1.0]]), torch.eye(2)
    both = torch.ones(2, 2, dtype=torch.bool)  # each caption is true of both scenes
    metrics = object_set_metrics({"text": text, "image": image, "audio": text}, lambda q, g: both, objects)
    assert metrics == {"text_to_image_R@1_objects": 1.0, "audio_to_image_R@1_objects": 1.0}
