"""The `transformers` conventions every head keeps (test_transformers_common.py runs transformers' own
`ModelTesterMixin`): `return_dict`, output options read from the config, feature getters, token-embedding resizing
and tying, `is_encoder_decoder`, `main_input_name`, evaluation losses that do not change from run to run, a gradient
for every parameter under DDP, an attention implementation per tower, offloading, and `torch.export`."""

import gc
import inspect

import pytest
import torch
from torch import nn
from transformers import AutoModel

from xmodal import (
    XModalConfig,
    XModalDecoderConfig,
    XModalForConditionalGeneration,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
)
from xmodal.losses import hardest_negatives

from .tiny import VOCAB, caption_labels, offloaded_copy, tiny_config, tiny_inputs

DECODER_HEADS = (XModalForConditionalGeneration, XModalForPreTraining)
ENCODER_HEADS = (XModalModel, XModalForMatching, XModalForSequenceClassification)
ALL_CLASSES = ENCODER_HEADS + DECODER_HEADS
HEADS = ALL_CLASSES[1:]  # on the base model
TOWER_FIELDS = ("text_model_output", "vision_model_output", "audio_model_output")
NUM_LAYERS = 2  # of every tiny tower: hidden states are the embeddings and one per layer


def build(model_class, seed=0, **overrides):
    torch.manual_seed(seed)
    extra = {"num_labels": 4} if model_class is XModalForSequenceClassification else {}
    return model_class(tiny_config(**extra, **overrides)).eval()


def call_kwargs(model_class, batch_size=3):
    """Inputs of every modality and what the head needs for a loss."""
    kwargs = tiny_inputs(batch_size=batch_size)
    if model_class in DECODER_HEADS:
        kwargs["labels"] = caption_labels(batch_size)
    elif model_class is XModalForSequenceClassification:
        kwargs["labels"] = torch.arange(batch_size) % 4
    else:
        kwargs["return_loss"] = True
    return kwargs


def assert_same(a, b):
    """Equal outputs, field by field (nested outputs included)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    else:
        assert a == b


# 1. return_dict -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_return_dict_false_returns_the_outputs_tuple(model_class):
    model = build(model_class)
    kwargs = call_kwargs(model_class)
    assert "return_dict" in inspect.signature(model.forward).parameters
    with torch.no_grad():
        as_output = model(**kwargs)
        as_tuple = model(**kwargs, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0] is not None  # the loss first
    assert_same(as_tuple, as_output.to_tuple())


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_config_return_dict_is_the_default_and_the_argument_wins(model_class):
    model = build(model_class, return_dict=False)
    kwargs = call_kwargs(model_class)
    with torch.no_grad():
        assert isinstance(model(**kwargs), tuple)
        assert not isinstance(model(**kwargs, return_dict=True), tuple)


def test_generate_works_when_the_config_returns_tuples():
    model = build(XModalForConditionalGeneration, return_dict=False)
    inputs = tiny_inputs(("image",), batch_size=2)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=None)
    assert generated.shape == (2, 4)


def test_generate_with_max_new_tokens_under_a_saved_generation_config_does_not_warn(tmp_path):
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    build(XModalForConditionalGeneration).save_pretrained(tmp_path)
    model = XModalForConditionalGeneration.from_pretrained(tmp_path)
    assert model.generation_config.max_length is not None  # the position table, saved with the checkpoint
    inputs = tiny_inputs(("image",), batch_size=2)
    with CaptureLogger(logging.get_logger("transformers")) as captured, torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=None)
    assert generated.shape == (2, 4) and "max_length" not in captured.out, captured.out


# 2. hidden states and attentions ------------------------------------------------------------------------------
def tower_outputs(output):
    return [getattr(output, field) for field in TOWER_FIELDS]


@pytest.mark.parametrize("model_class", ALL_CLASSES)
@pytest.mark.parametrize("from_config", [False, True], ids=["argument", "config"])
def test_every_head_returns_the_towers_hidden_states(model_class, from_config):
    model = build(model_class, output_hidden_states=True) if from_config else build(model_class)
    with torch.no_grad():
        output = model(**call_kwargs(model_class), **({} if from_config else {"output_hidden_states": True}))
    for tower in tower_outputs(output):
        assert len(tower.hidden_states) == NUM_LAYERS + 1
        assert tower.hidden_states[-1].shape[:2] == tower.last_hidden_state.shape[:2]


@pytest.mark.parametrize("model_class", ALL_CLASSES)
@pytest.mark.parametrize("from_config", [False, True], ids=["argument", "config"])
def test_every_head_returns_the_towers_attentions(model_class, from_config):
    # A config asks for attentions only with eager attention (`transformers` refuses it with SDPA).
    overrides = {"attn_implementation": "eager", **({"output_attentions": True} if from_config else {})}
    model = build(model_class, **overrides)
    with torch.no_grad():
        output = model(**call_kwargs(model_class), **({} if from_config else {"output_attentions": True}))
    for tower in tower_outputs(output):
        assert len(tower.attentions) == NUM_LAYERS
        batch, heads, queries, keys = tower.attentions[0].shape
        assert (batch, heads, queries) == (3, 2, keys)


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_the_argument_overrides_the_config_output_options(model_class):
    model = build(model_class, output_hidden_states=True)
    with torch.no_grad():
        output = model(**call_kwargs(model_class), output_hidden_states=False)
    for tower in tower_outputs(output):
        assert tower is None or tower.hidden_states is None


@pytest.mark.parametrize("model_class", ALL_CLASSES[1:])
def test_heads_return_no_tower_outputs_unless_asked(model_class):
    with torch.no_grad():
        output = build(model_class)(**call_kwargs(model_class))
    assert all(tower is None for tower in tower_outputs(output))


# 3. get_*_features --------------------------------------------------------------------------------------------
FEATURES = {
    "text": ("get_text_features", ("input_ids", "attention_mask")),
    "image": ("get_image_features", ("pixel_values",)),
    "audio": ("get_audio_features", ("input_features", "feature_attention_mask")),
}


@pytest.mark.parametrize("modality", list(FEATURES))
def test_get_features_take_output_options_and_return_dict(modality):
    model = build(XModalModel, attn_implementation="eager")
    method, names = FEATURES[modality]
    inputs = {name: tiny_inputs()[name] for name in names}
    with torch.no_grad():
        plain = getattr(model, method)(**inputs)
        full = getattr(model, method)(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)
        as_tuple = getattr(model, method)(**inputs, return_dict=False)
    assert plain.hidden_states is None and len(full.hidden_states) == NUM_LAYERS + 1
    assert len(full.attentions) == NUM_LAYERS
    assert torch.equal(full.pooler_output, plain.pooler_output)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], plain.last_hidden_state)
    assert torch.equal(as_tuple[1], plain.pooler_output)


def test_get_features_read_the_config_output_options():
    model = build(XModalModel, output_hidden_states=True)
    with torch.no_grad():
        output = model.get_image_features(tiny_inputs()["pixel_values"])
    assert len(output.hidden_states) == NUM_LAYERS + 1


# 4. token embeddings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_set_input_embeddings(model_class):
    model = build(model_class)
    replacement = nn.Embedding(VOCAB, 32, padding_idx=0)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement


def test_decoder_heads_expose_the_decoder_vocabulary():
    for model_class in DECODER_HEADS:
        model = build(model_class)
        assert model.get_input_embeddings() is model.decoder.embed_tokens
        assert model.get_output_embeddings() is model.lm_head
        head = nn.Linear(32, VOCAB, bias=False)
        model.set_output_embeddings(head)
        assert model.get_output_embeddings() is head
    for model_class in ENCODER_HEADS:
        model = build(model_class)
        base = model if model_class is XModalModel else model.xmodal
        assert model.get_input_embeddings() is base.text_model.embed_tokens
        assert model.get_output_embeddings() is None


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_resize_token_embeddings(model_class, tmp_path):
    model = build(model_class)
    new_size = VOCAB + 13
    model.resize_token_embeddings(new_size)
    kwargs = call_kwargs(model_class)
    kwargs["input_ids"][1, 2] = new_size - 1
    if "labels" in kwargs and model_class in DECODER_HEADS:
        kwargs["labels"][2, 0] = new_size - 1
    # The text tower and the decoder share the tiny vocabulary: both follow, so the config stays valid.
    assert model.config.text_config.vocab_size == model.config.decoder_config.vocab_size == new_size
    if model_class in DECODER_HEADS:
        assert model.lm_head.weight.shape[0] == new_size
        assert model.lm_head.weight.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        output = model(**kwargs)
    assert torch.isfinite(output.loss)
    if model_class is XModalForConditionalGeneration:
        assert output.logits.shape[-1] == new_size
    # The resized model saves and loads as any other.
    model.save_pretrained(tmp_path)
    reloaded = model_class.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.manual_seed(0)
        reloaded_loss = reloaded(**kwargs).loss
        torch.manual_seed(0)
        assert torch.equal(model(**kwargs).loss, reloaded_loss)


def test_resize_leaves_a_text_tower_of_another_vocabulary_alone():
    model = build(XModalForConditionalGeneration, decoder_config=XModalDecoderConfig(
        vocab_size=VOCAB + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=24))
    model.resize_token_embeddings(VOCAB + 20)
    assert model.config.decoder_config.vocab_size == VOCAB + 20 and model.lm_head.out_features == VOCAB + 20
    assert model.config.text_config.vocab_size == VOCAB
    assert model.xmodal.get_input_embeddings().num_embeddings == VOCAB


# 5. tie_word_embeddings ---------------------------------------------------------------------------------------
def test_tie_word_embeddings_is_a_config_value_defaulting_to_the_decoders():
    assert tiny_config().tie_word_embeddings is True
    assert tiny_config(tie_word_embeddings=False).tie_word_embeddings is False
    untied_decoder = XModalDecoderConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, tie_word_embeddings=False)
    assert tiny_config(decoder_config=untied_decoder).tie_word_embeddings is False
    assert XModalConfig.from_dict(tiny_config(tie_word_embeddings=False).to_dict()).tie_word_embeddings is False


@pytest.mark.parametrize("model_class", DECODER_HEADS)
def test_tie_word_embeddings_false_unties_the_lm_head(model_class, tmp_path):
    untied = build(model_class, tie_word_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.decoder.embed_tokens.weight.data_ptr()
    build(model_class).save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path, tie_word_embeddings=False)
    assert loaded.config.tie_word_embeddings is False
    assert loaded.lm_head.weight.data_ptr() != loaded.decoder.embed_tokens.weight.data_ptr()
    tied = model_class.from_pretrained(tmp_path)
    assert tied.lm_head.weight.data_ptr() == tied.decoder.embed_tokens.weight.data_ptr()


# 6. is_encoder_decoder ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_is_encoder_decoder_describes_the_head(model_class, tmp_path):
    model = build(model_class)  # every tiny config has a decoder_config
    writes_text = model_class in DECODER_HEADS
    assert model.config.is_encoder_decoder is writes_text
    # Generation utilities read the vocabulary the head writes; an encoder-only head's text is its input.
    expected = model.config.decoder_config if writes_text else model.config.text_config
    assert model.config.get_text_config() is expected
    model.save_pretrained(tmp_path)
    assert AutoModel.from_pretrained(tmp_path).config.is_encoder_decoder is False
    assert model_class.from_pretrained(tmp_path).config.is_encoder_decoder is writes_text


# 7. main_input_name -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_main_input_name_is_a_forward_argument(model_class):
    assert model_class.main_input_name in inspect.signature(model_class.forward).parameters


def test_generate_takes_the_features_mask_as_the_speech_pipeline_passes_it():
    model = build(XModalForConditionalGeneration)
    assert model.main_input_name == "input_features"
    inputs = tiny_inputs(("audio",), batch_size=2)
    with torch.no_grad():
        by_name = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        as_pipeline = model.generate(**{model.main_input_name: inputs["input_features"],
                                        "attention_mask": inputs["feature_attention_mask"]},
                                     max_new_tokens=4, do_sample=False)
        unmasked = model.generate(input_features=inputs["input_features"], max_new_tokens=4, do_sample=False)
    assert torch.equal(by_name, as_pipeline)
    assert by_name.shape == unmasked.shape


# 8. deterministic evaluation loss -----------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [XModalForMatching, XModalForPreTraining])
def test_eval_loss_with_hard_negatives_is_deterministic(model_class):
    model = build(model_class)
    kwargs = call_kwargs(model_class, batch_size=5)
    with torch.no_grad():
        first, second = model(**kwargs), model(**kwargs)
    assert torch.equal(first.loss, second.loss)


def test_hardest_negatives_are_the_most_similar_other_rows():
    similarity = torch.tensor([[9.0, 1.0, 3.0], [5.0, 9.0, 2.0], [0.0, 4.0, 9.0]])
    assert hardest_negatives(similarity).tolist() == [2, 0, 1]
    assert hardest_negatives(similarity[:1, :1]) is None


# 9. every parameter learns under DDP ---------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_ddp_with_gradient_checkpointing_and_no_unused_parameter_search_trains(model_class, tmp_path):
    """What the Trainer sets up with gradient checkpointing under DDP (`find_unused_parameters=False`): a parameter
    that a head's loss leaves without a gradient stops the next step. One process (gloo) is enough to see it."""
    import torch.distributed as dist

    model = build(model_class).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batches = [call_kwargs(model_class)]
    if model_class is XModalForMatching:  # the other mode too: explicit match labels
        batches.append({**tiny_inputs(), "labels": torch.tensor([1, 0, 1])})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    ddp = None
    try:
        ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        for kwargs in [*batches, *batches]:
            torch.manual_seed(0)
            ddp(**kwargs).loss.backward()
    finally:
        # The DDP reducer holds the process group: freed before it, or destroying the group can hang (seen here
        # in CI with torch 2.13; see `xmodal.trainers.run_end.end_training`).
        del ddp
        gc.collect()
        dist.destroy_process_group()
    assert all(p.grad is not None for p in model.parameters())


# 10. attention implementation per tower ------------------------------------------------------------------------
def attention_implementations(model):
    """{tower or part: the implementations its attention layers use}."""
    found = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "XModalAttention":
            part = name.removeprefix("xmodal.").split(".")[0]
            found.setdefault(part, set()).add(module.config._attn_implementation)
    return found


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_from_pretrained_honours_an_attention_implementation_per_tower(model_class, tmp_path):
    build(model_class).save_pretrained(tmp_path)
    asked = {"text_config": "eager", "vision_config": "sdpa", "audio_config": "eager"}
    loaded = model_class.from_pretrained(tmp_path, attn_implementation=asked)
    found = attention_implementations(loaded)
    assert found["text_model"] == {"eager"} and found["vision_model"] == {"sdpa"} and found["audio_model"] == {"eager"}
    # What is not named follows the top level ("sdpa" by default).
    assert found.get("decoder", {"sdpa"}) == {"sdpa"} and found.get("fusion", {"sdpa"}) == {"sdpa"}
    everything = model_class.from_pretrained(tmp_path, attn_implementation="eager")
    assert set().union(*attention_implementations(everything).values()) == {"eager"}


# 11. offloading with device_map ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion_type", ["cross_attention", "concat"])
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_from_pretrained_offloads_to_disk_and_gives_the_same_outputs(model_class, fusion_type, tmp_path):
    pytest.importorskip("accelerate")
    model = build(model_class, fusion_type=fusion_type)
    offloaded = offloaded_copy(model, model_class, tmp_path)
    assert {"cpu", "disk"} <= set(offloaded.hf_device_map.values())
    kwargs = call_kwargs(model_class)
    with torch.no_grad():
        assert_same(offloaded(**kwargs), model(**kwargs))
    if model_class is XModalForConditionalGeneration:
        with torch.no_grad():
            inputs = tiny_inputs(("image",), batch_size=2)
            generated = offloaded.generate(**inputs, max_new_tokens=3)
            assert torch.equal(generated, model.generate(**inputs, max_new_tokens=3))


# 12. torch.export ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [XModalModel, *(pytest.param(c, marks=pytest.mark.slow) for c in HEADS)])
def test_forward_exports_with_torch_export(model_class):
    """No data-dependent Python branch in forward (such as skipping an all-ones mask): `torch.export` traces it whole.
    (`torch.compile(fullgraph=True)` traces the same code; it takes over a minute to compile on a CPU.)"""
    model = build(model_class)
    kwargs = call_kwargs(model_class)
    exported = torch.export.export(model, args=(), kwargs=kwargs)
    with torch.no_grad():
        assert_same(exported.module()(**kwargs), model(**kwargs))
