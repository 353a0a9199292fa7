"""The `xmodal` console script's front door: `xmodal`, `xmodal --help` and `xmodal --version` answer without
importing torch or transformers (well under a second); every subcommand is handed to
`xmodal.trainers.cli`, which imports what that command needs.

It is a top-level module (`xmodal_cli`), not part of the `xmodal` package: importing anything under `xmodal`
first runs `xmodal/__init__.py`, which registers the models with the Auto classes and so imports torch.
"""

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

PROG = "xmodal"
DESCRIPTION = "Cross-modal models (text, image, speech) for the Hugging Face ecosystem."
# subcommand -> one line of help; `xmodal.trainers.cli.build_parser` gives each its arguments
COMMANDS = {
    "train": "train (and evaluate) a model from a YAML config",
    "eval": "score a saved model: retrieval, matching, error rates, accuracy",
    "data": "the built-in datasets (emoji scenes, emoji videos): build them; export the scenes as image/audio "
            "folders, WebDataset or Parquet",
    "inspect": "build the default model, save, reload, print sizes and a forward",
    "demo": "serve the Gradio demo (spaces_demo/app.py) on a checkpoint",
    "convert": "convert a model from another format into a transformers folder",
    "export": "export a saved model for another runtime (ONNX)",
    "push": "upload a saved model folder to the Hugging Face Hub",
}


def package_version():
    try:
        return version("xmodal")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "unknown"


def top_level_parser():
    """The parser of `xmodal` itself, with one (argument-less) parser per subcommand; returns (parser, subparsers)."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     epilog="`xmodal COMMAND --help` shows the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, {name: commands.add_parser(name, help=text) for name, text in COMMANDS.items()}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser, _ = top_level_parser()
        parser.parse_args(argv)  # prints help or the version and exits; no arguments: the usage error
    from xmodal.trainers.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
