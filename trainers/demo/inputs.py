"""Checks and decoding of what a visitor gives the demo: images, audio clips, captions.

Every problem raises `DemoInputError`, whose message is written for the person using the demo.
No Gradio here.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class DemoInputError(ValueError):
    """An input the user can fix (a bad upload, an empty caption list); the message says how."""


@dataclass
class DemoLimits:
    """Bounds on what one request may ask for, so that one visitor cannot stall the demo."""

    max_audio_seconds: float = 30.0
    max_captions: int = 16
    max_caption_chars: int = 200
    max_image_pixels: int = 25_000_000
    max_gallery: int = 1000
    max_upload_files: int = 200
    max_top_k: int = 20
    max_beams: int = 8
    max_batch: int = 8


def parse_captions(text, limits=DemoLimits()):
    """Captions from text (one per line) or a list: stripped, blank lines and repeats dropped."""
    lines = text.splitlines() if isinstance(text, str) else list(text or [])
    captions = list(dict.fromkeys(line.strip() for line in lines if isinstance(line, str) and line.strip()))
    if not captions:
        raise DemoInputError("Enter at least one caption (one per line).")
    if len(captions) > limits.max_captions:
        raise DemoInputError(f"{len(captions)} captions given; the demo compares at most {limits.max_captions}.")
    long = [c for c in captions if len(c) > limits.max_caption_chars]
    if long:
        raise DemoInputError(f"A caption is {len(long[0])} characters long; keep each under "
                             f"{limits.max_caption_chars} (\"{long[0][:40]}...\").")
    return captions


def _name(source):
    return Path(source).name if isinstance(source, (str, Path)) else type(source).__name__


def load_image(source, limits=DemoLimits()):
    """An RGB PIL image from a path, bytes or PIL image; transparent pixels go on white, as in training."""
    from xmodal.processing.image_processing_xmodal import load_rgb_image

    if source is None:
        raise DemoInputError("Upload an image first.")
    image = source
    if not isinstance(source, Image.Image):
        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise DemoInputError(f"No image file at {source}.")
        handle = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
        try:
            image = Image.open(handle)
            if image.width * image.height > limits.max_image_pixels:
                raise DemoInputError(f"The image is {image.width}x{image.height} pixels; the demo takes at most "
                                     f"{limits.max_image_pixels / 1e6:.0f} megapixels.")
            image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
            if isinstance(error, DemoInputError):
                raise
            raise DemoInputError(f"Could not read {_name(source)} as an image ({type(error).__name__}). "
                                 "Upload a PNG, JPEG, WebP, GIF or BMP file.") from error
    try:
        pixels = load_rgb_image(image, where=_name(source))
    except ValueError as error:
        raise DemoInputError(str(error)) from error
    return Image.fromarray(np.moveaxis(pixels, 0, -1))


def load_audio(source, limits=DemoLimits()):
    """(float32 mono samples, sampling rate) from a path, encoded bytes or a (rate, samples) pair."""
    if source is None:
        raise DemoInputError("Record or upload a speech clip first.")
    if isinstance(source, tuple) and len(source) == 2:  # (sampling rate, samples), as gr.Audio(type="numpy")
        rate, samples = source
        samples = np.asarray(samples)
        if samples.dtype.kind in "iu":
            samples = samples / float(np.iinfo(samples.dtype).max)
        samples = samples.astype(np.float32)
        samples = samples.mean(axis=1) if samples.ndim == 2 else samples
    else:
        import soundfile

        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise DemoInputError(f"No audio file at {source}.")
        handle = (lambda: io.BytesIO(bytes(source))) if isinstance(source, (bytes, bytearray)) else (lambda: source)
        try:
            info = soundfile.info(handle())
        except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
            raise DemoInputError(f"Could not read {_name(source)} as audio. Upload a WAV, FLAC, OGG or MP3 "
                                 "file, or record one with the microphone.") from error
        rate = info.samplerate
        if info.frames / rate > limits.max_audio_seconds:
            raise DemoInputError(f"The clip is {info.frames / rate:.0f} s long; the demo takes clips of at most "
                                 f"{limits.max_audio_seconds:.0f} s. Trim it and try again.")
        try:
            samples, rate = soundfile.read(handle(), dtype="float32", always_2d=True)
        except Exception as error:
            raise DemoInputError(f"{_name(source)} is damaged: its audio could not be decoded.") from error
        samples = samples.mean(axis=1)
    if samples.size == 0 or not rate or rate <= 0:
        raise DemoInputError("The clip is empty.")
    if samples.size / rate > limits.max_audio_seconds:
        raise DemoInputError(f"The clip is {samples.size / rate:.0f} s long; the demo takes clips of at most "
                             f"{limits.max_audio_seconds:.0f} s. Trim it and try again.")
    if not np.isfinite(samples).all():
        raise DemoInputError("The clip holds invalid samples (NaN or infinity).")
    return samples, int(rate)


__all__ = ["DemoInputError", "DemoLimits", "load_audio", "load_image", "parse_captions"]
