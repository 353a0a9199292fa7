"""The default config's training step: today's settings against the optimised ones, and where its time goes.

Builds `configs/default.yaml`'s model, data and optimizer exactly as `xmodal train` does (one process, the
per-process half of the global batch, one thread: what each of `make run`'s two processes runs), then times
whole optimizer steps (forward, backward, gradient clipping, AdamW, zero_grad) of each setting, alternating
them step by step on the same batches. `--profile` prints the top operators of one setting
(`torch.profiler`, self CPU time). The end-to-end check (two processes, `xmodal train`) is `--end-to-end`.

    python benchmarks/bench_default_step.py --steps 30
    python benchmarks/bench_default_step.py --profile baseline
"""

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    arguments, fmt, interleaved, machine_info, matmul_peak, median, print_machine, print_table, spread,
)

# name -> training overrides; "baseline" is the default config before issue 18 (the for-loop AdamW, plain
# clipping, shuffled batches, eager mode). Precision is the config's (`auto`: bf16 autocast on CPUs with AMX or
# AVX512-BF16) but for the `_fp32` settings, which ask for none: is `auto`'s choice the faster one here?
SETTINGS = {
    "baseline": {"optimizer": "adamw_torch", "group_by_length": False, "compile": False},
    "optimised": {"optimizer": "adamw_torch_fused", "group_by_length": True, "compile": False},
    "compiled": {"optimizer": "adamw_torch_fused", "group_by_length": True, "compile": True},
    "baseline_fp32": {"optimizer": "adamw_torch", "group_by_length": False, "compile": False, "mixed_precision": "no"},
    "optimised_fp32": {"optimizer": "adamw_torch_fused", "group_by_length": True, "compile": False,
                       "mixed_precision": "no"},
    # issue 17's in-batch false negatives masked (`data.mask_false_negatives`): what the caption hashes cost a step
    "optimised_masked": {"optimizer": "adamw_torch_fused", "group_by_length": True, "compile": False,
                         "data.mask_false_negatives": True},
}


def load_default(config_path, overrides):
    from xmodal.trainers.config import load_config

    config = load_config(config_path)
    for key, value in overrides.items():  # `training` fields, or `data.<field>`
        section, _, name = key.rpartition(".")
        setattr(getattr(config, section or "training"), name, value)
    return config


def build(config_path, settings, batches_per_setting):
    """Model, optimizer and a fixed list of batches, as the training loop makes them."""
    from xmodal.trainers.loop import _reset_accelerate_state, build_model, make_accelerator, make_loaders, prepare_data
    from xmodal.trainers.optim import make_optimizer

    config = load_default(config_path, {**settings, "report_to": ["none"], "num_threads": 1})
    out = Path(tempfile.mkdtemp(prefix="bench_default_step_"))
    _reset_accelerate_state()
    accelerator = make_accelerator(config.training, out)
    data = prepare_data(config, accelerator, out / "processor")
    model = build_model(config, data.tokenizer)
    optimizer = make_optimizer(model, config.training)
    config.training.batch_size //= config.training.num_processes  # one process's share of the global batch
    _, loader, _ = make_loaders(data, config, accelerator)
    every = max(1, len(loader) // batches_per_setting)  # spread over the epoch: length-grouped batches go long to
    batches = [batch for index, batch in enumerate(loader) if index % every == every // 2]  # short in a window
    model, optimizer = accelerator.prepare(model, optimizer)  # compiled here with training.compile
    model.train()
    return model, optimizer, batches, config.training


def step_function(model, optimizer, batches, training):
    from xmodal.trainers.optim import clip_gradients

    position = [0]

    def step():
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        loss = model(**batch).loss
        loss.backward()
        clip_gradients(model.parameters(), training.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_flops(model, batches):
    """Mean FLOPs of forward + backward over the batches (torch's FlopCounterMode: matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for batch in batches:
        counter = FlopCounterMode(display=False)
        with counter:
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        total += counter.get_total_flops()
    return total / len(batches)


def padding_share(batches):
    """Share of the audio and text positions in the batches that are padding."""
    shares = {}
    for key, mask in (("audio", "feature_attention_mask"), ("text", "attention_mask")):
        masks = [b[mask] for b in batches if mask in b]
        if masks:
            shares[key] = 1 - sum(float(m.float().mean()) * m.numel() for m in masks) / sum(m.numel() for m in masks)
    return shares


def profile(step, rows):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def end_to_end(config_path, steps, names, seeds):
    """`xmodal train` itself (two processes, evaluation on the test split), `steps` optimizer steps per setting
    and seed: samples/s over the whole training loop, and the final metrics at that fixed sample count."""
    results = []
    for seed in seeds:
        for name in names:
            with tempfile.TemporaryDirectory() as out:
                command = [sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", config_path,
                           "--output-dir", out, "--set", f"training.max_steps={steps}", "--set",
                           "training.max_minutes=null", "--set", f"training.seed={seed}", "--set",
                           "training.eval_every=0", "--set", "training.save_every=0", "--set",
                           "evaluation.extra_splits=[]", "--set", "training.progress_bar=false"]
                for key, value in SETTINGS[name].items():
                    command += ["--set", f"{key if '.' in key else 'training.' + key}={json.dumps(value)}"]
                log = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                if log.returncode:
                    raise SystemExit(f"{name}: xmodal train failed:\n{log.stderr[-3000:]}")
                metrics = json.loads((Path(out) / "model" / "metrics.json").read_text())
            metrics["samples_per_second"] = steps * load_default(config_path, {}).training.batch_size / \
                metrics["train_seconds"]
            results.append((name, seed, metrics))
            print(name, seed, json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
                  flush=True)
    return results


E2E_METRICS = ("samples_per_second", "text_to_image_R@1", "image_to_text_R@1", "audio_to_image_R@1",
               "speech_to_text_cer", "caption_cer", "matching_accuracy")


def main():
    def extra(parser):
        parser.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
        parser.add_argument("--steps", type=int, default=30, help="timed steps per setting")
        parser.add_argument("--settings", nargs="+", default=["baseline", "optimised"], choices=sorted(SETTINGS))
        parser.add_argument("--profile", choices=sorted(SETTINGS), default=None, help="top operators of a setting")
        parser.add_argument("--rows", type=int, default=25)
        parser.add_argument("--end-to-end", type=int, default=0, metavar="STEPS",
                            help="instead: `xmodal train` for STEPS steps per setting and seed, with evaluation")
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])

    args = arguments(__doc__.splitlines()[0], extra)
    torch.set_num_threads(args.threads or 1)
    print_machine(machine_info())
    names = [args.profile] if args.profile else args.settings
    if args.end_to_end:
        results = end_to_end(args.config, args.end_to_end, names, args.seeds)
        rows = [[name, seed, *(fmt(metrics.get(key), 3) for key in E2E_METRICS)] for name, seed, metrics in results]
        print_table(f"`xmodal train`, default config, {args.end_to_end} steps (fixed samples), two processes",
                    ["setting", "seed", *E2E_METRICS], rows)
        return
    built = {name: build(args.config, SETTINGS[name], 16) for name in names}
    if args.profile:
        profile(step_function(*built[args.profile]), args.rows)
        return
    steps = {name: step_function(*parts) for name, parts in built.items()}
    times = interleaved(steps, repeats=args.steps, warmup=3)
    batch = built[names[0]][3].batch_size
    base = median(times[names[0]])
    peak = matmul_peak(torch.float32)
    bf16_peak = matmul_peak(torch.bfloat16)
    rows = []
    for name in names:
        shares = padding_share(built[name][2])
        flops = step_flops(built[name][0], built[name][2][:4])
        rows.append([name, fmt(batch / median(times[name])), f"{base / median(times[name]):.2f}x",
                     fmt(spread(times[name]), 2), ", ".join(f"{k} {v:.2f}" for k, v in shares.items()),
                     fmt(flops / 1e9, 2), f"{flops / median(times[name]) / peak:.0%}"])
    print_table(f"default config, one process, batch {batch}, {torch.get_num_threads()} thread(s), "
                f"{args.steps} steps each; matmul peak fp32 {peak / 1e9:.1f}, bf16 {bf16_peak / 1e9:.1f} GFLOP/s; "
                "'of peak' is of the fp32 one",
                ["setting", "samples/s", "vs first", "spread", "padding share", "GFLOP/step", "of peak"], rows)


if __name__ == "__main__":
    main()
