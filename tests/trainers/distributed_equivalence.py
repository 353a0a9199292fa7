"""Run by test_distributed.py under `accelerate launch --multi_gpu --num_processes 2` (on CPU: gloo).

Each rank takes its half of a fixed batch, runs `XModalModel(..., return_loss=True)` in fp32 under
DDP, and saves the loss averaged over ranks and the gradients after DDP's averaging.
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.modeling.tiny import tiny_config, tiny_inputs  # noqa: E402

import xmodal  # noqa: E402
from xmodal.trainers.run_end import end_training  # noqa: E402


def main(folder):
    folder = Path(folder)
    accelerator = Accelerator(mixed_precision="no")
    rank, world = accelerator.process_index, accelerator.num_processes
    setup = torch.load(folder / "setup.pt", weights_only=False)
    model = xmodal.XModalModel(tiny_config(**setup["config"]))
    model.load_state_dict(setup["state_dict"])
    model = accelerator.prepare(model)
    batch = setup["batch"]
    rows = batch["input_ids"].shape[0] // world
    local = {k: v[rank * rows:(rank + 1) * rows] for k, v in batch.items()}
    if "true_caption_hashes" in local:  # each rank pads to its own longest: the loss pads across ranks
        true = local["true_caption_hashes"]
        local["true_caption_hashes"] = true[:, :int((true >= 0).sum(1).max())]
    output = model(**local, return_loss=True)
    accelerator.backward(output.loss)
    loss = accelerator.reduce(output.loss.detach(), reduction="mean")
    grads = {n: p.grad.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters()
             if p.grad is not None}
    torch.save({"world_size": world, "loss": loss, "local_loss": output.loss.detach(), "grads": grads},
               folder / f"rank{rank}.pt")
    accelerator.wait_for_everyone()
    del model, output
    end_training(accelerator)


if __name__ == "__main__":
    main(sys.argv[1])
