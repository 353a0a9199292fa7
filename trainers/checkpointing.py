"""Checkpoints that survive crashes: folders written whole or not at all, and training states.

Every folder is written under a temporary name and renamed into place only when complete, so a
failed save (no space left, a kill) leaves the previous checkpoint as it was.
"""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

STATE_PATTERN = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the previous one is intact."""


@contextlib.contextmanager
def atomic_folder(path):
    """Yields a temporary folder next to `path`; on success it replaces `path`, on failure it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        yield staging
        replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(source, target):
    """Moves `source` to `target`; an existing `target` is kept under a backup name until the move succeeded."""
    source, target = Path(source), Path(target)
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
    try:
        os.replace(source, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def state_folder(output_dir, step):
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def list_states(output_dir):
    """Complete training-state folders, oldest first (temporary folders are ignored)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STATE_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_state(output_dir):
    states = list_states(output_dir)
    return states[-1] if states else None


def prune_states(output_dir, keep):
    for old in list_states(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def save_training_state(accelerator, output_dir, step, keep):
    """`save_state` into a temporary folder, renamed into place when every process has written its part."""
    final = state_folder(output_dir, step)
    staging = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        previous = latest_state(output_dir)
        raise CheckpointError(f"Saving the training state at step {step} to {final} failed ({error}); "
                              f"the previous state {previous} is intact.") from error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(staging, final)
        prune_states(output_dir, keep)
    accelerator.wait_for_everyone()
