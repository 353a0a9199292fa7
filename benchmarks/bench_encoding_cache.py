"""Encoding a split once and reading it back: xmodal's tensor cache against `Dataset.map` and datasets' cache.

Both sides encode the same rows with the same code (`prepare_row` + `encode_prepared`: decode, log-mel,
pixels, tokens), in the same process, one after the other, each in a fresh temporary folder:
- xmodal: `encode_split` (chunks of 256 rows, float16 pixels and log-mels, one `torch.save` file);
- datasets: `Dataset.map(batched=True, batch_size=256, num_proc=N)` into Arrow in datasets' cache, the
  same float16 storage, then `with_format("torch")`.
Reported: the cold encode (seconds), the warm load (a second run finding its cache), and reading 64
random rows as tensors (a training batch before collation), median of 50 batches.
"""

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, fmt, machine_info, print_machine, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def map_encoder(processor, data, task, modalities):
    """A `Dataset.map` function: a batch of raw rows -> their encoded columns (float16 features)."""
    import numpy as np
    import torch
    from xmodal.trainers.data.encoding import encode_prepared, label_roles
    from xmodal.trainers.data.rows import prepare_row

    columns, roles = data.resolved_columns(), label_roles(task, data)

    def encode(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        prepared = [prepare_row(row, columns, modalities, roles) for row in rows]
        encoded = encode_prepared(prepared, processor, data, task, modalities)
        out = {}
        for key, value in encoded.items():
            if key in ("pixel_values", "input_features"):
                value = value.to(torch.float16)
            out[key] = list(np.asarray(value.numpy()))
        return out

    return encode


def batch_seconds(fetch, rows, repeats=50, batch=64):
    generator = random.Random(0)
    times = []
    for _ in range(repeats):
        indices = generator.sample(range(rows), batch)
        started = time.perf_counter()
        fetch(indices)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--rows", type=int, default=2000, help="training scenes to encode"),
        p.add_argument("--num-proc", type=int, default=2)))
    info = machine_info()
    print_machine(info)
    import datasets
    from xmodal.processing import build_scene_dataset
    from xmodal.trainers.config import load_config
    from xmodal import XModalConfig
    from xmodal.trainers.data import (
        XModalDataCollator,
        configure_tokens,
        encode_split,
        make_processor,
        make_tokenizer,
    )

    config = load_config(REPO / "configs/default.yaml")
    data, task, modalities = config.data, config.task, config.data.modalities
    rows = 200 if args.quick else args.rows
    build = dict(data.build_args, num_train=rows, num_validation=1, num_test=1, num_test_novel=1)
    results, payload = {}, {"machine": info, "rows": rows}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        split = build_scene_dataset(folder / "scenes", **build, progress=False)["train"]
        tokenizer = make_tokenizer(data, split)
        processor = make_processor(data, XModalConfig(**configure_tokens(config.model, tokenizer, data)), tokenizer)
        collator = XModalDataCollator(processor, data, task, modalities)

        # datasets first: its worker processes are forked, and a fork after torch's OpenMP threads have run
        # can hang (GNU libgomp is not fork-safe).
        datasets.config.HF_DATASETS_CACHE = str(folder / "hf_cache")
        encode = map_encoder(processor, data, task, modalities)
        source = split.remove_columns([c for c in split.column_names if c not in ("caption", "image", "audio")])
        (folder / "map_cache").mkdir()
        for attempt in ("cold", "warm"):
            started = time.perf_counter()
            mapped = source.map(encode, batched=True, batch_size=256, num_proc=args.num_proc,
                                remove_columns=source.column_names, new_fingerprint="xmodal-bench",
                                cache_file_name=str(folder / "map_cache" / "encoded.arrow"))
            mapped = mapped.with_format("torch")
            results[f"map_{attempt}"] = time.perf_counter() - started
        results["map_batch"] = batch_seconds(lambda ix: mapped[ix], len(mapped))
        for attempt in ("cold", "warm"):
            started = time.perf_counter()
            encoded = encode_split(split, processor, data, task, modalities, folder / "xmodal_cache")
            results[f"xmodal_{attempt}"] = time.perf_counter() - started
        results["xmodal_batch"] = batch_seconds(lambda ix: collator([encoded[i] for i in ix]), len(encoded))

    payload["results"] = results
    rows_out = [[name, f"{results[f'xmodal_{name}']:.3f}", f"{results[f'map_{name}']:.3f}",
                 fmt(results[f"map_{name}"] / results[f"xmodal_{name}"])] for name in ("cold", "warm", "batch")]
    print_table(f"Encode {rows} scenes (text, image, speech) and read them back (seconds; ratio > 1: xmodal faster)",
                ["", "xmodal torch.save cache", f"Dataset.map num_proc={args.num_proc} + Arrow cache", "ratio"],
                rows_out)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
