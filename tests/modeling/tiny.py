"""Tiny configs and inputs shared by the model tests (hidden 32, 2 layers, 32 px images)."""

import torch

from xmodal import XModalAudioConfig, XModalConfig, XModalDecoderConfig, XModalTextConfig, XModalVisionConfig

VOCAB = 99


def tiny_config(modalities=("text", "image", "audio"), decoder=True, **overrides):
    parts = {
        "text": ("text_config", XModalTextConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=64,
                                                 max_position_embeddings=16)),
        "image": ("vision_config", XModalVisionConfig(image_size=32, patch_size=8, hidden_size=32,
                                                      num_hidden_layers=2, num_attention_heads=2,
                                                      intermediate_size=64)),
        "audio": ("audio_config", XModalAudioConfig(num_mel_bins=16, max_source_positions=16, hidden_size=32,
                                                    num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64)),
    }
    kwargs = {key: None for key, _ in parts.values()}
    for modality in modalities:
        key, config = parts[modality]
        kwargs[key] = config
    if decoder:
        kwargs["decoder_config"] = XModalDecoderConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=2, intermediate_size=64,
                                                       max_position_embeddings=24)
    kwargs.update(projection_dim=16, fusion_hidden_size=32, fusion_num_layers=2, fusion_num_attention_heads=2,
                  fusion_intermediate_size=64)
    kwargs.update(overrides)
    return XModalConfig(**kwargs)


def tiny_inputs(modalities=("text", "image", "audio"), batch_size=3, seed=0, padded=True):
    """Random inputs; with `padded`, the first text and the second clip are padded."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    if "text" in modalities:
        inputs["input_ids"] = torch.randint(3, VOCAB, (batch_size, 9), generator=generator)
        mask = torch.ones(batch_size, 9, dtype=torch.long)
        if padded:
            mask[0, 6:] = 0
            inputs["input_ids"][0, 6:] = 0
        inputs["attention_mask"] = mask
    if "image" in modalities:
        inputs["pixel_values"] = torch.randn(batch_size, 3, 32, 32, generator=generator)
    if "audio" in modalities:
        inputs["input_features"] = torch.randn(batch_size, 16, 40, generator=generator)
        mask = torch.ones(batch_size, 40, dtype=torch.long)
        if padded and batch_size > 1:
            mask[1, 28:] = 0
        inputs["feature_attention_mask"] = mask
    return inputs


def caption_labels(batch_size=3, length=7, seed=1):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, VOCAB, (batch_size, length), generator=generator)
    labels[:, -1] = 2
    labels[0, -2:] = -100
    return labels
