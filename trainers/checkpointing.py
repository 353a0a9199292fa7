"""Checkpoints that survive crashes: folders written whole or not at all, and training states without pickles.

Every folder is written under a temporary name, fsynced, and renamed into place only when complete, so a
failed save (no space left, a kill, a power cut) leaves the previous checkpoint as it was; a kill between
the two renames of `replace_folder` is undone by the next writer or reader of that folder. A training
state holds safetensors and JSON only: loading one runs no pickle, whoever wrote the folder.
"""

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_PATTERN = re.compile(r"^step_(\d+)$")
STATE_FORMAT = "xmodal-training-state/1"
MANIFEST = "training_state.json"  # written last by the main process; its absence marks an old (pickled) state
MODEL_FILE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the previous one is intact."""


@contextlib.contextmanager
def atomic_folder(path):
    """Yields a temporary folder next to `path`; on success it replaces `path`, on failure it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        yield staging
        replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(source, target):
    """Moves `source`, fsynced, to `target`; an existing `target` is kept under a backup name
    (`.NAME.old-PID`) until the move succeeded. A kill between the two renames leaves that backup and no
    `target`: `recover_folder` puts it back."""
    source, target = Path(source), Path(target)
    fsync_tree(source)
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(backup, ignore_errors=True)  # left by an earlier process that had this id
        os.replace(target, backup)
    try:
        os.replace(source, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    fsync_dir(target.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def recover_folder(path, staging=True):
    """Undoes what a writer of `path` that died mid-save left behind: its backup is renamed back when `path`
    is missing (deleted when `path` exists), and with `staging` its half-written `.NAME.tmp-*` folders are
    deleted. Folders of a writer that is still running are left alone."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    name = re.escape(path.name)
    backup_name = re.compile(rf"^\.{name}\.old-(\d+)$")
    staging_name = re.compile(rf"^\.{name}\.tmp-(?:(\d+)-)?\w+$")  # without a process id: an older xmodal's
    for entry in sorted(path.parent.iterdir()):
        if (found := backup_name.match(entry.name)) and not _writer_running(found.group(1)):
            if path.exists():
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                os.replace(entry, path)
            except FileNotFoundError:  # another process restored it first
                continue
            fsync_dir(path.parent)
            logger.warning("Restored %s from %s, set aside by a save that was interrupted.", path, entry.name)
        elif staging and (found := staging_name.match(entry.name)) and not _writer_running(found.group(1)):
            shutil.rmtree(entry, ignore_errors=True)


def _writer_running(pid):
    """Whether the process that named a folder after its id still runs. This process is not: one call
    at a time writes a folder, and after a restart (in a container) a dead writer's id is often our own."""
    if pid is None or int(pid) == os.getpid():
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end that process on Windows
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


def fsync_dir(path):
    """Makes the names in folder `path` (new files, renames) durable."""
    if os.name == "nt":  # Windows cannot open a folder to fsync it; NTFS journals its names
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:  # some file systems cannot fsync a folder
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


def fsync_tree(path):
    """Makes every file under `path`, and the folders themselves, durable (before a rename publishes them)."""
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                descriptor = os.open(file, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        fsync_dir(root)


def write_text_atomic(path, text):
    """Writes `text` (UTF-8) to `path` whole or not at all: a temporary file beside it, fsynced, renamed."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        with os.fdopen(os.open(temporary, flags, 0o666), "wb") as handle:  # 0o666: the umask applies
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def state_folder(output_dir, step):
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def list_states(output_dir):
    """Complete training-state folders, oldest first (temporary folders are ignored; a state whose save
    was killed between its two renames is first put back)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    for entry in list(folder.iterdir()):
        if found := re.match(r"^\.(step_\d+)\.old-\d+$", entry.name):
            recover_folder(folder / found.group(1), staging=False)
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STATE_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_state(output_dir):
    states = list_states(output_dir)
    return states[-1] if states else None


def prune_states(output_dir, keep):
    """Keeps the newest `keep` states; deletes the staging folders of saves that were killed."""
    for old in list_states(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for staging in (Path(output_dir) / "checkpoints").glob(".step_*.tmp"):
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- training states
def save_training_state(accelerator, output_dir, step, keep, *, model, optimizer, scheduler, progress):
    """Writes the training state into a temporary folder, renamed into place when every process has written
    its part: the weights (safetensors), the optimizer (safetensors + JSON), the schedule, `progress`, the
    loss scaler (JSON) and each process's random generators (safetensors + JSON)."""
    final = state_folder(output_dir, step)
    staging = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        _write_training_state(accelerator, staging, step, model, optimizer, scheduler, progress)
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


def _write_training_state(accelerator, folder, step, model, optimizer, scheduler, progress):
    _refuse_deepspeed(accelerator)
    model_state, optimizer_state = _model_and_optimizer_state(accelerator, model, optimizer)
    folder.mkdir(parents=True, exist_ok=True)  # on other machines too, if the folder is not shared
    rank = accelerator.process_index
    _write_parts(folder, f"rng_state_{rank}", rng_state())
    if accelerator.is_main_process:
        from safetensors.torch import save_file, save_model

        if model_state is None:
            save_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE))  # drops tied duplicates
        else:  # tied weights come back as one tensor under two names; safetensors wants each stored once
            stored = set()
            for name, tensor in model_state.items():
                storage = tensor.untyped_storage().data_ptr()
                model_state[name] = tensor.clone() if storage in stored else tensor
                stored.add(storage)
            save_file(model_state, folder / MODEL_FILE)
        _write_parts(folder, "optimizer", optimizer_state)
        _write_parts(folder, "scheduler", scheduler.state_dict())
        _write_parts(folder, "progress", progress.state_dict())
        if accelerator.scaler is not None:
            _write_parts(folder, "scaler", accelerator.scaler.state_dict())
        manifest = {"format": STATE_FORMAT, "step": step, "accelerator_step": accelerator.step,
                    "num_processes": accelerator.num_processes}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def load_training_state(accelerator, folder, *, model, optimizer, scheduler, progress):
    """Restores what `save_training_state` wrote into `folder`. Reads safetensors and JSON only: any pickle
    there (`*.pkl`, `*.bin`) is never opened, and a state with nothing else is refused."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise CheckpointError(f"The training state {folder} is in an old format (pickle files, which can run "
                              "code when loaded) and is not loaded; delete it, or train without --resume.")
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != STATE_FORMAT:
        raise CheckpointError(f"The training state {folder} has format {manifest.get('format')!r}; this xmodal "
                              f"reads {STATE_FORMAT!r}.")
    _refuse_deepspeed(accelerator)
    _load_model_and_optimizer(accelerator, folder, model, optimizer)
    scheduler.load_state_dict(_read_parts(folder, "scheduler"))
    progress.load_state_dict(_read_parts(folder, "progress"))
    if accelerator.scaler is not None and (folder / "scaler.json").is_file():
        accelerator.scaler.load_state_dict(_read_parts(folder, "scaler"))
    accelerator.step = manifest["accelerator_step"]
    rank = accelerator.process_index
    if (folder / f"rng_state_{rank}.json").is_file():
        set_rng_state(_read_parts(folder, f"rng_state_{rank}"))
    else:  # resumed with more processes than saved the state: this one keeps its seeded generators
        logger.warning("%s holds no random state for process %d; it continues from the seed.", folder, rank)


def _refuse_deepspeed(accelerator):
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise CheckpointError("Training states are not saved under DeepSpeed, whose checkpoints are pickles: "
                              "use DDP or FSDP, or set training.save_every: 0.")


def _is_fsdp(accelerator):
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def _model_and_optimizer_state(accelerator, model, optimizer):
    """(weights or None, optimizer state). Under FSDP every process gives its shard and the main process gets
    them whole, keyed by parameter name; otherwise the main process's own copies are complete."""
    if not _is_fsdp(accelerator):
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer.optimizer, options=options))


def _load_model_and_optimizer(accelerator, folder, model, optimizer):
    from safetensors.torch import load_file, load_model

    if not _is_fsdp(accelerator):
        load_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE), strict=True)
        optimizer.load_state_dict(_read_parts(folder, "optimizer"))
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    main = accelerator.is_main_process  # the main process reads the files and sends every process its shard
    set_model_state_dict(model, load_file(folder / MODEL_FILE) if main else {}, options=options)
    set_optimizer_state_dict(model, optimizer.optimizer, _read_parts(folder, "optimizer") if main else {},
                             options=options)


def rng_state():
    """This process's random generators: Python's, NumPy's, torch's CPU one and its accelerators'."""
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    for name, module in _accelerator_rng_modules():
        state[name] = module.get_rng_state_all()
    return state


def set_rng_state(state):
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for name, module in _accelerator_rng_modules():
        if name in state:
            module.set_rng_state_all(state[name])


def _accelerator_rng_modules():
    import torch

    for name in ("cuda", "xpu", "npu", "mlu", "musa", "hpu"):
        module = getattr(torch, name, None)
        if module is not None and hasattr(module, "get_rng_state_all") and module.is_available():
            yield name, module


# ----------------------------------------------------------------------------- state dicts without pickle
def _write_parts(folder, name, value):
    """`value` (dicts, lists, tuples, numbers, strings, tensors, arrays) as `<name>.json` with its tensors
    and arrays in `<name>.safetensors`; tuples, non-string keys and dtypes come back as they were."""
    tensors = {}
    tree = _to_json(value, tensors, name)
    (folder / f"{name}.json").write_text(json.dumps(tree))
    if tensors:
        from safetensors.torch import save_file

        save_file(tensors, folder / f"{name}.safetensors")


def _read_parts(folder, name):
    tensors = {}
    if (folder / f"{name}.safetensors").is_file():
        from safetensors.torch import load_file

        tensors = load_file(folder / f"{name}.safetensors")
    return _from_json(json.loads((folder / f"{name}.json").read_text()), tensors)


_MARKERS = ("__tensor__", "__array__", "__tuple__", "__items__")


def _to_json(value, tensors, key):
    import numpy as np
    import torch

    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        name = key if key not in tensors else f"{key}#{len(tensors)}"  # a key holding a dot could repeat a path
        if torch.is_tensor(value):
            tensors[name] = value.detach().cpu().contiguous()
            return {"__tensor__": name}
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
        return {"__array__": name}
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_json(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not set(_MARKERS) & value.keys():
            return {k: _to_json(v, tensors, f"{key}.{k}") for k, v in value.items()}
        return {"__items__": [[k, _to_json(v, tensors, f"{key}.{i}")] for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"{key}: a {type(value).__name__} cannot be saved without pickle.")


def _from_json(tree, tensors):
    if isinstance(tree, list):
        return [_from_json(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__array__" in tree:
        return tensors[tree["__array__"]].numpy()
    if "__tuple__" in tree:
        return tuple(_from_json(v, tensors) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {k: _from_json(v, tensors) for k, v in tree["__items__"]}
    return {k: _from_json(v, tensors) for k, v in tree.items()}
