"""Bad model inputs and config keys: each gives an error (or a warning) that says what was wrong and what is
accepted, instead of an IndexError, an AttributeError, a reshape error, NaN outputs or silence."""

import logging
import re

import numpy as np
import pytest
import torch
from transformers import BertConfig

from xmodal import XModalConfig, XModalForConditionalGeneration, XModalModel, XModalTextConfig

from .tiny import VOCAB, tiny_config, tiny_inputs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return XModalModel(tiny_config()).eval()


def _with(**changes):
    """Tiny inputs with some entries replaced: a value, or a function of the original tensor."""
    inputs = tiny_inputs()
    for name, change in changes.items():
        inputs[name] = change(inputs[name]) if callable(change) else change
    return inputs


def _set(index, value):
    def change(tensor):
        tensor = tensor.clone()
        tensor.view(-1)[index] = value
        return tensor
    return change


BAD_INPUTS = {
    "id == vocab size": (_with(input_ids=_set(4, VOCAB)), ValueError,
                         rf"`input_ids` has token ids outside the text tower's vocabulary: largest id {VOCAB}, "
                         rf"smallest 0, vocab_size {VOCAB}\. Ids must lie in \[0, {VOCAB - 1}\]"),
    "-100 padding in input_ids": (_with(input_ids=_set(8, -100)), ValueError,
                                  r"smallest -100, vocab_size 99\. .*\(-100 is for `labels` only\)"),
    "float input_ids": (_with(input_ids=lambda t: t.float()), TypeError,
                        r"`input_ids` must hold integer token ids \(torch.long\), got dtype torch.float32"),
    "numpy input_ids": (_with(input_ids=lambda t: t.numpy()), TypeError,
                        r"`input_ids` is a numpy.ndarray; .*pass torch tensors \(return_tensors='pt'"),
    "numpy pixel_values": (_with(pixel_values=lambda t: t.numpy()), TypeError,
                           r"`pixel_values` is a numpy.ndarray; .*pass torch tensors \(return_tensors='pt'"),
    "numpy attention_mask": (_with(attention_mask=lambda t: t.numpy()), TypeError,
                             r"`attention_mask` is a numpy.ndarray"),
    "list input_features": (_with(input_features=lambda t: t.tolist()), TypeError,
                            r"`input_features` is a builtins.list; .*pass torch tensors"),
    "empty batch": ({name: value[:0] for name, value in tiny_inputs().items()}, ValueError,
                    r"`input_ids` has an empty batch \(shape \(0, 9\)\); pass at least one sample"),
    "empty image batch": ({"pixel_values": torch.zeros(0, 3, 32, 32)}, ValueError,
                          r"`pixel_values` has an empty batch \(shape \(0, 3, 32, 32\)\)"),
    "NaN pixel": (_with(pixel_values=_set(100, float("nan"))), ValueError,
                  r"`pixel_values` contains NaN or infinite values; every value must be finite"),
    "inf feature": (_with(input_features=_set(7, float("inf"))), ValueError,
                    r"`input_features` contains NaN or infinite values"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_say_what_is_wrong_and_what_is_accepted(model, name):
    inputs, error, message = BAD_INPUTS[name]
    with pytest.raises(error, match=message):
        model(**inputs)


def test_every_entry_point_checks(model):
    """`collect_inputs` is shared: a generation head and the feature getters check the same way."""
    torch.manual_seed(0)
    generator = XModalForConditionalGeneration(tiny_config()).eval()
    bad = _with(input_ids=_set(0, 1000))
    with pytest.raises(ValueError, match="largest id 1000"):
        generator(**bad, labels=torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="largest id 1000"):
        generator.generate(**bad, max_new_tokens=2)
    with pytest.raises(ValueError, match="largest id 1000"):
        model.get_text_features(bad["input_ids"])
    with pytest.raises(TypeError, match="pass torch tensors"):
        model.get_embeddings(pixel_values=np.zeros((1, 3, 32, 32), np.float32))


def test_a_wrapped_transformers_text_tower_is_checked_against_its_own_vocab_size():
    bert = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = XModalModel(XModalConfig(text_config=bert, vision_config=tiny_config().vision_config, projection_dim=16))
    assert model(input_ids=torch.full((2, 5), 49)).text_embeds.shape == (2, 16)
    with pytest.raises(ValueError, match=r"largest id 50, smallest 50, vocab_size 50\."):
        model(input_ids=torch.full((2, 5), 50))


def test_value_checks_are_skipped_while_torch_compile_traces(model, monkeypatch):
    """Reading a value back would break a compiled graph: the NaN check then steps aside."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    output = model(**_with(pixel_values=lambda t: torch.full_like(t, float("nan"))))
    assert torch.isnan(output.image_embeds).all()


@pytest.mark.parametrize("make, message", [
    (lambda: XModalConfig.from_dict({**tiny_config().to_dict(), "fusion_typ": "gated"}),
     r"XModalConfig got an unknown key 'fusion_typ', .*did you mean 'fusion_type'\?"),
    (lambda: XModalConfig.from_dict({**tiny_config().to_dict(), "projection_dimension": 8}),
     r"XModalConfig got an unknown key 'projection_dimension', .*did you mean 'projection_dim'\?"),
    (lambda: XModalConfig(text_config={**XModalTextConfig().to_dict(), "hiden_size": 64}),
     r"XModalConfig.text_config got an unknown key 'hiden_size', .*did you mean 'hidden_size'\?"),
    (lambda: tiny_config(zzz=1), r"unknown key 'zzz', .*valid keys are \['audio_config', 'classifier_dropout'"),
])
def test_misspelt_config_keys_are_warned_about_with_the_closest_valid_key(caplog, make, message):
    with caplog.at_level(logging.WARNING):
        make()
    assert any(re.search(message, record.getMessage()) for record in caplog.records), caplog.text


def test_keys_transformers_writes_or_reads_are_not_warned_about(caplog, tmp_path):
    config = tiny_config()
    saved = {**config.to_dict(), "architectures": ["XModalModel"], "torch_dtype": "float32", "use_cache": True,
             "_name_or_path": "somewhere", "attn_implementation": "eager", "max_length": 20, "auto_map": {}}
    with caplog.at_level(logging.WARNING):
        XModalConfig.from_dict(saved)
        XModalModel(config).save_pretrained(tmp_path)
        XModalModel.from_pretrained(tmp_path)
    assert "unknown key" not in caplog.text
