"""The end of a training run: the model taken out of its wrappers, the process group closed, then the main
process alone saving and evaluating (`export.finish`) and, when asked, pushing to the Hub.

The order matters. A barrier held over an evaluation longer than its timeout (gloo's 30 minutes;
`configs/pretrained.yaml`'s five splits took longer on 2 cores) failed the run and lost its model, so the
process group ends before the evaluation starts.
"""

import contextlib
import gc
import os
from pathlib import Path

import torch

from .export import finish


def is_sharded(accelerator):
    """Whether the model is sharded over the processes (FSDP, DeepSpeed)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def unwrap_for_saving(accelerator, model):
    """(the main process's unwrapped model or None, the full state dict of a sharded model or None), with every
    process taking part: a sharded model gathers its weights collectively."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    return (accelerator.unwrap_model(model) if accelerator.is_main_process else None), state_dict


def end_training(accelerator):
    """Closes the trackers and the process group, after dropping the prepared objects.

    A DDP wrapper's reducer holds the process group from C++ and is freed with the GIL held. Had it the last
    reference (as it does once `destroy_process_group` has run), gloo's destructor would wait for its worker
    threads while one of them waits for the GIL to free the tensors of the final collectives: an
    intermittent hang of every process but the first at the end of a run (seen with torch 2.13; pytorch
    issue 56297). Freed first, the process group's own binding drops the last reference, without the GIL.
    The caller drops its own references to the wrapped model, optimizer and scheduler before calling.
    """
    accelerator.free_memory()  # forgets the prepared models, optimizers, schedulers and loaders
    gc.collect()  # a wrapper kept alive by a reference cycle would otherwise be freed at some later collection
    accelerator.end_training()


@contextlib.contextmanager
def evaluation_threads(training, accelerator):
    """The main process evaluates alone, after the others: on a CPU with every core, unless `training.num_threads`."""
    before = torch.get_num_threads()
    if accelerator.device.type == "cpu" and not training.num_threads:
        torch.set_num_threads(max(before, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def close_run(accelerator, final_model, state_dict, processor, config, progress, train_seconds, command,
              run_metrics):
    """Ends the process group, then (main process) writes and evaluates `<output_dir>/model` and pushes it when
    `training.push_to_hub`; returns the metrics (empty on the other processes)."""
    training = config.training
    end_training(accelerator)
    metrics = {}
    if final_model is not None:
        with evaluation_threads(training, accelerator):
            metrics = finish(final_model, processor, config, progress, train_seconds, command,
                             state_dict=state_dict, run_metrics=run_metrics)
        if training.push_to_hub:  # the model is saved: a failed upload loses nothing
            from .push import push_to_hub

            output_dir = Path(training.output_dir)
            _, url = push_to_hub(output_dir / "model", training.hub_model_id or output_dir.resolve().name,
                                 private=training.hub_private_repo)
            print(f"Pushed: {url}")
    return metrics
