"""The Accelerate loop in one process: optimizer groups, schedule, a full run, and its failure modes."""

import errno
import functools
import json
import math
import re

import pytest
from huggingface_hub import ModelCard

import xmodal
from xmodal.trainers import checkpointing
from xmodal.trainers.config import ConfigError, config_from_dict
from xmodal.trainers.data import DataError
from xmodal.trainers.evaluate import evaluate_checkpoint
from xmodal.trainers.loop import TrainingDiverged, train
from xmodal.trainers.optim import parameter_groups, warmup_cosine

from tests.modeling.tiny import CTC_LOSS_WEIGHTS

from .helpers import run_cli, tiny_config, write_yaml


def test_no_weight_decay_on_norms_biases_and_temperature():
    from tests.modeling.tiny import tiny_config as tiny_model_config

    model = xmodal.XModalModel(tiny_model_config(contrastive_loss="sigmoid"))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "logit_bias"} <= skipped
    assert any(n.endswith("norm.weight") for n in skipped) and any(n.endswith(".bias") for n in skipped)
    assert all(p.ndim >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0


def test_warmup_then_cosine():
    schedule = warmup_cosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.2) and schedule(3) == pytest.approx(0.8)
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(14) == pytest.approx(0.1)


def test_train_writes_a_loadable_checkpoint_with_card_and_metrics(tmp_path, tiny_scenes):
    values = tiny_config(tmp_path, training={"max_steps": 4, "eval_every": 2, "save_every": 2, "report_to": ["tensorboard"]},
                         evaluation={"split": "test", "max_samples": 16}, model={"loss_weights": CTC_LOSS_WEIGHTS})
    metrics = train(config_from_dict(values))
    model_dir = tmp_path / "model"
    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "README.md",
                 "training_curve.png", "metrics.json", "metrics.md", "training_config.yaml", "generation_config.json"):
        assert (model_dir / name).is_file(), name
    # this process has at least the model and its data resident, and no CPU test process reaches 64 GiB
    assert 50 < metrics["train_peak_rss_mib"] < 65536
    # a duration is recorded, in seconds to the millisecond; how long it took depends on the machine
    assert isinstance(metrics["train_seconds"], float) and metrics["train_seconds"] >= 0
    assert metrics["train_steps"] == values["training"]["max_steps"]  # with the batch size: the samples seen
    # word order, relations, counts and sizes: accuracy of preferring the true caption, by similarity and match head
    for kind in ("swap_objects", "swap_relation"):
        assert metrics[f"composition_{kind}_pairs"] > 0
        assert 0 <= metrics[f"composition_{kind}_contrastive"] <= 1 and 0 <= metrics[f"composition_{kind}_matching"] <= 1
    # the time spent waiting for batches is a fraction of the training time, logged per line and for the run
    assert 0 <= metrics["train_data_wait_fraction"] < 1
    saved = json.loads((model_dir / "metrics.json").read_text())["train_data_wait_fraction"]
    assert saved == metrics["train_data_wait_fraction"]
    card = (model_dir / "README.md").read_text()
    assert "CC BY-SA 4.0" in card and "eSpeak NG" in card and "xmodal train" in card and "text_to_image_R@1" in card
    # metadata the Hub indexes, with the results as a model index
    data = ModelCard.load(model_dir / "README.md").data
    assert (data.library_name, data.license, data.pipeline_tag) == ("transformers", "apache-2.0",
                                                                   "zero-shot-image-classification")
    recalls = {r.metric_name: r.metric_value for r in data.eval_results if r.metric_type == "recall"}
    assert recalls["text_to_image_R@1"] == pytest.approx(metrics["text_to_image_R@1"])
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    for key in ("text_to_image_R@1", "image_to_text_R@10", "audio_to_image_R@5", "image_text_matching_roc_auc",
                "speech_to_text_cer", "caption_wer", "caption_closest_cer", "speech_to_text_ctc_cer",
                "text_to_image_R@1_objects", "text_to_image_objects_pairwise", "text_to_image_details_pairwise"):
        assert key in metrics
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*")), "no TensorBoard log"
    assert [p.name for p in checkpointing.list_states(tmp_path)] == ["step_0000002", "step_0000004"]
    for cls in (xmodal.XModalModel, xmodal.XModalForConditionalGeneration, xmodal.XModalForMatching):
        cls.from_pretrained(model_dir)


@pytest.mark.slow
def test_trained_tiny_model_beats_chance(tmp_path, tiny_scenes):
    """Text-image retrieval on the tiny test split after a short run, scored by `xmodal eval`."""
    values = tiny_config(tmp_path, task="contrastive", modalities=("text", "image"),
                         training={"max_steps": 150, "batch_size": 32, "learning_rate": 5e-3, "warmup_steps": 5})
    train(config_from_dict(values))
    result = run_cli("eval", "--model", tmp_path / "model", "--split", "train", "--max-samples", 32)
    assert result.returncode == 0, result.stderr
    metrics = evaluate_checkpoint(tmp_path / "model", split="train", max_samples=32)
    # Chance for R@5 over 32 items is ~0.16 (a little more with ambiguous captions); measured ~0.8 after training.
    assert metrics["text_to_image_R@5"] >= 0.6, metrics
    assert metrics["image_to_text_R@5"] >= 0.6, metrics
    assert (tmp_path / "model" / "eval_train.json").is_file() and (tmp_path / "model" / "eval_train.md").is_file()


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path, tiny_scenes, monkeypatch):
    original, calls = xmodal.XModalModel.forward, []

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) > 5:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(xmodal.XModalModel, "forward", forward)
    values = tiny_config(tmp_path, task="contrastive", modalities=("text", "image"),
                         training={"max_steps": 10, "save_every": 4})
    with pytest.raises(TrainingDiverged) as error:
        train(config_from_dict(values))
    message = str(error.value)
    assert "nan" in message and "step 6" in message and "step_0000004" in message
    assert [p.name for p in checkpointing.list_states(tmp_path)] == ["step_0000004"]
    assert not (tmp_path / "model").exists()


def test_atomic_folder_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "model"
    with checkpointing.atomic_folder(target) as staging:
        (staging / "weights").write_text("old")
    with pytest.raises(OSError):
        with checkpointing.atomic_folder(target) as staging:
            (staging / "weights").write_text("new, half written")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_missing_data_dir_is_a_clear_error(tmp_path):
    values = tiny_config(tmp_path, data={"path": str(tmp_path / "nowhere"), "build": False})
    with pytest.raises(DataError, match=r"No dataset at data.path=.*nowhere.*xmodal data build"):
        train(config_from_dict(values))
    result = run_cli("train", "--config", write_yaml(values, tmp_path / "c.yaml"))
    assert result.returncode == 2 and "No dataset at data.path" in result.stderr


def test_a_time_budget_runs_the_schedule_by_the_clock_and_stops(tmp_path, tiny_scenes, capsys):
    from xmodal.trainers.loop import TrainingProgress
    from xmodal.trainers.optim import within_budget

    training = config_from_dict(tiny_config(tmp_path, training={"max_steps": 100, "max_minutes": 1.0})).training
    progress = TrainingProgress()
    schedule = within_budget(warmup_cosine(10, 100, 0.0), progress, training)
    assert schedule(50) == pytest.approx(warmup_cosine(10, 100, 0.0)(50))  # no time spent: by the steps
    progress.seconds = 45.0  # three quarters of the budget: as far along as step 75
    assert schedule(20) == pytest.approx(warmup_cosine(10, 100, 0.0)(75))
    progress.seconds = 120.0
    assert schedule(20) == pytest.approx(0.0)

    values = tiny_config(tmp_path, training={"max_steps": 10_000, "max_minutes": 0.05}, evaluation={"split": None})
    train(config_from_dict(values))  # 3 seconds of training, then the model is written
    stopped = re.search(r"Stopped at step (\d+) of 10000", capsys.readouterr().out)
    assert stopped and 1 <= int(stopped.group(1)) < 10_000
    assert (tmp_path / "model" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="training.max_minutes=0 must be a positive number"):
        config_from_dict(tiny_config(tmp_path, training={"max_minutes": 0}))


def test_bf16_training_validates_on_the_float16_cached_features(tmp_path, tiny_scenes, capsys):
    """`mixed_precision: bf16` (what `auto` picks on CPUs with AMX or AVX512-BF16) with validation during the run:
    the cached pixels and log-mels are float16, and collating them inside autocast failed (`torch.stack`:
    "Unexpected floating ScalarType in at::autocast::prioritize")."""
    values = tiny_config(tmp_path, training={"max_steps": 2, "eval_every": 2, "mixed_precision": "bf16"})
    metrics = train(config_from_dict(values))
    assert metrics["train_steps"] == 2, metrics
    printed = re.search(r"step 2: eval_loss=([0-9.]+), eval_text_to_image_R@1=([0-9.]+)", capsys.readouterr().out)
    assert printed and math.isfinite(float(printed[1])), "no validation at step 2"
