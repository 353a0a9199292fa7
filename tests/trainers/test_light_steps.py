"""Light steps (`training.full_step_every`, `training.light_step_drop`): the costly inputs in some steps only."""

import pytest
import torch
from safetensors.torch import load_file

from xmodal.trainers.config import ConfigError, config_from_dict
from xmodal.trainers.loop import LossWindow, light_step

from .helpers import run_cli, tiny_config, write_yaml

BATCH = {"input_ids": 1, "attention_mask": 2, "pixel_values": 3, "input_features": 4, "feature_attention_mask": 5,
         "labels": 6}


def test_light_steps_leave_out_the_named_inputs_between_full_steps(tmp_path):
    training = config_from_dict(tiny_config(tmp_path, training={"full_step_every": 3,
                                                                "light_step_drop": ["audio", "labels"]})).training
    assert [light_step(BATCH, step, training) is BATCH for step in range(7)] == [True, False, False] * 2 + [True]
    assert light_step(BATCH, 1, training) == {"input_ids": 1, "attention_mask": 2, "pixel_values": 3}
    every_step = config_from_dict(tiny_config(tmp_path)).training
    assert all(light_step(BATCH, step, every_step) is BATCH for step in range(3))


def test_light_step_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"light_step_drop=\['speech'\].*'text', 'image', 'audio', 'labels'"):
        config_from_dict(tiny_config(tmp_path, training={"full_step_every": 2, "light_step_drop": ["speech"]}))
    with pytest.raises(ConfigError, match="full_step_every=0 must be a positive integer"):
        config_from_dict(tiny_config(tmp_path, training={"full_step_every": 0}))
    with pytest.raises(ConfigError, match="needs training.light_step_drop"):
        config_from_dict(tiny_config(tmp_path, training={"full_step_every": 2, "light_step_drop": []}))


def test_loss_window_averages_each_part_over_the_steps_that_computed_it():
    from accelerate import Accelerator

    window = LossWindow()
    window.add({"loss": torch.tensor(1.0), "transcription_loss": torch.tensor(4.0)})
    window.add({"loss": torch.tensor(3.0), "transcription_loss": None})
    assert window.reduce(Accelerator(cpu=True)) == {"loss": 2.0, "transcription_loss": 4.0}


@pytest.mark.slow
def test_light_steps_train_alike_in_one_and_two_processes(tmp_path, tiny_scenes):
    """Two processes (DDP, which must find the audio tower unused on light steps) end with one process's
    weights: Adam leaves the unused tower alone on light steps in both."""
    runs = {}
    for processes in (1, 2):
        values = tiny_config(tmp_path / f"p{processes}", task="contrastive",
                             training={"max_steps": 4, "batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 0,
                                       "log_every": 1, "full_step_every": 2, "light_step_drop": ["audio"]})
        result = run_cli("train", "--config", write_yaml(values, tmp_path / f"p{processes}.yaml"),
                         "--num-processes", processes)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = load_file(tmp_path / f"p{processes}" / "model" / "model.safetensors")
    for name in runs[1]:
        torch.testing.assert_close(runs[2][name], runs[1][name], rtol=0, atol=1e-5, msg=name)


def test_learning_rate_scales_group_each_tower_with_its_projection():
    from tests.modeling.tiny import tiny_config as tiny_model_config

    import xmodal
    from xmodal.trainers.optim import learning_rate_part, parameter_groups

    model = xmodal.XModalForPreTraining(tiny_model_config())
    groups = parameter_groups(model, 0.1, learning_rate=2e-3, scales={"audio": 3.0})
    names = {id(p): n for n, p in model.named_parameters()}
    scaled = {names[id(p)] for g in groups if "lr" in g for p in g["params"]}
    assert all(g["lr"] == pytest.approx(6e-3) for g in groups if "lr" in g)
    assert scaled == {n for n in names.values() if n.startswith(("xmodal.audio_model.", "xmodal.audio_projection"))}
    assert [(g["weight_decay"], "lr" in g) for g in groups] == [(0.1, False), (0.1, True), (0.0, False), (0.0, True)]
    assert learning_rate_part("base_model.model.xmodal.audio_model.layers.0.fc1.lora_A.default.weight") == "audio"
    assert learning_rate_part("base_model.model.xmodal.visual_projection.weight") == "image"
    assert learning_rate_part("xmodal.logit_scale") is None and learning_rate_part("itm_head.weight") == "heads"
    with pytest.raises(ValueError, match="pass the learning rate"):
        parameter_groups(model, 0.1, scales={"audio": 3.0})


def test_learning_rate_scales_are_checked(tmp_path):
    for bad in ({"speech": 2.0}, {"audio": 0}, {"audio": "fast"}):
        with pytest.raises(ConfigError, match=r"learning_rate_scales=.*'text', 'image', 'audio', 'video', 'fusion', 'decoder'"):
            config_from_dict(tiny_config(tmp_path, training={"learning_rate_scales": bad}))
    with pytest.raises(ConfigError, match=r"learning_rate_scales=\['audio'\]: expected a mapping, got a list"):
        config_from_dict(tiny_config(tmp_path, training={"learning_rate_scales": ["audio"]}))


def test_a_learning_rate_scale_scales_that_towers_update(tmp_path, tiny_scenes):
    """One AdamW step with the image tower's rate halved moves it half as far and the text tower as far."""
    from xmodal.trainers.loop import train

    weights = {}
    for name, scales in (("still", {"image": 1e-9}), ("half", {"image": 0.5}), ("whole", {})):
        values = tiny_config(tmp_path / name, task="contrastive", modalities=("text", "image"),
                             training={"max_steps": 1, "warmup_steps": 0, "learning_rate_scales": scales},
                             evaluation={"split": None})
        train(config_from_dict(values))
        weights[name] = load_file(tmp_path / name / "model" / "model.safetensors")
    image = [n for n in weights["whole"] if n.startswith(("vision_model.", "visual_projection"))]
    text = [n for n in weights["whole"] if n.startswith(("text_model.", "text_projection"))]
    assert image and text
    for n in image:
        start = weights["still"][n]
        torch.testing.assert_close(weights["half"][n] - start, 0.5 * (weights["whole"][n] - start), rtol=1e-3,
                                   atol=1e-6, msg=n)
    moved = sum(float((weights["whole"][n] - weights["still"][n]).abs().sum()) for n in image)
    assert moved > 0
    for n in text:
        assert torch.equal(weights["half"][n], weights["whole"][n]), n
