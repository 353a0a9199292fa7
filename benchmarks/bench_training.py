"""Training throughput and peak memory of the contrastive dual encoder against `transformers.CLIPModel`.

Both models have the same architecture (widths, depths, heads, MLP, GELU, patch and image size,
text length), the same batch and the same optimizer (AdamW, lr 1e-4), and take one full step
(forward with the contrastive loss, backward, optimizer step) per call, in fp32 and under bf16
autocast. Also: model FLOPs per step against the machine's measured matmul peak, and the peak
memory with and without activation checkpointing at a large batch.
"""

import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SMALL, arguments, clip_config, fmt, has_native_bf16, image_text_batch, interleaved, machine_info, matmul_peak,
    median, print_machine, print_table, spread, training_footprint, write_json, xmodal_dual_encoder_config,
)

MiB = 2**20


def build(kind, attn_implementation="sdpa"):
    import xmodal
    from transformers import CLIPModel

    torch.manual_seed(0)
    if kind == "xmodal":
        model = xmodal.XModalModel(xmodal_dual_encoder_config(SMALL, attn_implementation))
    else:
        model = CLIPModel(clip_config(SMALL, attn_implementation))
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def make_step(model, optimizer, batch, dtype):
    autocast = dtype == "bf16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count_flops(kind, batch):
    """FLOPs of one forward + backward, counted on an eager-attention copy (the counter does not see
    the CPU flash-attention kernel; eager attention is the same arithmetic as plain matmuls)."""
    model, _ = build(kind, "eager")
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch, return_loss=True).loss.backward()
    return counter.get_total_flops()


def throughput(batch_size, dtype, repeats, budget_s):
    batch = image_text_batch(batch_size)
    models = {kind: build(kind) for kind in ("xmodal", "CLIPModel")}
    steps = {kind: make_step(model, optimizer, batch, dtype) for kind, (model, optimizer) in models.items()}
    times = interleaved(steps, repeats=repeats, warmup=1, budget_s=budget_s)
    memory = {kind: training_footprint(model, optimizer, batch, steps[kind]) for kind, (model, optimizer) in models.items()}
    return times, memory


def checkpointing_memory(batch_size, repeats):
    """Peak footprint and step time of xmodal with and without activation checkpointing (fp32)."""
    batch = image_text_batch(batch_size)
    results = {}
    for name, enable in (("off", False), ("on", True)):
        model, optimizer = build("xmodal")
        if enable:
            model.activation_checkpointing_enable()
        step = make_step(model, optimizer, batch, "fp32")
        step()  # creates the optimizer state
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - started)
        results[name] = {"peak": training_footprint(model, optimizer, batch, step), "seconds": median(seconds)}
        del model, optimizer
    return results


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--batch", type=int, default=64),
        p.add_argument("--checkpoint-batch", type=int, default=256),
        p.add_argument("--dtypes", default="fp32,bf16"),
        p.add_argument("--compile", action="store_true", help="also time the compiled pair (xmodal, CLIPModel), fp32"),
    ))
    info = machine_info()
    print_machine(info)
    repeats = 3 if args.quick else 5
    batch_size = 16 if args.quick else args.batch
    print(f"architecture: ViT {SMALL['layers']}x{SMALL['hidden']} ({SMALL['image_size']} px, patch {SMALL['patch']}), "
          f"text {SMALL['layers']}x{SMALL['hidden']} ({SMALL['text_len']} tokens), MLP {SMALL['mlp']}, "
          f"{SMALL['heads']} heads, batch {batch_size}, AdamW; attention: each library's default (sdpa)")

    flops = {kind: count_flops(kind, image_text_batch(batch_size)) for kind in ("xmodal", "CLIPModel")}
    rows, payload = [], {"machine": info, "batch": batch_size, "flops_per_step": flops, "dtypes": {}}
    for dtype in args.dtypes.split(","):
        peak = matmul_peak(torch.float32 if dtype == "fp32" else torch.bfloat16)
        times, memory = throughput(batch_size, dtype, repeats, budget_s=60 if args.quick else 120)
        result = {"matmul_peak_flops": peak}
        for kind in ("xmodal", "CLIPModel"):
            seconds = median(times[kind])
            achieved = flops[kind] / seconds
            result[kind] = {"seconds": seconds, "samples_per_s": batch_size / seconds, "spread": spread(times[kind]),
                            "peak_bytes": memory[kind], "flops_per_s": achieved, "repeats": len(times[kind])}
            rows.append([dtype, kind, fmt(seconds * 1e3, 0), fmt(batch_size / seconds), f"{spread(times[kind]):.0%}",
                         fmt(memory[kind] / MiB), f"{achieved / 1e9:.1f}", f"{peak / 1e9:.1f}",
                         f"{achieved / peak:.0%}"])
        result["speedup"] = median(times["CLIPModel"]) / median(times["xmodal"])
        result["memory_ratio"] = memory["xmodal"] / memory["CLIPModel"]
        rows.append([dtype, "**xmodal / CLIP**", "", f"**{result['speedup']:.2f}x**", "",
                     f"{result['memory_ratio']:.2f}x", "", "", ""])
        payload["dtypes"][dtype] = result
    print_table(f"Training (batch {batch_size}; medians of interleaved steps)",
                ["dtype", "model", "ms/step", "samples/s", "spread", "peak MiB", "GFLOP/s", "matmul peak GFLOP/s",
                 "of peak"], rows)
    if "bf16" in args.dtypes and not has_native_bf16():
        print("note: this CPU has no AVX512-BF16/AMX; bf16 matmuls are emulated and run slower than fp32 here.")

    if args.compile:
        payload["compile"] = compiled_throughput(batch_size, repeats)

    checkpoint_batch = 64 if args.quick else args.checkpoint_batch
    result = checkpointing_memory(checkpoint_batch, repeats=1)
    cut = 1 - result["on"]["peak"] / result["off"]["peak"]
    slowdown = result["on"]["seconds"] / result["off"]["seconds"]
    print_table(f"Activation checkpointing (xmodal, fp32, batch {checkpoint_batch})",
                ["checkpointing", "peak MiB", "ms/step"],
                [[name, fmt(r["peak"] / MiB), fmt(r["seconds"] * 1e3, 0)] for name, r in result.items()]
                + [["**memory cut**", f"**{cut:.0%}**", f"{slowdown:.2f}x time"]])
    payload["checkpointing"] = {"batch": checkpoint_batch, **result, "memory_cut": cut, "slowdown": slowdown}
    write_json(args.json, payload)


def compiled_throughput(batch_size, repeats):
    """The compiled pair: xmodal and `CLIPModel`, each eager and under `torch.compile` (inductor, fp32), timed
    interleaved after each compiled model's first step (its compilation, reported apart)."""
    batch = image_text_batch(batch_size)
    steps, compile_s = {}, {}
    for kind in ("xmodal", "CLIPModel"):
        model, optimizer = build(kind)
        steps[f"{kind} eager"] = make_step(model, optimizer, batch, "fp32")
        model, optimizer = build(kind)
        compiled = make_step(torch.compile(model), optimizer, batch, "fp32")
        started = time.perf_counter()
        compiled()
        compile_s[kind] = time.perf_counter() - started
        steps[f"{kind} compiled"] = compiled
    times = interleaved(steps, repeats=repeats)
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    ratios = {"xmodal / CLIP, compiled": ms["CLIPModel compiled"] / ms["xmodal compiled"],
              "xmodal / CLIP, eager": ms["CLIPModel eager"] / ms["xmodal eager"],
              "xmodal compiled / eager": ms["xmodal eager"] / ms["xmodal compiled"],
              "CLIP compiled / eager": ms["CLIPModel eager"] / ms["CLIPModel compiled"]}
    rows = [[name, fmt(value, 0), f"{spread(times[name]):.0%}", fmt(compile_s[name.split()[0]])
             if name.endswith("compiled") else ""] for name, value in ms.items()]
    rows += [[f"**{name}**", f"**{value:.2f}x**", "", ""] for name, value in ratios.items()]
    print_table(f"torch.compile, the pair (fp32, batch {batch_size}; medians of interleaved steps)",
                ["variant", "ms/step", "spread", "compile s"], rows)
    return {"compile_s": compile_s, "ms_per_step": ms, "ratios": ratios}


if __name__ == "__main__":
    main()
