"""Log-mel features for the XModal audio tower.

Any clip (array, tensor, `{"array", "sampling_rate"}` dict, file path or encoded bytes) is mixed
down to mono, resampled to `sampling_rate` with soxr, truncated to `max_duration` and turned into
Whisper-style log-mel frames: log10 power mel spectrogram, clamped to 8 decades below the clip's
peak, then scaled by `(x + 4) / 4`.

Speed: the mel filters and the window come from `transformers.audio_utils`; the STFT itself is
one batched `torch.fft.rfft` over a strided (zero-copy) frame view of the padded batch, then one
batched matmul with the filters. torch is already a hard dependency, and its FFT ran 3x faster
than `numpy.fft.rfft` on 400-point float32 frames here, on one thread (`audio_utils.spectrogram`
loops over frames in Python and is slower still).
"""

import io
import math
import os
import warnings

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, window_function
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

ACCEPTED_AUDIO = (
    "a 1-D array/tensor/list of samples (floats in [-1, 1], or int8/16/32 or uint8/16/32 PCM; with "
    "`sampling_rate=` from 1000 to 384000 Hz), a 2-D array (one clip of shape (samples, channels) or "
    "(channels, samples) when an axis has 1-2 entries or there are at most 8 columns, else a batch "
    "(clips, samples)), a {'array', 'sampling_rate'} dict (as `datasets` yields), a file path or encoded "
    "bytes that soundfile reads (WAV, FLAC, OGG), or a list of these"
)
# Inside a list or dict a 2-D array is one multi-channel clip; its channel axis is the shorter one.
MAX_CHANNELS = 8
MAX_AMPLITUDE = 1e12
# Float audio peaking above this is almost surely integer PCM stored as floats (e.g. +-32767): warned about.
LOUD_PEAK = 1.5
# Rates outside these are a mistake (a period, kHz, a channel count), not audio: 384 kHz is the highest rate
# audio interfaces record at, 1 kHz far below telephone speech.
MIN_SAMPLING_RATE, MAX_SAMPLING_RATE = 1000, 384000


def bad_audio(where, problem):
    """The ValueError for rejected audio: what was wrong, and what is accepted."""
    return ValueError(f"{where}: {problem}. Accepted: {ACCEPTED_AUDIO}.")


def _require_soundfile():
    try:
        import soundfile
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Decoding audio files needs soundfile: pip install 'xmodal[audio]'") from error
    return soundfile


def _require_soxr():
    try:
        import soxr
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Resampling audio needs soxr: pip install 'xmodal[audio]'") from error
    return soxr


def _decode_audio(source, where):
    """Decode a file path or encoded bytes with soundfile into ((samples, channels) float32, rate)."""
    soundfile = _require_soundfile()
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise bad_audio(where, f"no audio file at {os.fspath(source)!r}")
        handle = source
    else:
        handle = io.BytesIO(bytes(source))
    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise bad_audio(where, f"could not decode audio ({error})") from error
    return data, rate


def _as_float_array(array, where):
    """Raw samples (numpy, torch, nested lists) as a float32 numpy array, checking dtype."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.is_complex():
            raise bad_audio(where, "complex audio is not supported")
        array = array.float().numpy() if array.dtype in (torch.bfloat16, torch.float16) else array.numpy()
    try:
        array = np.asarray(array)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise bad_audio(where, f"could not read samples ({error})") from error
    if array.dtype.kind in "iu":
        return _scale_pcm(array, where)
    if array.dtype.kind not in "bf":
        raise bad_audio(where, f"samples of dtype {array.dtype} are not audio")
    return array.astype(np.float32, copy=False)


def _scale_pcm(array, where):
    """Integer PCM -> float32 in [-1, 1] by its dtype's range, as soundfile reads it; unsigned PCM (8-bit WAV)
    is centred on its midpoint (128 for uint8). 64-bit integers are no PCM format: scaling them by 2**63 would
    turn any real recording into silence, so they are rejected (numpy and torch make them from lists of ints)."""
    if array.dtype.itemsize > 4:
        raise bad_audio(where, f"{array.dtype} samples have no PCM scale (integer PCM is 8, 16 or 32 bit); "
                        "convert with .astype(np.int16) or .astype(np.int32) if they are PCM, or pass floats "
                        "in [-1, 1]")
    half = 2.0 ** (8 * array.dtype.itemsize - 1)
    centre = half if array.dtype.kind == "u" else 0.0
    return (array.astype(np.float32) - np.float32(centre)) / np.float32(half)


def _to_mono(array, where):
    """(samples,), (samples, channels) or (channels, samples) -> (samples,); the shorter axis is channels."""
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise bad_audio(where, f"expected 1-D or 2-D (multi-channel) audio, got shape {array.shape}")
    if array.size == 0:
        return array.reshape(0)
    channel_axis = int(np.argmin(array.shape))
    if array.shape[channel_axis] > MAX_CHANNELS:
        raise bad_audio(where, f"a clip of shape {array.shape} has more than {MAX_CHANNELS} channels on either "
                        "axis (a 2-D batch must be one numpy array, not an item of a list)")
    return array.mean(axis=channel_axis, dtype=np.float32)


def is_one_clip(shape):
    """Whether a top-level 2-D array of `shape` is one multi-channel clip rather than a batch (clips, samples):
    when an axis of 1 or 2 entries can be its channels (mono or stereo, as soundfile reads (samples, channels)
    and torchaudio loads (channels, samples)), or when it has more rows than columns and at most MAX_CHANNELS
    columns (soundfile's layout: a batch of clips that short is never meant). A batch of one or two clips can
    be passed as a list of 1-D arrays."""
    rows, columns = shape
    return min(rows, columns) <= 2 or columns <= MAX_CHANNELS < rows


def split_audio_batch(audio):
    """Return (list of clips, is_batched) following the rules in ACCEPTED_AUDIO."""
    if isinstance(audio, (np.ndarray, torch.Tensor)):
        if audio.ndim == 2:
            if 0 in audio.shape:
                raise bad_audio("audio", f"empty array of shape {tuple(audio.shape)}")
            if is_one_clip(tuple(audio.shape)):
                return [audio], False
            return list(audio), True
        if audio.ndim <= 1:
            return [audio], False
        raise bad_audio("audio", f"arrays must be 1-D (one clip) or 2-D (batch, samples), got shape "
                        f"{tuple(audio.shape)}")
    if isinstance(audio, (list, tuple)):
        if len(audio) == 0:
            raise bad_audio("audio", "empty list")
        if all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in audio):
            return [audio], False
        return list(audio), True
    return [audio], False


def _warn_loud(clips, stacklevel=3):
    warnings.warn(f"Float audio far outside [-1, 1]: {', '.join(clips)}. Samples are expected in [-1, 1]; "
                  "integer PCM stored as floats (+-32767) should be divided by 32768 or passed as int16, which "
                  "is scaled automatically. Features of louder audio are shifted, not normalised.", UserWarning,
                  stacklevel=stacklevel)


class XModalFeatureExtractor(SequenceFeatureExtractor):
    """Whisper-style log-mel features with resampling, mono mixdown, padding and a frame mask.

    Returns `input_features` (batch, feature_size, frames) and `feature_attention_mask`
    (batch, frames; 1 = a frame whose centre lies inside the clip). A clip's valid frames do not
    depend on what it is batched with: the signal is zero-padded on the right and the dynamic
    range clamp uses the clip's own peak over its valid frames.
    """

    model_input_names = ["input_features", "feature_attention_mask"]

    def __init__(self, feature_size=64, sampling_rate=16000, n_fft=400, hop_length=160, max_duration=8.0,
                 padding_value=0.0, return_attention_mask=True, resample_quality="HQ", **kwargs):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value,
                         return_attention_mask=return_attention_mask, **kwargs)
        if n_fft < 2 or hop_length < 1 or feature_size < 1 or max_duration <= 0 \
                or not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE:
            raise ValueError("XModalFeatureExtractor needs feature_size >= 1, n_fft >= 2, hop_length >= 1, "
                             f"sampling_rate from {MIN_SAMPLING_RATE} to {MAX_SAMPLING_RATE} Hz and "
                             f"max_duration > 0; got feature_size={feature_size}, "
                             f"n_fft={n_fft}, hop_length={hop_length}, sampling_rate={sampling_rate}, "
                             f"max_duration={max_duration}.")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.max_duration = float(max_duration)
        self.resample_quality = resample_quality
        # `mel_filters` and `window` are left out of the saved config by FeatureExtractionMixin.to_dict.
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + self.n_fft // 2, num_mel_filters=feature_size, min_frequency=0.0,
            max_frequency=sampling_rate / 2, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney",
        ).astype(np.float32)
        self.window = window_function(self.n_fft, "hann").astype(np.float32)

    @property
    def max_samples(self):
        """Longest clip kept, in samples at `sampling_rate`."""
        return int(round(self.max_duration * self.sampling_rate))

    def num_frames(self, num_samples):
        """Frames produced for (or valid in) a clip of `num_samples` samples."""
        return -(-int(num_samples) // self.hop_length)

    # ------------------------------------------------------------------ loading
    def load_clip(self, clip, sampling_rate=None, where="audio"):
        """One clip (any accepted form) -> (mono float32 samples, their sampling rate); warns when the samples
        peak far outside [-1, 1]."""
        samples, rate, peak = self._load_clip(clip, sampling_rate, where)
        if peak > LOUD_PEAK:
            _warn_loud([f"{where} (peak {peak:.3g})"])
        return samples, rate

    def _load_clip(self, clip, sampling_rate, where):
        """`load_clip`, also returning the peak |sample| instead of warning about it."""
        if isinstance(clip, dict):
            if "array" in clip and clip["array"] is not None:
                if "sampling_rate" not in clip or clip["sampling_rate"] is None:
                    raise bad_audio(where, "the dict has an 'array' but no 'sampling_rate'")
                samples, rate = _as_float_array(clip["array"], where), clip["sampling_rate"]
            elif clip.get("bytes") is not None:
                samples, rate = _decode_audio(clip["bytes"], where)
            elif clip.get("path") is not None:
                samples, rate = _decode_audio(clip["path"], where)
            else:
                raise bad_audio(where, f"a dict needs 'array' and 'sampling_rate' (or 'bytes' or 'path'), "
                                f"got keys {sorted(map(str, clip))}")
        elif isinstance(clip, (str, os.PathLike, bytes, bytearray, memoryview)):
            samples, rate = _decode_audio(clip, where)
        elif isinstance(clip, (np.ndarray, torch.Tensor, list, tuple)):
            if sampling_rate is None:
                raise bad_audio(where, "raw audio needs `sampling_rate=` (the rate it was recorded at; it is "
                                f"not guessed, and is resampled to {self.sampling_rate} Hz); dicts, files and "
                                "bytes carry their own rate")
            samples, rate = _as_float_array(clip, where), sampling_rate
        else:
            raise bad_audio(where, f"unsupported type {type(clip).__name__}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.number)) or not math.isfinite(rate) \
                or not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
            raise bad_audio(where, f"sampling_rate must be a positive number of Hz from {MIN_SAMPLING_RATE} to "
                            f"{MAX_SAMPLING_RATE} (samples per second, not kHz), got {rate!r}")
        samples = _to_mono(samples, where)
        if samples.size == 0:
            raise bad_audio(where, "the clip is empty (0 samples)")
        peak = max(float(samples.max()), -float(samples.min()))  # NaN and inf propagate
        if not math.isfinite(peak):
            raise bad_audio(where, "the clip contains NaN or infinite samples")
        if peak > MAX_AMPLITUDE:  # float32 power spectra overflow far below float32's range
            raise bad_audio(where, f"peak amplitude {peak:.3g} exceeds {MAX_AMPLITUDE:g} (audio is expected in "
                            "[-1, 1]; integer PCM as int16/int32 arrays is scaled automatically)")
        return samples, float(rate), peak

    def _resample(self, samples, rate, keep, where="audio"):
        """Resample to `sampling_rate`, cutting the source first when only `keep` output samples are used."""
        ratio = rate / self.sampling_rate
        if keep is not None:
            # A margin past the cut (a few filter lengths) keeps the resampler's edge effects out.
            samples = samples[: int(math.ceil(keep * ratio + 16 + 32 * ratio))]
        if rate != self.sampling_rate:
            try:
                samples = _require_soxr().resample(np.ascontiguousarray(samples), rate, self.sampling_rate,
                                                   quality=self.resample_quality)
            except (ValueError, RuntimeError, TypeError) as error:
                problem = f"could not resample from {rate} Hz to {self.sampling_rate} Hz ({error})"
                raise bad_audio(where, problem) from error
            samples = np.asarray(samples, dtype=np.float32)
            if samples.size == 0:
                raise bad_audio(where, f"the clip is shorter than one sample at {self.sampling_rate} Hz")
        return samples if keep is None else samples[:keep]

    # ------------------------------------------------------------------ features
    def _log_mel(self, clips, total_samples):
        """Mono clips (each <= total_samples long) -> (batch, mel, frames) float32 and valid frame counts."""
        half = self.n_fft // 2
        num_frames = total_samples // self.hop_length
        lengths = np.array([len(c) for c in clips])
        valid = np.minimum(-(-lengths // self.hop_length), num_frames)
        used = np.flatnonzero(self.mel_filters.any(axis=1))  # FFT bins that feed some mel filter
        low, high = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
        mel_t = torch.from_numpy(np.ascontiguousarray(self.mel_filters[low:high].T))
        window = torch.from_numpy(self.window)
        out = np.empty((len(clips), self.feature_size, num_frames), dtype=np.float32)
        # Clips per step: ~32 MB of windowed frames, few enough steps to keep thread syncs rare.
        chunk = max(1, (32 << 20) // (4 * self.n_fft * max(num_frames, 1)))
        for start in range(0, len(clips), chunk):
            part = clips[start: start + chunk]
            buffer = np.zeros((len(part), total_samples + self.n_fft), dtype=np.float32)
            for row, clip in zip(buffer, part):
                row[half: half + len(clip)] = clip
                reflect = min(half, len(clip) - 1)  # centre padding as torch.stft(center=True) does
                if reflect > 0:
                    row[half - reflect: half] = clip[reflect:0:-1]
            frames = torch.from_numpy(buffer).unfold(-1, self.n_fft, self.hop_length)[:, :num_frames]
            spectrum = torch.fft.rfft(frames * window, dim=-1)[..., low:high]
            power = spectrum.real.square().addcmul_(spectrum.imag, spectrum.imag)
            log_mel = torch.matmul(mel_t, power.transpose(1, 2)).clamp_(min=1e-10).log10_()
            mask = torch.arange(num_frames)[None, :] < torch.from_numpy(valid[start: start + chunk])[:, None]
            peak = log_mel.amax(dim=1).masked_fill_(~mask, -torch.inf).amax(dim=1)[:, None, None]
            log_mel = torch.maximum(log_mel, peak - 8.0).add_(4.0).div_(4.0)
            out[start: start + len(part)] = log_mel.numpy()
        return out, valid

    def __call__(self, raw_speech, sampling_rate=None, padding=True, max_length=None, truncation=True,
                 return_tensors=None, return_attention_mask=None, **kwargs):
        """Featurize one clip or a batch.

        Args:
            raw_speech: see `ACCEPTED_AUDIO`. A top-level 2-D array is one clip when `is_one_clip` says
                so (mixed down with a warning when it has several channels), else a batch of mono clips.
            sampling_rate: rate of raw arrays (required for them); dicts and files carry their own.
            padding: True/"longest" (to the longest clip), "max_length" (to `max_length` samples,
                default `max_duration`), or False/"do_not_pad" (lists of per-clip arrays).
            max_length: in samples at `self.sampling_rate`; defaults to `max_duration` seconds.
            truncation: cut clips longer than `max_length` (with a warning).
        """
        if kwargs:
            raise ValueError(f"XModalFeatureExtractor got unexpected arguments {sorted(kwargs)}.")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad'; got {padding!r}.")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                       or max_length < 1):
            raise ValueError(f"max_length is a number of samples >= 1, got {max_length!r}.")
        limit = int(max_length) if max_length is not None else self.max_samples
        clips, is_batched = split_audio_batch(raw_speech)
        if not is_batched and getattr(raw_speech, "ndim", 0) == 2 and min(raw_speech.shape) > 1:
            warnings.warn(f"audio of shape {tuple(raw_speech.shape)} was read as one clip of {min(raw_speech.shape)} "
                          "channels and mixed down to mono (a 2-D array is a batch (clips, samples) only when "
                          "no axis can be channels; pass a batch as a list of 1-D arrays).", UserWarning, stacklevel=2)
        loaded, truncated, loud = [], [], []
        for index, clip in enumerate(clips):
            where = f"audio[{index}]" if len(clips) > 1 else "audio"
            samples, rate, peak = self._load_clip(clip, sampling_rate, where)
            if peak > LOUD_PEAK:
                loud.append(f"{where} (peak {peak:.3g})")
            full = len(samples) * self.sampling_rate / rate
            keep = limit if truncation and full > limit else None
            if keep is not None:
                truncated.append(f"{where} ({full / self.sampling_rate:.2f} s)")
            loaded.append(self._resample(samples, rate, keep, where))
        if loud:
            _warn_loud(loud)
        if truncated:
            warnings.warn(f"Truncated to {limit / self.sampling_rate:.2f} s (max_length): {', '.join(truncated)}.",
                          UserWarning, stacklevel=2)
        with_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        if padding in (False, "do_not_pad"):
            return self._unpadded(loaded, with_mask, return_tensors)
        longest = max(len(c) for c in loaded)
        target = max(longest, limit) if padding == "max_length" else longest
        total = self.num_frames(target) * self.hop_length
        features, valid = self._log_mel(loaded, total)
        data = {"input_features": features}
        if with_mask:
            data["feature_attention_mask"] = (np.arange(features.shape[-1])[None, :] < valid[:, None]).astype(np.int64)
        return BatchFeature(data, tensor_type=return_tensors)

    def _unpadded(self, clips, with_mask, return_tensors):
        """Per-clip features without padding; tensors only when every clip has the same length."""
        features = [self._log_mel([c], self.num_frames(len(c)) * self.hop_length)[0][0] for c in clips]
        if return_tensors is not None and len({f.shape[-1] for f in features}) > 1:
            raise ValueError("padding=False gives clips of different lengths, which cannot be stacked into "
                             f"{return_tensors!r} tensors; use padding=True.")
        data = {"input_features": features}
        if with_mask:
            data["feature_attention_mask"] = [np.ones(f.shape[-1], dtype=np.int64) for f in features]
        if return_tensors is not None:
            data = {k: np.stack(v) for k, v in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["XModalFeatureExtractor", "ACCEPTED_AUDIO"]
