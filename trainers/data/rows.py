"""One raw row made ready for the processor, or the reason it cannot be used.

Rows come from any `datasets` source, so an image may be a decoded `PIL` image, a `{"bytes", "path"}`
dict (`datasets.Image(decode=False)`), a file path, raw bytes or an array; audio may be bytes, a path, a
`{"array", "sampling_rate"}` dict or an array beside a `sampling_rate` column, at any rate. Each is
decoded here, once, so that a corrupt or missing file is found before the batch is built: the row is then
skipped and counted under its reason (`data.on_error: skip`), or stops the run with a message naming the
row (`raise`). Nothing is dropped silently.
"""

import io
import os
import struct
from pathlib import Path

import numpy as np

# Why a row was left out; these names go to the log, TensorBoard and metrics.json.
SKIP_REASONS = ("missing_file", "undecodable_image", "undecodable_audio", "empty_audio", "empty_text",
                "missing_label", "missing_value", "undecodable_video", "no_sound_track")


class RowError(ValueError):
    """A row that cannot be used: `reason` is one of `SKIP_REASONS`."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _read_source(value, base_dir, kind):
    """Bytes of an image or audio value given as bytes, a path or a {"bytes", "path"} dict; None when the
    value is already decoded (a PIL image, an array, a {"array": ...} dict)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("array") is not None:
            return None
        value = value.get("path")
        if value is None:
            raise RowError("missing_value", f"the {kind} is an empty record (no bytes, path or array)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise RowError("missing_file", f"no {kind} file at {path}")
        return path.read_bytes()
    return None


def decode_image(value, base_dir=None):
    """An RGB `PIL.Image` from any image value (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    if value is None:
        raise RowError("missing_value", "the image is empty (None)")
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    data = _read_source(value, base_dir, "image")
    if data is None:
        array = np.asarray(value)
        if array.ndim not in (2, 3) or array.size == 0:
            raise RowError("undecodable_image", f"an array of shape {array.shape} is not an image (H, W[, C])")
        return Image.fromarray(array.astype(np.uint8) if array.dtype != np.uint8 else array).convert("RGB")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes the whole file: a truncated or corrupt one fails here, not in the processor
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise RowError("undecodable_image", f"not a readable image ({error})") from None
    return image.convert("RGB")


def _wav_is_truncated(data):
    """Whether a RIFF/WAVE file ends before its data chunk does (libsndfile reads such a file silently)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        if chunk == b"data":
            return offset + 8 + size > len(data)
        offset += 8 + size + (size & 1)
    return True  # no data chunk before the end


def decode_audio(value, sampling_rate=None, base_dir=None):
    """{"array": float32 mono samples, "sampling_rate": int} from any audio value (see the module docstring)."""
    import soundfile

    if value is None:
        raise RowError("missing_value", "the audio is empty (None)")
    data = _read_source(value, base_dir, "audio")
    if data is None:
        if isinstance(value, dict):
            sampling_rate, value = value.get("sampling_rate", sampling_rate), value["array"]
        if not sampling_rate:
            raise RowError("missing_value", "audio given as an array needs a sampling rate (a `sampling_rate` "
                                            "column or an {'array', 'sampling_rate'} record)")
        samples = np.asarray(value, dtype=np.float32)
    else:
        if _wav_is_truncated(data):
            raise RowError("undecodable_audio", "the WAV file ends before its data does (truncated)")
        try:
            samples, sampling_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError, TypeError) as error:
            raise RowError("undecodable_audio", f"not a readable sound file ({error})") from None
        samples = samples.mean(axis=1)  # mono
    if samples.size == 0:
        raise RowError("empty_audio", "the audio has no samples")
    return {"array": samples, "sampling_rate": int(sampling_rate)}


def check_text(value, role):
    """A non-empty string, or a non-empty list of them (several captions per item)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    raise RowError("empty_text", f"the {role} text is empty ({value!r})")


def prepare_row(row, columns, modalities, needs, base_dir=None):
    """The values a row contributes, by role (`text`, `image`, `audio`, `target`, `label`), decoded; raises
    `RowError` for a row that cannot be used. `columns` maps each role to its column; `needs` lists the
    roles besides the modalities (the target or the label)."""
    ready = {}
    for role in (*modalities, *needs):
        value = row.get(columns[role])
        if role == "image":
            ready[role] = decode_image(value, base_dir)
        elif role == "audio":
            ready[role] = decode_audio(value, row.get("sampling_rate"), base_dir)
        elif role == "label":
            if value is None:
                raise RowError("missing_label", f"no label in column {columns[role]!r}")
            ready[role] = value
        else:
            ready[role] = check_text(value, role)
    return ready
