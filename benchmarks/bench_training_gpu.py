"""Training throughput of the contrastive dual encoder against `transformers.CLIPModel` on a GPU.

The GPU counterpart of `bench_training.py`, for a session that is lent an accelerator: the same
matched architectures and optimizer, SDPA attention in both models, fp32 and bf16 autocast,
timed with CUDA events around whole steps (forward with the contrastive loss, backward, AdamW),
interleaved call by call. Peak memory is `torch.cuda.max_memory_allocated` over one step, FLOP/s
are model FLOPs (counted once with `FlopCounterMode`) over the median step time, against the
card's measured matmul peak in the same dtype. Never part of the tests.

    python benchmarks/bench_training_gpu.py --json gpu.json
"""

import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SMALL, arguments, clip_config, fmt, image_text_batch, median, print_table, spread, write_json, \
    xmodal_dual_encoder_config  # noqa: E402

MiB = 2**20

# CLIP ViT-B/16-like widths at the text side's usual 77 tokens, one shared width as in SMALL.
MEDIUM = {"hidden": 512, "layers": 8, "heads": 8, "mlp": 2048, "image_size": 224, "patch": 16, "text_len": 77,
          "vocab": 49408, "projection": 512}
SIZES = {"small": SMALL, "medium": MEDIUM}


def build(kind, size, device):
    import xmodal
    from transformers import CLIPModel

    torch.manual_seed(0)
    if kind == "xmodal":
        model = xmodal.XModalModel(xmodal_dual_encoder_config(size, "sdpa"))
    else:
        model = CLIPModel(clip_config(size, "sdpa"))
    model.to(device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")


def make_step(model, optimizer, batch, dtype, device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, device):
    """Milliseconds of one step: CUDA events on a GPU, the host clock (after a sync) elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def peak_memory(step, device):
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def matmul_peak(dtype, device, size=8192, repeats=10):
    """Best FLOP/s of a square matmul in `dtype` on `device` (random data, after warm-up)."""
    size = size if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    return 2 * size**3 / min(time_step(lambda: a @ b, device) for _ in range(repeats))


def count_flops(kind, size, batch_size):
    """FLOPs of one forward + backward, counted on the CPU on an eager-attention copy (same arithmetic)."""
    import xmodal
    from transformers import CLIPModel

    torch.manual_seed(0)
    config = (xmodal_dual_encoder_config(size, "eager") if kind == "xmodal" else clip_config(size, "eager"))
    model = xmodal.XModalModel(config) if kind == "xmodal" else CLIPModel(config)
    counter = FlopCounterMode(display=False)
    with counter:
        model(**image_text_batch(batch_size, size), return_loss=True).loss.backward()
    return counter.get_total_flops()


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--device", default="cuda"),
        p.add_argument("--runs", default="small:64,small:512,medium:256",
                       help="size:batch pairs, sizes: " + ", ".join(SIZES)),
        p.add_argument("--dtypes", default="fp32,bf16"),
        p.add_argument("--repeats", type=int, default=30),
        p.add_argument("--compile", action="store_true",
                       help="torch.compile both models (compile time reported separately)"),
    ))
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run this on a machine with a GPU (the CPU benchmark is bench_training.py)")
        props = torch.cuda.get_device_properties(device)
        card = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"
    else:
        card = "cpu"
    import transformers

    print(f"device: {card}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"tf32 matmul: {torch.backends.cuda.matmul.allow_tf32}")
    repeats = 3 if args.quick else args.repeats
    peaks = {dtype: matmul_peak(torch.float32 if dtype == "fp32" else torch.bfloat16, device)
             for dtype in args.dtypes.split(",")}
    rows, payload = [], {"device": card, "torch": torch.__version__, "matmul_peak_flops": peaks, "runs": []}
    for run in args.runs.split(","):
        name, batch_size = run.split(":")
        size, batch_size = SIZES[name], int(batch_size)
        # Counted at batch 4 and scaled: all but the (batch x batch) logits grow linearly with the batch.
        flops = {kind: count_flops(kind, size, 4) * batch_size / 4 for kind in ("xmodal", "CLIPModel")}
        batch = {k: v.to(device) for k, v in image_text_batch(batch_size, size).items()}
        for dtype in args.dtypes.split(","):
            models = {kind: build(kind, size, device) for kind in ("xmodal", "CLIPModel")}
            steps = {kind: make_step(torch.compile(model) if args.compile else model, optimizer, batch, dtype, device)
                     for kind, (model, optimizer) in models.items()}
            compile_s = {}
            for kind, step in steps.items():  # warm-up: kernels chosen (and compiled), optimizer state made
                compile_s[kind] = time_step(step, device)
                for _ in range(2):
                    step()
            memory = {kind: peak_memory(step, device) for kind, step in steps.items()}
            times = {kind: [] for kind in steps}
            for _ in range(repeats):
                for kind, step in steps.items():
                    times[kind].append(time_step(step, device))
            result = {"size": name, "batch": batch_size, "dtype": dtype, "compiled": args.compile,
                      "first_step_s": compile_s}
            for kind in steps:
                seconds = median(times[kind])
                achieved = flops[kind] / seconds
                result[kind] = {"seconds": seconds, "samples_per_s": batch_size / seconds,
                                "spread": spread(times[kind]), "peak_bytes": memory[kind], "flops_per_s": achieved}
                rows.append([name, batch_size, dtype, kind, fmt(seconds * 1e3, 2), fmt(batch_size / seconds, 0),
                             f"{spread(times[kind]):.0%}", fmt(memory[kind] / MiB if memory[kind] else None),
                             f"{achieved / 1e12:.1f}", f"{achieved / peaks[dtype]:.1%}"])
            result["speedup"] = median(times["CLIPModel"]) / median(times["xmodal"])
            ratio = (memory["xmodal"] / memory["CLIPModel"]) if memory["xmodal"] else None
            rows.append([name, batch_size, dtype, "**xmodal / CLIP**", "", f"**{result['speedup']:.2f}x**", "",
                         f"{ratio:.2f}x" if ratio else "-", "", ""])
            payload["runs"].append(result)
            del models, steps
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.compile:
        print("first steps (compile time): " + ", ".join(
            f"{r['size']}:{r['batch']} {r['dtype']} {k} {v:.1f} s" for r in payload["runs"] for k, v in r["first_step_s"].items()))
    print("matmul peak: " + ", ".join(f"{d} {p / 1e12:.1f} TFLOP/s" for d, p in peaks.items()))
    print_table(f"Training on {card}{', torch.compile' if args.compile else ''} (medians of {repeats} interleaved steps, CUDA events)",
                ["size", "batch", "dtype", "model", "ms/step", "samples/s", "spread", "peak MiB", "TFLOP/s",
                 "of peak"], rows)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
