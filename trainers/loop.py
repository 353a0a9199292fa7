"""`train(config)`: the Accelerate training loop, and what it needs (data, model, optimizer, schedule).

One function owns the loop: `prepare`, `accumulate`, `backward`, clip, step, evaluate with
`gather_for_metrics`, `save_training_state`; `--resume` is `load_training_state` + `skip_first_batches`.
The data order depends only on (seed, epoch), and the RNG states travel in the checkpoint (safetensors and
JSON, no pickle), so a resumed run ends with the same weights as an uninterrupted one.
"""

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from xmodal.modalities import modality_inputs

from . import checkpointing
from .checkpointing import save_training_state
from .config import TASKS, save_config
from .data import (
    EncodedDataset,
    EpochShuffleSampler,
    XModalDataCollator,
    add_caption_hashes,
    base_dir,
    check_columns,
    check_split_names,
    compile_length_buckets,
    configure_tokens,
    encode_split,
    encoded_cache_dir,
    forward_argument_names,
    label_roles,
    load_raw_dataset,
    make_processor,
    make_tokenizer,
    row_lengths,
    select_split,
    validation_split_name,
)
from .data.streaming import (
    STREAM_VALIDATION_ROWS,
    StreamingRows,
    share_stream_position,
    stream_batches,
    stream_head,
    text_sample,
)
from .optim import clip_gradients, make_optimizer, warmup_cosine, within_budget
from .pretrained.compose import build_composed_model, resolve_towers
from .run_end import close_run, is_sharded, unwrap_for_saving
from .run_log import DataClock, LossWindow, flat_hparams, log_step, peak_rss_mib, progress_bar


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


# ----------------------------------------------------------------------------- building blocks
def bf16_supported():
    """bf16 autocast pays off on CUDA with bf16 support and on CPUs with AMX or AVX512-BF16."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return bool(cpu and (cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()))


def resolve_precision(choice):
    if choice == "auto":
        return "bf16" if bf16_supported() else "no"
    return choice


def _step_state(accelerator, loss, start, seconds_before, synchronized):
    """(whether any process's loss is not finite, training seconds so far), in one collective: every collective is
    a wait for the slowest process, which costs more than the bytes. `synchronized`: the main process's clock on
    every process, so that all of them take the same learning rate and stop at the same step."""
    seconds = time.perf_counter() - start
    bad = 0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0
    if accelerator.num_processes > 1:
        clock = seconds if synchronized and accelerator.is_main_process else 0.0
        total = accelerator.reduce(torch.tensor([bad, clock], dtype=torch.float64, device=loss.device), reduction="sum")
        bad, seconds = float(total[0]), float(total[1]) if synchronized else seconds
    return bad > 0, seconds_before + seconds


def model_class(task):
    import xmodal

    return getattr(xmodal, TASKS[task][0])


def build_model(config, tokenizer, target_tokenizer=None):
    """The task's model: from `training.pretrained` if set, else fresh from `config.model` and `config.towers`;
    `target_tokenizer` (the processor's, when the labels have their own) sizes a built-in decoder."""
    from xmodal import XModalConfig

    cls = model_class(config.task)
    attention = config.training.attn_implementation
    if config.training.pretrained:
        return cls.from_pretrained(config.training.pretrained, attn_implementation=attention)
    if config.towers.parts():  # pretrained towers, frozen parts and their LoRA adapters
        return build_composed_model(config, tokenizer, cls, attention, target_tokenizer)
    kwargs = configure_tokens(config.model, tokenizer, config.data, target_tokenizer)
    model_config = XModalConfig(**kwargs)
    torch.manual_seed(config.training.seed)
    return cls._from_config(model_config, attn_implementation=attention)


@dataclass
class TrainingProgress:
    """What the loop has done; saved with every training state (as JSON: plain numbers, lists and dicts)."""

    step: int = 0  # optimizer steps
    micro_step: int = 0  # batches consumed
    samples: int = 0
    seconds: float = 0.0  # training time so far, across resumed runs
    history: list = field(default_factory=list)
    stream_position: list = field(default_factory=list)  # data.streaming: [pass, rows read] of each process
    stream_skipped: dict = field(default_factory=dict)  # data.streaming: rows left out so far, by reason

    def state_dict(self):
        return dict(self.__dict__)

    def load_state_dict(self, state):
        self.__dict__.update(state)


@dataclass
class PreparedData:
    tokenizer: object
    processor: object
    train: object
    eval: object
    collator: object

    def skipped_rows(self):
        """{"<split>/<reason>": rows} left out of the encoded splits or the stream (see `data.on_error`)."""
        return {f"{name}/{reason}": count for name, split in (("train", self.train), ("validation", self.eval))
                if split is not None for reason, count in split.skipped.items()}


def prepare_data(config, accelerator, processor_dir, resume=False):
    """Dataset -> tokenizer/processor -> encoded splits. The main process makes the processor and saves it;
    the other processes, and a resumed run, load that one, so every process encodes alike."""
    from xmodal.processing import XModalProcessor

    data = config.data
    raw = load_raw_dataset(data, streaming=data.streaming)
    train_split = select_split(raw, "train", data.max_train_samples, data)
    validation_name = validation_split_name(raw, data)
    roles = (*data.modalities, *label_roles(config.task, data))
    if config.task != "video":  # clips are checked by `encode_video_split`, which names the columns it reads
        check_columns(train_split, "train", data, roles)
    saved = (Path(processor_dir) / "processor_config.json").is_file()
    if config.training.pretrained:
        processor = XModalProcessor.from_pretrained(config.training.pretrained)
    elif saved and (resume or not accelerator.is_main_process):
        processor = XModalProcessor.from_pretrained(processor_dir)
    else:
        tokenizer = make_tokenizer(data, train_split if not data.streaming else text_sample(train_split, data))
        from xmodal import XModalConfig

        model_config = XModalConfig(**configure_tokens(config.model, tokenizer, data))
        processor = make_processor(data, model_config, tokenizer)
        if accelerator.is_main_process:
            with checkpointing.atomic_folder(processor_dir) as staging:
                processor.save_pretrained(staging)
    cache, base = encoded_cache_dir(data), base_dir(data)
    report = _encoding_report(accelerator)
    if config.task == "video":
        from xmodal import XModalConfig

        from .video_task import video_splits

        max_offset = config.model.get("video_sync_max_offset", XModalConfig.video_sync_max_offset)
        return PreparedData(processor.tokenizer, processor, *video_splits(config, raw, train_split, validation_name,
                                                                          processor, report, max_offset))
    if data.streaming:
        train = StreamingRows(train_split, processor, data, config.task, data.modalities, base, config.training.seed,
                              accelerator.process_index, accelerator.num_processes)
    else:
        train = encode_split(train_split, processor, data, config.task, data.modalities, cache,
                             progress=report("train"), base_dir=base, name="train")
    evaluation = None
    if validation_name is not None:
        split = select_split(raw, "validation", data.max_eval_samples, data)
        if data.streaming:  # validated on its first rows, held in memory (not cached: a stream may change)
            split, cache = stream_head(split, data.max_eval_samples or STREAM_VALIDATION_ROWS), None
        check_columns(split, validation_name, data, roles)
        evaluation = encode_split(split, processor, data, config.task, data.modalities, cache, base_dir=base,
                                  progress=report(validation_name), name=validation_name)
    if data.mask_false_negatives:
        for name, split in (("train", train), (validation_name, evaluation)):
            if split is not None and not (isinstance(split, EncodedDataset) and add_caption_hashes(split, data)):
                accelerator.print(f"data.mask_false_negatives: the {name} split has no `caption` text column with one "
                                  "caption per item (or is streamed): its in-batch negatives are not masked.")
    buckets = None  # under `torch.compile` every input pads to a few lengths, each compiled once with static sizes
    if config.training.compile:
        buckets = compile_length_buckets(data, getattr(processor, "feature_extractor", None),
                                         config.training.compile_audio_bucket)
    collator = XModalDataCollator(processor, data, config.task, data.modalities, length_buckets=buckets,
                                  forward_names=forward_argument_names(model_class(config.task)))
    return PreparedData(processor.tokenizer, processor, train, evaluation, collator)


def _encoding_report(accelerator):
    def for_split(name):
        def report(done, total):
            if accelerator.is_main_process and (done == total or done % 2048 < 256):
                print(f"  encoding {name}: {done}/{total}", file=sys.stderr, flush=True)

        return report

    return for_split


# ----------------------------------------------------------------------------- the loop
def make_accelerator(training, output_dir):
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin, ProjectConfiguration

    trackers = [t for t in training.report_to if t != "none"]
    if "tensorboard" in trackers:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            print("TensorBoard is not installed (pip install 'xmodal[train]'); not logging to it.", file=sys.stderr)
            trackers.remove("tensorboard")
    # Light steps leave some parameters out of the graph; DDP must then look for them every step.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if training.full_step_every > 1 else []
    dynamo = None
    if training.compile:  # compiled once prepared (after the DDP wrapper), with static sizes
        import torch._dynamo
        from accelerate.utils import TorchDynamoPlugin

        # Static sizes: the collator pads every input to a few bucket lengths (`compile_length_buckets`). With
        # dynamic sizes, torch 2.13's inductor fails on this model under bf16 autocast ("ValueRangeError: Invalid
        # ranges [0:-1]" while ordering strides), and dynamo's DDP graph splitting failed on it too (bf16, 2 processes:
        # "'float' object has no attribute 'meta'"): not split; DDP's own reducer all-reduces after the backward.
        torch._dynamo.config.optimize_ddp = "no_optimization"
        dynamo = TorchDynamoPlugin(backend="inductor", dynamic=False)
    return Accelerator(
        mixed_precision=resolve_precision(training.mixed_precision), dynamo_plugin=dynamo,
        kwargs_handlers=handlers,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=training.gradient_accumulation_steps, sync_with_dataloader=False),
        # `batch_size` is global: each of N processes gets batch_size / N rows of every batch.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs")),
    )


def _reset_accelerate_state():
    """Lets one process run `train` more than once (tests, notebooks) with different settings."""
    from accelerate.state import AcceleratorState, GradientState

    if "LOCAL_RANK" not in os.environ:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _set_threads(training, accelerator):
    if accelerator.device.type == "cpu":
        threads = training.num_threads or max(1, (os.cpu_count() or 1) // accelerator.num_processes)
        torch.set_num_threads(threads)


def make_loaders(data, config, accelerator):
    """The training loader (global batches, shuffled per epoch from the seed) and the evaluation loader; a
    stream has no training loader here (see `stream_batches`), and is validated on its split's first rows."""
    training = config.training
    eval_loader = None
    if data.eval is not None:
        processes = accelerator.num_processes
        eval_batch = max(processes, config.evaluation.batch_size // processes * processes)
        eval_loader = torch.utils.data.DataLoader(data.eval, batch_size=eval_batch, collate_fn=data.collator)
    if config.data.streaming:
        return None, None, eval_loader
    lengths = row_lengths(data.train) if training.group_by_length else None
    sampler = EpochShuffleSampler(len(data.train), training.seed, lengths, training.batch_size)
    # The loader's own generator: creating an iterator draws a seed from it, and drawing from the global
    # RNG instead would shift the model's random draws (hard negatives, dropout) after a mid-epoch resume.
    train_loader = torch.utils.data.DataLoader(data.train, batch_size=training.batch_size, sampler=sampler,
                                               drop_last=True, collate_fn=data.collator,
                                               generator=torch.Generator().manual_seed(training.seed))
    if len(train_loader) == 0:
        raise ValueError(f"training.batch_size={training.batch_size} is larger than the {len(data.train)} "
                         "training samples.")
    return sampler, train_loader, eval_loader


def train(config, resume=False, command=None):
    """Trains as `config` says; writes `<output_dir>/model` and returns the final metrics."""
    from accelerate import skip_first_batches
    from accelerate.utils import set_seed

    config = resolve_towers(config)  # pretrained towers are made ready here, never when a config is read
    training = config.training
    output_dir = Path(training.output_dir)
    _reset_accelerate_state()
    accelerator = make_accelerator(training, output_dir)
    _set_threads(training, accelerator)
    if training.batch_size % accelerator.num_processes:
        raise ValueError(f"training.batch_size={training.batch_size} must be divisible by the "
                         f"{accelerator.num_processes} processes.")
    set_seed(training.seed)
    accelerator.print(f"Training on {accelerator.num_processes} process(es), {accelerator.distributed_type.value}, "
                      f"{accelerator.device}, mixed precision: {accelerator.mixed_precision}.")
    for kind in ("FSDP", "DEEPSPEED"):  # Accelerate turns both off on a CPU, without a word
        if os.environ.get(f"ACCELERATE_USE_{kind}", "").lower() == "true" and \
                accelerator.distributed_type.value != kind:
            accelerator.print(f"The accelerate config asks for {kind}, which Accelerate does not run on a "
                              f"{accelerator.device.type.upper()}: training with {accelerator.distributed_type.value} "
                              "instead (replicated weights, the same results).")
    check_split_names([config.evaluation.split, *config.evaluation.extra_splits])  # fails now, not after training
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    with accelerator.main_process_first():
        data = prepare_data(config, accelerator, output_dir / "processor", resume)
    model = build_model(config, data.tokenizer, data.processor.target_tokenizer)
    if config.lora.enabled:
        from .lora import apply_lora

        model = apply_lora(model, config.lora, config.task)
    optimizer = make_optimizer(model, training)
    progress = TrainingProgress()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, within_budget(
        warmup_cosine(training.warmup_steps, training.max_steps, training.min_learning_rate_ratio), progress, training))
    sampler, train_loader, eval_loader = make_loaders(data, config, accelerator)
    if train_loader is None:  # a stream: batches come from `stream_batches`, one process's own rows each
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "progress": progress}  # the state
    if resume:
        state = checkpointing.latest_state(output_dir)
        if state is None:
            accelerator.print(f"--resume: no training state under {output_dir / 'checkpoints'}; starting afresh.")
        else:
            checkpointing.load_training_state(accelerator, state, **parts)
            accelerator.print(f"Resumed from {state} (step {progress.step}).")
    if accelerator.is_main_process:
        save_config(config, output_dir / "training_config.yaml")
    accelerator.init_trackers("xmodal", config=flat_hparams(config))
    skipped = data.skipped_rows()
    if skipped:  # never silently: the log, TensorBoard and metrics.json all say how many rows were left out
        accelerator.print("Rows left out (data.on_error: skip): " + ", ".join(f"{k}: {v}" for k, v in skipped.items()))
        accelerator.log({f"data/skipped/{key}": count for key, count in skipped.items()}, step=0)

    bar = progress_bar(accelerator, training, progress.step)
    window = LossWindow()
    start, seconds_before = time.perf_counter(), progress.seconds  # a resumed run adds to the earlier time
    last_time, last_samples = start, progress.samples
    clock = DataClock()  # time the loop waits for its next batch: the loader keeps up when it stays near 0
    last_waited = 0.0
    budget = training.max_minutes * 60 if training.max_minutes else None
    out_of_time = False
    model.train()
    while progress.step < training.max_steps and not out_of_time:
        if train_loader is None:
            loader = stream_batches(data.train, progress, training, accelerator, data.collator)
        else:
            epoch, offset = divmod(progress.micro_step, len(train_loader))
            loader = skip_first_batches(train_loader, offset) if offset else train_loader
            # The prepared loader hands its own epoch counter to the sampler when iterated; a resumed run
            # (and the skipping loader) must see the epoch of the batches it continues with.
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            data.train.set_epoch(epoch)  # which caption an item with several reads this epoch
        for batch in clock.timed(loader):
            with accelerator.accumulate(model):
                outputs = model(**light_step(batch, progress.step, training))
                accelerator.backward(outputs.loss)
                # after the gradients' all-reduce, which has brought the processes together anyway
                diverged, seconds = _step_state(accelerator, outputs.loss, start, seconds_before, budget is not None)
                if diverged:
                    _stop_diverged(outputs.loss, progress, output_dir)
                grad_norm = None
                if accelerator.sync_gradients and training.max_grad_norm:
                    grad_norm = clip_gradients(model.parameters(), training.max_grad_norm, accelerator)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            progress.micro_step += 1
            progress.samples += training.batch_size
            window.add(outputs)
            if not accelerator.sync_gradients:
                continue
            progress.seconds = seconds
            scheduler.step()
            progress.step += 1
            out_of_time = budget is not None and progress.seconds >= budget
            if bar is not None:
                bar.update(1)
            if progress.step % training.log_every == 0 or progress.step == training.max_steps:
                now = time.perf_counter()
                speed = (progress.samples - last_samples) / max(now - last_time, 1e-9)
                wait = (clock.waited - last_waited) / max(now - last_time, 1e-9)
                last_time, last_samples, last_waited = now, progress.samples, clock.waited
                log_step(accelerator, bar, window, progress, training, lr=scheduler.get_last_lr()[0],
                         samples_per_second=speed, data_wait_fraction=wait,
                         grad_norm=None if grad_norm is None else float(grad_norm))
            if eval_loader is not None and training.eval_every and progress.step % training.eval_every == 0:
                metrics = validate(model, eval_loader, accelerator, config)
                progress.history.append({"step": progress.step, **metrics})
                accelerator.log(metrics, step=progress.step)
                accelerator.print(f"step {progress.step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            if training.save_every and progress.step % training.save_every == 0:
                if train_loader is None and accelerator.num_processes > 1:  # every process's place in its stream
                    progress.stream_position = share_stream_position(progress, accelerator)
                save_training_state(accelerator, output_dir, progress.step, training.save_total_limit, **parts)
            if progress.step >= training.max_steps or out_of_time:
                break
    if bar is not None:
        bar.close()
    if out_of_time:
        accelerator.print(f"Stopped at step {progress.step} of {training.max_steps}: the {training.max_minutes}-minute "
                          "budget (training.max_minutes) is spent.")
    train_seconds = progress.seconds
    run_metrics = {"train_peak_rss_mib": peak_rss_mib(accelerator),
                   "train_data_wait_fraction": round(clock.waited / max(train_seconds - seconds_before, 1e-9), 4),
                   # "<split>/<reason>": rows left out (data.on_error: skip)
                   "train_skipped_rows": skipped or {f"train/{k}": v for k, v in progress.stream_skipped.items()}}
    final_model, state_dict = unwrap_for_saving(accelerator, model)
    del model, optimizer, scheduler, parts  # the wrappers go before the process group does (`end_training`)
    return close_run(accelerator, final_model, state_dict, data.processor, config, progress, train_seconds, command,
                     run_metrics)


def light_step(batch, step, training):
    """The batch as optimizer step `step` sees it: whole on full steps, without `training.light_step_drop`'s
    inputs on the light ones (see `TrainingConfig.full_step_every`). Depends only on the step, so every
    process and a resumed run agree."""
    if training.full_step_every <= 1 or step % training.full_step_every == 0:
        return batch
    dropped = {key for part in training.light_step_drop for key in modality_inputs(batch, part)}
    return {key: value for key, value in batch.items() if key not in dropped}


def _stop_diverged(loss, progress, output_dir):
    """Stops training when any process's loss is not finite (every process calls it together, before the optimizer
    step: the weights stay as they were); nothing more is saved."""
    last = checkpointing.latest_state(output_dir)
    kept = f"The last good training state is {last} (continue with --resume)." if last else (
        "No training state was saved before it (set training.save_every to keep some).")
    raise TrainingDiverged(
        f"The loss became {float(loss.detach())} at optimizer step {progress.step + 1} "
        f"(batch {progress.micro_step + 1}); training stopped without saving. {kept} Try a lower "
        "training.learning_rate, more training.warmup_steps or training.mixed_precision: no.")


# ----------------------------------------------------------------------------- validation and the end
@torch.no_grad()
def validate(model, loader, accelerator, config):
    """Validation loss and, for models with a contrastive space, retrieval R@1 over the whole split."""
    from .metrics import retrieval_metrics

    was_training = model.training
    model.eval()
    # Under FSDP the towers' weights are sharded outside the model's own forward: score the loss only.
    base = None
    if config.task in ("pretraining", "contrastive") and not is_sharded(accelerator):
        base = _contrastive_base(accelerator.unwrap_model(model))
    losses, embeds = [], {}
    with torch.random.fork_rng(devices=[]):
        for batch in loader:  # collated outside autocast: it would cast (or refuse) the stacked float16 features
            with accelerator.autocast():
                outputs = model(**batch)
                vectors = base.get_embeddings(**batch) if base is not None else {}
            rows = next(v for k, v in batch.items() if torch.is_tensor(v)).shape[0]
            losses.append(accelerator.gather_for_metrics(outputs.loss.detach().float().repeat(rows)))
            for modality, vector in vectors.items():
                embeds.setdefault(modality, []).append(accelerator.gather_for_metrics(vector))
    model.train(was_training)
    metrics = {"eval_loss": float(torch.cat(losses).mean())}
    if len(embeds) > 1:
        recalls = retrieval_metrics({m: torch.cat(v) for m, v in embeds.items()}, ks=(1,))
        metrics.update({f"eval_{k}": v for k, v in recalls.items()})
    return metrics


def _contrastive_base(model):
    from xmodal import XModalModel

    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    if isinstance(model, XModalModel):
        return model
    return getattr(model, "xmodal", None)

