"""In-batch false negatives (`data.mask_false_negatives`): each item's caption hash and those of every caption true of
its scene, carried to the model by the collator, agreeing with the relevance retrieval is scored by."""

import inspect
import json

import pytest
import torch

from xmodal import XModalForMatching, XModalForPreTraining
from xmodal.losses import caption_overlaps
from xmodal.trainers.config import ConfigError, DataConfig, config_from_dict
from xmodal.trainers.data import (
    EncodedDataset, XModalDataCollator, add_caption_hashes, encode_split, load_raw_dataset, select_split,
)
from xmodal.trainers.data.encoding import caption_hash
from xmodal.trainers.loop import train
from xmodal.trainers.metrics import caption_relevance

from .helpers import DATA_DIR, tiny_config

ALL = ["text", "image", "audio"]


@pytest.fixture(scope="module")
def hashed(tiny_scenes, tiny_processor):
    data = DataConfig(path=str(DATA_DIR), build=False, mask_false_negatives=True)
    rows = select_split(load_raw_dataset(data), "train", data_config=data)
    dataset = encode_split(rows, tiny_processor, data, "pretraining", ALL, name="train")
    assert add_caption_hashes(dataset, data)
    return data, rows, dataset


def test_hashes_say_what_retrieval_scores_as_relevant(hashed):
    _, rows, dataset = hashed
    fits, fitted = caption_overlaps(dataset.tensors["caption_hashes"], dataset.tensors["true_caption_hashes"])
    describes = caption_relevance(rows["caption"], rows["captions"])("text", "image")
    assert torch.equal(fits, describes) and torch.equal(fitted, describes.t())
    off_diagonal = int(fits.sum()) - len(rows)
    assert off_diagonal > 0, "the tiny scenes should hold captions true of another scene"
    assert (dataset.tensors["true_caption_hashes"] >= -1).all() and (dataset.tensors["caption_hashes"] >= 0).all()


def test_a_caption_hash_ignores_case_and_punctuation():
    assert caption_hash("A zebra, left of a cat.") == caption_hash("a zebra left of a cat") != caption_hash("a cat")


def test_the_collator_passes_the_hashes_to_the_heads_that_take_them(hashed, tiny_processor):
    data, _, dataset = hashed
    items = [dataset[i] for i in range(6)]
    for head, wanted in ((XModalForPreTraining, True), (XModalForMatching, False)):
        names = inspect.signature(head.forward).parameters
        batch = XModalDataCollator(tiny_processor, data, "pretraining", ALL, forward_names=names)(items)
        assert ({"caption_hashes", "true_caption_hashes"} <= set(batch)) == wanted, head.__name__
        if wanted:
            assert batch["caption_hashes"].tolist() == dataset.tensors["caption_hashes"][:6].tolist()


def test_hashes_need_one_caption_per_item_in_the_text_column():
    said = ["a cat", "a dog"]
    dataset = EncodedDataset({"input_ids": torch.ones(2, 3, dtype=torch.long)}, {"caption": said})
    assert not add_caption_hashes(dataset, DataConfig(columns={"text": "sentence"}))
    several = EncodedDataset({"input_ids": torch.ones(2, 3, dtype=torch.long)}, {"caption": [said, said]})
    assert not add_caption_hashes(several, DataConfig())
    assert add_caption_hashes(dataset, DataConfig())  # without `captions`, each item's own caption is its truth
    assert dataset.tensors["true_caption_hashes"].tolist() == [[caption_hash("a cat")], [caption_hash("a dog")]]


def test_the_option_is_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="data.mask_false_negatives='yes': expected true or false, got a string"):
        config_from_dict(tiny_config(tmp_path, data={"mask_false_negatives": "yes"}))


def test_pretraining_with_masked_false_negatives_learns(tmp_path, tiny_scenes):
    values = tiny_config(tmp_path, data={"mask_false_negatives": True},
                         training={"max_steps": 40, "batch_size": 16, "log_every": 10, "save_every": 40})
    train(config_from_dict(values))
    history = json.loads(next((tmp_path / "checkpoints").glob("step_*/progress.json")).read_text())["history"]
    losses = [entry["contrastive_loss"] for entry in history if "contrastive_loss" in entry]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
