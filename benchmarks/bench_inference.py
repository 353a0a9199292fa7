"""Inference: embeddings per second for images, texts and audio against `CLIPModel` and the Whisper encoder.

Images and texts: xmodal's `get_image_features` / `get_text_features` against CLIPModel's, at the
training benchmark's architecture. Audio: xmodal's audio tower (+ projection) against a randomly
initialised Whisper encoder (`WhisperConfig` built here) of the same width, depth, heads and MLP, on
the same log-mel input (64 bins, 8 s = 800 frames); both mean-pool. Whisper subsamples 2x (400
positions), xmodal 4x (200), so a second Whisper row runs 4 s of audio (400 frames, 200 positions):
the same sequence length through the same layers.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SMALL, arguments, clip_config, fmt, image_text_batch, interleaved, machine_info, median, print_machine, print_table,
    spread, write_json, xmodal_dual_encoder_config,
)


def whisper_encoder(frames):
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(
        num_mel_bins=64, d_model=SMALL["hidden"], encoder_layers=SMALL["layers"],
        encoder_attention_heads=SMALL["heads"], encoder_ffn_dim=SMALL["mlp"], decoder_layers=1,
        decoder_attention_heads=SMALL["heads"], decoder_ffn_dim=SMALL["mlp"], vocab_size=SMALL["vocab"],
        max_source_positions=frames // 2, max_target_positions=64, activation_function="gelu",
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    return WhisperModel(config).get_encoder().eval()


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: p.add_argument("--batch", type=int, default=64))
    info = machine_info()
    print_machine(info)
    batch_size = 16 if args.quick else args.batch
    repeats = 3 if args.quick else 5
    import xmodal
    from transformers import CLIPModel

    torch.manual_seed(0)
    ours = xmodal.XModalModel(xmodal_dual_encoder_config(SMALL, audio=True)).eval()
    clip = CLIPModel(clip_config(SMALL)).eval()
    batch = image_text_batch(batch_size)
    frames = 800
    features = torch.randn(batch_size, 64, frames)
    whisper_long, whisper_short = whisper_encoder(frames), whisper_encoder(frames // 2)

    def whisper_embed(encoder, length):
        return lambda: encoder(input_features=features[:, :, :length]).last_hidden_state.mean(dim=1)

    groups = {
        "image": {"xmodal": lambda: ours.get_image_features(pixel_values=batch["pixel_values"]).pooler_output,
                  "CLIPModel": lambda: clip.get_image_features(pixel_values=batch["pixel_values"])},
        "text": {"xmodal": lambda: ours.get_text_features(input_ids=batch["input_ids"],
                                                          attention_mask=batch["attention_mask"]).pooler_output,
                 "CLIPModel": lambda: clip.get_text_features(input_ids=batch["input_ids"],
                                                             attention_mask=batch["attention_mask"])},
        "audio": {"xmodal": lambda: ours.get_audio_features(input_features=features).pooler_output,
                  "Whisper encoder (same 8 s input)": whisper_embed(whisper_long, frames),
                  "Whisper encoder (4 s, same positions)": whisper_embed(whisper_short, frames // 2)},
    }
    rows, payload = [], {"machine": info, "batch": batch_size, "results": {}}
    for dtype in ("fp32", "bf16"):
        for modality, fns in groups.items():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                times = interleaved(fns, repeats=repeats, warmup=1, budget_s=30 if args.quick else 40)
            reference = median(times[list(fns)[1]])
            for name, values in times.items():
                seconds = median(values)
                rows.append([dtype, modality, name, fmt(batch_size / seconds), f"{spread(values):.0%}",
                             "" if name == "xmodal" else f"{seconds / median(times['xmodal']):.2f}x"])
                payload["results"][f"{dtype}/{modality}/{name}"] = {"per_s": batch_size / seconds}
            payload["results"][f"{dtype}/{modality}/speedup"] = reference / median(times["xmodal"])
    print_table(f"Inference embeddings/s (batch {batch_size}; medians of interleaved calls)",
                ["dtype", "modality", "model", "embeddings/s", "spread", "xmodal speedup over it"], rows)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
