"""Processors: images/s against `CLIPImageProcessor`, audio seconds/s against `WhisperFeatureExtractor`.

Same inputs, same output size: RGB photos-sized images (320x240, PIL) to 64x64 normalised pixels
(bicubic resize of the shortest edge, centre crop); 8 s clips at 16 kHz to 64-bin log-mel frames
(n_fft 400, hop 160: 800 frames), padded to 8 s. Without torchvision, `CLIPImageProcessor` is its
PIL backend, as xmodal's is.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, fmt, interleaved, machine_info, median, print_machine, print_table, spread, write_json  # noqa: E402,E501


def images(count, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    # Smooth random images (a noisy gradient), so that resampling does real work on every pixel.
    base = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None]
    return [Image.fromarray(np.clip(base + rng.normal(0, 40, (240, 320, 3)), 0, 255).astype(np.uint8))
            for _ in range(count)]


def clips(count, seconds=8.0, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(count)]


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--images", type=int, default=128), p.add_argument("--clips", type=int, default=32)))
    info = machine_info()
    print_machine(info)
    from transformers import CLIPImageProcessor, WhisperFeatureExtractor
    from transformers.utils import logging

    logging.set_verbosity_error()  # "CLIPImageProcessor requires torchvision ... falling back to the PIL backend"
    try:
        from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor
    except ImportError as error:
        print(f"xmodal.processing is not available ({error}); nothing to compare.")
        return
    repeats = 3 if args.quick else 9
    image_batch = images(16 if args.quick else args.images)
    audio_batch = clips(4 if args.quick else args.clips)
    ours_image = XModalImageProcessor()
    clip_image = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                    image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ours_audio = XModalFeatureExtractor(feature_size=64, sampling_rate=16000, n_fft=400, hop_length=160,
                                        max_duration=8.0)
    whisper = WhisperFeatureExtractor(feature_size=64, sampling_rate=16000, n_fft=400, hop_length=160, chunk_length=8)

    ours_pixels = ours_image(image_batch, return_tensors="pt")["pixel_values"]
    clip_pixels = clip_image(image_batch, return_tensors="pt")["pixel_values"]
    ours_mel = ours_audio(audio_batch, sampling_rate=16000, padding="max_length", return_tensors="pt")["input_features"]
    whisper_mel = whisper(audio_batch, sampling_rate=16000, return_tensors="pt")["input_features"]
    assert ours_pixels.shape == clip_pixels.shape, (ours_pixels.shape, clip_pixels.shape)
    assert ours_mel.shape == whisper_mel.shape, (ours_mel.shape, whisper_mel.shape)
    print(f"outputs: pixels {tuple(ours_pixels.shape)} (max |xmodal - CLIP| = "
          f"{(ours_pixels - clip_pixels).abs().max().item():.3f}), log-mel {tuple(ours_mel.shape)} "
          f"(max |xmodal - Whisper| = {(ours_mel - whisper_mel).abs().max().item():.3f})")

    image_times = interleaved({
        "xmodal": lambda: ours_image(image_batch, return_tensors="pt"),
        "CLIPImageProcessor": lambda: clip_image(image_batch, return_tensors="pt"),
    }, repeats=repeats, budget_s=60)
    audio_times = interleaved({
        "xmodal": lambda: ours_audio(audio_batch, sampling_rate=16000, padding="max_length", return_tensors="pt"),
        "WhisperFeatureExtractor": lambda: whisper(audio_batch, sampling_rate=16000, return_tensors="pt"),
    }, repeats=repeats, budget_s=60)
    rows, payload = [], {"machine": info, "results": {}}
    audio_seconds = sum(len(c) for c in audio_batch) / 16000
    for kind, times, amount, unit in (("image", image_times, len(image_batch), "images/s"),
                                      ("audio", audio_times, audio_seconds, "audio s/s")):
        reference = [name for name in times if name != "xmodal"][0]
        speedup = median(times[reference]) / median(times["xmodal"])
        for name, values in times.items():
            rows.append([kind, name, f"{fmt(amount / median(values))} {unit}", f"{spread(values):.0%}",
                         f"**{speedup:.2f}x**" if name == "xmodal" else ""])
        payload["results"][kind] = {"xmodal_per_s": amount / median(times["xmodal"]),
                                    "reference_per_s": amount / median(times[reference]), "speedup": speedup}
    print_table(f"Processors ({len(image_batch)} images of 320x240 per call, {len(audio_batch)} clips of 8 s per call)",
                ["input", "processor", "throughput", "spread", "xmodal speedup"], rows)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
