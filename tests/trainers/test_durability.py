"""Checkpoints that survive a crash anywhere: interrupted renames undone, files fsynced before they are
published, JSON and YAML written whole, and training states that load without unpickling anything."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xmodal.trainers import checkpointing
from xmodal.trainers.checkpointing import CheckpointError, atomic_folder, write_text_atomic
from xmodal.trainers.config import config_from_dict, save_config
from xmodal.trainers.evaluate import write_metrics
from xmodal.trainers.loop import train

from .helpers import REPO, cli_environment, run_cli, tiny_config, write_yaml

# Every pickled file an accelerate `save_state` folder can hold (accelerate 1.15 `checkpointing.py`).
OLD_FORMAT_FILES = ("optimizer.bin", "scheduler.bin", "sampler.bin", "dl_state_dict.bin", "scaler.pt",
                    "pytorch_model.bin", "random_states_0.pkl", "random_states_1.pkl", "custom_checkpoint_0.pkl",
                    "custom_checkpoint_1.pkl")


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _crash_between_renames(target, pid):
    """What a writer killed between the two renames of `replace_folder` leaves: the backup, no target."""
    os.replace(target, target.with_name(f".{target.name}.old-{pid}"))


def _make(target, text):
    with atomic_folder(target) as staging:
        (staging / "weights").write_text(text)


def test_next_writer_restores_a_folder_whose_save_was_killed_between_the_renames(tmp_path, caplog):
    target = tmp_path / "model"
    _make(target, "old")
    pid = _dead_pid()
    _crash_between_renames(target, pid)
    (tmp_path / f".model.tmp-{pid}-abc123").mkdir()  # the staging folder of that save, half written
    assert not target.exists()
    with caplog.at_level(logging.WARNING, logger="xmodal.trainers.checkpointing"):
        with pytest.raises(OSError):
            with atomic_folder(target):
                assert (target / "weights").read_text() == "old"  # restored before anything else happens
                raise OSError(errno.ENOSPC, "No space left on device")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # backup and both staging folders gone
    assert [r.message for r in caplog.records if "Restored" in r.message] == [
        f"Restored {target} from .model.old-{pid}, set aside by a save that was interrupted."]
    _make(target, "new")
    assert (target / "weights").read_text() == "new"


def test_a_running_writers_folders_are_left_alone(tmp_path):
    target = tmp_path / "model"
    _make(target, "old")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _crash_between_renames(target, writer.pid)  # as if it were between its renames right now
        (tmp_path / f".model.tmp-{writer.pid}-abc123").mkdir()
        checkpointing.recover_folder(target)
        assert sorted(p.name for p in tmp_path.iterdir()) == [f".model.old-{writer.pid}",
                                                              f".model.tmp-{writer.pid}-abc123"]
    finally:
        writer.kill()
        writer.wait()
    checkpointing.recover_folder(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failure_after_the_first_rename_is_undone_by_the_next_reader(tmp_path, monkeypatch):
    """The second rename fails and so does putting the backup back: the crash state, then recovery."""
    target = checkpointing.state_folder(tmp_path, 4)
    _make(target, "step 4")
    real_replace, calls = os.replace, []

    def replace(source, destination):
        calls.append(source)
        if len(calls) > 1:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    staging = tmp_path / "checkpoints" / ".step_0000004.tmp"
    staging.mkdir()
    with pytest.raises(OSError, match="Input/output error"):
        checkpointing.replace_folder(staging, target)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not target.exists() and (tmp_path / "checkpoints" / f".step_0000004.old-{os.getpid()}").is_dir()
    assert checkpointing.latest_state(tmp_path) == target  # the reader restores it
    assert (target / "weights").read_text() == "step 4"


KILLED_BETWEEN_RENAMES = """
import os, sys, time
from xmodal.trainers import checkpointing

real_replace = os.replace

def replace(source, destination):  # the first rename, then stop until killed
    real_replace(source, destination)
    print("renamed", flush=True)
    time.sleep(120)

with checkpointing.atomic_folder(sys.argv[1]) as staging:
    (staging / "weights").write_text("new")
    os.replace = replace
"""


def test_sigkill_between_the_renames_then_the_next_save_restores(tmp_path):
    target = tmp_path / "model"
    _make(target, "old")
    (tmp_path / "killed.py").write_text(KILLED_BETWEEN_RENAMES)
    process = subprocess.Popen([sys.executable, str(tmp_path / "killed.py"), str(target)], cwd=REPO,
                               env=cli_environment(), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "renamed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not target.exists()
    assert sorted(p.name[:len(".model.xxx-")] for p in tmp_path.iterdir() if p.name.startswith(".model")) == [
        ".model.old-", ".model.tmp-"]
    checkpointing.recover_folder(target)
    assert (target / "weights").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_files_and_folders_are_fsynced_before_the_rename_and_the_parent_after(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), real_replace(a, b)))
    with atomic_folder(tmp_path / "model") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "weights").write_text("w")
        (staging / "config.json").write_text("{}")
    rename = events.index(("replace", str(staging)))
    before, after = {path for _, path in events[:rename]}, events[rename + 1:]
    assert {str(staging / "sub" / "weights"), str(staging / "config.json"), str(staging / "sub"),
            str(staging)} <= before
    assert ("fsync", str(tmp_path)) in after

    events.clear()
    write_text_atomic(tmp_path / "metrics.json", "{}")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"] and events[-1] == ("fsync", str(tmp_path))


def test_json_and_yaml_outputs_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    write_metrics({"loss": 1.0}, tmp_path, "metrics")
    config = config_from_dict(tiny_config(tmp_path))
    save_config(config, tmp_path / "training_config.yaml")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"metrics.json", "metrics.md", "training_config.yaml"}

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk fills before the new content is safe
    with pytest.raises(OSError, match="No space"):
        write_metrics({"loss": 0.5}, tmp_path, "metrics")
    with pytest.raises(OSError, match="No space"):
        save_config(config_from_dict(tiny_config(tmp_path / "elsewhere")), tmp_path / "training_config.yaml")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old content, no temporary files


def test_training_state_round_trips_types_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    checkpointing._write_parts(tmp_path, "optimizer", optimizer.state_dict())
    restored = checkpointing._read_parts(tmp_path, "optimizer")
    assert restored["param_groups"] == optimizer.state_dict()["param_groups"]  # tuples stay tuples
    assert isinstance(restored["param_groups"][0]["betas"], tuple) and set(restored["state"]) == {0, 1}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(restored["state"][index][key], value, rtol=0, atol=0)

    import random

    import numpy as np

    checkpointing._write_parts(tmp_path, "rng_state_0", checkpointing.rng_state())
    drawn = (random.random(), float(np.random.rand()), torch.rand(3).tolist())
    checkpointing.set_rng_state(checkpointing._read_parts(tmp_path, "rng_state_0"))
    assert (random.random(), float(np.random.rand()), torch.rand(3).tolist()) == drawn
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".safetensors", ".safetensors"]


class _Payload:
    """Unpickling this creates `marker`: what a planted pickle could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _plant_pickles(folder, marker):
    for name in OLD_FORMAT_FILES:
        torch.save({"state": _Payload(marker)}, folder / name)
    torch.load(folder / "optimizer.bin", weights_only=False)  # the payload works...
    assert marker.exists()
    marker.unlink()  # ...and is armed again


def test_resume_reads_no_pickle_and_refuses_an_old_format_state(tmp_path, tiny_scenes):
    values = tiny_config(tmp_path, task="contrastive", modalities=("text", "image"),
                         training={"max_steps": 4, "save_every": 2, "save_total_limit": 3})
    train(config_from_dict(values))
    state = checkpointing.latest_state(tmp_path)
    assert sorted(p.name for p in state.iterdir()) == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors", "progress.json", "rng_state_0.json",
        "rng_state_0.safetensors", "scheduler.json", "training_state.json"]
    assert json.loads((state / "progress.json").read_text())["step"] == 4
    assert json.loads((state / "training_state.json").read_text())["format"] == checkpointing.STATE_FORMAT

    marker = tmp_path / "pwned"
    _plant_pickles(state, marker)
    values["training"]["max_steps"] = 6
    result = run_cli("train", "--config", write_yaml(values, tmp_path / "c.yaml"), "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(step 4)" in result.stdout + result.stderr  # resumed, the planted files ignored
    assert not marker.exists()

    old = checkpointing.latest_state(tmp_path)  # step 6: now as accelerate's save_state left it
    for path in old.iterdir():
        if path.name != "model.safetensors":
            path.unlink()
    _plant_pickles(old, marker)
    with pytest.raises(CheckpointError, match=r"^The training state .*step_0000006 is in an old format"):
        train(config_from_dict(values), resume=True)
    result = run_cli("train", "--config", tmp_path / "c.yaml", "--resume")
    assert result.returncode == 1 and not marker.exists()
    lines = [line for line in result.stderr.splitlines() if "old format" in line]
    assert len(lines) == 1 and lines[0].startswith("xmodal train: The training state"), result.stderr[-3000:]


def test_a_failed_state_save_leaves_the_previous_state_intact(tmp_path, tiny_scenes, monkeypatch):
    import safetensors.torch

    original, calls = safetensors.torch.save_model, []

    def save_model(model, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:  # half-written, then the disk is full
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(model, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)
    values = tiny_config(tmp_path, task="contrastive", modalities=("text", "image"),
                         training={"max_steps": 10, "save_every": 3})
    with pytest.raises(CheckpointError, match="No space left on device.*step_0000003.* is intact"):
        train(config_from_dict(values))
    states = checkpointing.list_states(tmp_path)
    assert [p.name for p in states] == ["step_0000003"]
    assert load_file(states[0] / "model.safetensors")  # complete and readable
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_two_process_state_resumes_bit_for_bit_and_in_one_process(tmp_path, tiny_scenes):
    """Two processes save per-process random states; resumed from step 3 in two processes the run ends with
    the same weights. The state also resumes in one process, which draws its own hard negatives (so the
    weights differ, by ~1e-3 as measured)."""
    import shutil

    def run(name, processes, *flags):
        values = tiny_config(tmp_path / name, training={"max_steps": 6, "batch_size": 16, "save_every": 3,
                                                        "warmup_steps": 0})
        result = run_cli("train", "--config", write_yaml(values, tmp_path / f"{name}.yaml"),
                         "--num-processes", processes, *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    run("whole", 2)
    state = checkpointing.state_folder(tmp_path / "whole", 3)
    assert {"rng_state_0.json", "rng_state_1.json", "rng_state_0.safetensors", "rng_state_1.safetensors"} <= {
        p.name for p in state.iterdir()}
    assert not [p for p in state.iterdir() if p.suffix in (".pkl", ".bin", ".pt")]
    expected = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    for name, processes in (("again", 2), ("alone", 1)):
        shutil.copytree(tmp_path / "whole", tmp_path / name)
        shutil.rmtree(tmp_path / name / "model")
        shutil.rmtree(checkpointing.state_folder(tmp_path / name, 6))
        assert "(step 3)" in run(name, processes, "--resume")
        actual = load_file(tmp_path / name / "model" / "model.safetensors")
        assert actual.keys() == expected.keys()
        for key in expected if processes == 2 else ():
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
