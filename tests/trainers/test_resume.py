"""A run killed with SIGKILL and continued with --resume ends with the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from xmodal.trainers import checkpointing

from .helpers import REPO, cli_environment, run_cli, tiny_config, write_yaml

STEPS, SAVE_EVERY = 60, 10


def _config(tmp_path, name):
    # Pre-training samples hard negatives at random, so this also checks that the RNG state is restored.
    values = tiny_config(tmp_path / name, training={"max_steps": STEPS, "save_every": SAVE_EVERY,
                                                    "save_total_limit": 2, "batch_size": 8})
    values["data"]["max_train_samples"] = 56  # 7 batches per epoch: states are saved mid-epoch
    return write_yaml(values, tmp_path / f"{name}.yaml")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_scenes):
    reference = run_cli("train", "--config", _config(tmp_path, "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    config = _config(tmp_path, "killed")
    process = subprocess.Popen([sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", str(config)],
                               cwd=REPO, env=cli_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        states = checkpointing.list_states(tmp_path / "killed")
        if states and int(states[-1].name.split("_")[1]) >= 2 * SAVE_EVERY:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    assert not (tmp_path / "killed" / "model").exists()
    killed_at = int(checkpointing.latest_state(tmp_path / "killed").name.split("_")[1])
    assert killed_at < STEPS

    resumed = run_cli("train", "--config", config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {killed_at})" in resumed.stdout + resumed.stderr
    expected = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
