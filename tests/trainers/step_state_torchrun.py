"""Run by test_distributed.py under `accelerate launch --multi_gpu --num_processes 2` (on CPU: gloo).

The loop's one collective a step (`loop._step_state`): rank 1's loss is NaN at the second call only, and each rank's
clock started at a different time; every rank saves what it was told.
"""

import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from xmodal.trainers.loop import _step_state  # noqa: E402
from xmodal.trainers.run_end import end_training  # noqa: E402


def main(folder):
    accelerator = Accelerator(mixed_precision="no")
    rank = accelerator.process_index
    start = time.perf_counter() - (100.0 if rank == 0 else 5.0)  # rank 0 has trained 100 s, rank 1 5 s
    told = []
    for loss in (torch.tensor(1.0), torch.tensor(float("nan") if rank == 1 else 2.0)):
        told.append(_step_state(accelerator, loss, start, seconds_before=7.0, synchronized=True))
    told.append(_step_state(accelerator, torch.tensor(1.0), start, seconds_before=7.0, synchronized=False))
    torch.save(told, Path(folder) / f"rank{rank}.pt")
    end_training(accelerator)


if __name__ == "__main__":
    main(sys.argv[1])
