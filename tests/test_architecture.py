"""The shape of the code: import rules (import-linter contracts in setup.cfg) and file sizes.

The folders install under one import name through `package_dir`, so import-linter, which walks the
folder of the root package, would not see `xmodal.processing` or `xmodal.trainers` in a source checkout:
the test lays the three folders out as the installed package in a temporary folder and lints that.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"": "modeling_xmodal", "processing": "processing", "trainers": "trainers"}
MAX_LINES = 520  # "about 500 lines" a file


def _installed_layout(root):
    for sub, folder in PACKAGES.items():
        shutil.copytree(REPO / folder, root / "xmodal" / sub, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    shutil.copy(REPO / "setup.cfg", root / "setup.cfg")


def test_import_contracts_hold(tmp_path):
    pytest.importorskip("importlinter", reason="pip install import-linter (in the [dev] extra)")
    _installed_layout(tmp_path)
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "setup.cfg"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


def test_a_circle_breaks_the_contract(tmp_path):
    """The contracts can fail: an import back from `metrics` to `evaluate`, hidden in a function, is caught."""
    pytest.importorskip("importlinter")
    _installed_layout(tmp_path)
    with open(tmp_path / "xmodal" / "trainers" / "metrics.py", "a") as handle:
        handle.write("\n\ndef _circle():\n    from .evaluate import write_metrics  # noqa: F401\n")
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "setup.cfg"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and ".metrics -> .evaluate" in result.stdout


def test_no_file_is_much_over_500_lines():
    long = {str(p.relative_to(REPO)): n for folder in (*PACKAGES.values(), "spaces_demo", "tests", "benchmarks")
            for p in (REPO / folder).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these files (one idea a file): {long}"
