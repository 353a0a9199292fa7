"""Tiny configs and inputs shared by the model tests (hidden 32, 2 layers, 32 px images; videos of up to 6 frames
of 16 px through a small CNN, or of 32 px through the shared vision tower)."""

import torch

from xmodal import (
    XModalAudioConfig,
    XModalConfig,
    XModalDecoderConfig,
    XModalTextConfig,
    XModalVideoConfig,
    XModalVisionConfig,
)

VOCAB = 99
MAX_FRAMES = 6
# The pre-training weights with the CTC part on (`tiny_config(loss_weights=CTC_LOSS_WEIGHTS)` builds a `ctc_head`).
CTC_LOSS_WEIGHTS = {"contrastive": 1.0, "matching": 0.25, "caption": 0.25, "transcription": 0.5, "ctc": 0.3}


def tiny_video_config(shared=False, frame_config=None):
    """A video tower over at most MAX_FRAMES frames: its own frame encoder (`frame_config`, by default a 16-px CNN),
    or none (`shared`: frames go through the vision tower, `share_vision_tower=True`)."""
    if frame_config is None and not shared:
        frame_config = XModalVisionConfig(image_size=16, encoder_type="cnn", cnn_channels=[8, 16], hidden_size=24,
                                          num_hidden_layers=0, num_attention_heads=2, intermediate_size=48,
                                          pooling="mean")
    return XModalVideoConfig(frame_config=frame_config, max_frames=MAX_FRAMES, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64)


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
    if "video" in modalities:
        parts["video"] = ("video_config", tiny_video_config(shared=overrides.get("share_vision_tower", False)))
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


def tiny_video_inputs(batch_size=3, num_frames=4, size=16, seed=0, padded=True):
    """Random clips of `num_frames` frames of `size` px; with `padded`, the second clip's last two frames are
    padding. Timestamps as the processor gives them at 2 fps (0 for padding)."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch_size, num_frames, 3, size, size, generator=generator)
    mask = torch.ones(batch_size, num_frames, dtype=torch.long)
    if padded and batch_size > 1:
        mask[1, num_frames - 2:] = 0
    times = torch.arange(num_frames, dtype=torch.float32).expand(batch_size, -1) / 2 * mask
    return {"pixel_values_videos": frames, "video_frame_mask": mask, "video_timestamps": times}


def caption_labels(batch_size=3, length=7, seed=1):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, VOCAB, (batch_size, length), generator=generator)
    labels[:, -1] = 2
    labels[0, -2:] = -100
    return labels


def offloaded_copy(model, model_class, folder):
    """`model` saved under `folder` and loaded back as `model_class` with `device_map="auto"` and room in memory for a
    third of its weights: the rest goes to disk (`folder/offload`)."""
    model.save_pretrained(folder / "model")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return model_class.from_pretrained(folder / "model", device_map="auto", max_memory={"cpu": size // 3},
                                       offload_folder=folder / "offload").eval()
