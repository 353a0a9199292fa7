"""Streaming your own data: memory and time to the first step against dataset size; loader against model speed.

Builds a small scene dataset (default config's build arguments, 1,000 training scenes with speech),
exports it as WebDataset shards (`xmodal data export`), and makes streams of 10k and 200k rows by hard
links to the same shard (no extra disk). For each it runs `xmodal train --config configs/default.yaml`
streaming those shards (`data.streaming: true, num_workers: 2`, one process, 40 steps, no evaluation)
and reports the peak resident memory of the whole process tree (trainer + DataLoader workers, sampled
every 50 ms), the time from the command's start to its first training step, and the run's samples/s
and data_wait_fraction. Then, in this process, the stream's loader alone (2 workers, batches of 64)
against the default model's training step alone (forward, backward, AdamW on one held batch): the
loader must deliver at least twice what the model consumes. Last, the default config on the same
scenes held in memory (not streamed): its data_wait_fraction. There is no reference implementation.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, fmt, machine_info, print_machine, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = "{text: json.caption, image: png, audio: wav}"


def tree_rss(pid):
    """Resident bytes of a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def run_training(args, output_dir):
    """Runs `xmodal train` with `args`; returns (peak tree RSS MiB, seconds to the first step, metrics)."""
    command = [sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", str(REPO / "configs/default.yaml"),
               "--num-processes", "1", "--output-dir", str(output_dir), *args,
               "--set", "training.progress_bar=false", "--set", "training.log_every=1",
               "--set", "training.save_every=0", "--set", "training.eval_every=0", "--set", "evaluation.split="]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, first_step, lines = [0], [None], []

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in process.stdout:
        lines.append(line)
        if first_step[0] is None and line.startswith("step 1/"):
            first_step[0] = time.perf_counter() - started
    stderr = process.stderr.read()
    process.wait()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"training failed ({process.returncode}):\n{stderr[-3000:]}")
    steps = [line for line in lines if line.startswith("step ")]
    metrics = json.loads((Path(output_dir) / "model" / "metrics.json").read_text())
    return peak[0] / 2**20, first_step[0], median_speed(steps), metrics["train_data_wait_fraction"]


def median_speed(steps):
    """Median samples/s over the logged steps after the first five (start-up, the shuffle buffer's fill)."""
    import statistics

    values = [dict(part.split("=") for part in line.split(": ", 1)[1].split() if "=" in part) for line in steps[5:]]
    return statistics.median(float(v["samples/s"]) for v in values)


def loader_against_model(shards, model_dir, batches):
    """(loader samples/s with 2 workers, model training samples/s) measured here, one after the other."""
    import torch
    from xmodal import XModalForPreTraining
    from xmodal.processing import XModalProcessor
    from xmodal.trainers.config import load_config
    from xmodal.trainers.data import XModalDataCollator
    from xmodal.trainers.data.streaming import StreamingRows, stream_split, streaming_batches

    config = load_config(REPO / "configs/default.yaml", stream_overrides(shards))
    processor = XModalProcessor.from_pretrained(model_dir)
    rows = StreamingRows(stream_split(config.data, "train"), processor, config.data, config.task,
                         config.data.modalities, seed=0)
    stream = streaming_batches(rows, 64, 2, processor.tokenizer.pad_token_id or 0, {})
    for _ in range(3):  # worker start-up and the shuffle buffer's first fill
        next(stream)
    started = time.perf_counter()
    held = [next(stream)[0] for _ in range(batches)]
    loader_speed = 64 * batches / (time.perf_counter() - started)
    del stream

    torch.set_num_threads(2)
    model = XModalForPreTraining.from_pretrained(model_dir)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    collator = XModalDataCollator(processor, config.data, config.task, config.data.modalities)
    batch = collator.for_model(held[0])
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    started = time.perf_counter()
    for index in range(batches):
        model(**collator.for_model(held[index])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return loader_speed, 64 * batches / (time.perf_counter() - started)


def stream_overrides(shards):
    return ["data.name=null", f"data.path={shards}", "data.builder=webdataset", "data.streaming=true",
            "data.num_workers=2", f"data.columns={COLUMNS}",
            "data.data_files={train: 'train-[0-9][0-9][0-9][0-9][0-9][0-9].tar'}"]


def import_seconds():
    """Seconds a fresh interpreter takes to import the training loop (torch, transformers, datasets, ...)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import xmodal.trainers.loop"], cwd=REPO, check=True)
    return time.perf_counter() - started


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--sizes", default="10000,200000", help="stream lengths in rows (comma-separated)"),
        p.add_argument("--steps", type=int, default=40, help="training steps per run")))
    info = machine_info()
    print_machine(info)
    from xmodal.processing import build_scene_dataset
    from xmodal.trainers.config import load_config
    from xmodal.trainers.data.export import export_dataset

    build = dict(load_config(REPO / "configs/default.yaml").data.build_args)
    build.update(num_train=1000, num_validation=1, num_test=1, num_test_novel=1)
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = 10 if args.quick else args.steps
    payload, rows = {"machine": info, "results": {}}, []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scenes = build_scene_dataset(folder / "scenes", **build, progress=False)
        export_dataset(scenes, folder / "shards", "webdataset", splits=["train"], shard_size=1000)
        shard = folder / "shards" / "train-000000.tar"
        for size in sizes:
            stream = folder / f"stream-{size}"
            stream.mkdir()
            for index in range(size // 1000):
                os.link(shard, stream / f"train-{index:06d}.tar")
            overrides = [item for o in stream_overrides(stream) for item in ("--set", o)]
            peak, first, speed, wait = run_training([*overrides, "--set", f"training.max_steps={steps}"],
                                                    folder / f"run-{size}")
            rows.append([f"stream, {size:,} rows", fmt(peak), fmt(first), fmt(speed), f"{wait:.3f}"])
            print(" | ".join(rows[-1]), flush=True)  # as it comes: a long run killed half-way keeps its rows
            payload["results"][f"stream_{size}"] = {"peak_rss_mib": peak, "first_step_s": first,
                                                    "samples_per_s": speed, "data_wait_fraction": wait}
        loader, model = loader_against_model(folder / f"stream-{sizes[0]}", folder / f"run-{sizes[0]}" / "model",
                                             batches=8 if args.quick else 20)
        payload["results"]["loader_vs_model"] = {"loader_samples_per_s": loader, "model_samples_per_s": model}
        print(f"loader {loader:.1f} samples/s, model {model:.1f} samples/s", flush=True)
        scenes.save_to_disk(str(folder / "disk"))
        peak, first, speed, wait = run_training(["--set", "data.name=null", "--set", f"data.path={folder / 'disk'}",
                                                 "--set", f"training.max_steps={steps}"], folder / "run-memory")
        rows.append(["in memory (DatasetDict), 1,000 rows", fmt(peak), fmt(first), fmt(speed), f"{wait:.3f}"])
        imports = import_seconds()
        payload["results"]["import_seconds"] = imports
        payload["results"]["in_memory"] = {"peak_rss_mib": peak, "first_step_s": first, "samples_per_s": speed,
                                           "data_wait_fraction": wait}
    print_table("Streaming runs (xmodal train, default config, 1 process)",
                ["data", "peak RSS MiB (tree)", "s to first step", "samples/s", "data_wait_fraction"], rows)
    print(f"(of the seconds to the first step, {imports:.1f} s is importing the training loop in a fresh interpreter)")
    print_table("Loader against model (samples/s)", ["stream loader, 2 workers", "model training step", "ratio"],
                [[fmt(loader), fmt(model), fmt(loader / model)]])
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
