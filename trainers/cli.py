"""The `xmodal` command. Each subcommand lives in the module that does the work."""

import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="xmodal", description="Cross-modal models for the Hugging Face ecosystem.")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="build the default model, save, reload, print sizes and a forward")
    inspect.add_argument("--batch-size", type=int, default=8)
    inspect.set_defaults(handler=_inspect)
    return parser


def _inspect(args):
    from .inspect_model import main

    return main(args)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
