"""Metric functions on hand-made inputs with known answers."""

import numpy as np
import pytest
import torch

from xmodal.trainers.metrics import (
    caption_relevance,
    closest_reference_error_rates,
    error_rates,
    make_compute_metrics,
    matching_metrics,
    recall_at_k,
    retrieval_metrics,
)


def test_recall_at_k_known_ranks():
    # Query 0 ranks its match first, query 1 second, query 2 third.
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.9, 0.8, 0.1]])
    assert recall_at_k(similarity, ks=(1, 2, 3)) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})


def test_caption_relevance_counts_true_phrasings():
    captions = ["a zebra", "a big zebra", "a cat"]
    true = [["a zebra"], ["a big zebra", "a zebra"], ["a cat", "there is a cat"]]
    relevant = caption_relevance(captions, true)
    describes = relevant("text", "image")
    assert describes[0, 1] and not describes[1, 0] and not describes[0, 2]
    assert relevant("image", "text")[1, 0]
    # Text 0 retrieves image 1 first: counted (its caption is true of image 1), but not exactly.
    similarity = torch.tensor([[0.2, 0.9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    embeds_text = torch.eye(3)
    metrics = retrieval_metrics({"text": embeds_text, "image": similarity.t().contiguous()}, ks=(1,),
                                relevant=relevant)
    assert metrics["text_to_image_R@1"] == 1.0
    assert metrics["text_to_image_R@1_exact"] == pytest.approx(2 / 3)


def test_error_rates_ignore_case_and_punctuation():
    rates = error_rates(["A cat, and a dog."], ["a cat and a dog"])
    assert rates == {"cer": 0.0, "wer": 0.0}
    assert error_rates(["a cat"], ["a bat"], prefix="x_")["x_wer"] == pytest.approx(0.5)


def test_closest_reference_error_rates_score_each_output_against_its_nearest_true_text():
    true = [["a cat left of a dog", "A dog, right of a cat."], ["three birds"]]
    # Either phrasing of the first scene is right: no error, where one reference alone counts a lot.
    assert closest_reference_error_rates(true, ["a dog right of a cat", "three birds"]) == {"cer": 0.0, "wer": 0.0}
    assert error_rates([t[0] for t in true], ["a dog right of a cat", "three birds"])["wer"] > 0.3
    # One edit each against the nearest reference: 2 edits over 20 + 11 characters; 2 words wrong of 6 + 2.
    rates = closest_reference_error_rates(true, ["a dog right of a bat", "three bird"], prefix="caption_closest_")
    assert rates == pytest.approx({"caption_closest_cer": 2 / 31, "caption_closest_wer": 2 / 8})
    with pytest.raises(ValueError, match="2 reference lists for 1 hypotheses"):
        closest_reference_error_rates(true, ["a cat"])


def test_matching_metrics():
    metrics = matching_metrics([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 1])
    assert metrics["matching_accuracy"] == 0.75
    assert metrics["matching_roc_auc"] == pytest.approx(2 / 3)


def test_compute_metrics_for_trainer():
    from transformers import EvalPrediction

    logits = np.array([[0.0, 2.0], [2.0, 0.0], [0.0, 1.0]])
    result = make_compute_metrics("matching")(EvalPrediction(predictions=(logits,), label_ids=np.array([1, 0, 0])))
    assert result["matching_accuracy"] == pytest.approx(2 / 3)
    result = make_compute_metrics("classification")(EvalPrediction(predictions=logits, label_ids=np.array([1, 0, 1])))
    assert result["accuracy"] == 1.0


def test_write_metrics_makes_the_folder_and_a_file_name_without_colons(tmp_path):
    import json

    from xmodal.trainers.evaluate import write_metrics

    write_metrics({"split": "test:unseen-voice", "speech_to_text_cer": 0.25}, tmp_path / "new" / "dir",
                  "eval_test:unseen-voice")
    written = tmp_path / "new" / "dir" / "eval_test-unseen-voice.json"
    assert json.loads(written.read_text())["speech_to_text_cer"] == 0.25
    assert "0.25" in (tmp_path / "new" / "dir" / "eval_test-unseen-voice.md").read_text()
