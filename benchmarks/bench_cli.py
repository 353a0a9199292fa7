"""How long the `xmodal` command takes to answer `--help`: the light front door (`xmodal_cli`) against
importing the full command module (`xmodal.trainers.cli`, which imports torch and transformers), as every
`xmodal ...` invocation did before. Fresh processes, interleaved, medians.

    python benchmarks/bench_cli.py [--repeats 7] [--json FILE]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

CASES = {
    "xmodal --help (xmodal_cli)": [sys.executable, "-c", "import sys, xmodal_cli; sys.argv=['xmodal','--help'];"
                                                         " xmodal_cli.main()"],
    "import xmodal.trainers.cli": [sys.executable, "-c", "import xmodal.trainers.cli"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)  # accepted for run_all.py; unused
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    times = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, command in CASES.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print("| command | median s | spread |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.3f} | {(max(values) - min(values)) / medians[name]:.0%} |")
    names = list(CASES)
    print(f"ratio: {medians[names[1]] / medians[names[0]]:.1f}x faster")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"medians": medians}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
