"""Fine-tuning any XModal head with `transformers.Trainer`, unchanged.

The recipe: the collator emits exactly the `forward` argument names, `remove_unused_columns=False`
keeps the raw columns (images, audio) for it, and `compute_metrics` scores the head's logits. The
model classes set `accepts_loss_kwargs = False`, so under `torchrun --nproc_per_node N` the Trainer
does not multiply the loss by the world size.

    trainer = build_trainer(model, processor, "matching", train_rows, eval_rows, data_config,
                            output_dir="out", per_device_train_batch_size=16, max_steps=100)
    trainer.train()
"""

from xmodal.modalities import MODALITIES

from .config import DataConfig

# Output fields the Trainer must not gather at evaluation: strings (which modalities were paired), nested
# outputs and per-tower states. What remains are the logits that `compute_metrics` scores.
IGNORE_AT_INFERENCE = ["labels", "pair_modalities", "fusion_output", "pooled_output",
                       *(spec.output for spec in MODALITIES.values()), *(f"{name}_embeds" for name in MODALITIES),
                       "decoder_hidden_states", "decoder_attentions", "cross_attentions", "cache",
                       "encoder_last_hidden_state", "encoder_attention_mask", "matching_logits", "caption_logits",
                       "transcription_logits"]
from .data import XModalDataCollator, forward_argument_names
from .data.collator import VideoCollator
from .metrics import make_compute_metrics


def build_trainer(model, processor, task, train_dataset, eval_dataset=None, data_config=None, modalities=None,
                  callbacks=None, **training_arguments):
    """A `transformers.Trainer` for an XModal model (or a PEFT-wrapped one) on raw or encoded rows.

    `training_arguments` go to `TrainingArguments`; `use_cpu` defaults to True where there is no GPU.
    """
    import torch
    from transformers import Trainer, TrainingArguments

    data_config = data_config or DataConfig()
    modalities = modalities or data_config.modalities
    training_arguments.setdefault("use_cpu", not torch.cuda.is_available())
    training_arguments.setdefault("report_to", "none")
    args = TrainingArguments(remove_unused_columns=False, **training_arguments)
    config = getattr(model, "config", None)
    if config is not None and not getattr(config, "keys_to_ignore_at_inference", None):
        config.keys_to_ignore_at_inference = list(IGNORE_AT_INFERENCE)
    if task == "video":  # clips (`VideoDataset`): their own batches, the sound shifted by whole frames
        from .video_task import mel_per_frame

        collator = VideoCollator(mel_per_frame(processor))
    else:
        collator = XModalDataCollator(processor, data_config, task, modalities,
                                      forward_names=forward_argument_names(model))
    return Trainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                   data_collator=collator, compute_metrics=make_compute_metrics(task), callbacks=callbacks)
