"""Data build: scenes per second of `xmodal.processing.build_scene_dataset`, with and without speech.

Builds a small scene dataset from scratch into a temporary folder (nothing is reused from the
cache) and reports scenes/s for the whole build: planning, drawing, speaking (espeak-ng), encoding
and writing the Arrow files. There is no reference implementation to compare with.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, fmt, machine_info, print_machine, print_table, write_json  # noqa: E402


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--scenes", type=int, default=3000, help="training scenes (plus 1/6 as many per other split)"),
        p.add_argument("--num-proc", type=int, default=2)))
    info = machine_info()
    print_machine(info)
    try:
        from xmodal.processing import build_scene_dataset
    except ImportError as error:
        print(f"xmodal.processing.build_scene_dataset is not available ({error}).")
        return
    train = 120 if args.quick else args.scenes
    other = max(1, train // 6)
    rows, payload = [], {"machine": info, "results": {}}
    with tempfile.TemporaryDirectory() as folder:  # warm-up: imports, fonts, voices, worker start-up
        build_scene_dataset(folder, num_train=6, num_validation=1, num_test=1, num_test_novel=1, with_speech=True,
                            num_proc=args.num_proc, progress=False)
    for with_speech in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            dataset = build_scene_dataset(folder, num_train=train, num_validation=other, num_test=other,
                                          num_test_novel=other, with_speech=with_speech, num_proc=args.num_proc,
                                          progress=False)
            seconds = time.perf_counter() - started
        total = sum(len(split) for split in dataset.values())
        name = "images + captions + speech" if with_speech else "images + captions"
        rows.append([name, total, fmt(seconds), fmt(total / seconds)])
        payload["results"][name] = {"scenes": total, "seconds": seconds, "scenes_per_s": total / seconds}
    print_table(f"Scene dataset build ({args.num_proc} worker processes)", ["content", "scenes", "seconds", "scenes/s"],
                rows)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
