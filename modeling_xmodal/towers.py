"""Modality towers: each turns one modality into token states, a pooled vector and a token mask.

Built-in towers are chosen by `encoder_type` from plain dicts; any other `transformers` config is
built with `AutoModel.from_config` and wrapped so it answers the same way.
"""

import torch
from torch import nn
from transformers import AutoModel
from transformers.utils import ModelOutput

from .configuration_xmodal import XModalAudioConfig, XModalTextConfig, XModalVisionConfig, is_own_config
from .layers import XModalTransformer, masked_mean, padding_mask
from .modeling_outputs import XModalTowerOutput
from .spec_augment import augment_log_mel


def _shape_error(argument, expected, received):
    return ValueError(f"`{argument}` should have shape {expected}, but got {tuple(received)}.")


class _TransformerTower(nn.Module):
    """Shared tail of the Transformer towers: the layer stack and the output."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.encoder = XModalTransformer(config, config.hidden_size, config.num_hidden_layers,
                                         config.num_attention_heads, config.intermediate_size)

    def _encode(self, embeddings, mask, pooling, output_attentions, output_hidden_states):
        states, hidden, attentions, _ = self.encoder(
            self.dropout(embeddings), attention_mask=padding_mask(mask, embeddings.shape[1]),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        if pooling == "cls":
            pooled = states[:, 0]
        elif pooling == "max":  # vision only: every token is valid
            pooled = states.amax(dim=1)
        else:
            pooled = masked_mean(states, mask)
        return XModalTowerOutput(last_hidden_state=states, pooler_output=pooled, hidden_states=hidden,
                                 attentions=attentions, attention_mask=mask)


class XModalTextTransformer(_TransformerTower):
    """Token + learned position embeddings, then a pre-LN Transformer encoder."""

    main_input_name = "input_ids"

    def __init__(self, config: XModalTextConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids, attention_mask=None, output_attentions=False, output_hidden_states=False):
        check_text_inputs(self.config, input_ids, attention_mask)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = self.embed_tokens(input_ids) + self.embed_positions(positions)
        return self._encode(embeddings, attention_mask, self.config.pooling, output_attentions, output_hidden_states)


class XModalTextBiLSTM(nn.Module):
    """Token embeddings and a bidirectional LSTM (the seed's classic text encoder)."""

    main_input_name = "input_ids"

    def __init__(self, config: XModalTextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size // 2, num_layers=config.num_hidden_layers,
                            batch_first=True, bidirectional=True, dropout=config.hidden_dropout)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, attention_mask=None, output_attentions=False, output_hidden_states=False):
        check_text_inputs(self.config, input_ids, attention_mask)
        states = self.norm(run_lstm(self.lstm, self.embed_tokens(input_ids), attention_mask))
        pooled = states[:, 0] if self.config.pooling == "cls" else masked_mean(states, attention_mask)
        return XModalTowerOutput(last_hidden_state=states, pooler_output=pooled,
                                 hidden_states=(states,) if output_hidden_states else None,
                                 attention_mask=attention_mask)


def run_lstm(lstm, inputs, mask):
    """Runs an LSTM over right-padded sequences so padding never reaches the valid positions."""
    if mask is None or bool(mask.all()):
        return lstm(inputs)[0]
    lengths = mask.sum(dim=1).clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    outputs, _ = lstm(packed)
    outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=inputs.shape[1])
    return outputs


def check_text_inputs(config, input_ids, attention_mask):
    if input_ids.dim() != 2:
        raise _shape_error("input_ids", "(batch_size, sequence_length)", input_ids.shape)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and input_ids.shape[1] > limit and getattr(config, "encoder_type", "") == "transformer":
        raise ValueError(
            f"`input_ids` has {input_ids.shape[1]} tokens but the text tower takes at most "
            f"max_position_embeddings={limit}; truncate in the processor (truncation=True)."
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise _shape_error("attention_mask", tuple(input_ids.shape), attention_mask.shape)


def check_pixel_values(config, pixel_values):
    size = config.image_size if isinstance(config.image_size, int) else tuple(config.image_size)[0]
    expected = (config.num_channels, size, size)
    if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
        raise _shape_error("pixel_values", f"(batch_size, {expected[0]}, {expected[1]}, {expected[2]})",
                           pixel_values.shape)


class XModalVisionTransformer(_TransformerTower):
    """ViT: non-overlapping patches, a class token, learned positions, a pre-LN Transformer."""

    main_input_name = "pixel_values"

    def __init__(self, config: XModalVisionConfig):
        super().__init__(config)
        self.patch_embed = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)
        num_patches = (config.image_size // config.patch_size) ** 2
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.embed_positions = nn.Parameter(torch.zeros(1, num_patches + 1, config.hidden_size))
        self.pre_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values, output_attentions=False, output_hidden_states=False):
        check_pixel_values(self.config, pixel_values)
        patches = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], -1, -1)
        embeddings = self.pre_norm(torch.cat([cls, patches], dim=1) + self.embed_positions)
        return self._encode(embeddings, None, self.config.pooling, output_attentions, output_hidden_states)


class HeInitConv2d(nn.Conv2d):
    """A convolution that `XModalPreTrainedModel` initialises as He et al. do (not at std=initializer_range)."""


class _ConvStage(nn.Module):
    """Max pooling (except in the first stage), a 3x3 convolution, GroupNorm and GELU.

    The first convolution runs at full resolution and the grid shrinks by max pooling, not by strided
    convolutions: small objects (a 14-px emoji in a 64-px scene) survive to the last stage, where a
    strided stem had already blurred them away.
    """

    def __init__(self, in_channels, out_channels, pool):
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.conv = HeInitConv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.norm = nn.GroupNorm(min(8, out_channels), out_channels)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.norm(self.conv(self.pool(x))))


class XModalVisionCNN(_TransformerTower):
    """A small CNN whose last grid becomes tokens, optionally followed by Transformer layers (a hybrid ViT).

    With `num_hidden_layers=0` the grid tokens are pooled directly (`pooling="max"` suits scenes of small
    objects); with layers, learned 2-D positions are added so the layers can relate objects by place, and
    `pooling="cls"` reads a class token. GroupNorm, so results do not depend on how a batch is split.
    """

    main_input_name = "pixel_values"

    def __init__(self, config: XModalVisionConfig):
        super().__init__(config)
        channels = config.cnn_channels
        self.stages = nn.ModuleList(
            _ConvStage(channels[i - 1] if i else config.num_channels, width, pool=i > 0)
            for i, width in enumerate(channels)
        )
        self.proj = nn.Linear(channels[-1], config.hidden_size)
        grid = cnn_grid_size(config)
        extra = 1 if config.pooling == "cls" else 0
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if extra else None
        self.embed_positions = (
            nn.Parameter(torch.zeros(1, grid * grid + extra, config.hidden_size)) if config.num_hidden_layers else None
        )

    def forward(self, pixel_values, output_attentions=False, output_hidden_states=False):
        check_pixel_values(self.config, pixel_values)
        x = pixel_values.to(self.proj.weight.dtype)
        for stage in self.stages:
            x = stage(x)
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        if self.class_embedding is not None:
            tokens = torch.cat([self.class_embedding.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.embed_positions is not None:
            tokens = tokens + self.embed_positions
        return self._encode(tokens, None, self.config.pooling, output_attentions, output_hidden_states)


def cnn_grid_size(config):
    """Side of the CNN's last grid: one halving per stage after the first."""
    size = config.image_size if isinstance(config.image_size, int) else tuple(config.image_size)[0]
    return size // 2 ** (len(config.cnn_channels) - 1)


class _AudioSubsampler(nn.Module):
    """Two stride-2 convolutions over log-mel frames (4x fewer steps); padded frames stay zero."""

    def __init__(self, config):
        super().__init__()
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.hidden_size, 3, 2, 1)
        self.conv2 = nn.Conv1d(config.hidden_size, config.hidden_size, 3, 2, 1)
        self.act = nn.GELU()

    @staticmethod
    def _downsample(mask, length):
        """The mask of a stride-2 convolution's `length` outputs, (frames + 1) // 2 of them valid. The length is
        the convolution's own output size, (n - 1) // 2 + 1 (= (n + 1) // 2): taken from it, `torch.compile`
        with dynamic shapes sees one size where two formulas would make it guard on the value and recompile."""
        lengths = (mask.sum(dim=-1) + 1) // 2
        return (torch.arange(length, device=mask.device)[None] < lengths[:, None]).long()

    def forward(self, features, mask):
        x = features.to(self.conv1.weight.dtype)
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        x = self.act(self.conv1(x))
        if mask is not None:
            mask = self._downsample(mask, x.shape[-1])
            x = x * mask[:, None, :].to(x.dtype)
        x = self.act(self.conv2(x))
        if mask is not None:
            mask = self._downsample(mask, x.shape[-1])
        return x.transpose(1, 2), mask


def check_audio_inputs(config, input_features, feature_attention_mask):
    if input_features.dim() != 3 or input_features.shape[1] != config.num_mel_bins:
        raise _shape_error("input_features", f"(batch_size, {config.num_mel_bins}, num_frames)",
                           input_features.shape)
    if input_features.shape[2] > config.max_input_frames:
        raise ValueError(
            f"`input_features` has {input_features.shape[2]} frames but the audio tower takes at most "
            f"{config.max_input_frames} (max_source_positions={config.max_source_positions} after 4x "
            "subsampling); truncate in the feature extractor (max_duration)."
        )
    if feature_attention_mask is not None and tuple(feature_attention_mask.shape) != (
        input_features.shape[0], input_features.shape[2]
    ):
        raise _shape_error("feature_attention_mask", (input_features.shape[0], input_features.shape[2]),
                           feature_attention_mask.shape)


class XModalAudioTransformer(_TransformerTower):
    """Convolutional subsampling of log-mel frames, learned positions, a pre-LN Transformer encoder."""

    main_input_name = "input_features"

    def __init__(self, config: XModalAudioConfig):
        super().__init__(config)
        self.subsample = _AudioSubsampler(config)
        self.embed_positions = nn.Embedding(config.max_source_positions, config.hidden_size)

    def forward(self, input_features, feature_attention_mask=None, output_attentions=False,
                output_hidden_states=False):
        check_audio_inputs(self.config, input_features, feature_attention_mask)
        if self.training and self.config.apply_spec_augment:
            input_features = augment_log_mel(input_features, feature_attention_mask, self.config)
        x, mask = self.subsample(input_features, feature_attention_mask)
        x = x + self.embed_positions(torch.arange(x.shape[1], device=x.device))
        return self._encode(x, mask, "mean", output_attentions, output_hidden_states)


class XModalAudioLSTM(nn.Module):
    """Convolutional subsampling followed by a bidirectional LSTM."""

    main_input_name = "input_features"

    def __init__(self, config: XModalAudioConfig):
        super().__init__()
        self.config = config
        self.subsample = _AudioSubsampler(config)
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size // 2, num_layers=config.num_hidden_layers,
                            batch_first=True, bidirectional=True, dropout=config.hidden_dropout)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_features, feature_attention_mask=None, output_attentions=False,
                output_hidden_states=False):
        check_audio_inputs(self.config, input_features, feature_attention_mask)
        if self.training and self.config.apply_spec_augment:
            input_features = augment_log_mel(input_features, feature_attention_mask, self.config)
        x, mask = self.subsample(input_features, feature_attention_mask)
        states = self.norm(run_lstm(self.lstm, x, mask))
        return XModalTowerOutput(last_hidden_state=states, pooler_output=masked_mean(states, mask),
                                 hidden_states=(states,) if output_hidden_states else None, attention_mask=mask)


class XModalPretrainedTower(nn.Module):
    """Any `transformers` model as a tower: the encoder of an encoder-decoder, mean-pooled over valid tokens."""

    def __init__(self, config, modality, model=None):
        super().__init__()
        self.config = config
        self.modality = modality
        if model is None:
            model = AutoModel.from_config(config)
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        if isinstance(getattr(model, "pooler", None), nn.Module):
            # The tower pools over valid tokens itself; a model's own pooler (BERT's) would be parameters that
            # never get a gradient (which distributed training rejects).
            model.pooler = None
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, output_attentions=False,
                output_hidden_states=False):
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        mask = None
        if self.modality == "text":
            check_text_inputs(self.config, input_ids, attention_mask)
            if token_type_ids is not None:
                flags["token_type_ids"] = token_type_ids
            outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **flags)
            mask = attention_mask
        elif self.modality == "image":
            if hasattr(self.config, "image_size") and hasattr(self.config, "num_channels"):
                check_pixel_values(self.config, pixel_values)
            outputs = self.model(pixel_values=pixel_values, **flags)
        else:
            outputs, mask = self._encode_audio(input_features, feature_attention_mask, flags)
        states = outputs.last_hidden_state
        return XModalTowerOutput(
            last_hidden_state=states, pooler_output=masked_mean(states, mask),
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None), attention_mask=mask,
        )

    def _encode_audio(self, input_features, feature_attention_mask, flags):
        num_mel_bins = getattr(self.config, "num_mel_bins", input_features.shape[1])
        if input_features.dim() != 3 or input_features.shape[1] != num_mel_bins:
            raise _shape_error("input_features", f"(batch_size, {num_mel_bins}, num_frames)", input_features.shape)
        window = getattr(self.config, "max_source_positions", None)
        mask = feature_attention_mask
        if window is not None:
            # Whisper-style encoders take a fixed window of 2 * max_source_positions frames: pad with the
            # log-mel floor (silence: 8 decades below the peak, i.e. peak - 2 after Whisper scaling) and keep
            # the mask over the real frames.
            frames, target = input_features.shape[2], 2 * window
            if frames > target:
                raise ValueError(f"`input_features` has {frames} frames; this audio tower takes at most {target}.")
            if frames < target:
                floor = input_features.amax(dim=(1, 2), keepdim=True) - 2.0
                input_features = torch.cat(
                    [input_features, floor.expand(-1, num_mel_bins, target - frames)], dim=2
                )
            if mask is None:
                mask = torch.ones(input_features.shape[0], frames, dtype=torch.long, device=input_features.device)
            mask = nn.functional.pad(mask, (0, target - frames))
            outputs = self.model(input_features=input_features, **flags)
            # The encoder halves the frame rate once.
            mask = mask[:, ::2][:, : outputs.last_hidden_state.shape[1]]
            return outputs, mask
        outputs = self.model(input_features=input_features, **flags)
        return outputs, None


TOWER_CLASSES = {
    "text": {"transformer": XModalTextTransformer, "bilstm": XModalTextBiLSTM},
    "image": {"vit": XModalVisionTransformer, "cnn": XModalVisionCNN},
    "audio": {"transformer": XModalAudioTransformer, "lstm": XModalAudioLSTM},
}
OWN_TOWER_CONFIGS = {"text": XModalTextConfig, "image": XModalVisionConfig, "audio": XModalAudioConfig}


def build_tower(config, modality):
    """The tower for one modality: a built-in one chosen by `encoder_type`, or a wrapped `transformers` model."""
    if is_own_config(config, OWN_TOWER_CONFIGS[modality]):
        return TOWER_CLASSES[modality][config.encoder_type](config)
    return XModalPretrainedTower(config, modality)


def tower_output_size(config):
    """Width of a tower's token states."""
    for name in ("hidden_size", "d_model", "dim", "embed_dim"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"Cannot tell the hidden size of a {type(config).__name__} tower; it has no `hidden_size`.")


def call_tower(tower, modality, inputs, output_attentions=False, output_hidden_states=False, **extra) -> ModelOutput:
    """Runs a tower on the inputs of its modality (a dict with the ecosystem's argument names); `extra` goes to a
    tower that takes more (the video tower: frames the vision tower it shares has encoded)."""
    flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
    if modality == "text":
        if isinstance(tower, XModalPretrainedTower) and inputs.get("token_type_ids") is not None:
            flags["token_type_ids"] = inputs["token_type_ids"]
        return tower(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), **flags)
    if modality == "image":
        return tower(pixel_values=inputs["pixel_values"], **flags)
    if modality == "audio":
        return tower(input_features=inputs["input_features"],
                     feature_attention_mask=inputs.get("feature_attention_mask"), **flags)
    return tower(**inputs, **flags, **extra)
