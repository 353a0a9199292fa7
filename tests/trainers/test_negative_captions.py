"""False captions for training (`data.negative_captions`): each two-object caption encoded with one false
variant of it, batched with the samples they belong to, and trained on by the pre-training head."""

import inspect
import json

import pytest
import torch

from xmodal import XModalForPreTraining
from xmodal.trainers.composition import caption_variants, false_caption
from xmodal.trainers.config import ConfigError, DataConfig, config_from_dict
from xmodal.trainers.data import XModalDataCollator, encode_split, load_raw_dataset, select_split
from xmodal.trainers.data.encoding import tokenize_texts
from xmodal.trainers.loop import train

from .helpers import DATA_DIR, tiny_config

ALL = ["text", "image", "audio"]


def test_false_caption_is_one_variant_drawn_by_the_seed():
    caption = "there are two small bananas above a zebra"
    variants = caption_variants(caption)
    drawn = {false_caption(caption, seed) for seed in range(40)}
    assert drawn == set(variants.values())  # every kind is drawn, and nothing else
    assert false_caption(caption, 7) == false_caption(caption, 7)
    assert false_caption("a cat", 0) is None
    assert false_caption("a cat, a dog and an owl", 0) is None


@pytest.fixture(scope="module")
def encoded(tiny_scenes, tiny_processor):
    data = DataConfig(path=str(DATA_DIR), build=False, negative_captions=True)
    rows = select_split(load_raw_dataset(data), "test", data_config=data)
    return data, rows, encode_split(rows, tiny_processor, data, "pretraining", ALL, name="test")


def _ids(row_ids, mask):
    return row_ids[:int(mask.sum())].tolist()


def test_each_caption_is_encoded_with_one_of_its_own_variants(encoded, tiny_processor):
    data, rows, dataset = encoded
    tensors, with_false = dataset.tensors, 0
    for row, caption in enumerate(rows["caption"]):
        variants = list(caption_variants(caption).values())
        mask = tensors["negative_attention_mask"][row]
        assert bool(mask.any()) == bool(variants), caption
        if variants:
            with_false += 1
            tokenized = tokenize_texts(tiny_processor, variants, data)
            candidates = [_ids(i, m) for i, m in zip(tokenized["input_ids"], tokenized["attention_mask"])]
            assert _ids(tensors["negative_input_ids"][row], mask) in candidates, caption
    assert 0 < with_false < len(rows)  # the tiny scenes have captions of one, two and three objects


def test_without_the_option_the_encoding_is_unchanged(encoded, tiny_processor):
    _, rows, dataset = encoded
    plain = encode_split(rows, tiny_processor, DataConfig(path=str(DATA_DIR), build=False), "pretraining", ALL)
    assert "negative_input_ids" not in plain.tensors
    for key, value in plain.tensors.items():
        assert torch.equal(value, dataset.tensors[key]), key


def test_the_collator_gives_the_false_captions_of_the_samples_that_have_one(encoded, tiny_processor):
    data, _, dataset = encoded
    forward_names = inspect.signature(XModalForPreTraining.forward).parameters
    collator = XModalDataCollator(tiny_processor, data, "pretraining", ALL, forward_names=forward_names)
    items = [dataset[i] for i in range(12)]
    batch = collator(items)
    expected = [i for i, item in enumerate(items) if item["negative_attention_mask"].any()]
    assert batch["negative_rows"].tolist() == expected and expected
    for k, row in enumerate(expected):
        mask = items[row]["negative_attention_mask"]
        assert batch["negative_input_ids"][k].tolist()[:int(mask.sum())] == _ids(items[row]["negative_input_ids"], mask)
        assert int(batch["negative_attention_mask"][k].sum()) == int(mask.sum())
    # a batch in which no caption has a false one passes none
    none = [item for item in (dataset[i] for i in range(len(dataset))) if not item["negative_attention_mask"].any()]
    assert not {"negative_input_ids", "negative_rows"} & set(collator(none[:4]))


def test_negative_captions_go_with_pretraining_only(tmp_path):
    values = tiny_config(tmp_path, task="contrastive", modalities=("text", "image"), data={"negative_captions": True})
    with pytest.raises(ConfigError, match="data.negative_captions=True: true or false; the false captions train "
                                          "task: pretraining"):
        config_from_dict(values)
    values = tiny_config(tmp_path, data={"negative_captions": "yes"})
    with pytest.raises(ConfigError, match="data.negative_captions='yes'"):
        config_from_dict(values)


def test_pretraining_on_false_captions_learns_to_prefer_the_true_one(tmp_path, tiny_scenes):
    """The negative_caption part is logged and falls below log 2, where image and speech cannot tell a caption from
    its false variant."""
    values = tiny_config(tmp_path, data={"negative_captions": True},
                         training={"max_steps": 60, "batch_size": 16, "log_every": 10, "save_every": 60})
    train(config_from_dict(values))
    history = json.loads(next((tmp_path / "checkpoints").glob("step_*/progress.json")).read_text())["history"]
    parts = [entry["negative_caption_loss"] for entry in history if "negative_caption_loss" in entry]
    assert len(parts) == 6, history
    assert parts[-1] < parts[0] and parts[-1] < 0.6, parts
