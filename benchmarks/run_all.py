"""Runs every benchmark (each in its own process), then prints the goals of issue 6 against the results.

    python benchmarks/run_all.py [--quick] [--threads N] [--only training,retrieval] [--out DIR]

Each benchmark prints its own table of medians and ratios; this script adds the summary and the
total time. `make bench` runs it with the defaults (about 10-15 minutes on a 2-core machine).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ["training", "inference", "processors", "generation", "retrieval", "data"]


def goals(results):
    """(goal, measured, met) rows from the benchmarks' JSON results; a missing benchmark gives no row."""
    rows = []
    training = results.get("training")
    if training:
        for dtype, target in (("fp32", 1.3), ("bf16", 3.0)):
            if dtype in training["dtypes"]:
                speedup = training["dtypes"][dtype]["speedup"]
                rows.append((f"training {dtype} >= {target}x CLIPModel samples/s", f"{speedup:.2f}x", speedup >= target))
                ratio = training["dtypes"][dtype]["memory_ratio"]
                rows.append((f"training {dtype} peak memory <= CLIPModel's", f"{ratio:.2f}x", ratio <= 1.0))
        cut = training["checkpointing"]["memory_cut"]
        rows.append((f"checkpointing cuts peak memory >= 40% (batch {training['checkpointing']['batch']})",
                     f"{cut:.0%}", cut >= 0.4))
    processors = results.get("processors")
    if processors:
        for kind, reference in (("image", "CLIPImageProcessor"), ("audio", "WhisperFeatureExtractor")):
            speedup = processors["results"][kind]["speedup"]
            rows.append((f"{kind} processor >= 1.5x {reference}", f"{speedup:.2f}x", speedup >= 1.5))
    generation = results.get("generation")
    if generation:
        rows.append(("cached generation >= 3x uncached", f"{generation['cache_speedup']:.2f}x",
                     generation["cache_speedup"] >= 3))
        rows.append(("cached generation >= VisionEncoderDecoderModel", f"{generation['versus_reference']:.2f}x",
                     generation["versus_reference"] >= 1))
    retrieval = results.get("retrieval")
    if retrieval:
        best = retrieval.get("best")
        if best:
            entry = retrieval["indexes"][best]
            rows.append(("retrieval < 50 ms / 100 queries at recall@10 >= 0.95",
                         f"{entry['ms']:.1f} ms, recall {entry['recall']:.3f} ({best})", entry["ms"] < 50))
        else:
            rows.append(("retrieval < 50 ms / 100 queries at recall@10 >= 0.95", "no index reached 0.95", False))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--out", default=None, help="folder for each benchmark's JSON (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="xmodal-bench-")
    os.makedirs(out, exist_ok=True)
    results, durations = {}, {}
    started = time.perf_counter()
    for name in args.only.split(","):
        command = [sys.executable, os.path.join(HERE, f"bench_{name}.py"), "--json", os.path.join(out, f"{name}.json")]
        command += ["--quick"] if args.quick else []
        command += ["--threads", str(args.threads)] if args.threads else []
        print(f"\n# {name}: {' '.join(command[1:])}", flush=True)
        begun = time.perf_counter()
        code = subprocess.call(command, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        durations[name] = time.perf_counter() - begun
        if code != 0:
            print(f"{name} failed with exit code {code}")
            continue
        path = os.path.join(out, f"{name}.json")
        if os.path.exists(path):
            with open(path) as handle:
                results[name] = json.load(handle)
    total = time.perf_counter() - started
    print("\n## Goals (issue 6)")
    print("| goal | measured | met |\n|---|---|---|")
    for goal, measured, met in goals(results):
        print(f"| {goal} | {measured} | {'yes' if met else '**no**'} |")
    print("\ntime per benchmark: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items()))
    print(f"total: {total / 60:.1f} min; JSON results in {out}")
    failed = [name for name in args.only.split(",") if name not in results]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
