"""Run by test_hf_trainer.py under `torchrun --standalone --nproc_per_node 2`: one logged Trainer step."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import xmodal  # noqa: E402
from xmodal.processing import XModalProcessor  # noqa: E402
from xmodal.trainers.config import DataConfig  # noqa: E402
from xmodal.trainers.hf_trainer import build_trainer  # noqa: E402


def main(folder):
    folder = Path(folder)
    model = xmodal.XModalForMatching.from_pretrained(folder / "model")
    processor = XModalProcessor.from_pretrained(folder / "model")
    rows = torch.load(folder / "rows.pt", weights_only=False)
    data = DataConfig(modalities=["text", "image"], columns={"label": "match"})
    trainer = build_trainer(model, processor, "matching", rows, data_config=data, output_dir=str(folder / "out"),
                            per_device_train_batch_size=4, max_steps=1, learning_rate=0.0, logging_steps=1,
                            save_strategy="no", seed=0, dataloader_drop_last=True)
    trainer.train()
    if trainer.is_world_process_zero():
        logged = [entry for entry in trainer.state.log_history if "loss" in entry]
        (folder / "log.json").write_text(json.dumps({"world_size": trainer.args.world_size, "logged": logged}))
    # Torn down here, as a torchrun script should: left to the destructors at exit, gloo's threads now and then
    # aborted rank 0 ("terminate called without an active exception", seen once in CI after training had finished).
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
