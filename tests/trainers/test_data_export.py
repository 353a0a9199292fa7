"""`xmodal data export`: each layout written from the tiny scenes and read back by `datasets.load_dataset`,
row for row: captions in order, the same pixels, the same audio samples."""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

from xmodal.trainers.cli import main as cli_main
from xmodal.trainers.data import DataError
from xmodal.trainers.data.export import export_dataset, reader_features, split_files

HAS_TORCHCODEC = importlib.util.find_spec("torchcodec") is not None


def _load(fmt, out, tmp_path, splits, **kwargs):
    from datasets import load_dataset

    data_files = {split: str(out / split_files(fmt, split)) for split in splits}
    return load_dataset(fmt, data_files=data_files, cache_dir=str(tmp_path / "cache"), **kwargs)


def _samples(data):
    import soundfile

    return soundfile.read(io.BytesIO(data), dtype="int16")


def _assert_same_pixels(image, original):
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(original.convert("RGB")))


def _assert_same_audio(data, original):
    (samples, rate), (original_samples, original_rate) = _samples(data), _samples(original)
    assert rate == original_rate and np.array_equal(samples, original_samples)


def _build_folder(tiny_scenes):
    return Path(tiny_scenes["train"].cache_files[0]["filename"]).parents[1]


def test_imagefolder_round_trip(tiny_scenes, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "imagefolder"
    counts = export_dataset(tiny_scenes, out, "imagefolder")
    assert counts == {split: len(part) for split, part in tiny_scenes.items()}
    assert sorted(p.name for p in (out / "test").iterdir())[:2] == ["000000.png", "000001.png"]
    loaded = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # the README's configs keep every split
    assert list(loaded) == list(tiny_scenes)
    for split, original in tiny_scenes.items():
        assert loaded[split]["caption"] == original["caption"]
        assert loaded[split]["captions"] == original["captions"]
        for image, original_image in zip(loaded[split]["image"], original["image"]):
            _assert_same_pixels(image, original_image)
    # data_dir maps split folders by keyword: test_novel matches "test" and is merged into it
    by_keyword = load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert {split: len(part) for split, part in by_keyword.items()} == {
        "train": counts["train"], "validation": counts["validation"],
        "test": counts["test"] + counts["test_novel"]}
    assert by_keyword["train"]["caption"] == tiny_scenes["train"]["caption"]


def test_audiofolder_round_trip(tiny_scenes, tmp_path):
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    out = tmp_path / "audiofolder"
    export_dataset(tiny_scenes, out, "audiofolder", splits=["train", "test_novel"])
    if not HAS_TORCHCODEC:  # datasets.Audio imports torchcodec to encode even undecoded paths
        with pytest.raises(DatasetGenerationError) as error:
            load_dataset("audiofolder", data_dir=str(out), drop_labels=True, cache_dir=str(tmp_path / "cache"))
        assert "torchcodec" in str(error.value.__cause__)
    features = reader_features("audiofolder", tiny_scenes["train"].features)
    loaded = _load("audiofolder", out, tmp_path, ["train", "test_novel"], drop_labels=True, features=features)
    assert list(loaded) == ["train", "test_novel"]
    for split, part in loaded.items():
        original = tiny_scenes[split]
        assert part["caption"] == original["caption"] and part["scene_id"] == original["scene_id"]
        assert part["boxes"] == original["boxes"]  # metadata keeps the source types
        for file_name, original_audio in zip(part["file_name"], original["audio"]):
            _assert_same_audio((out / split / file_name).read_bytes(), original_audio)


def test_webdataset_round_trip(tiny_scenes, tmp_path):
    out = tmp_path / "webdataset"
    counts = export_dataset(tiny_scenes, out, "webdataset", shard_size=10)
    shards = sorted(p.name for p in out.glob("train-*.tar"))
    assert shards == [f"train-{i:06d}.tar" for i in range(-(-counts["train"] // 10))]
    features = reader_features("webdataset", tiny_scenes["train"].features)
    loaded = _load("webdataset", out, tmp_path, list(tiny_scenes), features=features)
    assert {split: len(part) for split, part in loaded.items()} == counts
    for split, original in tiny_scenes.items():
        rows = loaded[split]["json"]
        assert [row["caption"] for row in rows] == original["caption"]  # in order across shards
        assert [row["captions"] for row in rows] == original["captions"]
        for image, original_image in zip(loaded[split]["png"], original["image"]):
            _assert_same_pixels(image, original_image)
        for audio, original_audio in zip(loaded[split]["wav"], original["audio"]):
            _assert_same_audio(audio, original_audio)


def test_parquet_round_trip(tiny_scenes, tmp_path):
    from datasets import Image

    out = tmp_path / "parquet"
    counts = export_dataset(tiny_scenes, out, "parquet", splits=["validation", "test_novel"])
    assert sorted(p.name for p in out.glob("*.parquet")) == ["test_novel.parquet", "validation.parquet"]
    loaded = _load("parquet", out, tmp_path, list(counts))
    assert isinstance(loaded["validation"].features["image"], Image)
    for split, part in loaded.items():
        original = tiny_scenes[split]
        assert len(part) == counts[split] and part["caption"] == original["caption"]
        for image, original_image in zip(part["image"], original["image"]):
            _assert_same_pixels(image, original_image)
        for audio, original_audio in zip(part["audio"], original["audio"]):
            _assert_same_audio(audio, original_audio)


def test_failed_export_leaves_nothing(tiny_scenes, tmp_path):
    silent = tiny_scenes["test_novel"].map(lambda row: {"audio": None}, keep_in_memory=True)  # no cache file
    with pytest.raises(DataError, match="no audio"):
        export_dataset({"test_novel": silent}, tmp_path / "out", "audiofolder")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="holds the dataset"):
        export_dataset(tiny_scenes, _build_folder(tiny_scenes).parent, "parquet", overwrite=True)
    with pytest.raises(DataError, match="unknown split"):
        export_dataset(tiny_scenes, tmp_path / "out", "parquet", splits=["train", "dev"])


def test_cli_export(tiny_scenes, tmp_path, capsys):
    out = tmp_path / "wds"
    argv = ["data", "export", "--format", "webdataset", "--out", str(out), "--data", str(_build_folder(tiny_scenes)),
            "--splits", "train,test", "--shard-size", "50"]
    assert cli_main(argv) == 0
    assert "train: 96, test: 32" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "test-000000.tar", "train-000000.tar",
                                                       "train-000001.tar"]
    assert cli_main(argv) == 2  # an existing export is replaced only with --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(argv + ["--overwrite"]) == 0


def test_cli_rejects_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["data", "export", "--format", "tfrecord", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    missing = tmp_path / "no-such-data"
    assert cli_main(["data", "export", "--format", "parquet", "--out", str(tmp_path / "out"),
                     "--data", str(missing)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("xmodal data export: ") and error.count("\n") == 1
    assert "xmodal data build" in error and str(missing) in error
    assert not (tmp_path / "out").exists()
