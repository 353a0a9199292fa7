"""XModalVideoProcessor and videos in XModalProcessor, on real files written here with PyAV: decoding from paths,
bytes, arrays and frame lists; fps and num_frames sampling with exact timestamps; frame content; padding masks;
save/load; the sound track through the feature extractor; and a ValueError naming each bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from xmodal.processing import XModalImageProcessor, XModalProcessor, XModalVideoProcessor
from xmodal.processing.tokenization_xmodal import load_default_tokenizer
from xmodal.processing.video_processing_xmodal import decode_video, load_video_audio

av = pytest.importorskip("av")

FRAMES, FPS, WIDTH, HEIGHT, SQUARE, TOP = 16, 8, 64, 48, 16, 16
SR, TONE = 16000, 440.0
KEYS = {"pixel_values_videos", "video_frame_mask", "video_timestamps"}


def square_left(index):
    """The moving square's left edge in frame `index` (3 px per frame)."""
    return 3 * index


def clip_frames(count=FRAMES):
    """A red square moving right over a dark grey background: (count, HEIGHT, WIDTH, 3) uint8."""
    frames = np.full((count, HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    for index in range(count):
        frames[index, TOP: TOP + SQUARE, square_left(index): square_left(index) + SQUARE] = (230, 20, 20)
    return frames


def write_video(path, frames=None, audio=True, container=None, with_video=True):
    """Write `frames` as H.264 at FPS (nearly lossless) and, with `audio`, a 440 Hz sine as AAC, all with PyAV."""
    frames = clip_frames() if frames is None else frames
    with av.open(str(path), "w", format=container) as output:
        if with_video:
            video = output.add_stream("libx264", rate=FPS, options={"crf": "1"})
            video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if audio:
            sound = output.add_stream("aac", rate=SR, layout="mono")
        for frame in frames if with_video else []:
            output.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if with_video:
            output.mux(video.encode())
        if audio:
            seconds = np.arange(int(SR * len(clip_frames()) / FPS)) / SR
            samples = (0.5 * np.sin(2 * np.pi * TONE * seconds)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            chunk.sample_rate = SR
            output.mux(sound.encode(chunk))
            output.mux(sound.encode())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    png = folder / "still.png"
    Image.fromarray(clip_frames(1)[0]).save(png)
    (folder / "notes.txt").write_text("not a video at all\n" * 20)
    return {
        "mp4": write_video(folder / "clip.mp4"),
        "silent": write_video(folder / "silent.mp4", frames=clip_frames(6), audio=False),
        "no_frames": write_video(folder / "no_frames.mkv", frames=clip_frames(0), container="matroska"),
        "sound_only": write_video(folder / "sound.m4a", container="mp4", with_video=False),
        "png": png,
        "text": folder / "notes.txt",
    }


@pytest.fixture(scope="module")
def video_processor():
    return XModalVideoProcessor()


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tokenizer = load_default_tokenizer(cache_dir=tmp_path_factory.mktemp("cache"))
    return XModalProcessor(tokenizer=tokenizer)


def test_a_path_gives_evenly_spaced_frames_with_their_times(video_processor, files):
    out = video_processor(files["mp4"], return_tensors="pt")
    assert set(out) == KEYS
    assert out["pixel_values_videos"].shape == (1, 8, 3, 64, 64) and out["pixel_values_videos"].dtype == torch.float32
    assert out["video_frame_mask"].dtype == torch.int64 and out["video_frame_mask"].tolist() == [[1] * 8]
    assert out["video_timestamps"].dtype == torch.float32
    assert out["video_timestamps"].tolist() == [[i / 4 for i in range(8)]]  # frames 0, 2, ..., 14 of 16 at 8 fps


@pytest.mark.parametrize("sampling, times", [
    ({"fps": 2}, [0.0, 0.5, 1.0, 1.5]),
    ({"fps": 3}, [0.0, 0.375, 0.75, 1.0, 1.375, 1.75]),  # the first frame at or after each third of a second
    ({"fps": 8}, [i / 8 for i in range(16)]),
    ({"fps": 30}, [i / 8 for i in range(16)]),  # faster than the clip: every frame once, none repeated
    ({"num_frames": 5}, [0.0, 0.375, 0.75, 1.125, 1.5]),  # frames floor(i * 16 / 5)
    ({"num_frames": 1}, [0.0]),
    ({"num_frames": 30}, [i / 8 for i in range(16)]),
])
def test_sampling_by_fps_or_frame_count(video_processor, files, sampling, times):
    out = video_processor(files["mp4"], return_tensors="np", **sampling)
    assert out["pixel_values_videos"].shape[1] == len(times)
    np.testing.assert_array_equal(out["video_timestamps"][0], np.asarray(times, dtype=np.float32))


def test_decoded_frames_show_the_square_where_it_was_drawn(files):
    frames, times = decode_video(files["mp4"], num_frames=FRAMES, max_frames=FRAMES)
    assert len(frames) == FRAMES and times.tolist() == [i / FPS for i in range(FRAMES)]
    for index, frame in enumerate(frames):
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        red = (frame[..., 0] > 150) & (frame[..., 1] < 100)
        rows, columns = np.nonzero(red)
        assert abs(columns.mean() - (square_left(index) + (SQUARE - 1) / 2)) < 0.5, index
        assert abs(rows.mean() - (TOP + (SQUARE - 1) / 2)) < 0.5, index
        assert abs(int(red.sum()) - SQUARE * SQUARE) <= 12, index
    assert np.abs(np.stack(frames).astype(float) - clip_frames()).mean() < 2  # chroma subsampling blurs edges


def test_path_bytes_array_and_frame_list_agree(video_processor, files):
    by_path = video_processor(files["mp4"], fps=2, return_tensors="np")
    for same in (str(files["mp4"]), files["mp4"].read_bytes()):
        got = video_processor(same, fps=2, return_tensors="np")
        assert all(np.array_equal(got[k], by_path[k]) for k in KEYS)
    array = clip_frames()
    from_array = video_processor(array, fps=2, input_fps=FPS, return_tensors="np")
    from_tensor = video_processor(torch.from_numpy(array), fps=2, input_fps=FPS, return_tensors="np")
    from_pil = video_processor([Image.fromarray(f) for f in array], fps=2, input_fps=FPS, return_tensors="np")
    for got in (from_tensor, from_pil):
        assert all(np.array_equal(got[k], from_array[k]) for k in KEYS)
    np.testing.assert_array_equal(from_array["video_timestamps"], by_path["video_timestamps"])
    # The decoded clip is the written one, up to H.264's small losses (pixels in [-1, 1]).
    assert np.abs(from_array["pixel_values_videos"] - by_path["pixel_values_videos"]).mean() < 0.02


def test_each_frame_is_processed_as_the_image_processor_would(video_processor, files):
    frames, _ = decode_video(files["mp4"], fps=2)
    expected = XModalImageProcessor()(frames, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(video_processor(files["mp4"], fps=2)["pixel_values_videos"][0], expected)
    small = video_processor(files["mp4"], fps=2, size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    assert small["pixel_values_videos"].shape == (1, 4, 3, 24, 24)


def test_a_batch_of_different_lengths_is_padded_and_masked(video_processor, files):
    batch = [files["mp4"], clip_frames(6), files["silent"]]
    out = video_processor(batch, fps=2, input_fps=FPS, return_tensors="pt")
    assert out["pixel_values_videos"].shape == (3, 4, 3, 64, 64)
    assert out["video_frame_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert out["video_timestamps"].tolist() == [[0.0, 0.5, 1.0, 1.5], [0.0, 0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]]
    assert not out["pixel_values_videos"][1:, 2:].any()
    alone = video_processor(clip_frames(6), fps=2, input_fps=FPS, return_tensors="pt")["pixel_values_videos"]
    assert torch.equal(out["pixel_values_videos"][1, :2], alone[0])


def test_a_5d_array_is_a_batch(video_processor):
    out = video_processor(np.stack([clip_frames(4)] * 2), input_fps=FPS, num_frames=2, return_tensors="np")
    assert out["pixel_values_videos"].shape == (2, 2, 3, 64, 64)


def test_max_frames_cuts_long_fps_sampling_with_a_warning(files):
    with pytest.warns(UserWarning, match=r"video: 16 sampled frames exceed max_frames=5; kept the first 5 \(up to "
                                         r"0\.50 s\)"):
        out = XModalVideoProcessor(max_frames=5)(files["mp4"], fps=8)
    assert out["video_timestamps"][0].tolist() == [0.0, 0.125, 0.25, 0.375, 0.5]


def test_save_and_load_round_trip(tmp_path, files):
    custom = XModalVideoProcessor(fps=2, input_fps=12, max_frames=10, max_resolution=1000,
                                  size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    custom.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert saved["fps"] == 2 and saved["input_fps"] == 12 and saved["size"] == {"shortest_edge": 32}
    for loaded in (XModalVideoProcessor.from_pretrained(tmp_path), AutoVideoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is XModalVideoProcessor and loaded.to_dict() == custom.to_dict()
        expected, got = custom(files["mp4"]), loaded(files["mp4"])
        assert all(np.array_equal(got[k], expected[k]) for k in KEYS)
    by_count = XModalVideoProcessor.from_pretrained(tmp_path, num_frames=3)  # replaces the saved fps
    assert (by_count.fps, by_count.num_frames) == (None, 3)


def test_processor_text_and_videos(processor, files):
    out = processor(text=["a red square", "a grey clip"], videos=[files["mp4"], files["silent"]],
                    videos_kwargs={"fps": 4}, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask"} | KEYS
    assert out["input_ids"].shape[0] == 2 and out["pixel_values_videos"].shape == (2, 8, 3, 64, 64)
    assert out["video_frame_mask"].sum(1).tolist() == [8, 3]
    standalone = processor.video_processor([files["mp4"], files["silent"]], fps=4, return_tensors="pt")
    assert all(torch.equal(out[k], standalone[k]) for k in KEYS)
    assert set(out) <= set(processor.model_input_names)
    with pytest.raises(ValueError, match="text has 3 items but videos has 2"):
        processor(text=["a", "b", "c"], videos=[files["mp4"], files["silent"]])
    only = processor(videos=files["mp4"], images=clip_frames(1)[0], return_tensors="pt")
    assert set(only) == {"pixel_values"} | KEYS


def test_the_sound_track_goes_through_the_feature_extractor(processor, files):
    samples, rate = load_video_audio(files["mp4"])
    assert rate == SR and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SR - FRAMES / FPS) < 0.15  # AAC adds up to two frames of padding
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * SR / len(samples) - TONE) < 2
    assert 0.3 < np.sqrt(np.mean(samples[SR // 4: SR] ** 2)) < 0.4  # a 0.5 amplitude sine has RMS 0.354
    out = processor(text="a beep", videos=files["mp4"].read_bytes(), audio_from_videos=True, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask", "input_features", "feature_attention_mask"} | KEYS
    expected = processor.feature_extractor({"array": samples, "sampling_rate": rate}, return_tensors="pt")
    assert torch.equal(out["input_features"], expected["input_features"])
    assert torch.equal(out["feature_attention_mask"], expected["feature_attention_mask"])


def test_sound_track_errors(processor, files):
    with pytest.raises(ValueError, match=r"videos\[1\]: the video has no audio track"):
        processor(videos=[files["mp4"], files["silent"]], audio_from_videos=True)
    with pytest.raises(ValueError, match="only video files and their bytes carry an audio track, got ndarray"):
        processor(videos=clip_frames(4), audio_from_videos=True, videos_kwargs={"input_fps": FPS})
    with pytest.raises(ValueError, match="Pass audio= or audio_from_videos=True, not both"):
        processor(videos=files["mp4"], audio=np.zeros(SR, np.float32), sampling_rate=SR, audio_from_videos=True)
    with pytest.raises(ValueError, match="audio_from_videos=True needs videos="):
        processor(text="a", audio_from_videos=True)


def test_processor_round_trip_and_checkpoints_saved_before_videos(processor, tmp_path, files):
    custom = XModalProcessor(processor.image_processor, processor.feature_extractor, processor.tokenizer,
                             video_processor=XModalVideoProcessor(fps=4))
    custom.save_pretrained(tmp_path / "new")
    assert (tmp_path / "new" / "video_processing_xmodal.py").is_file()  # the code travels with the checkpoint
    config = json.loads((tmp_path / "new" / "processor_config.json").read_text())
    assert config["video_processor"]["auto_map"]["AutoVideoProcessor"] == "video_processing_xmodal.XModalVideoProcessor"
    for loaded in (XModalProcessor.from_pretrained(tmp_path / "new"), AutoProcessor.from_pretrained(tmp_path / "new")):
        assert type(loaded.video_processor) is XModalVideoProcessor and loaded.video_processor.fps == 4
        assert torch.equal(loaded(videos=files["mp4"], return_tensors="pt")["video_timestamps"],
                           custom(videos=files["mp4"], return_tensors="pt")["video_timestamps"])
    del config["video_processor"]  # what a checkpoint saved before videos holds
    custom.save_pretrained(tmp_path / "old")
    (tmp_path / "old" / "processor_config.json").write_text(json.dumps(config))
    for loaded in (XModalProcessor.from_pretrained(tmp_path / "old"), AutoProcessor.from_pretrained(tmp_path / "old")):
        assert loaded.video_processor.to_dict() == XModalVideoProcessor().to_dict()


BAD_VIDEOS = {
    "png bytes": (lambda f: f["png"].read_bytes(), {}, r"^video: a still image \(png\), not a video; pass pictures in "
                                                       r"images=\. Accepted: a video file path"),
    "text file": (lambda f: f["text"], {}, r"^video: not a video file that PyAV can read \(InvalidDataError"),
    "text bytes": (lambda f: b"hello" * 100, {}, "not a video file that PyAV can read"),
    "empty bytes": (lambda f: b"", {}, "not a video file that PyAV can read"),
    "missing file": (lambda f: Path("/nowhere/clip.mp4"), {}, r"no video file at '/nowhere/clip\.mp4'"),
    "no frames": (lambda f: f["no_frames"], {}, r"^video: the video stream has no frames\. Accepted: "),
    "sound only": (lambda f: f["sound_only"], {}, r"the file has no video stream \(found: audio\)"),
    "too large a file": (lambda f: f["mp4"], {"max_resolution": 32},
                         r"resolution 64x48 exceeds max_resolution=32 px on a side"),
    "too wide an array": (lambda f: np.zeros((1, 2, 4097, 3), np.uint8), {"input_fps": 8},
                          "resolution 4097x2 exceeds max_resolution=4096 px on a side"),
    "array without a rate": (lambda f: clip_frames(4), {}, r"frames given as an array or a list need input_fps="),
    "frames without a rate": (lambda f: [Image.new("RGB", (8, 8))] * 3, {}, "need input_fps="),
    "zero rate": (lambda f: clip_frames(4), {"input_fps": 0}, r"input_fps must be a positive number of frames per "
                                                              r"second, got 0\. Accepted: "),
    "NaN rate": (lambda f: clip_frames(4), {"input_fps": float("nan")}, "input_fps must be a positive number"),
    "array with no frames": (lambda f: clip_frames(0), {"input_fps": 8}, r"the video has no frames \(shape \(0, "),
    "3-D array": (lambda f: clip_frames(1)[0], {"input_fps": 8}, r"\(frames, height, width, channels\) with 1-4 "
                                                                 r"channels, got shape \(48, 64, 3\)"),
    "one image": (lambda f: Image.new("RGB", (8, 8)), {}, "a single PIL image is not a video"),
    "a number": (lambda f: 42, {}, r"^video: unsupported type int\. Accepted: "),
    "a dict": (lambda f: {"path": str(f["mp4"])}, {}, "unsupported type dict"),
    "empty list": (lambda f: [], {}, r"^videos: empty list\. Accepted: "),
    "bad item in a batch": (lambda f: [f["mp4"], None], {}, r"^videos\[1\]: unsupported type NoneType"),
}


@pytest.mark.parametrize("name", list(BAD_VIDEOS))
def test_bad_video_is_a_value_error_saying_what_was_wrong(video_processor, files, name):
    make, kwargs, message = BAD_VIDEOS[name]
    with pytest.raises(ValueError, match=message) as caught:
        video_processor(make(files), **kwargs)
    assert "Accepted: " in str(caught.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"fps": 2, "num_frames": 4}, "sample frames by fps= or by num_frames=, not both"),
    ({"fps": 0}, "fps must be a positive number of frames per second, got 0"),
    ({"num_frames": 2.5}, "num_frames must be a positive integer, got 2.5"),
    ({"num_frames": 40}, "num_frames=40 exceeds max_frames=32"),
    ({"max_resolution": 0}, "max_resolution must be a positive integer, got 0"),
    ({"input_fps": -1}, "input_fps must be a positive number of frames per second, got -1"),
])
def test_bad_settings_are_value_errors(files, kwargs, message):
    with pytest.raises(ValueError, match=message):
        XModalVideoProcessor(**kwargs)
    if "input_fps" not in kwargs:  # a call is checked the same way (a file's own rate needs no input_fps)
        with pytest.raises(ValueError, match=message):
            XModalVideoProcessor()(files["mp4"], **kwargs)
