"""`xmodal push` and `training.push_to_hub`: the upload plan, and clear errors without the network (no machine
here reaches the Hub, so the upload itself is exercised up to the first request)."""

import socket
import subprocess
import sys

import pytest
import torch

from xmodal import XModalModel
from xmodal.trainers.config import config_from_dict
from xmodal.trainers.push import PushError, push_to_hub, upload_plan

from tests.modeling.tiny import tiny_config

from .helpers import REPO, cli_environment, run_cli, tiny_config as tiny_run_config, write_yaml


@pytest.fixture()
def model_dir(tmp_path, tiny_processor):
    """A folder as `xmodal train` writes it, plus what must not be uploaded."""
    folder = tmp_path / "run" / "model"
    torch.manual_seed(0)
    XModalModel(tiny_config()).save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    (folder / "metrics.json").write_text("{}")
    (folder / "checkpoints" / "step_10").mkdir(parents=True)
    (folder / "checkpoints" / "step_10" / "optimizer.safetensors").write_bytes(b"x")
    (folder / ".metrics.json.tmp-12-ab").write_text("{")
    (folder / ".xmodal_index").mkdir()
    (folder / ".xmodal_index" / "items.json").write_text("{}")
    return folder


def test_the_plan_is_the_checkpoint_without_hidden_files_or_training_states(model_dir):
    plan = {f.path: f for f in upload_plan(model_dir)}
    assert {"config.json", "model.safetensors", "metrics.json", "processor_config.json", "tokenizer.json",
            "modeling_xmodal.py", "processing_xmodal.py"} <= set(plan)
    assert not [path for path in plan if path.startswith((".", "checkpoints/")) or "/." in path]
    assert plan["model.safetensors"].lfs and not plan["config.json"].lfs
    assert plan["model.safetensors"].size == (model_dir / "model.safetensors").stat().st_size


def test_plan_and_argument_mistakes(tmp_path, model_dir):
    with pytest.raises(PushError, match="No model at .*: it has no config.json"):
        upload_plan(tmp_path)
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(PushError, match=r"No weights in .*: no \*.safetensors file to push"):
        upload_plan(model_dir)
    with pytest.raises(PushError, match="expected NAME or OWNER/NAME"):
        push_to_hub(model_dir, "a/b/c", dry_run=True)


def test_dry_run_prints_the_plan(model_dir):
    result = run_cli("push", "--model", model_dir, "--repo-id", "me/tiny", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Upload plan for me/tiny: ")
    assert "  model.safetensors  (" in result.stdout and "LFS" in result.stdout and "checkpoints" not in result.stdout


def test_offline_is_one_line_and_changes_nothing(model_dir):
    before = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*"))
    result = run_cli("push", "--model", model_dir, "--repo-id", "me/tiny")  # HF_HUB_OFFLINE=1 in the tests
    assert result.returncode == 2
    assert result.stderr.strip() == ("xmodal push: The Hub is offline here (HF_HUB_OFFLINE is set): nothing was "
                                     "uploaded. Unset it on a machine with network access, or use --dry-run to "
                                     "see the upload plan.")
    assert sorted(p.relative_to(model_dir) for p in model_dir.rglob("*")) == before


def test_an_unreachable_hub_is_one_line(model_dir):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = dict(cli_environment(), HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{port}",
                       HF_TOKEN="hf_not_a_real_token")
    result = subprocess.run([sys.executable, "-m", "xmodal.trainers.cli", "push", "--model", str(model_dir),
                             "--repo-id", "me/tiny"], capture_output=True, text=True, env=environment, cwd=REPO,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xmodal push: Could not push to http://127.0.0.1:{port}/me/tiny: ")
    assert "Nothing was changed locally; check the network" in lines[0]


def test_training_push_to_hub_pushes_after_saving(tmp_path, tiny_scenes):
    values = tiny_run_config(tmp_path / "run", task="contrastive", modalities=("text", "image"),
                             training={"max_steps": 1, "batch_size": 8, "push_to_hub": True,
                                       "hub_model_id": "me/tiny-run"})
    config = config_from_dict(values)
    assert (config.training.push_to_hub, config.training.hub_model_id) == (True, "me/tiny-run")
    result = run_cli("train", "--config", write_yaml(values, tmp_path / "run.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("xmodal train: The Hub is offline here")
    assert "Upload plan for me/tiny-run: " in result.stdout
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()  # saved before the upload was tried
