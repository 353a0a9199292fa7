"""`xmodal demo`: serves the Gradio app of `spaces_demo/app.py` on a checkpoint, on 127.0.0.1 by default.

    xmodal demo [--model runs/default/model] [--host 127.0.0.1] [--port 7860] [--share no]
                [--gallery DIR] [--data DIR] [--train-if-missing [--config configs/default.yaml]]

Without a checkpoint it says how to make one, or trains it first with `--train-if-missing`.
"""

import importlib.util
import os
import sys
from pathlib import Path

from ..launch import run_training
from ..loading import has_model
from .predictor import DEFAULT_MODEL_DIR

DEFAULT_CONFIG = "configs/default.yaml"
# The app is not part of the installed package: it lives in the source checkout, as a Space does.
APP_PATH = Path(__file__).resolve().parents[2] / "spaces_demo" / "app.py"


def add_demo_arguments(parser):
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR, help=f"checkpoint folder (default {DEFAULT_MODEL_DIR})")
    parser.add_argument("--video-model", default=None,
                        help="a video checkpoint (xmodal train --config configs/video.yaml) for the Sync tab")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves your network)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--share", choices=("no", "yes"), default="no",
                        help="a public gradio.live link (needs the internet)")
    parser.add_argument("--gallery", default=None, help="a folder of images to search (default: the test split)")
    parser.add_argument("--data", default=None,
                        help="the built-in data folder (default: where the checkpoint's training_config.yaml says)")
    parser.add_argument("--train-if-missing", action="store_true",
                        help="train the model first when --model holds none (takes a while on a CPU)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="training config for --train-if-missing")
    return parser


def match_hub_flags():
    """The app sets the offline variables before it imports Gradio, but the hub client read them when
    xmodal was imported (before this command ran): set its flags to match."""
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            setattr(hub_constants, name, os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"))


def how_to_make_a_model(model_dir, config=DEFAULT_CONFIG):
    return (f"No model at {model_dir} (it needs config.json and model.safetensors). Make one with\n"
            f"    make run                                   # or: xmodal train --config {config}\n"
            f"or run `xmodal demo --train-if-missing` to train it now, or point --model at a checkpoint folder.")


def train_missing_model(model_dir, config):
    """Trains `config` into `<model_dir>/..` with `xmodal train` (its progress bar shows); returns an exit code."""
    model_dir, config = Path(model_dir), Path(config)
    if model_dir.name != "model":
        print(f"xmodal demo: training writes <output_dir>/model, so --model must end in /model; got {model_dir}.",
              file=sys.stderr)
        return 2
    if not config.is_file():
        print(f"xmodal demo: no training config at {config} (run from the repository root, or pass --config).",
              file=sys.stderr)
        return 2
    print(f"No model at {model_dir}: training one with {config} into {model_dir.parent} ...", flush=True)
    return run_training(config, [f"training.output_dir={model_dir.parent}"], prog="xmodal demo")


def load_app(path=None):
    """Imports spaces_demo/app.py (or `$XMODAL_DEMO_APP`) as a module."""
    path = Path(path or os.environ.get("XMODAL_DEMO_APP") or APP_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"The demo app is not at {path}: `xmodal demo` runs from a source checkout "
                                "(it serves spaces_demo/app.py); set XMODAL_DEMO_APP to the app's path.")
    spec = importlib.util.spec_from_file_location("xmodal_demo_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: Gradio inspects the module of what it wraps
    spec.loader.exec_module(module)
    return module


def main(args):
    if not has_model(args.model):
        if not args.train_if_missing:
            print(how_to_make_a_model(args.model, args.config), file=sys.stderr)
            return 2
        code = train_missing_model(args.model, args.config)
        if code or not has_model(args.model):
            print(f"xmodal demo: training did not produce {args.model} (exit code {code}).", file=sys.stderr)
            return code or 1
    try:
        app = load_app()
    except FileNotFoundError as error:
        print(f"xmodal demo: {error}", file=sys.stderr)
        return 2
    match_hub_flags()
    if args.video_model and not has_model(args.video_model):
        print(f"xmodal demo: no model at --video-model {args.video_model} (config.json and model.safetensors); "
              "train one with `xmodal train --config configs/video.yaml`.", file=sys.stderr)
        return 2
    predictor = app.load(args.model, gallery_dir=args.gallery, data_path=args.data, video_model_dir=args.video_model)
    demo = app.build_demo(predictor)
    demo.launch(**app.launch_options(args.host, args.port, args.share == "yes"))
    return 0
