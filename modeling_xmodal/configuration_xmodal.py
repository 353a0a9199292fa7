"""Configurations: one per built-in tower, one for the decoder, and the composite `XModalConfig`.

A tower may also be any `transformers` config (BERT, ViT, a Whisper encoder, ...); the composite
config keeps it as is and the model builds it with `AutoModel.from_config`.
"""

import difflib
from dataclasses import fields

from transformers import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging

from .modalities import BASE_MODALITY_NAMES, MODALITIES

logger = logging.get_logger(__name__)
# Keys that `transformers` writes to or reads from a config.json besides the dataclass fields and the attributes
# of `PreTrainedConfig` (including keys of transformers 4 configs, which it still accepts).
TRANSFORMERS_CONFIG_KEYS = frozenset({
    "model_type", "auto_map", "transformers_version", "_name_or_path", "name_or_path", "_commit_hash",
    "torch_dtype", "attn_implementation", "experts_implementation", "_attn_implementation_internal",
    "_experts_implementation_internal", "_attn_implementation_autoset", "output_attentions", "per_layer_config",
    "num_labels", "quantization_config", "rope_scaling", "rope_theta", "rope_parameters", "pad_token_id",
    "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "tie_word_embeddings", "use_cache",
    "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tie_encoder_decoder", "tokenizer_class",
    "prefix", "task_specific_params", "finetuning_task", "pruned_heads", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "tie_last_hidden_states",
})


def warn_unknown_keys(config_class, keys, where=None):
    """Logs a warning for each key that neither `config_class` nor `transformers` reads, naming the closest
    valid key: a misspelt key in a config.json is otherwise kept as an attribute that nothing reads."""
    valid = {f.name for f in fields(config_class)}
    unknown = [key for key in keys if key not in valid and key not in TRANSFORMERS_CONFIG_KEYS
               and not hasattr(PreTrainedConfig, key)]
    if not unknown:
        return
    from transformers import GenerationConfig

    generation_keys = set(GenerationConfig().to_dict())  # popped by `PreTrainedConfig` (legacy configs)
    own = sorted(valid - {f.name for f in fields(PreTrainedConfig)})
    for key in unknown:
        if key in generation_keys:
            continue
        close = difflib.get_close_matches(key, sorted(valid), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys are {own}."
        logger.warning(f"{where or config_class.__name__} got an unknown key {key!r}, which nothing reads "
                       f"(ignored); {hint}")


def _check_choice(config, field, allowed):
    value = getattr(config, field)
    if value not in allowed:
        raise ValueError(
            f"{type(config).__name__}.{field}={value!r} is not supported; choose one of {sorted(allowed)}."
        )


def _check_positive(config, *fields):
    for field in fields:
        value = getattr(config, field)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{type(config).__name__}.{field}={value!r} must be a positive number.")


def _check_probability(config, *fields):
    for field in fields:
        value = getattr(config, field)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{type(config).__name__}.{field}={value!r} must be in [0, 1).")


def _check_heads(config, hidden_field="hidden_size", heads_field="num_attention_heads"):
    hidden, heads = getattr(config, hidden_field), getattr(config, heads_field)
    if hidden % heads != 0:
        raise ValueError(
            f"{type(config).__name__}.{hidden_field}={hidden} must be divisible by "
            f"{heads_field}={heads}; allowed head counts are the divisors of {hidden}."
        )


class XModalTextConfig(PreTrainedConfig):
    """Built-in text tower: token embeddings + pre-LN Transformer encoder, or a BiLSTM."""

    model_type = "xmodal_text_model"
    base_config_key = "text_config"

    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 64
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    encoder_type: str = "transformer"
    pooling: str = "mean"
    initializer_range: float = 0.02
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_choice(self, "encoder_type", {"transformer", "bilstm"})
        _check_choice(self, "pooling", {"mean", "cls"})
        _check_positive(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size", "max_position_embeddings")
        _check_probability(self, "hidden_dropout", "attention_dropout")
        if self.encoder_type == "transformer":
            _check_heads(self)
        if self.encoder_type == "bilstm" and self.hidden_size % 2:
            raise ValueError(f"XModalTextConfig.hidden_size={self.hidden_size} must be even for a BiLSTM.")


class XModalVisionConfig(PreTrainedConfig):
    """Built-in vision tower: a ViT (patch embedding + Transformer) or a small CNN, optionally with Transformer
    layers over its last grid (`num_hidden_layers`, 0 for none). `pooling`: "cls", "mean" or "max"."""

    model_type = "xmodal_vision_model"
    base_config_key = "vision_config"

    image_size: int = 64
    patch_size: int = 8
    num_channels: int = 3
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    encoder_type: str = "vit"
    cnn_channels: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    pooling: str = "cls"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.cnn_channels = list(self.cnn_channels)
        _check_choice(self, "encoder_type", {"vit", "cnn"})
        _check_choice(self, "pooling", {"mean", "cls", "max"})
        _check_positive(self, "image_size", "patch_size", "num_channels", "hidden_size", "num_attention_heads",
                        "intermediate_size")
        if self.num_hidden_layers < (1 if self.encoder_type == "vit" else 0):
            raise ValueError(f"XModalVisionConfig.num_hidden_layers={self.num_hidden_layers} must be at least 1 "
                             "for a ViT and at least 0 for a CNN.")
        _check_probability(self, "hidden_dropout", "attention_dropout")
        if self.encoder_type == "vit":
            _check_heads(self)
            if self.image_size % self.patch_size:
                raise ValueError(
                    f"XModalVisionConfig.image_size={self.image_size} must be a multiple of "
                    f"patch_size={self.patch_size}."
                )
        elif not self.cnn_channels or any(c <= 0 for c in self.cnn_channels):
            raise ValueError(f"XModalVisionConfig.cnn_channels={self.cnn_channels} must be positive widths.")
        else:
            size = self.image_size if isinstance(self.image_size, int) else tuple(self.image_size)[0]
            if size % 2 ** (len(self.cnn_channels) - 1):
                raise ValueError(f"XModalVisionConfig.image_size={size} must be divisible by "
                                 f"2**(len(cnn_channels) - 1)={2 ** (len(self.cnn_channels) - 1)}: each stage "
                                 "after the first halves the grid.")
        if self.num_hidden_layers:
            _check_heads(self)


class XModalAudioConfig(PreTrainedConfig):
    """Built-in audio tower: log-mel frames, two stride-2 convolutions, then a Transformer or an LSTM."""

    model_type = "xmodal_audio_model"
    base_config_key = "audio_config"

    num_mel_bins: int = 64
    max_source_positions: int = 256
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    encoder_type: str = "transformer"
    pooling: str = "mean"
    initializer_range: float = 0.02
    # Training-time augmentation of the log-mel frames (`spec_augment.py`; off unless `apply_spec_augment`).
    apply_spec_augment: bool = False
    frequency_warp: float = 0.0
    spectral_tilt: float = 0.0
    mask_time_prob: float = 0.0
    mask_time_length: int = 5
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 8

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_choice(self, "encoder_type", {"transformer", "lstm"})
        _check_choice(self, "pooling", {"mean"})
        _check_positive(self, "num_mel_bins", "max_source_positions", "hidden_size", "num_hidden_layers",
                        "num_attention_heads", "intermediate_size", "mask_time_length", "mask_feature_length")
        _check_probability(self, "hidden_dropout", "attention_dropout", "frequency_warp", "mask_time_prob",
                           "mask_feature_prob")
        if not 0.0 <= self.spectral_tilt <= 1.0:
            raise ValueError(f"XModalAudioConfig.spectral_tilt={self.spectral_tilt!r} must be in [0, 1] "
                             "(feature units: 1.0 is 40 dB).")
        if self.encoder_type == "transformer":
            _check_heads(self)

    @property
    def max_input_frames(self):
        """Longest `input_features` the position table covers (the convolutions subsample by 4)."""
        return self.max_source_positions * 4


class XModalVideoConfig(PreTrainedConfig):
    """Built-in video tower (CLIP4Clip's "seqTransf"): each frame through an image tower, its pooled vector projected
    to `hidden_size`, plus a learned position per frame index (up to `max_frames`), then a pre-LN Transformer over
    the frames that attends only to real ones; the clip vector is the mean over real frames.

    `frame_config` is the frame encoder (an `XModalVisionConfig` of any `encoder_type`, or any `transformers` vision
    config); leave it None with `XModalConfig(share_vision_tower=True)`, where frames go through the model's own
    vision tower. Mean pooling rather than a class token: projected (a linear map), the clip's embedding is then the
    mean of its frames' embeddings, so every frame lies in the same shared space and can be scored on its own against
    an image or a sentence (`XModalModel.get_video_frame_features`).
    """

    model_type = "xmodal_video_model"
    base_config_key = "video_config"

    frame_config: PreTrainedConfig | dict | None = None
    max_frames: int = 32
    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    pooling: str = "mean"
    # Add each frame's change from the one before (its pooled vector minus the previous one's, projected) to its
    # state: what moved, which the frame encoder, seeing one frame, cannot tell, and the Transformer must otherwise
    # learn to compute from positions.
    frame_differences: bool = False
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.frame_config = _as_config("frame_config", self.frame_config, XModalVisionConfig, "XModalVideoConfig")
        super().__post_init__(**kwargs)
        _check_choice(self, "pooling", {"mean"})
        _check_positive(self, "max_frames", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size")
        _check_probability(self, "hidden_dropout", "attention_dropout")
        _check_heads(self)
        if not isinstance(self.frame_differences, bool):
            raise ValueError(f"XModalVideoConfig.frame_differences={self.frame_differences!r} must be true or false.")

    # The frame encoder's config, walked by `transformers` as the composite's towers are (attention, dtype).
    @property
    def sub_configs(self):
        return {"frame_config": type(self.frame_config)} if self.frame_config is not None else {}


class XModalDecoderConfig(PreTrainedConfig):
    """Text decoder of the generation heads: causal self-attention plus cross-attention to the encoder."""

    model_type = "xmodal_decoder"
    base_config_key = "decoder_config"

    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 64
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = 1
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_positive(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size", "max_position_embeddings")
        _check_probability(self, "hidden_dropout", "attention_dropout")
        _check_heads(self)


TOWER_CONFIG_CLASSES = {
    "text_config": XModalTextConfig,
    "vision_config": XModalVisionConfig,
    "audio_config": XModalAudioConfig,
    "video_config": XModalVideoConfig,
    "decoder_config": XModalDecoderConfig,
}
_OWN_MODEL_TYPES = {cls.model_type: cls for cls in TOWER_CONFIG_CLASSES.values()}



def is_own_config(config, config_class=None):
    """Whether `config` is one of xmodal's tower/decoder configs (of `config_class`, if given).

    Compared by `model_type`, not class: code loaded with `trust_remote_code` may load the config
    module twice, and the two copies' classes are different objects.
    """
    model_type = getattr(config, "model_type", None)
    if config_class is not None:
        return model_type == config_class.model_type
    return model_type in _OWN_MODEL_TYPES


FUSION_TYPES = ("concat", "gated", "cross_attention")
# How the cross-attention fusion pools its query stream for the matching and classification heads: "cls" reads the
# [FUSE] token, "mean" averages every query token, so each word's cross-attention reaches the loss.
FUSION_POOLINGS = ("cls", "mean")
CONTRASTIVE_LOSSES = ("clip", "sigmoid")
# The named parts of the multi-task losses: pre-training's six (`negative_caption` only with false captions
# given; `ctc`, CTC over the speech tower's states beside the decoder's transcription, only with a weight above 0:
# it adds `ctc_head`), then video pre-training's frame-level three.
DEFAULT_LOSS_WEIGHTS = {"contrastive": 1.0, "negative_caption": 1.0, "matching": 1.0, "caption": 1.0,
                        "transcription": 1.0, "ctc": 0.0, "moment": 1.0, "grounding": 1.0, "sync": 1.0}


def _as_config(key, value, default_class=None, owner="XModalConfig"):
    """A sub-config from a config, a dict (xmodal's own or any `transformers` model_type; without one,
    `default_class`, by default the tower's own), or None."""
    if value is None or isinstance(value, PreTrainedConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{owner}.{key} must be a config, a dict or None, got {type(value).__name__}.")
    value = dict(value)
    model_type = value.pop("model_type", None) or (default_class or TOWER_CONFIG_CLASSES[key]).model_type
    value.pop("transformers_version", None)
    if model_type in _OWN_MODEL_TYPES:
        warn_unknown_keys(_OWN_MODEL_TYPES[model_type], value, where=f"{owner}.{key}")
        return _OWN_MODEL_TYPES[model_type](**value)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"{owner}.{key} has model_type={model_type!r}, which is neither an xmodal tower "
            f"({sorted(_OWN_MODEL_TYPES)}) nor a known `transformers` model type."
        )
    return CONFIG_MAPPING[model_type](**value)


class XModalConfig(PreTrainedConfig):
    """Composite config: towers (a `None` tower is an absent modality), fusion, heads and losses.

    With no tower given at all, the default tri-modal model (text, vision, audio and a decoder) is built; a video tower
    is added with `video_config`. `share_vision_tower=True` runs video frames through the vision tower itself (one set
    of weights for images and frames) instead of the video tower's own frame encoder.

    `is_encoder_decoder` describes the head built from the config, not the config's parts: each model sets it when
    built, True for the heads with a decoder (`XModalForConditionalGeneration`, `XModalForPreTraining`), False for
    the others even when `decoder_config` is present. `transformers` reads it from the model's config to choose
    encoder-decoder generation and (Trainer) how to count label tokens, so an encoder-only head must not claim it.
    Build each model from its own config (as `from_pretrained` does): one config shared by two heads describes the
    one built last. `tie_word_embeddings` (whether the LM head shares the decoder's token embeddings) defaults to
    the decoder config's setting.
    """

    model_type = "xmodal"

    text_config: PreTrainedConfig | dict | None = None
    vision_config: PreTrainedConfig | dict | None = None
    audio_config: PreTrainedConfig | dict | None = None
    video_config: PreTrainedConfig | dict | None = None
    decoder_config: PreTrainedConfig | dict | None = None
    share_vision_tower: bool = False
    # Video pre-training's sync part: offsets of the sound tried, in frames each way (4 at 4 fps: +-1 s).
    video_sync_max_offset: int = 4
    projection_dim: int = 256
    logit_scale_init_value: float = 2.6592
    logit_bias_init_value: float = -10.0
    contrastive_loss: str = "clip"
    fusion_type: str = "cross_attention"
    fusion_hidden_size: int = 256
    fusion_num_layers: int = 2
    fusion_num_attention_heads: int = 4
    fusion_intermediate_size: int = 1024
    fusion_pooling: str = "cls"  # cross_attention only: FUSION_POOLINGS
    loss_weights: dict | None = None
    # Tokens a pretrained decoder reads after its start token before it writes (Whisper's <|notimestamps|>);
    # `generate` starts from them, and its training targets begin with them.
    decoder_prompt_ids: list[int] | None = None
    classifier_dropout: float = 0.0
    tie_word_embeddings: bool | None = None  # None: the decoder config's setting
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        warn_unknown_keys(type(self), kwargs)
        towers = tuple(m.config_key for m in MODALITIES.values())
        if all(getattr(self, key) is None for key in towers) and self.decoder_config is None:
            for key in (*(MODALITIES[m].config_key for m in BASE_MODALITY_NAMES), "decoder_config"):
                setattr(self, key, TOWER_CONFIG_CLASSES[key]())
        for key in (*towers, "decoder_config"):
            setattr(self, key, _as_config(key, getattr(self, key)))
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = bool(getattr(self.decoder_config, "tie_word_embeddings", False))
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(self.loss_weights or {})}
        super().__post_init__(**kwargs)
        self._validate()

    # `sub_configs` lets `transformers` walk the towers (attention implementation, dtype, ...).
    @property
    def sub_configs(self):
        return {key: type(getattr(self, key)) for key in TOWER_CONFIG_CLASSES if getattr(self, key) is not None}

    @property
    def modalities(self):
        """The modalities present, in a fixed order."""
        return [m.name for m in MODALITIES.values() if getattr(self, m.config_key) is not None]

    def get_text_config(self, decoder=None, encoder=None):
        """The decoder's config for the text a model writes (`decoder=True`), the text tower's for the text it reads
        (`encoder=True`). Unqualified, a head with a decoder (`is_encoder_decoder`) means the decoder's: generation
        sizes scores by its `vocab_size` and `resize_token_embeddings` records the new size there."""
        wants_decoder = decoder or (not encoder and self.is_encoder_decoder)
        if wants_decoder and self.decoder_config is not None:
            return self.decoder_config
        return self.text_config if self.text_config is not None else self

    def _validate(self):
        _check_choice(self, "fusion_type", set(FUSION_TYPES))
        _check_choice(self, "fusion_pooling", set(FUSION_POOLINGS))
        _check_choice(self, "contrastive_loss", set(CONTRASTIVE_LOSSES))
        _check_positive(self, "projection_dim", "fusion_hidden_size", "fusion_num_layers",
                        "fusion_num_attention_heads", "fusion_intermediate_size")
        _check_probability(self, "classifier_dropout")
        _check_heads(self, "fusion_hidden_size", "fusion_num_attention_heads")
        unknown = set(self.loss_weights) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"XModalConfig.loss_weights has unknown parts {sorted(unknown)}; allowed: {sorted(DEFAULT_LOSS_WEIGHTS)}."
            )
        for name, weight in self.loss_weights.items():
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"XModalConfig.loss_weights[{name!r}]={weight!r} must be a number >= 0.")
        if isinstance(self.video_sync_max_offset, bool) or not isinstance(self.video_sync_max_offset, int) or \
                self.video_sync_max_offset < 1:
            raise ValueError(f"XModalConfig.video_sync_max_offset={self.video_sync_max_offset!r} must be an int >= 1 "
                             "(frames each way).")
        self._validate_video()
        if self.decoder_config is not None and self.text_config is not None:
            text_vocab = getattr(self.text_config, "vocab_size", None)
            if text_vocab is not None and self.decoder_config.vocab_size < text_vocab and (
                is_own_config(self.text_config)
            ):
                raise ValueError(
                    f"XModalConfig.decoder_config.vocab_size={self.decoder_config.vocab_size} is smaller than "
                    f"text_config.vocab_size={text_vocab}; the decoder writes the same tokens, so it must be >= it."
                )

    def _validate_video(self):
        """The video tower has one frame encoder: its own (`video_config.frame_config`) or the vision tower."""
        video, vision = MODALITIES["video"], MODALITIES["image"]
        video_config = getattr(self, video.config_key)
        if video_config is not None and not is_own_config(video_config, XModalVideoConfig):
            raise ValueError(f"XModalConfig.{video.config_key} must be an XModalVideoConfig (model_type "
                             f"{XModalVideoConfig.model_type!r}), got model_type {video_config.model_type!r}; a "
                             "pretrained image model can encode the frames: as frame_config, or as the shared "
                             "vision tower.")
        if not isinstance(self.share_vision_tower, bool):
            raise ValueError(f"XModalConfig.share_vision_tower={self.share_vision_tower!r} must be true or false.")
        if self.share_vision_tower:
            if video_config is None:
                raise ValueError(f"XModalConfig.share_vision_tower=True but {video.config_key} is None: only a video "
                                 "tower shares the vision tower; set video_config or share_vision_tower=False.")
            if getattr(self, vision.config_key) is None:
                raise ValueError(f"XModalConfig.share_vision_tower=True needs a vision tower to share, but "
                                 f"{vision.config_key} is None; set it, or give {video.config_key}.frame_config.")
            if getattr(video_config, "frame_config", None) is not None:
                raise ValueError(f"XModalConfig.share_vision_tower=True runs frames through the vision tower (frames "
                                 f"of its image size), so {video.config_key}.frame_config must be None; got a "
                                 f"{type(video_config.frame_config).__name__}. Set one of the two.")
        elif video_config is not None and is_own_config(video_config) and video_config.frame_config is None:
            raise ValueError(f"XModalConfig.{video.config_key}.frame_config is None: give the frame encoder's config "
                             "(e.g. XModalVisionConfig(encoder_type='cnn', ...)) or share_vision_tower=True to run "
                             "frames through the vision tower.")


__all__ = [
    "XModalAudioConfig",
    "XModalConfig",
    "XModalDecoderConfig",
    "XModalTextConfig",
    "XModalVideoConfig",
    "XModalVisionConfig",
]
