"""The loop around the default config's step: `make run`'s two processes against one process on its half.

`xmodal train` itself (the default config; no evaluation, no checkpoints) for `--steps` optimizer steps in two
settings, alternated `--repeats` times: `two`, two processes on the global batch of 64 (what `make run` runs), and
`one`, one process with one thread on a batch of 32 (the work of one of the two, without a collective). It reads
the samples/s of every logged window after `--skip` steps from the run's log and prints the two-process run's
efficiency: its samples/s against twice the one-process run's (1.00: the processes cost each other nothing; the
rest is the collectives and the waits for the slower process). The step itself is `bench_default_step.py`'s.

    python benchmarks/bench_loop.py --steps 140 --repeats 2
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, fmt, machine_info, median, print_machine, print_table, write_json  # noqa: E402

SETTINGS = {
    "two": ["--set", "training.num_processes=2", "--set", "training.batch_size=64"],
    "one": ["--set", "training.num_processes=1", "--set", "training.batch_size=32", "--set",
            "training.num_threads=1"],
}
LOG_LINE = re.compile(r"step (\d+)/\d+: loss=\S+ samples/s=(\d+)")


def run(config, setting, steps, seed):
    """Samples/s of each logged window of one `xmodal train` run: [(step, samples/s)]."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", config, "--output-dir", out,
                   "--set", f"training.max_steps={steps}", "--set", "training.max_minutes=null", "--set",
                   f"training.seed={seed}", "--set", "training.eval_every=0", "--set", "training.save_every=0",
                   "--set", "training.log_every=20", "--set", "evaluation.split=null", "--set",
                   "evaluation.extra_splits=[]", "--set", "training.progress_bar=false", *SETTINGS[setting]]
        log = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if log.returncode:
        raise SystemExit(f"{setting}: xmodal train failed:\n{log.stderr[-3000:]}")
    return [(int(step), float(speed)) for step, speed in LOG_LINE.findall(log.stdout + log.stderr)]


def main():
    def extra(parser):
        parser.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
        parser.add_argument("--steps", type=int, default=140, help="optimizer steps per run")
        parser.add_argument("--skip", type=int, default=40, help="leave out the windows up to this step (warm-up)")
        parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, alternated")
        parser.add_argument("--seed", type=int, default=0)

    args = arguments(__doc__.splitlines()[0], extra)
    print_machine(machine_info())
    windows = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats):
        for name in SETTINGS:
            found = [speed for step, speed in run(args.config, name, args.steps, args.seed) if step > args.skip]
            if not found:
                raise SystemExit(f"{name}: no logged window after step {args.skip}; raise --steps.")
            windows[name].append(median(found))
            print(f"{name} run {repeat + 1}: windows {found} -> median {median(found):.1f} samples/s", flush=True)
    two, one = median(windows["two"]), median(windows["one"])
    rows = [["two processes, batch 64 (`make run`)", fmt(two), fmt(two / 2)],
            ["one process, 1 thread, batch 32", fmt(one), fmt(one)],
            ["efficiency of the two: two / (2 x one)", f"{two / (2 * one):.2f}", ""]]
    print_table(f"`xmodal train`, default config, {args.steps} steps a run, windows after step {args.skip}, "
                f"medians of {args.repeats} run(s) each", ["setting", "samples/s", "per process"], rows)
    write_json(args.json, {"two": windows["two"], "one": windows["one"], "efficiency": two / (2 * one)})


if __name__ == "__main__":
    main()
