"""Your own data: every source format gives the batches the DatasetDict gives, column and split mapping,
several captions per item, bad rows counted (never silently lost), and clear errors."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.trainers.config import ConfigError, DataConfig, config_from_dict
from xmodal.trainers.data import DataError, check_columns, encode_split, load_raw_dataset, select_split
from xmodal.trainers.data.export import export_dataset, split_files
from xmodal.trainers.loop import train

from .helpers import DATA_DIR, tiny_config

ALL = ["text", "image", "audio"]


@pytest.fixture(scope="module")
def processor(tiny_processor):
    return tiny_processor


def _encode(data, processor, split="test", modalities=ALL, task="contrastive"):
    raw = load_raw_dataset(data)
    rows = select_split(raw, split, data_config=data)
    check_columns(rows, split, data, modalities)
    from xmodal.trainers.data import base_dir

    return encode_split(rows, processor, data, task, modalities, base_dir=base_dir(data), name=split)


@pytest.fixture(scope="module")
def reference(tiny_scenes, processor):
    """The test split encoded from the built-in DatasetDict: what every other source must give."""
    return _encode(DataConfig(path=str(DATA_DIR), build=False), processor)


@pytest.fixture(scope="module")
def exported(tiny_scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    for fmt in ("imagefolder", "audiofolder", "webdataset", "parquet"):
        export_dataset(tiny_scenes, root / fmt, fmt, splits=["train", "test"], shard_size=10)
    tiny_scenes.save_to_disk(str(root / "disk"))
    return root


def _same(encoded, reference, keys):
    for key in keys:
        assert torch.equal(encoded.tensors[key], reference.tensors[key]), key


@pytest.mark.parametrize("source", ["disk", "imagefolder", "audiofolder", "webdataset", "parquet"])
def test_each_source_gives_the_batches_of_the_dataset_dict(source, exported, reference, processor):
    folder = exported / source
    modalities = {"imagefolder": ["text", "image"], "audiofolder": ["text", "audio"]}.get(source, ALL)
    data = {
        "disk": DataConfig(name=None, path=str(folder)),
        "imagefolder": DataConfig(name=None, builder="imagefolder", path=str(folder)),
        "audiofolder": DataConfig(name=None, builder="audiofolder", path=str(folder)),
        "webdataset": DataConfig(name=None, builder="webdataset", path=str(folder),
                                 data_files={s: split_files("webdataset", s) for s in ("train", "test")},
                                 columns={"text": "json.caption", "image": "png", "audio": "wav"}),
        "parquet": DataConfig(name=None, builder="parquet", path=str(folder),
                              data_files={s: split_files("parquet", s) for s in ("train", "test")}),
    }[source]
    data.modalities = modalities
    encoded = _encode(data, processor, modalities=modalities)
    keys = {"text": ("input_ids", "attention_mask"), "image": ("pixel_values",),
            "audio": ("input_features", "feature_attention_mask")}
    _same(encoded, reference, [k for m in modalities for k in keys[m]])
    assert encoded.skipped == {}


@pytest.mark.parametrize("source", ["imagefolder", "audiofolder"])
def test_a_folder_given_by_a_relative_path_reads_the_same(source, exported, reference, processor, monkeypatch):
    """`xmodal eval --data data_cache/sentences`: paths are read relative to data.path, so a relative data.path
    must not be joined twice (an audiofolder once skipped every row as a missing file)."""
    monkeypatch.chdir(exported)
    modality = {"imagefolder": "image", "audiofolder": "audio"}[source]
    data = DataConfig(name=None, builder=source, path=source, modalities=["text", modality])
    encoded = _encode(data, processor, modalities=["text", modality])
    assert encoded.skipped == {}
    _same(encoded, reference, {"image": ("pixel_values",), "audio": ("input_features",)}[modality])


def test_a_run_trains_from_webdataset_shards(exported, tmp_path, tiny_scenes):
    values = tiny_config(tmp_path / "run", task="contrastive", training={"max_steps": 2},
                         evaluation={"split": "test", "max_samples": 16})
    values["data"].update(name=None, builder="webdataset", path=str(exported / "webdataset"),
                          data_files={s: split_files("webdataset", s) for s in ("train", "test")},
                          columns={"text": "json.caption", "image": "png", "audio": "wav"})
    metrics = train(config_from_dict(values))
    assert metrics["samples"] == 16 and "text_to_image_R@1" in metrics
    assert metrics["train_skipped_rows"] == {}
    # xmodal eval --data: the same model scored on another copy of the data, a folder in another layout
    from xmodal.trainers.cli import main as cli_main

    argv = ["eval", "--model", str(tmp_path / "run" / "model"), "--split", "test", "--max-samples", "16",
            "--output-dir", str(tmp_path / "scores")]
    assert cli_main([*argv, "--data", str(exported / "imagefolder")]) == 0
    scores = json.loads((tmp_path / "scores" / "eval_test.json").read_text())
    assert scores["samples"] == 16 and "text_to_image_R@1" in scores and "audio_to_image_R@1" not in scores
    assert cli_main([*argv, "--data", str(exported / "disk")]) == 0  # a save_to_disk folder: all three
    scores = json.loads((tmp_path / "scores" / "eval_test.json").read_text())
    assert scores["text_to_image_R@1"] == metrics["text_to_image_R@1"] and "audio_to_image_R@1" in scores


# ---------------------------------------------------------------------------------------------- bad rows
def _png(color):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(seconds=0.5, rate=22_050):
    import soundfile

    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV",
                    subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture()
def messy(tmp_path):
    """A CSV of file paths: 4 good rows, then a corrupt PNG, a missing image, an empty caption, a truncated WAV."""
    (tmp_path / "media").mkdir()
    rows = []
    for i, color in enumerate(["red", "green", "blue", "white"]):
        (tmp_path / "media" / f"{i}.png").write_bytes(_png(color))
        (tmp_path / "media" / f"{i}.wav").write_bytes(_wav())
        rows.append({"picture": f"media/{i}.png", "sound": f"media/{i}.wav", "sentence": f"a {color} square"})
    (tmp_path / "media" / "corrupt.png").write_bytes(_png("black")[:60])
    (tmp_path / "media" / "truncated.wav").write_bytes(_wav()[:5000])
    rows += [{"picture": "media/corrupt.png", "sound": "media/0.wav", "sentence": "a black square"},
             {"picture": "media/nowhere.png", "sound": "media/0.wav", "sentence": "a lost square"},
             {"picture": "media/1.png", "sound": "media/1.wav", "sentence": "  "},
             {"picture": "media/2.png", "sound": "media/truncated.wav", "sentence": "a cut square"}]
    with open(tmp_path / "train.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return DataConfig(name=None, builder="json", path=str(tmp_path), data_files={"train": "train.jsonl"},
                      columns={"text": "sentence", "image": "picture", "audio": "sound"})


def test_bad_rows_are_skipped_and_counted_by_reason(messy, processor):
    encoded = _encode(messy, processor, split="train")
    assert len(encoded) == 4
    assert encoded.skipped == {"undecodable_image": 1, "missing_file": 1, "empty_text": 1, "undecodable_audio": 1}


def test_on_error_raise_names_the_row(messy, processor):
    messy.on_error = "raise"
    with pytest.raises(DataError, match=r"Row 4 of the 'train' split cannot be used: undecodable_image: not a "
                                        r"readable image"):
        _encode(messy, processor, split="train")


def test_a_run_records_the_skipped_rows(messy, tmp_path, capsys):
    values = tiny_config(tmp_path / "run", task="contrastive", training={"max_steps": 1, "batch_size": 4},
                         evaluation={"split": "train"})
    values["data"] = {"name": None, "builder": "json", "path": messy.path, "data_files": messy.data_files,
                      "columns": messy.columns, "modalities": ALL, "tokenizer": "default",
                      "max_audio_seconds": 4.0, "max_text_length": 24}
    metrics = train(config_from_dict(values))
    expected = {"undecodable_image": 1, "missing_file": 1, "empty_text": 1, "undecodable_audio": 1}
    assert metrics["train_skipped_rows"] == {f"train/{reason}": n for reason, n in expected.items()}
    assert metrics["skipped_rows"] == expected and metrics["samples"] == 4  # the evaluation's own count
    saved = json.loads((tmp_path / "run" / "model" / "metrics.json").read_text())
    assert saved["train_skipped_rows"] == metrics["train_skipped_rows"]
    assert "Rows left out (data.on_error: skip): train/empty_text: 1" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- captions
def test_several_captions_per_item_train_on_one_drawn_per_epoch_and_score_every_caption(tmp_path, processor):
    from datasets import Dataset

    images = [_png(c) for c in ("red", "green", "blue")]
    rows = {"image": [{"bytes": b, "path": None} for b in images],
            "texts": [["a red one", "red square", "crimson"], ["green"], ["a blue one", "blue"]]}
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "flickr"))
    data = DataConfig(name=None, path=str(tmp_path / "flickr"), columns={"text": "texts"},
                      modalities=["text", "image"])
    encoded = _encode(data, processor, split="train", modalities=["text", "image"])
    captions, owner = encoded.caption_rows()
    assert owner.tolist() == [0, 0, 0, 1, 2, 2] and captions["input_ids"].shape[0] == 6
    assert encoded.tensors["pixel_values"].shape[0] == 3 and len(encoded) == 3
    drawn = set()
    for epoch in range(6):
        encoded.set_epoch(epoch)
        item = encoded[0]
        drawn.add(tuple(item["input_ids"].tolist()))
        assert item["pixel_values"].shape == (3, 32, 32)
    assert len(drawn) > 1  # item 0 reads different captions in different epochs, always one of its own
    assert drawn <= {tuple(row.tolist()) for row in captions["input_ids"][:3]}


def test_flickr_protocol_recall():
    from xmodal.trainers.evaluate import _owner_relevance
    from xmodal.trainers.metrics import retrieval_metrics

    owner = torch.tensor([0, 0, 1, 1])
    images = torch.eye(2)
    texts = torch.tensor([[1.0, 0.0], [0.0, 0.9], [0.0, 1.0], [0.0, 1.0]])  # caption 1 points at the wrong image
    metrics = retrieval_metrics({"text": texts, "image": images}, ks=(1,), relevant=_owner_relevance(owner, 2),
                                exact=False)
    assert metrics["text_to_image_R@1"] == pytest.approx(3 / 4)
    assert metrics["image_to_text_R@1"] == pytest.approx(1.0)  # each image's top caption is one of its own


# ---------------------------------------------------------------------------------------------- errors
def test_clear_errors_for_columns_splits_and_sources(exported, tmp_path, processor):
    data = DataConfig(name=None, path=str(exported / "disk"), columns={"text": "sentence"})
    with pytest.raises(DataError, match=r"data\.columns\.text='sentence': the split 'test' has no such column; "
                                        r"it has \[.*'caption'"):
        _encode(data, processor)
    data = DataConfig(name=None, path=str(exported / "disk"), splits={"test": "held_out"})
    with pytest.raises(DataError, match=r"no split 'held_out' \(data\.splits maps 'test' to 'held_out'\); it has "
                                        r"\['test', 'test_novel', 'train', 'validation'\]"):
        _encode(data, processor)
    with pytest.raises(DataError, match=r"no dataset saved with `save_to_disk` there"):
        load_raw_dataset(DataConfig(name=None, path=str(tmp_path)))
    with pytest.raises(DataError, match=r"data\.builder='nobody/nothing'.*local cache"):
        load_raw_dataset(DataConfig(name=None, path=None, builder="nobody/nothing"))
    from datasets import Dataset, DatasetDict

    empty = DatasetDict({"train": Dataset.from_dict({"caption": ["a"]}).select([])})
    with pytest.raises(DataError, match=r"The split 'train' of the dataset is empty \(0 rows\)"):
        select_split(empty, "train", data_config=DataConfig(name=None))


@pytest.mark.parametrize("values, message", [
    ({"data": {"name": None, "path": None}}, r"data\.name: null \(your own data\) needs data\.path"),
    ({"data": {"columns": {"caption": "x"}}}, r"data\.columns=.*roles \['text', 'image', 'audio', 'label', "
                                              r"'target'\]"),
    ({"data": {"splits": {"dev": "x"}}}, r"data\.splits=.*\['train', 'validation', 'test'\]"),
    ({"data": {"on_error": "ignore"}}, r"data\.on_error='ignore'; choose one of \['skip', 'raise'\]"),
])
def test_bad_data_sections(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)
