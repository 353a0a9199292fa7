"""The demo's galleries and built-in data (`trainers/demo/galleries.py`)."""

import json
import shutil

import pytest

from xmodal.trainers.demo.galleries import _load_split


def test_the_data_folder_may_hold_several_builds(assets, tmp_path):
    for seed in (0, 1):
        build = tmp_path / f"scenes-v1-seed{seed}"
        shutil.copytree(assets["data"], build)
        (build / "build_params.json").write_text(json.dumps({"params": {"seed": seed, "num_test": 16}}))
    (tmp_path / "scenes-v1-seed1" / "test" / "marker").write_text("")
    split = _load_split(tmp_path, "test", {"seed": 1, "num_proc": 4})
    assert len(split) == 16 and "scenes-v1-seed1" in split.cache_files[0]["filename"]
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        _load_split(tmp_path, "test", {"seed": 7})
    with pytest.raises(KeyError, match="no 'dev' split"):
        _load_split(tmp_path, "dev", {"seed": 0})
