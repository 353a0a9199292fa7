"""`transformers.Trainer` fine-tunes XModal heads unchanged: collator, compute_metrics, torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

import xmodal
from xmodal.trainers.config import DataConfig
from xmodal.trainers.data import XModalDataCollator, forward_argument_names, make_processor, make_tokenizer
from xmodal.trainers.hf_trainer import build_trainer

from .helpers import REPO, TINY_MODEL

DATA = DataConfig(modalities=["text", "image"], columns={"label": "match"},
                  tokenizer_vocab_size=200, max_text_length=24)


def matching_rows(split, count):
    """Raw rows: each image with its caption (match 1) and with the next scene's caption (match 0)."""
    rows = []
    for index in range(count):
        row, other = split[index], split[(index + 1) % len(split)]
        rows.append({"image": row["image"], "caption": row["caption"], "match": 1})
        rows.append({"image": row["image"], "caption": other["caption"], "match": 0})
    return rows


def tiny_matching_model(tokenizer):
    config = xmodal.XModalConfig(**{**TINY_MODEL, "audio_config": None, "decoder_config": None,
                                    "text_config": {**TINY_MODEL["text_config"], "vocab_size": len(tokenizer),
                                                    "max_position_embeddings": DATA.max_text_length}})
    torch.manual_seed(0)
    return xmodal.XModalForMatching(config)


@pytest.fixture(scope="module")
def matching_setup(tiny_scenes):
    tokenizer = make_tokenizer(DATA, tiny_scenes["train"])
    model = tiny_matching_model(tokenizer)
    processor = make_processor(DATA, model.config, tokenizer)
    return processor, model


def test_collator_emits_exactly_forward_arguments(matching_setup, tiny_scenes):
    processor, model = matching_setup
    collator = XModalDataCollator(processor, DATA, "matching", DATA.modalities, forward_argument_names(model))
    batch = collator(matching_rows(tiny_scenes["train"], 2))
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    assert set(batch) <= set(forward_argument_names(model))
    assert batch["labels"].tolist() == [1, 0, 1, 0] and batch["pixel_values"].shape == (4, 3, 32, 32)


def test_trainer_fine_tunes_matching_head_with_metrics(tmp_path, matching_setup, tiny_scenes):
    processor, model = matching_setup
    train_rows = matching_rows(tiny_scenes["train"], 8)  # few enough to learn by heart in a few steps
    eval_rows = matching_rows(tiny_scenes["validation"], 8)
    trainer = build_trainer(model, processor, "matching", train_rows, eval_rows, data_config=DATA,
                            output_dir=str(tmp_path), per_device_train_batch_size=16, per_device_eval_batch_size=16,
                            max_steps=40, learning_rate=3e-3, logging_steps=8, save_strategy="no", seed=0)
    result = trainer.train()
    after = trainer.evaluate()
    assert torch.isfinite(torch.tensor(result.training_loss))
    for key in ("eval_loss", "eval_matching_accuracy", "eval_matching_roc_auc"):
        assert key in after
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < 0.95 * losses[0]  # 0.703 -> 0.643 when written
    assert 0.0 <= after["eval_matching_roc_auc"] <= 1.0


@pytest.mark.slow
def test_torchrun_two_processes_loss_is_not_multiplied(tmp_path, matching_setup, tiny_scenes):
    processor, model = matching_setup
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    rows = matching_rows(tiny_scenes["train"], 4)  # 8 rows: one step of 2 processes x 4 covers them all
    collator = XModalDataCollator(processor, DATA, "matching", DATA.modalities, forward_argument_names(model))
    encoded = collator(rows)
    torch.save([{k: v[i] for k, v in encoded.items()} for i in range(len(rows))], tmp_path / "rows.pt")
    with torch.no_grad():
        expected = float(model.eval()(**encoded).loss)  # the mean over all 8 rows, in one process

    environment = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "trainers" / "trainer_torchrun.py"), str(tmp_path)]
    result = subprocess.run(command, env=environment, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["world_size"] == 2
    logged = log["logged"][0]["loss"]
    assert logged == pytest.approx(expected, rel=1e-3), (logged, expected)
