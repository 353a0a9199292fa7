"""The built-in video data: narrated emoji clips as mp4 bytes, with per-event captions and per-frame boxes.

Clips are planned in `video_plan` (who does what, when) and made here: frames drawn with the still
scenes' sprites on a plain background, each event's sentence spoken by eSpeak at its start time,
both written by PyAV's bundled FFmpeg (H.264 + AAC in mp4; no system ffmpeg). Every chunk of clips
is made in a fresh worker process (`worker_processes.fresh_process_map`), so a build is reproducible bit for
bit. The mp4 bytes live in the rows, not beside them: a saved or pushed dataset is then one
self-contained thing (paths break when the folder moves, and `datasets.Video` needs torchcodec).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from .emoji_assets import OPENMOJI_ATTRIBUTION, emoji_catalogue, emoji_sprite, scaled_sprite
from .scene_plan import DEFAULT_IMAGE_SIZE, DEFAULT_NUM_EMOJI, SPLITS
from .scenes import datasets_progress, is_build_of, package_versions, staged_build
from .speech import SAMPLING_RATE, speak_here
from .worker_processes import fresh_process_map
from .video_plan import (
    DEFAULT_VIDEO_SIZES, FPS, VIDEO_DATA_VERSION, Clip, frame_boxes, pixel_box, place_utterances, plan_video_clips,
    state_at, visible_box,
)

__all__ = [
    "build_video_scenes", "build_videos_from_args", "video_scenes_folder", "decode_clip", "encode_clip", "render_frames", "narration_track",
    "video_features",
]

DEFAULT_VIDEO_DIR = "data_cache/video_scenes"  # where `xmodal data build --videos` puts its builds

VIDEO_CODECS = ("libx264", "mpeg4")  # the first one PyAV's FFmpeg can encode is used
AUDIO_CODEC = "aac"
AUDIO_BIT_RATE = 32_000  # plenty for 16 kHz speech
AUDIO_OPTIONS = {"aac_coder": "fast"}  # 3x faster than the default "twoloop" on speech, same size
CLIPS_PER_JOB = 20  # clips per fresh worker process: ~1 s of work, so forking costs little


def video_features():
    """The dataset's `datasets.Features`; `boxes[frame][emoji]` is [x0, y0, x1, y1] in pixels, or
    None while that emoji is off the frame."""
    from datasets import Features, List, Value

    event = {
        "emoji": Value("string"), "emoji_id": Value("int32"), "action": Value("string"),
        "direction": Value("string"), "start": Value("float64"), "end": Value("float64"),
        "spoken_start": Value("float64"), "spoken_end": Value("float64"),
        "sentence": Value("string"), "caption": Value("string"),
    }
    return Features({
        "clip_id": Value("string"),
        "video": Value("binary"),
        "caption": Value("string"),
        "events": List(event),
        "emoji": List(Value("string")),
        "emoji_ids": List(Value("int32")),
        "duration": Value("float64"),
        "fps": Value("int32"),
        "num_frames": Value("int32"),
        "image_size": Value("int32"),
        "sampling_rate": Value("int32"),
        "voice": Value("string"),
        "boxes": List(List(List(Value("int32"), length=4))),
    })


# ---------------------------------------------------------------------------------------
# Drawing, narrating, encoding one clip
# ---------------------------------------------------------------------------------------
def render_frames(clip: Clip) -> np.ndarray:
    """The clip's frames, uint8 (frames, side, side, 3); emoji drawn in `emoji_ids` order."""
    catalogue = emoji_catalogue()
    side = clip.image_size
    background = Image.new("RGB", (side, side), clip.background)
    frames = np.empty((clip.num_frames, side, side, 3), dtype=np.uint8)
    for index in range(clip.num_frames):
        image = background.copy()
        for emoji_index, emoji_id in enumerate(clip.emoji_ids):
            x0, y0, x1, y1 = box = pixel_box(state_at(clip, emoji_index, index / clip.fps))
            if visible_box(box, side) is not None:  # PIL clips a sprite that reaches past the frame
                sprite = scaled_sprite(catalogue[emoji_id].char, x1 - x0)
                image.paste(sprite, (x0, y0), sprite)
        frames[index] = np.asarray(image)
    return frames


def narration_track(clip: Clip, utterances: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clip-long 16 kHz mono track with each event's utterance placed at its start (later if the
    one before is still speaking), and each utterance's (spoken_start, spoken_end) in seconds."""
    track = np.zeros(clip.num_samples, dtype=np.float32)
    placed = place_utterances([event.start for event in clip.events], [len(u) for u in utterances], len(track))
    for (first, end), utterance in zip(placed, utterances):
        track[first:end] = utterance[: end - first]
    return track, [(first / SAMPLING_RATE, end / SAMPLING_RATE) for first, end in placed]


X264_OPTIONS = {"threads": "1", "x264-params": "asm=0"}  # reproducible bytes: see `encode_clip`


def _video_codec() -> str:
    import av

    for name in VIDEO_CODECS:
        if name in av.codecs_available:
            return name
    raise RuntimeError(f"PyAV {av.__version__} can encode none of {VIDEO_CODECS}")


def encode_clip(frames: np.ndarray, fps: int, audio: np.ndarray | None = None,
                sampling_rate: int = SAMPLING_RATE) -> bytes:
    """mp4 bytes: the frames as H.264 (else MPEG-4 part 2), yuv420p, and `audio` (float32 mono) as AAC; the same
    bytes for the same frames and sound. x264 runs single-threaded and without its assembly (`asm=0`): its AVX-512
    routines gave 64-px frames bytes that depended on what the heap held before (up to 26 different encodings of one
    clip in 60 on an AVX-512 EPYC; fine up to AVX2, whose output equals plain C's), so a dataset build differed
    between processes. Plain C costs ~0.01 s a clip here, and should give the same bytes on any x86 CPU with the same
    x264 (not checked across machines)."""
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Writing video needs PyAV: pip install 'xmodal[video]'") from error
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        codec = _video_codec()
        video = container.add_stream(codec, rate=fps, options=X264_OPTIONS if codec == "libx264" else {})
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt, video.thread_count = "yuv420p", 1
        sound = None
        if audio is not None:
            sound = container.add_stream(AUDIO_CODEC, rate=sampling_rate, layout="mono", options=AUDIO_OPTIONS)
            sound.bit_rate = AUDIO_BIT_RATE
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            step = 1024  # AAC's frame size
            for first in range(0, len(audio), step):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, first : first + step]),
                                                   format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sampling_rate, first, Fraction(1, sampling_rate)
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return buffer.getvalue()


def decode_clip(data: bytes) -> tuple[np.ndarray, np.ndarray | None, float, int | None]:
    """(frames uint8 (frames, h, w, 3), audio float32 mono or None, fps, sampling rate or None) of mp4
    bytes; the audio is cut to its stream's length (AAC pads its last frame)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.audio:
            return frames, None, fps, None
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().mean(axis=0) for frame in container.decode(stream)]
        audio = np.concatenate(chunks).astype(np.float32)
        length = round(stream.duration * stream.time_base * stream.sample_rate) if stream.duration else len(audio)
        return frames, audio[:length], fps, stream.sample_rate


# ---------------------------------------------------------------------------------------
# Rows, in fresh worker processes
# ---------------------------------------------------------------------------------------
def _row(clip: Clip, utterances: list[np.ndarray]) -> dict:
    track, spoken = narration_track(clip, utterances)
    names = [emoji_catalogue()[i].name for i in clip.emoji_ids]
    events = [{
        "emoji": names[e.emoji_index], "emoji_id": clip.emoji_ids[e.emoji_index], "action": e.action,
        "direction": e.direction, "start": e.start, "end": e.end, "spoken_start": said[0], "spoken_end": said[1],
        "sentence": e.sentence, "caption": e.caption,
    } for e, said in zip(clip.events, spoken)]
    return {
        "clip_id": clip.clip_id, "video": encode_clip(render_frames(clip), clip.fps, track),
        "caption": clip.caption, "events": events, "emoji": names, "emoji_ids": clip.emoji_ids,
        "duration": clip.duration, "fps": clip.fps, "num_frames": clip.num_frames, "image_size": clip.image_size,
        "sampling_rate": SAMPLING_RATE, "voice": clip.voice, "boxes": frame_boxes(clip),
    }


def _build_chunk(clips: list[Clip]) -> dict[str, list]:
    """Worker: speak every event of a chunk of clips with this process's one eSpeak engine, then draw,
    mix and encode each clip; returns dataset columns."""
    requests = [(event.sentence, clip.voice, clip.rate, clip.pitch) for clip in clips for event in clip.events]
    spoken = iter(speak_here(requests, SAMPLING_RATE))
    rows = [_row(clip, [next(spoken) for _ in clip.events]) for clip in clips]
    return {name: [row[name] for row in rows] for name in video_features()}


def _folder_name(params: dict) -> str:
    sizes = "-".join(str(params[f"num_{split}"]) for split in SPLITS)
    return (f"video-scenes-v{params['version']}-seed{params['seed']}-emoji{params['num_emoji']}-"
            f"{sizes}-{params['image_size']}px")


def video_scenes_folder(output_dir: str | os.PathLike, **build_args) -> Path:
    """The folder under `output_dir` that `build_video_scenes(output_dir, **build_args)` writes (and reuses)."""
    return Path(output_dir) / _folder_name(_params(**build_args))


def _params(seed=0, num_train=DEFAULT_VIDEO_SIZES["train"], num_validation=DEFAULT_VIDEO_SIZES["validation"],
            num_test=DEFAULT_VIDEO_SIZES["test"], num_test_novel=DEFAULT_VIDEO_SIZES["test_novel"],
            num_emoji=DEFAULT_NUM_EMOJI, image_size=DEFAULT_IMAGE_SIZE, num_proc=None, progress=None):
    return {
        "kind": "video", "version": VIDEO_DATA_VERSION, "seed": seed, "num_emoji": num_emoji,
        "num_train": num_train, "num_validation": num_validation, "num_test": num_test,
        "num_test_novel": num_test_novel, "image_size": image_size,
    }


def build_video_scenes(
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_train: int = DEFAULT_VIDEO_SIZES["train"],
    num_validation: int = DEFAULT_VIDEO_SIZES["validation"],
    num_test: int = DEFAULT_VIDEO_SIZES["test"],
    num_test_novel: int = DEFAULT_VIDEO_SIZES["test_novel"],
    num_emoji: int = DEFAULT_NUM_EMOJI,
    image_size: int = DEFAULT_IMAGE_SIZE,
    num_proc: int = 2,
    progress: bool = True,
):
    """Build (or reuse) the video dataset and return it as a `DatasetDict`.

    Saved with `save_to_disk` under `output_dir` in a folder named after the parameters, with a
    dataset card and `build_params.json` (including clips per second); a later call with the same
    parameters loads that folder. `num_proc` fresh worker processes speak, draw and encode.
    """
    from datasets import load_from_disk

    params = _params(seed, num_train, num_validation, num_test, num_test_novel, num_emoji, image_size)
    folder = Path(output_dir) / _folder_name(params)
    if is_build_of(folder, params):
        return load_from_disk(str(folder))
    started = time.perf_counter()
    plan = plan_video_clips(seed=seed, num_emoji=num_emoji, image_size=image_size,
                            sizes={split: params[f"num_{split}"] for split in SPLITS})
    with staged_build(folder, params) as staging:
        with datasets_progress(progress):
            sizes = _write_splits(plan, staging, num_proc, progress)
        total, elapsed = sum(sizes.values()), time.perf_counter() - started
        stats = {"seconds": round(elapsed, 1), "clips_per_second": round(total / max(elapsed, 1e-9), 2)}
        record = {"params": params, "stats": stats, "packages": {**package_versions(), "av": _av_version()}}
        (staging / "build_params.json").write_text(json.dumps(record, indent=2))
        (staging / "README.md").write_text(_dataset_card(params, sizes, stats))
    if progress:
        print(f"Built {total} clips in {elapsed:.1f} s ({stats['clips_per_second']} clips/s): {folder}")
    return load_from_disk(str(folder))


def build_videos_from_args(args):
    """Run a video build from `xmodal data build --videos` options (an `argparse.Namespace`); returns the
    `DatasetDict`. An option that is None was not given and takes `build_video_scenes`' own default, so
    the sizes and the rest are written down once, in its signature."""
    names = ("seed", "num_train", "num_validation", "num_test", "num_test_novel", "num_emoji", "image_size",
             "num_proc")
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    out = args.out if args.out is not None else DEFAULT_VIDEO_DIR
    return build_video_scenes(out, progress=not args.quiet, **given)


def _write_splits(plan: dict[str, list[Clip]], staging: Path, num_proc: int, progress: bool) -> dict[str, int]:
    """Stream every split's rows into Arrow files as workers finish, then save them to `staging`."""
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    for emoji_id in sorted({i for clips in plan.values() for clip in clips for i in clip.emoji_ids}):
        emoji_sprite(emoji_catalogue()[emoji_id].char)  # drawn once here; forked workers inherit the cache
    jobs = [(split, clips[start : start + CLIPS_PER_JOB])
            for split, clips in plan.items() for start in range(0, len(clips), CLIPS_PER_JOB)]
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=f".{staging.name}-arrow-") as scratch:
        writers = {split: ArrowWriter(features=video_features(), path=f"{scratch}/{split}.arrow") for split in plan}
        with tqdm(total=sum(map(len, plan.values())), unit="clip", disable=not progress) as bar:
            for (split, clips), columns in zip(jobs, fresh_process_map(_build_chunk, [c for _, c in jobs], num_proc)):
                writers[split].write_batch(columns)
                bar.update(len(clips))
        for writer in writers.values():
            writer.finalize()
            writer.close()
        dataset = DatasetDict({split: Dataset.from_file(f"{scratch}/{split}.arrow", split=split) for split in plan})
        dataset.save_to_disk(str(staging))
        return {split: len(part) for split, part in dataset.items()}


def _av_version() -> str | None:
    try:
        import av
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return f"{av.__version__} ({_video_codec()})"


def _dataset_card(params: dict, sizes: dict[str, int], stats: dict) -> str:
    """The README.md written next to a build: what a row holds, how it was made, licences."""
    rows = "\n".join(f"| {split} | {count:,} |" for split, count in sizes.items())
    side = params["image_size"]
    return f"""---
license: cc-by-sa-4.0
language: [en]
pretty_name: xmodal emoji videos
tags: [synthetic, emoji, video, speech, cross-modal]
---
# xmodal emoji videos

Synthetic narrated clips built by `xmodal.processing.video_scenes.build_video_scenes`: 4-8 s at
{FPS} fps, {side}x{side} px, 1-3 OpenMoji emoji on a plain background entering, moving, growing,
shrinking and leaving. eSpeak NG says each event's sentence when it happens (later when the
previous sentence is still being said: `spoken_start`).

| split | rows |
|---|---|
{rows}

`test_novel` holds clips whose pairs of emoji never appear together in the other splits (the
same held-out pairs as the still-image scenes built with the same seed and `num_emoji`).

## Columns
- `video`: mp4 bytes (H.264 or MPEG-4 video, AAC 16 kHz mono narration); decode with
  `xmodal.processing.video_scenes.decode_clip(row["video"])` or PyAV.
- `caption`: the whole clip; `events`: per event `emoji`, `emoji_id`, `action`, `direction`,
  `start`/`end` (seconds), `spoken_start`/`spoken_end`, `sentence` (what is said), `caption`
  (the sentence with its time).
- `emoji`, `emoji_ids` (catalogue ids, as in the still scenes), `duration`, `fps`, `num_frames`,
  `image_size`, `sampling_rate`, `voice`.
- `boxes[frame][emoji]`: the emoji's visible `[x0, y0, x1, y1]` in that frame, null while off the frame.

Built in {stats['seconds']} s ({stats['clips_per_second']} clips/s) from `build_params.json`; the same
parameters and package versions give identical bytes.

## Licences and attribution
- Emoji artwork: {OPENMOJI_ATTRIBUTION} The clips adapt OpenMoji and are shared under the same
  licence (CC BY-SA 4.0).
- Emoji names: Unicode CLDR short names (Unicode licence), via the `emoji` package.
- Speech: eSpeak NG (GPL-3.0-or-later), called as a library from `espeakng-loader`; video and
  audio written with PyAV's bundled FFmpeg.
"""
