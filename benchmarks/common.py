"""Shared parts of the benchmarks: matched configs, interleaved timing, peak tensor memory, machine facts.

Every benchmark runs xmodal and its reference in one process, alternating them call by call
(`interleaved`), so that load from other processes on a shared machine hits both alike; it
reports medians over the repeats and the ratio of the medians.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# ---------------------------------------------------------------------------------------------- machine


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def has_native_bf16():
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without it oneDNN emulates bf16."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def machine_info():
    import transformers

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512_vnni", "avx512f"))),
        "native_bf16": has_native_bf16(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def print_machine(info):
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, "
          f"ISA {' '.join(info['isa']) or '-'}, native bf16: {info['native_bf16']}, "
          f"load average {info['load_average']}")
    print(f"software: python {info['python']}, torch {info['torch']}, transformers {info['transformers']}")


def matmul_peak(dtype, size=1024, repeats=7):
    """Best FLOP/s of a square matmul in `dtype` (the machine's measured matmul peak, as loaded now)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = min(timeit(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


# ---------------------------------------------------------------------------------------------- timing


def timeit(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns, repeats, warmup=1, budget_s=None, min_repeats=3):
    """Times each callable in `fns` (name -> fn), alternating them: A B C A B C ...

    Returns name -> list of seconds (warm-up calls excluded). With `budget_s`, stops after the
    first round that ends past the budget once `min_repeats` rounds are in.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    start = time.perf_counter()
    for round_index in range(repeats):
        for name, fn in fns.items():
            times[name].append(timeit(fn))
        if budget_s is not None and round_index + 1 >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return times


def median(values):
    return statistics.median(values)


def spread(values):
    """Relative spread of the repeats, (max - min) / median: how noisy the machine was."""
    return (max(values) - min(values)) / statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------- memory


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live CPU tensor storage while the mode is active: the CPU analogue of
    `torch.cuda.max_memory_allocated`.

    Every tensor an ATen op returns (forward, backward and optimizer ops alike: the autograd engine
    runs CPU backward on the calling thread, under the mode) is counted once per storage until the
    storage is freed (a weakref callback). Tensors alive before the mode starts (parameters,
    optimizer state, inputs) are passed in so that the figure is the whole training footprint.
    Not counted: scratch memory a kernel allocates and frees inside one op (oneDNN scratchpads,
    the flash-attention kernel's per-thread blocks) and the allocator's caching; see README.
    """

    def __init__(self, *preexisting):
        super().__init__()
        self._refs = {}
        self.current = 0
        self.peak = 0
        for tensors in preexisting:
            for tensor in tensors:
                self._track(tensor)
        self.start = self.current

    def _track(self, tensor):
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu" or tensor.layout != torch.strided:
            return
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._refs:
            return

        def release(_, key=key, size=size):
            if self._refs.pop(key, None) is not None:
                self.current -= size

        self._refs[key] = weakref.ref(storage, release)
        self.current += size
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            self._track(tensor)
        return out


def training_footprint(model, optimizer, inputs, step):
    """Peak tensor bytes of one training `step()`, counting parameters, optimizer state and inputs."""
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    tracker = PeakTensorMemory(list(model.parameters()), list(model.buffers()), grads, state,
                               [t for t in inputs.values() if torch.is_tensor(t)])
    with tracker:
        step()
    return tracker.peak


# ---------------------------------------------------------------------------------------------- configs

SMALL = {"hidden": 256, "layers": 4, "heads": 4, "mlp": 1024, "image_size": 64, "patch": 8, "text_len": 24,
         "vocab": 8192, "projection": 256}


def xmodal_dual_encoder_config(size=SMALL, attn_implementation="sdpa", audio=False):
    """xmodal text + vision towers (and optionally audio) at the shared architecture `size`."""
    import xmodal

    common = dict(hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                  num_attention_heads=size["heads"], intermediate_size=size["mlp"], hidden_act="gelu")
    return xmodal.XModalConfig(
        text_config=xmodal.XModalTextConfig(vocab_size=size["vocab"], max_position_embeddings=size["text_len"],
                                            **common),
        vision_config=xmodal.XModalVisionConfig(image_size=size["image_size"], patch_size=size["patch"], **common),
        audio_config=xmodal.XModalAudioConfig(num_mel_bins=64, max_source_positions=256, **common) if audio else None,
        projection_dim=size["projection"], attn_implementation=attn_implementation,
    )


def clip_config(size=SMALL, attn_implementation="sdpa"):
    """`transformers.CLIPConfig` with the same widths, depths, heads, MLP, activation, patch and image size."""
    from transformers import CLIPConfig

    common = dict(hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                  num_attention_heads=size["heads"], intermediate_size=size["mlp"], hidden_act="gelu")
    return CLIPConfig(
        text_config=dict(vocab_size=size["vocab"], max_position_embeddings=size["text_len"],
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, **common),
        vision_config=dict(image_size=size["image_size"], patch_size=size["patch"], **common),
        projection_dim=size["projection"], attn_implementation=attn_implementation,
    )


def image_text_batch(batch, size=SMALL, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(3, size["vocab"], (batch, size["text_len"]), generator=generator),
        "attention_mask": torch.ones(batch, size["text_len"], dtype=torch.long),
        "pixel_values": torch.randn(batch, 3, size["image_size"], size["image_size"], generator=generator),
    }


# ---------------------------------------------------------------------------------------------- reporting


def arguments(description, extra=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller inputs (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f"\n## {title}")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def write_json(path, payload):
    if path:
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)
