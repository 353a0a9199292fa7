"""The base of every XModal model: input checks, the `PreTrainedModel` base (weights, saving, composing from
pretrained towers), `XModalModel` (towers and projections into one embedding space) and what the heads share.
The heads are in `modeling_xmodal.py`."""

import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import logging

from .configuration_xmodal import TOWER_CONFIG_CLASSES, XModalConfig, is_own_config
from .fusion import FUSION_LAYERS, CrossAttentionFusion, _FusionBase, build_fusion
from .input_checks import check_caption_hashes, collect_inputs
from .losses import CONTRASTIVE_LOSSES, caption_overlaps, gather_all_with_grad, overlaps_both_ways
from .modalities import MODALITIES, PART_CONFIG_KEYS
from .modeling_outputs import XModalOutput, XModalTowerOutput, XModalVideoFrameOutput, finish, output_options
from .towers import (
    HeInitConv2d,
    XModalPretrainedTower,
    XModalVisionCNN,
    XModalVisionTransformer,
    build_tower,
    call_tower,
    tower_output_size,
)
from .video_tower import XModalVideoTransformer, shared_frame_features

logger = logging.get_logger(__name__)

# Logit names per ordered pair (rows, columns); image-text keeps CLIP's names. Every pair present takes part in the
# contrastive loss; the matching head scores the pairs with text, or all pairs when there is no text.
PAIR_LOGITS = {
    ("image", "text"): ("logits_per_image", "logits_per_text"),
    ("audio", "text"): ("logits_audio_text", "logits_text_audio"),
    ("image", "audio"): ("logits_image_audio", "logits_audio_image"),
    ("video", "text"): ("logits_video_text", "logits_text_video"),
    ("video", "image"): ("logits_video_image", "logits_image_video"),
    ("video", "audio"): ("logits_video_audio", "logits_audio_video"),
}


class DecoderBridge(nn.Linear):
    """Maps a tower's token states to a pretrained decoder's width; starts as the identity where they agree."""


def whisper_prompt_ids(model):
    """The tokens Whisper reads after <|startoftranscript|> to transcribe English without timestamps."""
    from transformers import GenerationConfig

    generation = getattr(model, "generation_config", None)
    if getattr(generation, "no_timestamps_token_id", None) is None and model.config.name_or_path:
        try:  # a bare WhisperModel does not load the folder's generation config
            generation = GenerationConfig.from_pretrained(model.config.name_or_path)
        except OSError:
            generation = None
    no_timestamps = getattr(generation, "no_timestamps_token_id", None)
    if no_timestamps is None:
        return None
    prompt = []
    if getattr(generation, "is_multilingual", False):
        prompt += [generation.lang_to_id["<|en|>"], generation.task_to_id["transcribe"]]
    return prompt + [no_timestamps]


class XModalPreTrainedModel(PreTrainedModel):
    config_class = XModalConfig
    base_model_prefix = "xmodal"
    main_input_name = "input_ids"
    input_modalities = ("image", "text", "audio", "video")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # A fusion joins the tokens of several towers with its own learned vectors: it stays on one device.
    _no_split_modules = ["XModalEncoderLayer", *(fusion.__name__ for fusion in FUSION_LAYERS.values())]
    # `forward` takes no loss kwargs: the Trainer must not rescale the loss by the number of items.
    accepts_loss_kwargs = False
    # What `post_init` writes to `config.is_encoder_decoder` (see `XModalConfig`): True for the heads with a decoder.
    head_is_encoder_decoder = False

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # `PreTrainedModel` resolves the attention implementation on the top-level config only. xmodal's own tower
        # and decoder configs keep one asked for them (`attn_implementation={"text_config": "eager", ...}`) and
        # otherwise follow the top level; wrapped `transformers` towers resolve their own.
        for key in TOWER_CONFIG_CLASSES:
            self._resolve_attention(getattr(config, key), config._attn_implementation)

    def _resolve_attention(self, sub_config, default):
        """An xmodal sub-config keeps the implementation asked for it, else `default`; so do its own sub-configs
        (the video tower's frame encoder), defaulting to it."""
        if not is_own_config(sub_config):
            return
        requested = sub_config._attn_implementation
        sub_config._attn_implementation_internal = (
            default if requested is None else self._check_and_adjust_attn_implementation(requested, is_init_check=True))
        for key in sub_config.sub_configs:
            self._resolve_attention(getattr(sub_config, key), sub_config._attn_implementation)

    def post_init(self):
        """As `PreTrainedModel.post_init`; also makes `config.is_encoder_decoder` describe this head. A head builds
        its base model (`self.xmodal`) first, so the outermost model's `post_init` has the last word."""
        self.config.is_encoder_decoder = self.head_is_encoder_decoder
        super().post_init()

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """As `PreTrainedModel.resize_token_embeddings`, of the vocabulary `get_input_embeddings` names. A built-in
        text tower and a decoder of the same vocabulary size read and write one tokenizer's tokens (as BART's shared
        embeddings): the other one follows, so that the config keeps describing one vocabulary."""
        config = self.config
        shared = (config.decoder_config is not None and is_own_config(config.text_config)
                  and config.text_config.vocab_size == config.decoder_config.vocab_size)
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if shared:
            self._follow_vocabulary(embeddings.num_embeddings, mean_resizing)
        return embeddings

    def _follow_vocabulary(self, size, mean_resizing):
        """After the text tower's vocabulary is resized: a model without a decoder updates the decoder's config."""
        self.config.decoder_config.vocab_size = size

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; a damaged or incomplete weights file is an `OSError` naming it
        (safetensors alone says only "incomplete metadata")."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(f"{pretrained_model_name_or_path}: a model.safetensors file there cannot be read ({error}); "
                          "it is damaged or incomplete (an interrupted copy or download?): save or fetch it again."
                          ) from error

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights (safetensors) and config; the config's `auto_map` names every head, so any
        `AutoModel...` class loads the checkpoint with `trust_remote_code=True`."""
        self.config.auto_map = dict(AUTO_MAP)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            here = Path(__file__).parent
            for name in MODEL_FILES:
                shutil.copyfile(here / name, Path(save_directory) / name)
        return result

    def _init_weights(self, module):
        if isinstance(module, DecoderBridge):
            # Identity where the widths agree: a pretrained decoder then reads its own encoder's states as is.
            if module.in_features == module.out_features:
                init.eye_(module.weight)
            else:
                init.normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)
            return
        if isinstance(module, HeInitConv2d):
            # As for ResNets: at std=0.02 these GroupNorm'd convolutions start so small that Adam's
            # fixed-size steps swamp them, and the CNN barely learns.
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            return
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, XModalVisionTransformer):
            init.normal_(module.class_embedding, std=std)
            init.normal_(module.embed_positions, std=std)
        elif isinstance(module, XModalVisionCNN):
            if module.class_embedding is not None:
                init.normal_(module.class_embedding, std=std)
            if module.embed_positions is not None:
                init.normal_(module.embed_positions, std=std)
        elif isinstance(module, _FusionBase):
            for parameter in getattr(module, "modality_embeddings", {}).values():
                init.normal_(parameter, std=std)
            if isinstance(module, CrossAttentionFusion):
                init.normal_(module.fuse_token, std=std)
                # Fan-in scaled (std 1/sqrt(in_features)) rather than 0.02: at 0.02 the attention logits start near
                # zero, every query reads the same average of the context, and a matching head on the fused vector
                # sat at its prior for a whole pretrained.yaml run (trainers/README.md, "Pretrained towers").
                for linear in module.modules():
                    if isinstance(linear, nn.Linear):
                        init.normal_(linear.weight, std=linear.in_features ** -0.5)
        elif isinstance(module, XModalModel) and module.logit_scale is not None:
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            if module.logit_bias is not None:
                init.constant_(module.logit_bias, self.config.logit_bias_init_value)


    @classmethod
    def from_towers_pretrained(cls, text=None, vision=None, audio=None, decoder=None, **config_kwargs):
        """Composes a model from saved `transformers` models (local folders or hub ids) and/or tower configs.

        Each of `text`, `vision`, `audio` is a path or a loaded `PreTrainedModel` (its pretrained weights are
        used; of an encoder-decoder, only the encoder), a config (a tower trained from scratch), or None (the
        modality is absent). `decoder` (heads with a decoder) is likewise a Whisper path or model, whose
        decoder and LM head become the text decoder, or a decoder config. The projections, fusion and heads
        start fresh.
        """
        towers, configs = {}, {}
        for modality, source in (("text", text), ("image", vision), ("audio", audio), ("decoder", decoder)):
            key = PART_CONFIG_KEYS[modality]
            if source is None or isinstance(source, (dict, PreTrainedConfig)):
                if source is not None or key not in config_kwargs:
                    configs[key] = source
                continue
            pretrained = source if isinstance(source, PreTrainedModel) else AutoModel.from_pretrained(source)
            towers[modality] = pretrained
            configs[key] = pretrained.config
        configs.update({k: config_kwargs.pop(k) for k in list(config_kwargs) if k == "decoder_config"})
        if all(configs.get(m.config_key, config_kwargs.get(m.config_key)) is None for m in MODALITIES.values()):
            raise ValueError("from_towers_pretrained needs at least one of text=, vision=, audio= (or video_config=).")
        if "decoder" in towers:
            config_kwargs.setdefault("decoder_prompt_ids", whisper_prompt_ids(towers["decoder"]))
        config = XModalConfig(**configs, **config_kwargs)
        model = cls(config)
        base = getattr(model, model.base_model_prefix, model)
        for modality, pretrained in towers.items():
            if modality == "decoder":
                if not hasattr(model, "decoder"):
                    raise ValueError(f"{cls.__name__} has no decoder; decoder= is for the heads that write text.")
                model.decoder = pretrained.get_decoder()
                model.tie_weights()
                continue
            tower = XModalPretrainedTower(pretrained.config, modality, model=pretrained)
            setattr(base, MODALITIES[modality].tower, tower)
        return model


class XModalModel(XModalPreTrainedModel):
    """Towers and projections into one embedding space, with CLIP-style logits for every pair present.

    `add_projections=False` builds the towers alone, for the heads that never use the shared space (as
    `BertModel(config, add_pooling_layer=False)` leaves out the pooler): under DDP every parameter must get a gradient.
    """

    def __init__(self, config: XModalConfig, add_projections=True):
        super().__init__(config)
        if not config.modalities:
            raise ValueError("XModalConfig has no tower: set at least one of "
                             f"{', '.join(m.config_key for m in MODALITIES.values())}.")
        self.tower_sizes = {}
        for modality in config.modalities:
            spec = MODALITIES[modality]
            tower_config = getattr(config, spec.config_key)
            if spec.built_on is None:
                tower = build_tower(tower_config, modality)
            else:  # the video tower: its own frame encoder, or the vision tower's pooled width when it shares it
                shared = self.tower_sizes[spec.built_on] if config.share_vision_tower else None
                tower = XModalVideoTransformer(tower_config, shared_frame_width=shared)
            setattr(self, spec.tower, tower)
            self.tower_sizes[modality] = tower_output_size(tower_config)
            if add_projections:
                setattr(self, spec.projection,
                        nn.Linear(self.tower_sizes[modality], config.projection_dim, bias=False))
        self.has_projections = add_projections
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value)) if add_projections else None
        self.logit_bias = (
            nn.Parameter(torch.tensor(config.logit_bias_init_value))
            if add_projections and config.contrastive_loss == "sigmoid" else None
        )
        self.post_init()

    def get_input_embeddings(self):
        """The text tower's token embeddings (None without a text tower)."""
        tower = getattr(self, "text_model", None)
        if tower is None:
            return None
        return tower.model.get_input_embeddings() if isinstance(tower, XModalPretrainedTower) else tower.embed_tokens

    def set_input_embeddings(self, value):
        tower = getattr(self, "text_model", None)
        if tower is None:
            raise ValueError("This model has no text tower (text_config=None), so no token embeddings to set.")
        if isinstance(tower, XModalPretrainedTower):
            tower.model.set_input_embeddings(value)
        else:
            tower.embed_tokens = value

    def encode_towers(self, inputs, output_attentions=False, output_hidden_states=False):
        """Runs the tower of every modality in `inputs` (from `collect_inputs`)."""
        return {m: self.run_tower(m, kwargs, output_attentions, output_hidden_states) for m, kwargs in inputs.items()}

    def run_tower(self, modality, inputs, output_attentions=False, output_hidden_states=False):
        """One modality's tower on its inputs; for a tower built on another that it shares (video, with
        `share_vision_tower`), that one encodes the frames first."""
        spec, extra = MODALITIES[modality], {}
        if spec.built_on is not None and self.config.share_vision_tower:
            extra["frame_features"] = shared_frame_features(getattr(self.config, spec.config_key),
                                                            getattr(self, MODALITIES[spec.built_on].tower), **inputs)
        return call_tower(getattr(self, spec.tower), modality, inputs, output_attentions, output_hidden_states,
                          **extra)

    def _projection(self, modality):
        """The projection of `modality` into the shared space."""
        if not self.has_projections:
            raise ValueError("This XModalModel has no projections into the shared space: it is the base of a head that "
                             "does not use them. Load the checkpoint as XModalModel for embeddings and similarities.")
        return getattr(self, MODALITIES[modality].projection)

    def project(self, modality, tower_output):
        """L2-normalised embedding of a tower output in the shared space."""
        return F.normalize(self._projection(modality)(tower_output.pooler_output), dim=-1)

    def _features(self, modality, inputs, output_attentions=False, output_hidden_states=False):
        projection = self._projection(modality)
        output = self.run_tower(modality, inputs, output_attentions, output_hidden_states)
        output.pooler_output = projection(output.pooler_output)
        return output

    def _get_features(self, modality, output_attentions, output_hidden_states, return_dict, **inputs):
        attentions, hidden_states, return_dict = output_options(self.config, output_attentions,
                                                                output_hidden_states, return_dict)
        inputs = collect_inputs(self.config, **inputs)
        return finish(self._features(modality, inputs[modality], attentions, hidden_states), return_dict)

    # As `CLIPModel.get_*_features`: the tower output (with hidden states and attentions when asked), its
    # `pooler_output` the projected (not normalised) embedding; a tuple when `return_dict=False`.
    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=None,
                          output_hidden_states=None, return_dict=None) -> XModalTowerOutput:
        """Text tower output whose `pooler_output` is the projected (not normalised) text embedding."""
        return self._get_features("text", output_attentions, output_hidden_states, return_dict, input_ids=input_ids,
                                  attention_mask=attention_mask, token_type_ids=token_type_ids)

    def get_image_features(self, pixel_values, output_attentions=None, output_hidden_states=None,
                           return_dict=None) -> XModalTowerOutput:
        """Vision tower output whose `pooler_output` is the projected (not normalised) image embedding."""
        return self._get_features("image", output_attentions, output_hidden_states, return_dict,
                                  pixel_values=pixel_values)

    def get_audio_features(self, input_features, feature_attention_mask=None, output_attentions=None,
                           output_hidden_states=None, return_dict=None) -> XModalTowerOutput:
        """Audio tower output whose `pooler_output` is the projected (not normalised) audio embedding."""
        return self._get_features("audio", output_attentions, output_hidden_states, return_dict,
                                  input_features=input_features, feature_attention_mask=feature_attention_mask)

    def get_video_features(self, pixel_values_videos, video_frame_mask=None, video_timestamps=None,
                           output_attentions=None, output_hidden_states=None, return_dict=None) -> XModalTowerOutput:
        """Video tower output (`last_hidden_state`: one state per frame) whose `pooler_output` is the projected (not
        normalised) clip embedding."""
        return self._get_features("video", output_attentions, output_hidden_states, return_dict,
                                  pixel_values_videos=pixel_values_videos, video_frame_mask=video_frame_mask,
                                  video_timestamps=video_timestamps)

    def get_video_frame_features(self, pixel_values_videos, video_frame_mask=None, video_timestamps=None,
                                 normalize=True) -> XModalVideoFrameOutput:
        """Every frame of every clip in the shared space, for finding where in a video an image or a sentence
        belongs: score them with `similarity(frame_embeds[i], embeds)` and read the time from `video_timestamps`.

        A frame's embedding is its state after the temporal Transformer (it has seen the other frames) through the
        video projection; with mean pooling, the clip's unnormalised embedding is the mean of its real frames'.
        L2-normalised in float32 unless `normalize=False`, as `get_embeddings`; padding frames are zero vectors.
        """
        inputs = collect_inputs(self.config, pixel_values_videos=pixel_values_videos,
                                video_frame_mask=video_frame_mask, video_timestamps=video_timestamps)
        output = self.run_tower("video", inputs["video"])
        projection = self._projection("video")
        frames, clips = projection(output.last_hidden_state), projection(output.pooler_output)
        if normalize:
            frames, clips = F.normalize(frames.float(), dim=-1), F.normalize(clips.float(), dim=-1)
        if video_frame_mask is not None:
            frames = frames * video_frame_mask.unsqueeze(-1).to(frames.dtype)
        return XModalVideoFrameOutput(frame_embeds=frames, video_embeds=clips, video_frame_mask=video_frame_mask,
                                      video_timestamps=video_timestamps)

    def get_embeddings(self, normalize=True, **inputs):
        """{modality: embedding in the shared space} for every modality whose inputs are given (by their
        `forward` names; other keys, such as `labels`, are ignored). L2-normalised in float32 unless
        `normalize=False`. Rows need not be pairs. Evaluation and the demo embed through this method."""
        names = {name for spec in MODALITIES.values() for name in spec.inputs}
        present = collect_inputs(self.config, paired=False, **{k: v for k, v in inputs.items() if k in names})
        embeds = {}
        for modality, kwargs in present.items():
            embedding = self._features(modality, kwargs).pooler_output
            embeds[modality] = F.normalize(embedding.float(), dim=-1) if normalize else embedding
        return embeds

    def similarity(self, rows, columns):
        """CLIP-style logits of normalised embeddings: every row of `rows` against every row of `columns`."""
        logits = self.logit_scale.exp() * rows @ columns.t()
        return logits + self.logit_bias if self.logit_bias is not None else logits

    def contrastive_loss(self, embeds, caption_hashes=None, true_caption_hashes=None):
        """Mean of the configured contrastive loss over every pair of modalities present. With the hashes of each
        sample's caption and of every caption true of its scene, other samples that match are not negatives."""
        loss_fn = CONTRASTIVE_LOSSES[self.config.contrastive_loss]
        extra = (self.logit_bias,) if self.config.contrastive_loss == "sigmoid" else ()
        overlaps = None
        if caption_hashes is not None:
            batch = next(iter(embeds.values())).shape[0]
            if caption_hashes.shape[0] != batch:
                raise ValueError(f"`caption_hashes` has {caption_hashes.shape[0]} rows for a batch of {batch}: "
                                 "give one per sample.")
            overlaps = caption_overlaps(caption_hashes, true_caption_hashes)
        pairs = [(a, b) for a, b in PAIR_LOGITS if a in embeds and b in embeds]
        gathered = gather_all_with_grad({m: embeds[m] for pair in pairs for m in pair})  # one collective
        losses = [loss_fn(embeds[a], embeds[b], self.logit_scale, *extra, overlaps=overlaps_both_ways(
                      overlaps, MODALITIES[a].says_caption, MODALITIES[b].says_caption),
                          gathered=(gathered[a], gathered[b]))
                  for a, b in pairs]
        if not losses:
            raise ValueError("A contrastive loss needs two modalities; got only " + ", ".join(embeds) + ".")
        return torch.stack(losses).mean()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, return_loss=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, pixel_values_videos=None, video_frame_mask=None,
                video_timestamps=None, caption_hashes=None, true_caption_hashes=None) -> XModalOutput:
        """`caption_hashes` (batch,) and `true_caption_hashes` (batch, k; -1 pads), int64 hashes of what each sample's
        text says and of every caption true of its scene (`xmodal.trainers` makes them from the data's captions):
        with them the contrastive loss does not count as negatives the other samples that match all the same."""
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        check_caption_hashes(caption_hashes, true_caption_hashes)
        # Without a loss, rows need not be pairs: N captions may be scored against one image (as CLIP allows).
        inputs = collect_inputs(
            self.config, paired=bool(return_loss), input_ids=input_ids, attention_mask=attention_mask,
            pixel_values=pixel_values, input_features=input_features, feature_attention_mask=feature_attention_mask,
            token_type_ids=token_type_ids, pixel_values_videos=pixel_values_videos, video_frame_mask=video_frame_mask,
            video_timestamps=video_timestamps)
        towers = self.encode_towers(inputs, output_attentions, output_hidden_states)
        embeds = {m: self.project(m, out) for m, out in towers.items()}
        logits = {}
        for (rows, columns), (name, transposed_name) in PAIR_LOGITS.items():
            if rows in embeds and columns in embeds:
                matrix = self.similarity(embeds[rows], embeds[columns])
                logits[name], logits[transposed_name] = matrix, matrix.t()
        loss = self.contrastive_loss(embeds, caption_hashes, true_caption_hashes) if return_loss else None
        return finish(XModalOutput(
            loss=loss, **logits, **{f"{m}_embeds": embeds.get(m) for m in MODALITIES},
            **{MODALITIES[m].output: out for m, out in towers.items()},
        ), return_dict)


# The weights of the shared embedding space, which heads that do not use it leave out and ignore when they load a
# checkpoint that has them (as `BertForTokenClassification` ignores BERT's pooler).
EMBEDDING_SPACE_KEYS = [rf"(^|\.){m.projection}\." for m in MODALITIES.values()] + [r"(^|\.)logit_(scale|bias)$"]


class _XModalHeadModel(XModalPreTrainedModel):
    """Shared parts of the heads: the base model (`self.xmodal`) and a fusion module."""

    # Heads that decode attend to the fused token sequence; the others use only the pooled vector.
    fuses_sequence = False
    # Whether the head's loss uses the shared embedding space (projections and logit scale); the others do not build it.
    uses_embedding_space = False
    _keys_to_ignore_on_load_unexpected = EMBEDDING_SPACE_KEYS

    def __init__(self, config):
        super().__init__(config)
        self.xmodal = XModalModel(config, add_projections=self.uses_embedding_space)
        self.fusion = build_fusion(config, self.xmodal.tower_sizes, with_sequence=self.fuses_sequence)

    def get_input_embeddings(self):
        return self.xmodal.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.xmodal.set_input_embeddings(value)

    def _towers(self, input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                token_type_ids=None, output_attentions=False, output_hidden_states=False, pixel_values_videos=None,
                video_frame_mask=None, video_timestamps=None):
        inputs = collect_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            input_features=input_features, feature_attention_mask=feature_attention_mask,
            token_type_ids=token_type_ids, pixel_values_videos=pixel_values_videos, video_frame_mask=video_frame_mask,
            video_timestamps=video_timestamps)
        return self.xmodal.encode_towers(inputs, bool(output_attentions), bool(output_hidden_states))


# Auto class -> "module.Class" for the config's `auto_map` (the code files travel with a checkpoint).
AUTO_MAP = {
    "AutoConfig": "configuration_xmodal.XModalConfig",
    "AutoModel": "modeling_xmodal.XModalModel",
    "AutoModelForZeroShotImageClassification": "modeling_xmodal.XModalModel",
    "AutoModelForPreTraining": "modeling_xmodal.XModalForPreTraining",
    "AutoModelForSequenceClassification": "modeling_xmodal.XModalForSequenceClassification",
    "AutoModelForSeq2SeqLM": "modeling_xmodal.XModalForConditionalGeneration",
    "AutoModelForSpeechSeq2Seq": "modeling_xmodal.XModalForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_xmodal.XModalForConditionalGeneration",
    # Image-text matching is the cross-modal sibling of next-sentence prediction: two logits, match or not.
    "AutoModelForNextSentencePrediction": "modeling_xmodal.XModalForMatching",
}
# The model files a checkpoint carries (its `auto_map` names classes in `modeling_xmodal.py`, which imports
# the rest); `transformers` copies only the file of the saved class and what that imports, so the base model
# would otherwise leave the heads' file behind.
MODEL_FILES = ("configuration_xmodal.py", "fusion.py", "input_checks.py", "layers.py", "losses.py", "modalities.py",
               "modeling_base.py", "modeling_ctc.py", "modeling_outputs.py", "modeling_video.py", "modeling_xmodal.py",
               "negatives.py", "spec_augment.py", "towers.py", "video_tower.py")
