"""Generation: tokens/s with the KV cache against without it, and against `VisionEncoderDecoderModel`.

Greedy decoding of exactly 64 new tokens (`max_new_tokens=min_new_tokens=64`) for a batch of
images. xmodal: `XModalForConditionalGeneration` with a ViT tower, `concat` fusion (a linear map of
the tower's tokens, as `VisionEncoderDecoderModel`'s encoder-to-decoder projection) and a 3-layer
decoder. Reference: `VisionEncoderDecoderModel` with a ViT encoder and a GPT-2 decoder with
cross-attention, at the same widths, depths, heads, MLP, vocabulary and image size.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SMALL, arguments, fmt, interleaved, machine_info, median, print_machine, print_table, spread, write_json  # noqa: E402,E501

NEW_TOKENS = 64
DECODER_LAYERS = 3


def xmodal_captioner():
    import xmodal

    common = dict(hidden_size=SMALL["hidden"], num_attention_heads=SMALL["heads"], intermediate_size=SMALL["mlp"],
                  hidden_act="gelu")
    config = xmodal.XModalConfig(
        text_config=None, audio_config=None,
        vision_config=xmodal.XModalVisionConfig(image_size=SMALL["image_size"], patch_size=SMALL["patch"],
                                                num_hidden_layers=SMALL["layers"], **common),
        decoder_config=xmodal.XModalDecoderConfig(vocab_size=SMALL["vocab"], num_hidden_layers=DECODER_LAYERS,
                                                  max_position_embeddings=128, **common),
        fusion_type="concat", fusion_hidden_size=SMALL["hidden"],
    )
    return xmodal.XModalForConditionalGeneration(config).eval()


def reference_captioner():
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    encoder = ViTConfig(hidden_size=SMALL["hidden"], num_hidden_layers=SMALL["layers"],
                        num_attention_heads=SMALL["heads"], intermediate_size=SMALL["mlp"], hidden_act="gelu",
                        image_size=SMALL["image_size"], patch_size=SMALL["patch"])
    decoder = GPT2Config(n_embd=SMALL["hidden"], n_layer=DECODER_LAYERS, n_head=SMALL["heads"], n_inner=SMALL["mlp"],
                         vocab_size=SMALL["vocab"], n_positions=128, activation_function="gelu",
                         add_cross_attention=True, is_decoder=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = VisionEncoderDecoderModel(config=VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    return model.eval()


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: p.add_argument("--batch", type=int, default=8))
    info = machine_info()
    print_machine(info)
    torch.manual_seed(0)
    ours, reference = xmodal_captioner(), reference_captioner()
    batch_size = 2 if args.quick else args.batch
    pixels = torch.randn(batch_size, 3, SMALL["image_size"], SMALL["image_size"])
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    print(f"parameters: xmodal {count(ours) / 1e6:.2f}M, VisionEncoderDecoderModel {count(reference) / 1e6:.2f}M; "
          f"batch {batch_size}, {NEW_TOKENS} new tokens, greedy")

    def generate(model, use_cache):
        def run():
            out = model.generate(pixel_values=pixels, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 do_sample=False, num_beams=1, use_cache=use_cache)
            assert out.shape[1] >= NEW_TOKENS, out.shape
        return run

    fns = {"xmodal, cache": generate(ours, True), "xmodal, no cache": generate(ours, False),
           "VisionEncoderDecoder, cache": generate(reference, True),
           "VisionEncoderDecoder, no cache": generate(reference, False)}
    with torch.inference_mode():
        times = interleaved(fns, repeats=3 if args.quick else 5, warmup=1, budget_s=45 if args.quick else 90)
    tokens = batch_size * NEW_TOKENS
    rows = [[name, fmt(tokens / median(values)), fmt(median(values) * 1e3, 0), f"{spread(values):.0%}"]
            for name, values in times.items()]
    cache_speedup = median(times["xmodal, no cache"]) / median(times["xmodal, cache"])
    reference_cache_speedup = median(times["VisionEncoderDecoder, no cache"]) / median(times["VisionEncoderDecoder, cache"])
    versus_reference = median(times["VisionEncoderDecoder, cache"]) / median(times["xmodal, cache"])
    rows += [["**xmodal cache / no cache**", f"**{cache_speedup:.2f}x**", "", ""],
             ["VisionEncoderDecoder cache / no cache", f"{reference_cache_speedup:.2f}x", "", ""],
             ["**xmodal / VisionEncoderDecoder (cached)**", f"**{versus_reference:.2f}x**", "", ""]]
    print_table(f"Generation ({batch_size} images, {NEW_TOKENS} new tokens each; medians of interleaved calls)",
                ["model", "tokens/s", "ms/call", "spread"], rows)
    write_json(args.json, {"machine": info, "batch": batch_size,
                           "tokens_per_s": {name: tokens / median(v) for name, v in times.items()},
                           "cache_speedup": cache_speedup, "reference_cache_speedup": reference_cache_speedup,
                           "versus_reference": versus_reference})


if __name__ == "__main__":
    main()
