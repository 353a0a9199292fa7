"""The CTC part of pre-training (`loss_weights["ctc"]`): off by default, a head over the speech tower's states when
weighted, the loss as PyTorch's CTC computes it on the spoken tokens, and a head that follows the vocabulary; and
`XModalForCTC`, the same head on its own for transcription."""

import pytest
import torch
from torch.nn import functional as F

from xmodal import XModalForCTC, XModalForPreTraining
from xmodal.losses import ctc_loss
from xmodal.modeling_ctc import ctc_greedy_ids

from .tiny import CTC_LOSS_WEIGHTS as WEIGHTS
from .tiny import VOCAB, caption_labels, tiny_config, tiny_inputs


def test_ctc_loss_scores_the_spoken_tokens_with_the_last_class_as_blank():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)  # 4 tokens and the blank
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[1, 3, 2, 0], [3, 2, -100, -100]])  # 2 is EOS: not spoken
    expected = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.tensor([1, 3, 0, 3]), torch.tensor([6, 4]),
                          torch.tensor([3, 1]), blank=4)
    torch.testing.assert_close(ctc_loss(logits, mask, labels, left_out=(2,)), expected)
    # more tokens than states cannot be aligned: that sample counts 0, not infinity
    assert torch.isfinite(ctc_loss(logits[:, :1], mask[:, :1], labels))


def test_no_ctc_head_unless_weighted():
    model = XModalForPreTraining(tiny_config())
    assert model.ctc_head is None
    inputs = {**tiny_inputs(), "labels": caption_labels(3)}
    assert model.eval()(**inputs).ctc_loss is None


def test_a_weighted_ctc_part_trains_the_speech_tower():
    torch.manual_seed(0)
    model = XModalForPreTraining(tiny_config(loss_weights=WEIGHTS))
    assert model.ctc_head.out_features == VOCAB + 1
    inputs = {**tiny_inputs(), "labels": caption_labels(3)}
    torch.manual_seed(1)
    output = model(**inputs)
    parts = ("contrastive", "matching", "caption", "transcription", "ctc")
    torch.testing.assert_close(output.loss, sum(WEIGHTS[p] * getattr(output, f"{p}_loss") for p in parts))
    assert output.ctc_loss > 0
    output.ctc_loss.backward()
    speech = [p.grad for p in model.xmodal.audio_model.parameters()]
    assert all(g is not None for g in speech) and sum(float(g.abs().sum()) for g in speech) > 0
    assert all(p.grad is None for p in model.xmodal.text_model.parameters())  # CTC reads speech only


def test_the_ctc_head_follows_the_vocabulary():
    model = XModalForPreTraining(tiny_config(loss_weights=WEIGHTS))
    blank, first = model.ctc_head.weight[-1].clone(), model.ctc_head.weight[:VOCAB].clone()
    model.resize_token_embeddings(VOCAB + 5)
    assert model.ctc_head.out_features == VOCAB + 6
    assert torch.equal(model.ctc_head.weight[:VOCAB], first) and torch.equal(model.ctc_head.weight[-1], blank)
    model.resize_token_embeddings(VOCAB - 9)
    assert model.ctc_head.out_features == VOCAB - 8 and torch.equal(model.ctc_head.weight[-1], blank)


def test_greedy_ctc_merges_runs_drops_blanks_and_stops_at_the_last_real_state():
    blank = 3
    best = torch.tensor([[blank, 1, 1, blank, 1, 2, 2, 0], [2, 2, blank, 2, 0, 0, 1, 1]])
    logits = F.one_hot(best, 4).float()
    mask = torch.tensor([[1] * 7 + [0], [1] * 5 + [0] * 3])
    # a blank between two 1s keeps both; a run of one class is one token; padding states are not read
    assert ctc_greedy_ids(logits, mask) == [[1, 1, 2], [2, 2, 0]]
    assert ctc_greedy_ids(logits) == [[1, 1, 2, 0], [2, 2, 0, 1]]


def test_ctc_model_loads_the_pretraining_checkpoint_and_scores_as_its_ctc_part(tmp_path):
    torch.manual_seed(0)
    pretraining = XModalForPreTraining(tiny_config(loss_weights=WEIGHTS)).eval()
    inputs = {**tiny_inputs(), "labels": caption_labels(3)}
    expected = pretraining(**inputs, output_hidden_states=True)
    pretraining.save_pretrained(tmp_path)
    model, info = XModalForCTC.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    speech = {k: inputs[k] for k in ("input_features", "feature_attention_mask") if k in inputs}
    output = model.eval()(**speech, labels=inputs["labels"], output_hidden_states=True)
    torch.testing.assert_close(output.loss, expected.ctc_loss, rtol=0, atol=0)
    states = expected.audio_model_output.last_hidden_state
    assert torch.equal(output.logits, pretraining.ctc_head(states))
    assert output.logits.shape == (3, states.shape[1], VOCAB + 1)
    assert model.transcribe(**speech) == ctc_greedy_ids(output.logits, output.state_mask)


def test_ctc_model_needs_speech_and_a_vocabulary():
    with pytest.raises(ValueError, match="needs an audio tower"):
        XModalForCTC(tiny_config(modalities=("text", "image")))
    with pytest.raises(ValueError, match="give `input_features`"):
        XModalForCTC(tiny_config())(labels=caption_labels(3))
