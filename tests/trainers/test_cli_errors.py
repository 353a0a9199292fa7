"""The front door: every mistake a user can make at the command line is one line naming what was wrong and
what to do, with exit code 2 and no traceback; `xmodal --help` and `--version` import neither torch nor
transformers."""

import subprocess
import sys

import pytest
import torch

from xmodal import XModalModel
from xmodal.trainers.cli import main as cli_main

from ..modeling.tiny import tiny_config
from .helpers import write_yaml


def one_line(capsys, prefix):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(prefix), err
    return err


def test_help_and_version_import_no_torch():
    code = ("import sys, contextlib, io, xmodal_cli\n"
            "for argv in (['--help'], ['--version']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        xmodal_cli.main(argv)\n"
            "    print(out.getvalue().splitlines()[0])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'xmodal') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: xmodal") and lines[1].startswith("xmodal ") and lines[-1] == "[]", result


def test_every_flag_has_help():
    from xmodal.trainers.cli import build_parser

    missing = []

    def walk(parser, where):
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif action.option_strings and not action.help and action.dest != "help":
                missing.append(f"{where} {action.option_strings[0]}")

    walk(build_parser(), "xmodal")
    assert not missing, missing


@pytest.fixture(scope="module")
def weights_only(tmp_path_factory):
    """A checkpoint folder with the model but no processor files."""
    folder = tmp_path_factory.mktemp("weights_only")
    torch.manual_seed(0)
    XModalModel(tiny_config()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("argv, prefix, says", [
    (["train", "--config", "{tmp}/none.yaml"], "xmodal train: ", "No config file at"),
    (["eval", "--model", "{tmp}/nowhere"], "xmodal eval: ", "No model at"),
    (["eval", "--model", "{weights}"], "xmodal eval: ", "no usable processor files"),
    (["eval", "--model", "{weights}", "--data", "{tmp}/none.txt"], "xmodal eval: ",
     "give a YAML config or a data folder"),
    (["data", "export", "--format", "parquet", "--out", "{tmp}/o", "--data", "{tmp}/none"], "xmodal data export: ",
     "No scene dataset at"),
    (["convert", "whisper-ct2", "--model-dir", "{tmp}/none", "--out", "{tmp}/o"], "xmodal convert whisper-ct2: ",
     "none"),
    (["export", "onnx", "--model", "{tmp}/none", "--out", "{tmp}/o"], "xmodal export onnx: ", "No model at"),
])
def test_cli_mistakes_are_one_line_with_exit_code_2(argv, prefix, says, tmp_path, weights_only, capsys):
    argv = [a.format(tmp=tmp_path, weights=weights_only) for a in argv]
    assert cli_main(argv) == 2
    assert says in one_line(capsys, prefix)


@pytest.mark.parametrize("text, says", [
    ("task: pretraining\ntraining: {batch_size: true}\n", "training.batch_size=True: expected an integer"),
    ("task: dance\n", "task='dance' is not supported"),
    ("data: {name: null, path: null}\n", "needs data.path"),
    ("model: {fusion_type: bilinear}\n", "model: "),
    ("training:\n  - 1\n", "Section training must be a mapping"),
])
def test_config_mistakes_at_the_command_line(text, says, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert cli_main(["train", "--config", str(path)]) == 2
    assert says in one_line(capsys, "xmodal train: ")


def test_a_bad_override_is_one_line(tmp_path, capsys):
    path = write_yaml({"task": "contrastive"}, tmp_path / "c.yaml")
    assert cli_main(["train", "--config", str(path), "--set", "training.max_steps"]) == 2
    assert "should look like section.key=value" in one_line(capsys, "xmodal train: ")


def test_unknown_subcommand_is_argparse_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["trian"])
    assert exit_info.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err


def test_a_truncated_weights_file_is_named(weights_only, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(weights_only, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:40])
    with pytest.raises(OSError, match=r"broken: a model\.safetensors file there cannot be read .*damaged or "
                                      r"incomplete"):
        XModalModel.from_pretrained(broken)


def test_a_compiler_that_cannot_build_the_step_is_one_line(tiny_scenes, tmp_path):
    """`training.compile: true` where inductor finds no working C++ compiler (`CXX` is /bin/false, the kernel cache
    empty): one line that names the failure and the way to train without it, exit code 2, no traceback."""
    import os

    from .helpers import REPO, cli_environment, tiny_config

    config = write_yaml(tiny_config(tmp_path / "run", training={"compile": True, "max_steps": 2}), tmp_path / "c.yaml")
    environment = dict(cli_environment(), CXX="/bin/false", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "kernels"))
    environment.pop("TORCHINDUCTOR_FX_GRAPH_CACHE", None)
    result = subprocess.run([sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", str(config)],
                            capture_output=True, text=True, timeout=600, env=environment, cwd=REPO)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("xmodal train: training.compile failed (InductorError: InvalidCxxCompiler: No working C++ "
                           "compiler found"), last
    assert last.endswith("train without it: --set training.compile=false"), last
    assert os.path.isdir(tmp_path / "run")  # it failed in training, after the config was read
