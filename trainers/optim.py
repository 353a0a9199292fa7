"""The optimizer's side of training: AdamW parameter groups, per-part learning rates, the schedule.

The schedule is a multiplier of the peak rate per step (linear warmup from 1/(warmup+1), then cosine decay
to a floor), kept as a plain function rather than `transformers.get_cosine_with_min_lr_schedule_with_warmup`:
that one returns a ready `LambdaLR` whose warmup starts at 0 (a wasted first step), and the time budget
(`within_budget`) needs the multiplier itself to run the schedule by the clock.
"""

import math

import torch
from xmodal.modalities import MODULE_PARTS, PROJECTION_MODALITY, top_module

from .config import LEARNING_RATE_PARTS


def parameter_groups(model, weight_decay, learning_rate=None, scales=None):
    """AdamW groups: decay on matrices only; none on norms, biases, the temperature and logit bias (all < 2-D).

    `scales` ({part: factor}, see `LEARNING_RATE_PARTS`) multiplies `learning_rate` for the parameters of
    those parts, each group then carrying its own `lr`; the schedule scales every group alike."""
    scales = scales or {}
    if scales and learning_rate is None:
        raise ValueError("parameter_groups: `scales` multiply `learning_rate`; pass the learning rate too.")
    groups = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            scale = float(scales.get(learning_rate_part(name), 1.0))
            groups.setdefault((parameter.ndim >= 2, scale), []).append(parameter)
    result = []
    for (decays, scale), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if scale != 1.0:
            group["lr"] = learning_rate * scale
        result.append(group)
    return result


def make_optimizer(model, training):
    """torch's AdamW over `parameter_groups`, as `training.optimizer` names it: `adamw_torch_fused` updates every
    tensor in one kernel per step (on a CPU too), where `adamw_torch` loops over the parameters in Python on a
    CPU, which costs most with many small tensors (see benchmarks/README.md, issue 18)."""
    groups = parameter_groups(model, training.weight_decay, training.learning_rate, training.learning_rate_scales)
    return torch.optim.AdamW(groups, lr=training.learning_rate, betas=(training.adam_beta1, training.adam_beta2),
                             eps=training.adam_epsilon, fused=training.optimizer == "adamw_torch_fused" or None)


def clip_gradients(parameters, max_norm, accelerator=None):
    """`clip_grad_norm_` with the foreach kernels (torch uses them on a GPU only by default): one norm per
    dtype instead of one per tensor. Returns the total norm before clipping. With an `accelerator`, fp16's
    loss scale is undone first, and sharded models (FSDP, DeepSpeed) clip through their wrapper."""
    if accelerator is not None:
        if accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
            return accelerator.clip_grad_norm_(parameters, max_norm)
        accelerator.unscale_gradients()
    return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm, foreach=True)


def learning_rate_part(name):
    """The `LEARNING_RATE_PARTS` entry of a parameter (by its name in the model or its PEFT wrapper): a
    tower's projection into the shared space belongs to the tower; the temperature to none."""
    module = top_module(name)
    if module in PROJECTION_MODALITY:
        return PROJECTION_MODALITY[module]
    part = MODULE_PARTS.get(module)
    return part if part in LEARNING_RATE_PARTS else None


def warmup_cosine(warmup_steps, total_steps, min_ratio=0.0):
    """Multiplier of the peak learning rate: linear warmup, then cosine decay to `min_ratio`."""

    def schedule(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule


def within_budget(schedule, progress, training):
    """With `training.max_minutes`, `schedule` runs by whichever is further along, the steps or the clock,
    so a run cut short by its time budget still ends its warmup and its cosine decay."""
    if not training.max_minutes:
        return schedule
    budget = training.max_minutes * 60

    def at(step):
        return schedule(max(step, int(training.max_steps * min(1.0, progress.seconds / budget))))

    return at
