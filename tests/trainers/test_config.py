"""The YAML config: typed sections, unknown keys rejected with the valid keys listed."""

from pathlib import Path

import pytest

from xmodal.trainers.cli import main as cli_main
from xmodal.trainers.config import ConfigError, RunConfig, config_from_dict, load_config

from .helpers import REPO, tiny_config, write_yaml


@pytest.mark.parametrize("name", ["default", "classic", "pretrained", "video"])
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert isinstance(config, RunConfig)


def test_defaults_and_types(tmp_path):
    config = config_from_dict(tiny_config(tmp_path))
    assert config.training.output_dir == str(tmp_path)
    assert config.lora.enabled is False


@pytest.mark.parametrize("values, where, valid", [
    ({"trainer": {}}, "'trainer'", "training"),
    ({"training": {"lerning_rate": 1.0}}, "training.'lerning_rate'", "learning_rate"),
    ({"data": {"pth": "x"}}, "data.'pth'", "path"),
    ({"model": {"projection_dims": 8}}, "model.'projection_dims'", "projection_dim"),
    ({"model": {"text_config": {"hidden": 8}}}, "model.text_config.'hidden'", "hidden_size"),
])
def test_unknown_key_lists_valid_keys(values, where, valid):
    with pytest.raises(ConfigError) as error:
        config_from_dict(values)
    message = str(error.value)
    assert f"Unknown key {where}" in message
    assert "Valid keys:" in message and valid in message


@pytest.mark.parametrize("values, field", [
    ({"task": "dance"}, "task"),
    ({"training": {"max_steps": 0}}, "training.max_steps"),
    ({"training": {"mixed_precision": "fp64"}}, "training.mixed_precision"),
    ({"data": {"modalities": ["smell"]}}, "data.modalities"),
    ({"task": "matching"}, "data.columns.label"),
])
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(values)


def test_overrides_and_cli_error(tmp_path, capsys):
    path = write_yaml(tiny_config(tmp_path), tmp_path / "tiny.yaml")
    config = load_config(path, ["training.max_steps=3", "lora.r=4"])
    assert config.training.max_steps == 3 and config.lora.r == 4
    bad = write_yaml({**tiny_config(tmp_path), "optimiser": {}}, tmp_path / "bad.yaml")
    assert cli_main(["train", "--config", str(bad)]) == 2
    assert "Unknown key 'optimiser'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="No config file"):
        load_config(Path(tmp_path) / "missing.yaml")


@pytest.mark.parametrize("values, message", [
    ({"training": {"batch_size": True}}, r"training\.batch_size=True: expected an integer, got true or false"),
    ({"training": {"learning_rate": "fast"}}, r"training\.learning_rate='fast': expected a number, got a string"),
    ({"training": {"max_minutes": [1]}}, r"training\.max_minutes=\[1\]: expected a number or null, got a list"),
    ({"data": {"modalities": "text"}}, r"data\.modalities='text': expected a list, got a string"),
    ({"evaluation": {"split": 3}}, r"evaluation\.split=3: expected a string or null, got an integer"),
    ({"model": {"fusion_type": "bilinear"}}, r"model: .*bilinear"),
    ({"model": {"projection_dim": "wide"}}, r"model: .*projection_dim"),
])
def test_types_and_model_values_are_checked_when_read(values, message):
    """Checked before any data is built: reading a config touches nothing else."""
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_a_number_yaml_reads_as_a_string_is_converted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1e-3\n")  # PyYAML: a string (YAML 1.1 needs "1.0e-3")
    assert load_config(path).training.learning_rate == 1e-3


@pytest.mark.parametrize("text, message", [
    (b"training:\n  max_steps: [1, 2\n", r"bad\.yaml: line 3, column 1: "),
    (b"training:\n\tmax_steps: 3\n", r"bad\.yaml: line 2, column 1: .*\(YAML indents with spaces, not tabs\)"),
    (b"training:\n  output_dir: caf\xe9\n", r"bad\.yaml: not UTF-8 text \(byte \d+\); save the config as UTF-8"),
    (b"- a\n- b\n", r"bad\.yaml: a config is a mapping of sections"),
])
def test_unreadable_yaml_is_one_line_with_file_line_and_column(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    assert cli_main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("xmodal train: ")


@pytest.mark.parametrize("change, message", [
    ({"task": "pretraining"}, r"task='pretraining' with data.name='video_scenes'.*go with task: video"),
    ({"model": {"video_config": None}}, r"task: video needs a video tower: set model.video_config"),
    ({"data": {"streaming": True}}, r"data.streaming: true is not supported"),
    ({"data": {"video_fps": 0}}, r"data.video_fps=0 must be a positive number"),
])
def test_the_video_task_checks_its_data_and_model(change, message):
    import yaml

    values = yaml.safe_load((REPO / "configs" / "video.yaml").read_text())
    for section, value in change.items():
        if isinstance(value, dict):
            values[section].update(value)
        else:
            values[section] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)
