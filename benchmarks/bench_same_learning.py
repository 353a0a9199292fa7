"""Same learning from your own files: the default config trained on WebDataset shards (streamed) and on the
DatasetDict they were exported from, two seeds each, scored by the same evaluation on the same test split.

Builds scenes with the default config's build arguments (a smaller training split), exports train,
validation and test as WebDataset shards (`xmodal data export`'s writer), then runs `xmodal train
--config configs/default.yaml` four times, one process each, at a fixed number of steps: {DatasetDict,
stream} x {seed 0, seed 1}. Reports the test metrics of each run, the seed-to-seed spread of each
source (run-to-run noise) and the difference between the sources' means. Learning is "the same" when
that difference is within the noise. Not a speed measurement: the figures do not depend on the CPU's
speed, only the time to get them does.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, machine_info, print_machine, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ("text_to_image_R@1", "image_to_text_R@1", "audio_to_image_R@1", "text_to_audio_R@1",
           "image_text_matching_accuracy", "speech_to_text_cer", "caption_cer")
SHARDS = "{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"


def train(output_dir, seed, steps, extra, generation_samples):
    command = [sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", str(REPO / "configs/default.yaml"),
               "--num-processes", "1", "--output-dir", str(output_dir), "--set", f"training.seed={seed}",
               "--set", f"training.max_steps={steps}", "--set", "training.max_minutes=null",
               "--set", "training.progress_bar=false", "--set", "training.save_every=0",
               "--set", "training.eval_every=0", "--set", "evaluation.extra_splits=[]",
               "--set", f"evaluation.generation_samples={generation_samples}", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"training failed:\n{result.stderr[-3000:]}")
    return json.loads((Path(output_dir) / "model" / "metrics.json").read_text())


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--train-scenes", type=int, default=3000),
        p.add_argument("--steps", type=int, default=120),
        p.add_argument("--test-scenes", type=int, default=500),
        p.add_argument("--generation-samples", type=int, default=200, help="captions/transcripts scored for CER")))
    info = machine_info()
    print_machine(info)
    from xmodal.processing import build_scene_dataset
    from xmodal.trainers.config import load_config
    from xmodal.trainers.data.export import export_dataset

    steps = 10 if args.quick else args.steps
    build = dict(load_config(REPO / "configs/default.yaml").data.build_args)
    build.update(num_train=300 if args.quick else args.train_scenes, num_validation=100, num_test=args.test_scenes,
                 num_test_novel=1)
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scenes = build_scene_dataset(folder / "scenes", **build, progress=False)
        scenes.save_to_disk(str(folder / "disk"))
        export_dataset(scenes, folder / "shards", "webdataset", splits=["train", "validation", "test"],
                       shard_size=500)
        sources = {
            "DatasetDict": ["--set", "data.name=null", "--set", f"data.path={folder / 'disk'}"],
            "WebDataset stream": ["--set", "data.name=null", "--set", f"data.path={folder / 'shards'}",
                                  "--set", "data.builder=webdataset", "--set", "data.streaming=true",
                                  "--set", "data.num_workers=2",
                                  "--set", "data.columns={text: json.caption, image: png, audio: wav}",
                                  "--set", "data.data_files={" + ", ".join(
                                      f"{s}: '{SHARDS.format(split=s)}'" for s in ("train", "validation", "test"))
                                  + "}"],
        }
        for seed in (0, 1):
            for name, extra in sources.items():
                metrics = train(folder / f"{name[:4]}-{seed}", seed, steps, extra, args.generation_samples)
                runs[f"{name}, seed {seed}"] = {m: metrics[m] for m in METRICS if m in metrics}
                print(name, seed, runs[f"{name}, seed {seed}"], flush=True)
    names = list(runs)
    rows = []
    for metric in METRICS:
        values = [runs[n].get(metric) for n in names]
        if any(v is None for v in values):
            continue
        dict_runs, stream_runs = values[0::2], values[1::2]
        noise = max(abs(dict_runs[0] - dict_runs[1]), abs(stream_runs[0] - stream_runs[1]))
        gap = abs(sum(dict_runs) / 2 - sum(stream_runs) / 2)
        rows.append([metric, *[f"{v:.3f}" for v in values], f"{noise:.3f}", f"{gap:.3f}",
                     "yes" if gap <= noise else "no"])
    print_table(f"Test metrics after {steps} steps ({build['num_train']} training scenes, 1 process)",
                ["metric", *names, "seed spread (max)", "|mean gap|", "gap within spread"], rows)
    write_json(args.json, {"machine": info, "steps": steps, "build": build, "runs": runs})


if __name__ == "__main__":
    main()
