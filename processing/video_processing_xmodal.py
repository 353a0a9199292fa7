"""Video processor for XModal: decodes clips with PyAV, samples frames, and runs each frame through the image
processor, so that a video frame gives exactly the pixels the same picture gives as an image.

Outputs: `pixel_values_videos` (batch, frames, 3, H, W) float32, `video_frame_mask` (batch, frames) int64 (1 for a
real frame, 0 for padding up to the longest clip of the batch) and `video_timestamps` (batch, frames) float32, the
seconds from the clip's first frame to each sampled frame (0 for padding).

Why not transformers' `BaseVideoProcessor`: it sits on the Torchvision backend, whose resize, crop and normalise
call `torchvision.transforms.v2.functional`; without torchvision (it cannot be installed beside this torch) a
`BaseVideoProcessor` builds but its first resize fails (`TypeError: 'NoneType' object is not subscriptable`), and
its decoders are torchcodec and torchvision, neither usable here. So this class builds on `VideoProcessorMixin`, the
backend-free base that gives the `video_preprocessor_config.json` save/load, `AutoVideoProcessor` support and the
type `ProcessorMixin` checks for, and does the pixel work with `XModalImageProcessor` (the PIL backend).

PyAV (its own bundled FFmpeg; never a system ffmpeg) is imported only when a file or bytes are decoded.
"""

import io
import math
import os
import warnings

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import VideoProcessorMixin

from .image_processing_xmodal import XModalImageProcessor

ACCEPTED_VIDEOS = (
    "a video file path (str or os.PathLike) or the file's bytes (any container and codec PyAV decodes: MP4, MKV, "
    "WebM, AVI, MOV, animated GIF...), a (frames, height, width, channels) numpy array or torch tensor (uint8 "
    "pixels, 1-4 channels), a list of PIL images (the frames of one clip); arrays and frame lists need "
    "`input_fps=` (frames per second). A list of these is a batch, as is a 5-D array"
)
# The settings a frame is processed with: the image processor's, with its defaults.
FRAME_SETTINGS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                  "do_normalize", "image_mean", "image_std", "background_color")
# FFmpeg demuxers that read single pictures: a PNG or JPEG opens as a one-frame "video", which is a mistake here.
_STILL_IMAGE_FORMATS = ("image2", "image2pipe")
_ENCODED = (str, os.PathLike, bytes, bytearray, memoryview)
_TIME_TOLERANCE = 1e-6  # seconds: frame times and sampling targets closer than this are equal


def bad_video(where, problem):
    """The ValueError for a rejected video: what was wrong, and what is accepted."""
    return ValueError(f"{where}: {problem}. Accepted: {ACCEPTED_VIDEOS}.")


def _require_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Decoding video files needs PyAV: pip install 'xmodal[video]'") from error
    return av


def _is_frame_list(video):
    return isinstance(video, (list, tuple)) and len(video) > 0 and all(isinstance(f, Image.Image) for f in video)


def split_video_batch(videos):
    """Return (list of single clips, is_batched): a list of PIL images is one clip, any other list a batch."""
    if isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 5:
        if videos.shape[0] == 0:
            raise bad_video("videos", f"empty batch of shape {tuple(videos.shape)}")
        return list(videos), True
    if _is_frame_list(videos):
        return [videos], False
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise bad_video("videos", "empty list")
        return list(videos), True
    return [videos], False


def _is_positive_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value) \
        and value > 0


def _is_positive_int(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def sample_frame_indices(times, fps=None, num_frames=None, max_frames=None, where="video"):
    """Indices of the frames kept from a clip whose frames lie at `times` (seconds, ascending, from 0).

    With `fps`: the first frame at or after each multiple of 1/fps seconds (every frame when fps is at least
    the clip's rate; frames are never repeated). With `num_frames`: frames floor(i * n / num_frames), evenly
    spaced from the first, or every frame of a shorter clip. More than `max_frames` are cut to the first
    `max_frames`, with a warning.
    """
    count = len(times)
    if num_frames is not None:
        indices = np.arange(count) if num_frames >= count else np.arange(num_frames) * count // num_frames
    else:
        targets = np.arange(0.0, times[-1] + _TIME_TOLERANCE, 1.0 / fps)
        indices = np.unique(np.searchsorted(times, targets - _TIME_TOLERANCE, side="left"))
        indices = indices[indices < count]
    if max_frames is not None and len(indices) > max_frames:
        warnings.warn(f"{where}: {len(indices)} sampled frames exceed max_frames={max_frames}; kept the first "
                      f"{max_frames} (up to {times[indices[max_frames - 1]]:.2f} s).", UserWarning, stacklevel=3)
        indices = indices[:max_frames]
    return indices


def _open_container(source, where):
    """Open a video file path or encoded bytes with PyAV."""
    av = _require_av()
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise bad_video(where, f"no video file at {os.fspath(source)!r} (URLs are not fetched)")
        handle = os.fspath(source)
    else:
        handle = io.BytesIO(bytes(source))
    try:
        return av.open(handle, mode="r")
    except Exception as error:  # InvalidDataError for text and other non-media data, and other FFmpeg errors
        raise bad_video(where, f"not a video file that PyAV can read ({type(error).__name__}: {error})") from error


def _video_stream(container, where, max_resolution):
    """The first video stream, after checking that the container is a video within `max_resolution`."""
    name = container.format.name
    if name in _STILL_IMAGE_FORMATS or name.endswith("_pipe"):
        raise bad_video(where, f"a still image ({name.removesuffix('_pipe')}), not a video; pass pictures in images=")
    if not container.streams.video:
        found = ", ".join(sorted({stream.type for stream in container.streams})) or "no streams"
        raise bad_video(where, f"the file has no video stream (found: {found})")
    stream = container.streams.video[0]
    _check_resolution(stream.codec_context.width, stream.codec_context.height, max_resolution, where)
    return stream


def _check_resolution(width, height, max_resolution, where):
    if max(width, height) > max_resolution:
        raise bad_video(where, f"resolution {width}x{height} exceeds max_resolution={max_resolution} px on a side")


def _frame_times(container, stream, where):
    """Presentation times (seconds from the first frame) of every frame, from the packets (nothing is decoded)."""
    pts = [packet.pts for packet in container.demux(stream) if packet.size]
    if not pts:
        raise bad_video(where, "the video stream has no frames")
    if stream.time_base and all(p is not None for p in pts):
        pts = np.sort(np.asarray(pts, dtype=np.int64))
        return (pts - pts[0]) * stream.time_base.numerator / stream.time_base.denominator
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise bad_video(where, "the video has neither frame timestamps nor a frame rate (zero or missing)")
    return np.arange(len(pts)) / float(rate)


def _decode_frames(container, stream, indices, where):
    """The frames at `indices` (presentation order) as (H, W, 3) uint8 RGB arrays, decoding no further."""
    wanted, frames = set(indices.tolist()), {}
    index = -1
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= indices[-1]:
                break
    except Exception as error:  # corrupt or truncated data
        raise bad_video(where, f"decoding failed after {index + 1} frames ({type(error).__name__}: {error})") from error
    if not frames:
        raise bad_video(where, "no frame of the video stream could be decoded")
    return frames


def decode_video(source, fps=None, num_frames=None, max_frames=None, max_resolution=4096, where="video"):
    """Decode a video file path or its bytes with PyAV; return the sampled frames ((H, W, 3) uint8 RGB arrays) and
    their times in seconds from the first frame (see `sample_frame_indices`). Two passes: the packets' timestamps
    choose the frames, then decoding stops after the last one chosen."""
    with _open_container(source, where) as container:
        times = _frame_times(container, _video_stream(container, where, max_resolution), where)
    indices = sample_frame_indices(times, fps, num_frames, max_frames, where)
    with _open_container(source, where) as container:
        frames = _decode_frames(container, container.streams.video[0], indices, where)
    kept = [i for i in indices.tolist() if i in frames]  # a stream may hold fewer frames than packets
    return [frames[i] for i in kept], times[kept]


def load_video_audio(video, where="video"):
    """The audio track of a video file (path or bytes) as (mono float32 samples, sampling rate in Hz); channels
    are averaged, as `XModalFeatureExtractor` mixes down. A video without sound is a ValueError."""
    if not isinstance(video, _ENCODED):
        raise ValueError(f"{where}: only video files and their bytes carry an audio track, got "
                         f"{type(video).__name__} (arrays and frame lists are pictures only).")
    av = _require_av()
    with _open_container(video, where) as container:
        if not container.streams.audio:
            raise ValueError(f"{where}: the video has no audio track, so there is no sound to read for "
                             "audio_from_videos=True; leave it out or pass audio= separately.")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # planar float32 at the stream's own layout and rate
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(part.to_ndarray() for part in to_float.resample(frame))
            chunks.extend(part.to_ndarray() for part in to_float.resample(None))
        except Exception as error:
            raise ValueError(f"{where}: could not decode the audio track ({type(error).__name__}: {error}).") from error
        rate = stream.rate
    if not chunks or sum(chunk.shape[1] for chunk in chunks) == 0:
        raise ValueError(f"{where}: the audio track holds no samples.")
    return np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32), int(rate)


def _frames_of(video, where, max_resolution):
    """An array or a list of PIL images -> a list of frames (arrays (H, W, C) or PIL images)."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or not 1 <= video.shape[-1] <= 4:
            raise bad_video(where, f"an array must be (frames, height, width, channels) with 1-4 channels, got "
                                   f"shape {video.shape}")
        if 0 in video.shape:
            raise bad_video(where, f"the video has no frames (shape {video.shape})")
        _check_resolution(video.shape[2], video.shape[1], max_resolution, where)
        return list(video)
    if _is_frame_list(video):
        for frame in video:
            _check_resolution(frame.width, frame.height, max_resolution, where)
        return list(video)
    if isinstance(video, Image.Image):
        raise bad_video(where, "a single PIL image is not a video (pass a list of frames, or the image in images=)")
    raise bad_video(where, f"unsupported type {type(video).__name__}")


def _check_sampling(fps, num_frames, max_frames, max_resolution, where):
    """Check sampling settings (exactly one of fps and num_frames); return them as float/int."""
    if (fps is None) == (num_frames is None):
        raise ValueError(f"{where}: sample frames by fps= or by num_frames=, not {'both' if fps else 'neither'}.")
    if fps is not None and not _is_positive_number(fps):
        raise ValueError(f"{where}: fps must be a positive number of frames per second, got {fps!r}.")
    for name, value in (("num_frames", num_frames), ("max_frames", max_frames), ("max_resolution", max_resolution)):
        if value is not None and not _is_positive_int(value):
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}.")
    if num_frames is not None and num_frames > max_frames:
        raise ValueError(f"{where}: num_frames={num_frames} exceeds max_frames={max_frames}.")
    return (None if fps is None else float(fps), None if num_frames is None else int(num_frames), int(max_frames),
            int(max_resolution))


class XModalVideosKwargs(VideosKwargs, total=False):
    """VideosKwargs plus the rate of frame arrays, the frame cap, the resolution limit and the image processor's
    background colour (for frames with transparency)."""

    input_fps: float | None
    max_frames: int | None
    max_resolution: int | None
    background_color: tuple | list | None


class XModalVideoProcessor(VideoProcessorMixin):
    """Samples frames from videos (by `fps` or `num_frames`) and processes them as `XModalImageProcessor` does.

    Args:
        fps: frames sampled per second of video; or
        num_frames: frames sampled per clip, evenly spaced (the default: 8, or `max_frames` if smaller). Set
            one of the two; a call may pass the other instead.
        max_frames: the most frames a clip gives (fps sampling of a long clip keeps the first, with a warning).
        input_fps: frame rate of array and frame-list inputs when a call passes no `input_fps=`. None (the
            default) makes it required in the call: the rate of raw frames is never guessed.
        max_resolution: the longest side, in pixels, a video may have (larger ones are refused before decoding).
        **frame settings: `size`, `crop_size`, `image_mean`... as `XModalImageProcessor` takes them, with its
            defaults (shortest edge 64, centre crop 64x64, mean = std = 0.5).
    """

    valid_kwargs = XModalVideosKwargs
    model_input_names = ["pixel_values_videos", "video_frame_mask", "video_timestamps"]

    def __init__(self, fps=None, num_frames=None, max_frames=32, input_fps=None, max_resolution=4096, **kwargs):
        settings = {key: kwargs.pop(key) for key in FRAME_SETTINGS if kwargs.get(key) is not None}
        super().__init__(**kwargs)
        frames = XModalImageProcessor(**settings).to_dict()  # checked, and stored as plain JSON values
        for key in FRAME_SETTINGS:
            setattr(self, key, frames[key])
        if fps is None and num_frames is None:  # the default: 8 frames, or fewer under a smaller cap
            num_frames = min(8, max_frames) if _is_positive_int(max_frames) else 8
        where = "XModalVideoProcessor"
        self.fps, self.num_frames, self.max_frames, self.max_resolution = _check_sampling(
            fps, num_frames, max_frames, max_resolution, where)
        if input_fps is not None and not _is_positive_number(input_fps):
            raise ValueError(f"{where}: input_fps must be a positive number of frames per second, got {input_fps!r}.")
        self.input_fps = None if input_fps is None else float(input_fps)

    @classmethod
    def from_dict(cls, video_processor_dict, **kwargs):
        """As the base class, except that `fps=` or `num_frames=` given here replaces the saved sampling (a
        processor samples one way: with both, construction would refuse)."""
        if kwargs.get("fps") is not None or kwargs.get("num_frames") is not None:
            video_processor_dict = {k: v for k, v in video_processor_dict.items() if k not in ("fps", "num_frames")}
        return super().from_dict(video_processor_dict, **kwargs)

    def frame_processor(self):
        """An `XModalImageProcessor` with this processor's frame settings."""
        return XModalImageProcessor(**{key: getattr(self, key) for key in FRAME_SETTINGS})

    def read_clip(self, video, fps=None, num_frames=None, input_fps=None, max_frames=None, max_resolution=None,
                  where="video"):
        """One accepted video -> (sampled frames, their times in seconds from the first frame); arguments left
        out take this processor's values (`fps` or `num_frames` in the call replaces its sampling)."""
        if fps is None and num_frames is None:
            fps, num_frames = self.fps, self.num_frames
        fps, num_frames, max_frames, max_resolution = _check_sampling(
            fps, num_frames, self.max_frames if max_frames is None else max_frames,
            self.max_resolution if max_resolution is None else max_resolution, "XModalVideoProcessor")
        if isinstance(video, _ENCODED):
            return decode_video(video, fps, num_frames, max_frames, max_resolution, where)
        frames = _frames_of(video, where, max_resolution)
        rate = input_fps if input_fps is not None else self.input_fps
        if rate is None:
            raise bad_video(where, "frames given as an array or a list need input_fps= (the rate they were recorded "
                                   "at, frames per second; it is not guessed)")
        if not _is_positive_number(rate):
            raise bad_video(where, f"input_fps must be a positive number of frames per second, got {rate!r}")
        times = np.arange(len(frames)) / float(rate)
        indices = sample_frame_indices(times, fps, num_frames, max_frames, where)
        return [frames[i] for i in indices], times[indices]

    def preprocess(self, videos, fps=None, num_frames=None, input_fps=None, max_frames=None, max_resolution=None,
                   return_tensors=None, **frame_settings):
        """Process one video or a batch (see `ACCEPTED_VIDEOS`); clips are padded to the longest. `frame_settings`
        (`size`, `crop_size`, ...) override this processor's for the call."""
        unknown = sorted(set(frame_settings) - set(FRAME_SETTINGS))
        if unknown:
            raise ValueError(f"XModalVideoProcessor got unexpected arguments {unknown}; frame settings are "
                             f"{list(FRAME_SETTINGS)}.")
        clips, is_batched = split_video_batch(videos)
        read = [self.read_clip(clip, fps, num_frames, input_fps, max_frames, max_resolution,
                               where=f"videos[{index}]" if is_batched else "video")
                for index, clip in enumerate(clips)]
        flat = [frame for frames, _ in read for frame in frames]
        pixels = self.frame_processor()(flat, return_tensors="np", **frame_settings)["pixel_values"]
        longest = max(len(frames) for frames, _ in read)
        pixel_values = np.zeros((len(read), longest, *pixels.shape[1:]), dtype=np.float32)
        mask = np.zeros((len(read), longest), dtype=np.int64)
        timestamps = np.zeros((len(read), longest), dtype=np.float32)
        start = 0
        for row, (frames, times) in enumerate(read):
            count = len(frames)
            pixel_values[row, :count] = pixels[start: start + count]
            mask[row, :count] = 1
            timestamps[row, :count] = times
            start += count
        data = {"pixel_values_videos": pixel_values, "video_frame_mask": mask, "video_timestamps": timestamps}
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["XModalVideoProcessor", "ACCEPTED_VIDEOS", "decode_video", "load_video_audio", "sample_frame_indices",
           "split_video_batch"]
