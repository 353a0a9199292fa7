"""task: video — clips encoded for the four tasks, the sound shifted by whole frames, and a tiny `configs/video.yaml`
run that trains, evaluates every task on the held-out split and saves a model that loads."""

import json

import numpy as np
import pytest
import torch
import yaml

from xmodal.trainers.config import config_from_dict
from xmodal.trainers.data.collator import VideoCollator
from xmodal.trainers.data.video_encoding import (
    MOMENT_TOLERANCE, SAME_PICTURE, encode_video_split, frame_positives, shift_waveform, unique_moments,
)
from xmodal.trainers.loop import train

from .helpers import REPO, TOWER

TINY_VIDEOS = {"seed": 3, "num_emoji": 8, "num_train": 8, "num_validation": 2, "num_test": 4, "num_test_novel": 2,
               "num_proc": 1}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    from xmodal.processing.video_scenes import build_video_scenes

    root = tmp_path_factory.mktemp("videos")
    build_video_scenes(root, progress=False, **TINY_VIDEOS)
    return root


def tiny_video_config(output_dir, video_dir):
    """configs/video.yaml as shipped, on the tiny clips with a tiny model for a few steps."""
    values = yaml.safe_load((REPO / "configs" / "video.yaml").read_text())
    values["data"].update({"path": str(video_dir), "build_args": TINY_VIDEOS, "tokenizer_vocab_size": 120})
    model = values["model"]
    model.update({"projection_dim": 16, "text_config": dict(TOWER), "audio_config": {**TOWER, "num_mel_bins": 16,
                                                                                     "max_source_positions": 130}})
    model["vision_config"].update({**TOWER, "cnn_channels": [8, 16]})
    model["video_config"].update(TOWER)
    values["training"].update({"output_dir": str(output_dir), "max_steps": 4, "batch_size": 4, "num_processes": 1,
                               "num_threads": 1, "warmup_steps": 1, "log_every": 2, "save_every": 0,
                               "report_to": ["none"], "progress_bar": False, "max_minutes": None})
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory, video_dir):
    out = tmp_path_factory.mktemp("video-run")
    metrics = train(config_from_dict(tiny_video_config(out, video_dir)))
    return out, metrics


def test_tiny_video_config_trains_and_measures_every_task(trained):
    out, metrics = trained
    saved = json.loads((out / "model" / "metrics.json").read_text())
    for prefix in ("", "test_novel/"):
        for key in ("text_to_video_R@1", "video_to_text_R@5", "image_to_moment_accuracy", "grounding_mean_iou",
                    "grounding_R@1_IoU0.5", "av_offset_accuracy", "av_offset_mean_abs_error_frames"):
            assert 0 <= saved[prefix + key] <= (1 if "error" not in key else 8), (prefix + key, saved)
    assert saved["samples"] == TINY_VIDEOS["num_test"] and saved["test_novel/samples"] == TINY_VIDEOS["num_test_novel"]
    assert saved["video_fps"] == 4.0 and saved["av_offset_max_frames"] == 4
    assert saved["grounding_queries"] >= TINY_VIDEOS["num_test"]  # every clip has at least one event
    assert metrics["text_to_video_R@1"] == saved["text_to_video_R@1"]


def test_the_saved_video_model_and_processor_load_and_score_a_clip(trained, video_dir):
    from datasets import load_from_disk

    from xmodal import XModalForVideoPreTraining
    from xmodal.processing import XModalProcessor

    out, _ = trained
    model = XModalForVideoPreTraining.from_pretrained(out / "model").eval()
    processor = XModalProcessor.from_pretrained(out / "model")
    assert processor.video_processor.fps == 4
    folder = next(p for p in video_dir.iterdir() if p.is_dir() and p.name.startswith("video-scenes"))
    row = load_from_disk(str(folder))["test"][0]
    inputs = processor(text=[row["caption"]], videos=[row["video"]], return_tensors="pt", padding=True)
    with torch.no_grad():
        frames = model.xmodal.get_video_frame_features(inputs["pixel_values_videos"], inputs["video_frame_mask"],
                                                       inputs["video_timestamps"])
    assert frames.frame_embeds.shape[1] == int(row["duration"] * 4)  # every 0.25 s
    torch.testing.assert_close(inputs["video_timestamps"][0, :3], torch.tensor([0.0, 0.25, 0.5]))


@pytest.fixture(scope="module")
def encoded(trained, video_dir):
    from datasets import load_from_disk

    from xmodal.processing import XModalProcessor

    out, _ = trained
    processor = XModalProcessor.from_pretrained(out / "model")
    data = config_from_dict(tiny_video_config(out, video_dir)).data
    folder = next(p for p in video_dir.iterdir() if p.is_dir() and p.name.startswith("video-scenes"))
    splits = load_from_disk(str(folder))
    return (encode_video_split(splits["train"], processor, data, 4, evaluation=False, name="train"),
            encode_video_split(splits["test"], processor, data, 4, evaluation=True, name="test"), splits)


def test_encoded_clips_hold_frames_events_and_pictures(encoded):
    train_set, test_set, splits = encoded
    tensors = train_set.tensors
    for i, row in enumerate(splits["train"]):
        count = int(tensors["video_frame_mask"][i].sum())
        assert count == int(row["duration"] * 4)
        torch.testing.assert_close(tensors["video_timestamps"][i, :count], torch.arange(count) * 0.25)
        for e, event in enumerate(row["events"][:5]):
            inside = tensors["event_labels"][i, e, :count].bool()
            times = tensors["video_timestamps"][i, :count]
            assert torch.equal(inside, (times >= event["start"] - 1e-6) & (times <= event["end"] + 1e-6))
            assert tensors["event_segments"][i, e].tolist() == [event["start"], event["end"]]
        # each training picture's positives include every frame within the tolerance of its time
        for q in range(tensors["query_times"].shape[1]):
            near = (tensors["video_timestamps"][i, :count] - tensors["query_times"][i, q]).abs() <= MOMENT_TOLERANCE
            assert bool(tensors["query_positives"][i, q, :count][near].all())
    assert int(train_set.tensors["audio_offsets"].abs().sum()) == 0  # training sound is shifted per batch
    assert test_set.tensors["audio_offsets"].abs().max() <= 4


def test_evaluation_pictures_appear_once(encoded):
    _, test_set, _ = encoded
    tensors = test_set.tensors
    for i in range(len(test_set)):
        for q in range(tensors["query_times"].shape[1]):
            if tensors["query_times"][i, q] < 0:
                continue
            count = int(tensors["video_frame_mask"][i].sum())
            far = (tensors["video_timestamps"][i, :count] - tensors["query_times"][i, q]).abs() > MOMENT_TOLERANCE
            difference = (tensors["pixel_values_videos"][i, :count].float()
                          - tensors["queries"][i, q].float()).abs().mean(dim=(1, 2, 3))
            assert bool((difference[far] >= SAME_PICTURE).all())


def test_items_draw_their_picture_and_offset_by_epoch(encoded):
    train_set, test_set, _ = encoded
    first = [train_set[i]["audio_offsets"].item() for i in range(len(train_set))]
    assert first == [train_set[i]["audio_offsets"].item() for i in range(len(train_set))]  # the same again
    train_set.set_epoch(1)
    assert first != [train_set[i]["audio_offsets"].item() for i in range(len(train_set))]
    train_set.set_epoch(0)
    assert all(test_set[i]["shift_features"].item() == 0 for i in range(len(test_set)))  # already in the waveform


def test_collator_shifts_the_sound_by_whole_frames():
    features = torch.arange(1.0, 13.0).reshape(1, 1, 12).repeat(2, 2, 1)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    shifted = VideoCollator(mel_per_frame=2).shift(features, mask, torch.tensor([1, -1]))
    assert shifted[0, 0].tolist() == [1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # late by 2 steps, silence = the minimum
    assert shifted[1, 0].tolist() == [3, 4, 5, 6, 7, 8, 1, 1, 9, 10, 11, 12]  # early, within its 8 real steps


def test_shift_waveform_keeps_the_length():
    samples = np.arange(1, 9, dtype=np.float32)
    assert shift_waveform(samples, 0.25, 8).tolist() == [0, 0, 1, 2, 3, 4, 5, 6]
    assert shift_waveform(samples, -0.25, 8).tolist() == [3, 4, 5, 6, 7, 8, 0, 0]
    assert shift_waveform(samples, 2.0, 8).tolist() == [0] * 8


def test_moments_of_still_and_moving_pictures():
    frames = torch.zeros(6, 3, 2, 2)
    frames[3:] = 1.0  # a still stretch, then a change at frame 3 that stays
    times = torch.arange(6) * 0.5
    positives = frame_positives(frames[4], frames, times[4], times, torch.ones(6, dtype=torch.bool))
    assert positives.tolist() == [False, False, False, True, True, True]  # the same picture, wherever it shows
    frames[5] = -1.0
    picks = unique_moments(frames, times, 10, __import__("random").Random(0))
    assert picks == [5]  # only the last picture is shown once


def test_clips_that_cannot_be_used_are_counted_or_named(encoded, trained, video_dir):
    from datasets import Dataset

    from xmodal.processing import XModalProcessor
    from xmodal.processing.video_scenes import encode_clip
    from xmodal.trainers.data import DataError

    _, _, splits = encoded
    rows = splits["test"].to_list()[:2]
    silent = encode_clip(np.zeros((16, 64, 64, 3), dtype=np.uint8), 8)  # a real mp4 without sound
    rows += [{**rows[0], "video": b"not a video at all"}, {**rows[0], "video": silent}]
    split = Dataset.from_list(rows)
    processor = XModalProcessor.from_pretrained(trained[0] / "model")
    data = config_from_dict(tiny_video_config(trained[0], video_dir)).data
    dataset = encode_video_split(split, processor, data, 4, evaluation=True, name="mixed")
    assert len(dataset) == 2 and dataset.skipped == {"undecodable_video": 1, "no_sound_track": 1}
    data.on_error = "raise"
    with pytest.raises(DataError, match=r"Row 2 of the 'mixed' split cannot be used: .*data.on_error: skip"):
        encode_video_split(split, processor, data, 4, evaluation=True, name="mixed")


def test_lora_trains_adapters_on_the_towers_and_the_video_heads_in_full(tmp_path, video_dir):
    values = tiny_video_config(tmp_path, video_dir)
    values["lora"] = {"enabled": True, "r": 4, "parts": ["text", "image", "audio", "video"]}
    values["evaluation"]["extra_splits"] = []
    metrics = train(config_from_dict(values))
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert 0 <= metrics["av_offset_accuracy"] <= 1  # the merged model was evaluated
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "adapter_model.safetensors"), "pt") as saved:
        names = list(saved.keys())
    assert any("video_model" in n and "lora_A" in n for n in names)
    assert any("video_heads" in n for n in names)  # the new head trains in full and is saved with the adapters


def test_the_transformers_trainer_trains_the_video_head(encoded, trained, tmp_path):
    from xmodal import XModalForVideoPreTraining
    from xmodal.processing import XModalProcessor
    from xmodal.trainers.hf_trainer import build_trainer

    train_set, test_set, _ = encoded
    model = XModalForVideoPreTraining.from_pretrained(trained[0] / "model")
    processor = XModalProcessor.from_pretrained(trained[0] / "model")
    trainer = build_trainer(model, processor, "video", train_set, test_set, output_dir=str(tmp_path), max_steps=3,
                            per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=1e-3,
                            save_strategy="no", logging_steps=1)
    result = trainer.train()
    assert result.global_step == 3 and np.isfinite(result.training_loss)
    assert np.isfinite(trainer.evaluate()["eval_loss"])
