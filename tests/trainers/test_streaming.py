"""`data.streaming: true`: rows encoded on the fly in DataLoader workers give the DatasetDict's batches, and
a streaming run killed with SIGKILL and resumed ends with the weights of an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from xmodal.trainers import checkpointing
from xmodal.trainers.config import DataConfig
from xmodal.trainers.data import XModalDataCollator, encode_split, load_raw_dataset, select_split
from xmodal.trainers.data.export import export_dataset, split_files
from xmodal.trainers.data.streaming import StreamingRows, stream_split, streaming_batches

from .helpers import REPO, cli_environment, run_cli, tiny_config, write_yaml

ALL = ["text", "image", "audio"]


@pytest.fixture(scope="module")
def saved(tiny_scenes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream") / "disk"
    tiny_scenes.save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def processor(tiny_processor):
    return tiny_processor


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_the_dataset_dict_batches(saved, processor, workers):
    data = DataConfig(name=None, path=str(saved), streaming=True, num_workers=workers, shuffle_buffer=1)
    rows = StreamingRows(stream_split(data, "train"), processor, data, "contrastive", ALL)
    streamed = [batch for batch, _ in streaming_batches(rows, 8, workers, processor.tokenizer.pad_token_id, {})]
    mapped = DataConfig(name=None, path=str(saved))
    encoded = encode_split(select_split(load_raw_dataset(mapped), "train"), processor, mapped, "contrastive", ALL)
    collator = XModalDataCollator(processor, mapped, "contrastive", ALL)
    assert len(streamed) == len(encoded) // 8
    for number, batch in enumerate(streamed):
        expected = collator([encoded[i] for i in range(8 * number, 8 * number + 8)])
        for key, value in expected.items():
            got = batch[key]
            if key in ("pixel_values", "input_features"):  # the map-style cache stores them as float16
                got = got.to(torch.float16).float()
            if key == "input_features":  # padded frames (masked out) hold silence there and zeros here
                frames = expected["feature_attention_mask"].bool()
                got, value = got.transpose(1, 2)[frames], value.transpose(1, 2)[frames]
            torch.testing.assert_close(got.to(value.dtype), value, rtol=0, atol=0, msg=key)


def test_a_resumed_stream_continues_exactly_with_any_number_of_workers(saved, processor):
    data = DataConfig(name=None, path=str(saved), streaming=True, shuffle_buffer=16)
    whole = StreamingRows(stream_split(data, "train"), processor, data, "contrastive", ["text"], seed=3)
    whole.set_position(epoch=1, start=0)
    expected = [b["input_ids"] for b, _ in streaming_batches(whole, 4, 0, 0, {})]
    for workers in (0, 2, 3):
        rest = StreamingRows(stream_split(data, "train"), processor, data, "contrastive", ["text"], seed=3)
        rest.set_position(epoch=1, start=5 * 4)
        got = [b["input_ids"] for b, _ in streaming_batches(rest, 4, workers, 0, {})]
        assert len(got) == len(expected) - 5
        for a, b in zip(got, expected[5:]):
            assert torch.equal(a, b)
    other_epoch = StreamingRows(stream_split(data, "train"), processor, data, "contrastive", ["text"], seed=3)
    other_epoch.set_position(epoch=2, start=0)
    assert not torch.equal(next(iter(streaming_batches(other_epoch, 4, 0, 0, {})))[0]["input_ids"], expected[0])


STEPS, SAVE_EVERY = 30, 10


def _config(tmp_path, name, shards):
    values = tiny_config(tmp_path / name, task="contrastive",
                         training={"max_steps": STEPS, "save_every": SAVE_EVERY, "save_total_limit": 2,
                                   "batch_size": 8})
    values["data"].update(name=None, builder="webdataset", path=str(shards), streaming=True, num_workers=2,
                          shuffle_buffer=16, data_files={s: split_files("webdataset", s) for s in ("train",)},
                          columns={"text": "json.caption", "image": "png", "audio": "wav"})
    return write_yaml(values, tmp_path / f"{name}.yaml")


@pytest.mark.slow
def test_sigkill_then_resume_a_stream_equals_uninterrupted(tmp_path, tiny_scenes):
    shards = tmp_path / "shards"
    export_dataset(tiny_scenes, shards, "webdataset", splits=["train"], shard_size=16)  # 96 rows: 12 batches
    reference = run_cli("train", "--config", _config(tmp_path, "reference", shards))
    assert reference.returncode == 0, reference.stderr[-3000:]

    config = _config(tmp_path, "killed", shards)
    process = subprocess.Popen([sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", str(config)],
                               cwd=REPO, env=cli_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        states = checkpointing.list_states(tmp_path / "killed")
        if states and int(states[-1].name.split("_")[1]) >= SAVE_EVERY:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    killed_at = int(checkpointing.latest_state(tmp_path / "killed").name.split("_")[1])
    assert killed_at < STEPS

    resumed = run_cli("train", "--config", config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_a_stream_is_validated_on_the_first_rows_of_its_validation_split(tmp_path, tiny_scenes, capsys):
    from xmodal.trainers.config import config_from_dict
    from xmodal.trainers.loop import train

    shards = tmp_path / "shards"
    export_dataset(tiny_scenes, shards, "webdataset", splits=["train", "validation"], shard_size=16)
    values = tiny_config(tmp_path / "run", task="contrastive", training={"max_steps": 4, "eval_every": 2})
    values["data"].update(name=None, builder="webdataset", path=str(shards), streaming=True, max_eval_samples=12,
                          data_files={s: split_files("webdataset", s) for s in ("train", "validation")},
                          columns={"text": "json.caption", "image": "png", "audio": "wav"})
    train(config_from_dict(values))
    printed = [line for line in capsys.readouterr().out.splitlines() if "eval_loss=" in line]
    assert [line.split(":")[0] for line in printed] == ["step 2", "step 4"]
    assert all("eval_text_to_image_R@1=" in line for line in printed)


def test_the_tokenizer_sample_reads_only_the_text_of_a_fixed_number_of_rows(tmp_path, tiny_scenes):
    from xmodal.trainers.data.streaming import text_sample

    shards = tmp_path / "shards"
    export_dataset(tiny_scenes, shards, "webdataset", splits=["train"], shard_size=16)
    data = DataConfig(name=None, builder="webdataset", path=str(shards), streaming=True,
                      data_files={"train": split_files("webdataset", "train")}, columns={"text": "json.caption"})
    sample = text_sample(stream_split(data, "train"), data, rows=20)
    assert sample.column_names == ["json.caption"]
    assert sample["json.caption"] == tiny_scenes["train"]["caption"][:20]
