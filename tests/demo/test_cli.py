"""`xmodal demo`: the missing-model message, --train-if-missing, launch options, and light imports."""

import ast
import gc
import os
import types
from pathlib import Path

import pytest
import transformers

from xmodal.trainers import cli
from xmodal.trainers.demo import command as demo
from xmodal.trainers.demo import drawing as demo_drawing
from xmodal.trainers.demo import inputs as demo_inputs
from xmodal.trainers.demo import predictor as demo_predictor

from .tiny_demo import build_checkpoint


def test_without_a_model_it_says_how_to_make_one(tmp_path, capsys):
    assert cli.main(["demo", "--model", str(tmp_path / "runs" / "model")]) == 2
    message = capsys.readouterr().err
    assert "No model at" in message and "make run" in message
    assert "xmodal train --config configs/default.yaml" in message and "--train-if-missing" in message


def test_the_default_model_is_the_default_training_run():
    args = cli.build_parser().parse_args(["demo"])
    assert (args.model, args.host, args.port, args.share) == ("runs/default/model", "127.0.0.1", 7860, "no")


class FakeApp(types.SimpleNamespace):
    """Stands in for spaces_demo/app.py: records what `xmodal demo` asks of it instead of serving."""

    def __init__(self):
        super().__init__(launched=None, loaded=None)

    def load(self, model_dir, gallery_dir=None, data_path=None, video_model_dir=None):
        self.loaded = model_dir
        return "predictor"

    def build_demo(self, predictor):
        return types.SimpleNamespace(launch=lambda **options: setattr(self, "launched", options))

    def launch_options(self, host, port, share):
        return {"server_name": host, "server_port": port, "share": share}


def test_train_if_missing_trains_the_default_then_serves(assets, tmp_path, monkeypatch):
    model_dir = tmp_path / "runs" / "default" / "model"
    config = tmp_path / "default.yaml"
    config.write_text("task: pretraining\n")
    calls = []

    def fake_train(config_file, overrides, prog):
        calls.append((config_file, overrides, prog))
        build_checkpoint(model_dir, assets["data"], assets["captions"])
        return 0

    app = FakeApp()
    monkeypatch.setattr(demo, "run_training", fake_train)
    monkeypatch.setattr(demo, "load_app", lambda: app)
    args = cli.build_parser().parse_args(["demo", "--model", str(model_dir), "--config", str(config),
                                          "--train-if-missing", "--port", "7999"])
    assert demo.main(args) == 0
    assert calls == [(config, [f"training.output_dir={model_dir.parent}"], "xmodal demo")]
    assert app.loaded == str(model_dir)
    assert app.launched == {"server_name": "127.0.0.1", "server_port": 7999, "share": False}


def test_train_if_missing_needs_a_model_folder_named_model(tmp_path, capsys):
    args = cli.build_parser().parse_args(["demo", "--model", str(tmp_path / "elsewhere"), "--train-if-missing"])
    assert demo.main(args) == 2
    assert "must end in /model" in capsys.readouterr().err


def test_the_inference_module_has_no_gradio_import():
    for module in (demo_predictor, demo_inputs, demo_drawing, demo):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "gradio" not in imported, module.__name__


def test_importing_the_app_loads_no_model():
    def models():
        return sum(issubclass(type(o), transformers.PreTrainedModel) for o in gc.get_objects())

    before = models()
    app = demo.load_app()
    assert models() == before
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and app.MAX_UPLOAD == "10mb"


def test_app_reads_its_model_from_the_environment(monkeypatch):
    app = demo.load_app()
    monkeypatch.setenv("XMODAL_MODEL", "/some/checkpoint")
    assert app.default_model_dir() == "/some/checkpoint"
    monkeypatch.delenv("XMODAL_MODEL")
    assert app.default_model_dir() == "runs/default/model"
    assert app.launch_options()["server_name"] is None  # Gradio's default: 127.0.0.1 unless GRADIO_SERVER_NAME


@pytest.mark.parametrize("path", ["spaces_demo/requirements.txt", "spaces_demo/README.md"])
def test_the_space_files_exist(path):
    from .conftest import REPO

    text = (REPO / path).read_text()
    if path.endswith("README.md"):
        assert text.startswith("---\n") and "sdk: gradio" in text and "app_file: app.py" in text
        assert "screenshot.png" in text and (REPO / "spaces_demo" / "screenshot.png").is_file()
    else:
        assert "gradio" in text or "xmodal[demo]" in text
