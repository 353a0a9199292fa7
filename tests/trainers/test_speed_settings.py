"""The speed settings of issue 18: fused AdamW, foreach clipping, length-grouped batches and `training.compile`."""

import os

import pytest
import torch
from xmodal.trainers.config import ConfigError, config_from_dict
from xmodal.trainers.data import EpochShuffleSampler
from xmodal.trainers.optim import clip_gradients, make_optimizer

from ..modeling.tiny import CTC_LOSS_WEIGHTS, caption_labels, tiny_config as tiny_model_config, tiny_inputs
from .helpers import tiny_config


def _model(ctc=False):
    import xmodal

    torch.manual_seed(0)
    return xmodal.XModalForPreTraining(tiny_model_config(**({"loss_weights": CTC_LOSS_WEIGHTS} if ctc else {})))


def _batch():
    return {**tiny_inputs(), "labels": caption_labels()}


def test_fused_adamw_and_foreach_clipping_follow_the_plain_ones(tmp_path):
    """Four steps with `adamw_torch_fused` + foreach clipping end where the for-loop AdamW and torch's
    default clipping end (the same arithmetic, another kernel)."""
    weights = {}
    for name in ("adamw_torch", "adamw_torch_fused"):
        training = config_from_dict(tiny_config(tmp_path, training={"optimizer": name})).training
        model = _model()
        optimizer = make_optimizer(model, training)
        assert optimizer.defaults["fused"] == (name == "adamw_torch_fused" or None)
        for _ in range(4):
            model(**_batch()).loss.backward()
            if name == "adamw_torch_fused":
                norm = clip_gradients(model.parameters(), 0.5)
            else:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5, foreach=False)
            assert norm > 0.5  # clipping did act
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        weights[name] = model.state_dict()
    for key, value in weights["adamw_torch"].items():
        torch.testing.assert_close(weights["adamw_torch_fused"][key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_unknown_optimizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"training.optimizer='sgd'; choose one of \['adamw_torch', "
                                          r"'adamw_torch_fused'\]"):
        config_from_dict(tiny_config(tmp_path, training={"optimizer": "sgd"}))


def test_length_grouped_batches_pad_less_and_keep_every_item_once():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 300, (3200,), generator=generator).tolist()
    plain = list(EpochShuffleSampler(3200, seed=3))
    grouped_sampler = EpochShuffleSampler(3200, seed=3, lengths=lengths, batch_size=32)
    grouped = list(grouped_sampler)
    assert sorted(grouped) == list(range(3200))  # a permutation: nothing dropped, nothing repeated

    def padded(order):  # positions of padding when each batch pads to its longest
        batches = [order[i:i + 32] for i in range(0, 3200, 32)]
        return sum(max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches)

    assert padded(grouped) < 0.2 * padded(plain)
    assert grouped == list(grouped_sampler)  # the same order for the same (seed, epoch): resumable
    grouped_sampler.set_epoch(1)
    assert list(grouped_sampler) != grouped  # and a new one each epoch


@pytest.mark.parametrize("ctc", [False, True])
def test_the_model_compiles_without_graph_breaks(ctc):
    """Every head of the pre-training model (towers, fusion, matching with hard negatives, both decoders) is one
    graph for dynamo, with dynamic sizes: no `.item()`, no data-dependent Python branch or size. With the CTC part
    the graph breaks at PyTorch's CTC kernel only (`aten._ctc_loss`: its output size depends on the target lengths'
    values); its targets are padded (batch, tokens), so under `training.compile`'s static buckets each piece still
    compiles once per bucket."""
    model = _model(ctc=ctc).train()
    explanation = torch._dynamo.explain(model)(**_batch())
    reasons = [b.reason for b in explanation.break_reasons]
    if not ctc:
        assert explanation.graph_break_count == 0, reasons
        assert explanation.graph_count == 1
    else:
        assert reasons and all("aten._ctc_loss" in reason for reason in reasons), reasons


@pytest.mark.skipif(not os.environ.get("XMODAL_TEST_COMPILE"), reason="compiling the training step takes 9+ "
                    "minutes on a 2-core CPU; run with XMODAL_TEST_COMPILE=1")
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_matches_eager_and_does_not_recompile_for_new_lengths(backend):
    """`torch.compile` (dynamic shapes, one graph) gives the eager loss to 1e-4 over four optimizer steps whose
    batches have different caption and target lengths, and new lengths stop compiling after the second step.

    `aot_eager` checks what xmodal's code decides (dynamo's capture, AOTAutograd's joint forward-backward graph
    with symbolic sizes), `inductor` adds the generated kernels. Opt-in: on a shared 2-core CPU the first took
    5-9 minutes and the second did not finish in 25. (The speech length stays: the backward of the audio
    tower's strided convolution makes inductor guard on the frame count, so that each new speech length compiles
    anew; under `training.compile` the collator pads speech to a few bucket lengths instead: see
    `test_bucketed_inputs_pad_to_their_bucket_and_change_no_output` and benchmarks/README.md, issue 18.)"""
    import torch._dynamo.utils as dynamo_utils
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    inductor_config.fallback_random = True  # the hard negatives' draws as in eager mode
    eager, compiled = _model(), _model()
    runner = torch.compile(compiled, backend=backend, dynamic=True, fullgraph=True)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True) for m in (eager, compiled)]
    dynamo_utils.counters.clear()
    graphs_after_two = None
    for step in range(4):
        if step == 2:
            graphs_after_two = dynamo_utils.counters["stats"]["unique_graphs"]
        batch = _batch()
        cut = 9 - step  # a new caption length every step, and a new target length
        for key, length in (("input_ids", cut), ("attention_mask", cut), ("labels", 7 - step)):
            batch[key] = batch[key][:, :length].contiguous()  # as the collator hands them over
        losses = []
        for model, optimizer in zip((eager, runner), optimizers):
            torch.manual_seed(step)
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss))
        assert abs(losses[0] - losses[1]) < 1e-4, (step, losses)
    # Measured: the second step compiles once more (2 graphs after two steps); the new lengths after it compile nothing.
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs_after_two <= 2


def test_compile_length_buckets_come_from_the_data_config_and_the_feature_extractor(tmp_path):
    from transformers import WhisperFeatureExtractor
    from xmodal.processing import XModalFeatureExtractor
    from xmodal.trainers.data import compile_length_buckets

    data = config_from_dict(tiny_config(tmp_path, data={"max_text_length": 24, "max_target_length": 20})).data
    extractor = XModalFeatureExtractor(feature_size=64, hop_length=320, max_duration=6.0)  # 300 frames at most
    assert compile_length_buckets(data, extractor, 64) == {
        "input_ids": [24], "negative_input_ids": [24], "labels": [20], "input_features": [64, 128, 192, 256, 300]}
    assert compile_length_buckets(data, extractor, 100)["input_features"] == [100, 200, 300]
    assert "input_features" not in compile_length_buckets(data, extractor, 0)
    assert "input_features" not in compile_length_buckets(data, WhisperFeatureExtractor(), 64)  # 30 s every clip
    assert "input_features" not in compile_length_buckets(data, None, 64)  # no speech
    with pytest.raises(ConfigError, match=r"training.compile_audio_bucket=-1 must be an integer >= 0"):
        config_from_dict(tiny_config(tmp_path, training={"compile_audio_bucket": -1}))


def test_bucketed_inputs_pad_to_their_bucket_and_change_no_output():
    """The collator pads each batch's captions, labels and speech up to their buckets (speech of at most 25 frames
    to 32); padding is masked or -100, so the speech states, the pooled vector and the loss are those of the
    unpadded batch."""
    from xmodal.trainers.data import XModalDataCollator

    inputs = _batch()
    inputs["feature_attention_mask"][:, 25:] = 0
    inputs["feature_attention_mask"][0, 18:] = 0
    rows = [{key: value[i] for key, value in inputs.items()} for i in range(3)]
    plain = XModalDataCollator(None, None, "pretraining", ["text", "image", "audio"])(rows)
    buckets = {"input_features": [16, 32, 40], "input_ids": [12], "labels": [10]}
    bucketed = XModalDataCollator(None, None, "pretraining", ["text", "image", "audio"], length_buckets=buckets)(rows)
    assert plain["input_features"].shape[-1] == 25 and bucketed["input_features"].shape[-1] == 32
    assert bucketed["input_ids"].shape[-1] == bucketed["attention_mask"].shape[-1] == 12
    assert bucketed["labels"].shape[-1] == 10 and (bucketed["labels"][:, plain["labels"].shape[-1]:] == -100).all()
    assert torch.equal(bucketed["input_features"][..., :25], plain["input_features"])
    assert torch.equal(bucketed["feature_attention_mask"].sum(dim=1), plain["feature_attention_mask"].sum(dim=1))
    assert torch.equal(bucketed["attention_mask"].sum(dim=1), plain["attention_mask"].sum(dim=1))
    model = _model().eval()
    with torch.no_grad():
        speech = [model.xmodal.get_audio_features(b["input_features"], b["feature_attention_mask"]) for b in
                  (plain, bucketed)]
        torch.manual_seed(0)
        loss_plain = model(**plain).loss
        torch.manual_seed(0)
        loss_bucketed = model(**bucketed).loss
    torch.testing.assert_close(speech[1].pooler_output, speech[0].pooler_output, atol=1e-5, rtol=1e-5)
    valid = speech[0].attention_mask.bool()
    torch.testing.assert_close(speech[1].last_hidden_state[:, :valid.shape[1]][valid],
                               speech[0].last_hidden_state[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_bucketed, loss_plain, atol=1e-5, rtol=1e-5)
