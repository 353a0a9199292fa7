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
from .input_checks import check_model_inputs
from .losses import CONTRASTIVE_LOSSES, hardest_negatives, sample_hard_negatives
from .modalities import MODALITIES, PART_CONFIG_KEYS
from .modeling_outputs import XModalOutput, XModalTowerOutput, finish, output_options
from .towers import (
    HeInitConv2d,
    XModalPretrainedTower,
    XModalVisionCNN,
    XModalVisionTransformer,
    build_tower,
    call_tower,
    tower_output_size,
)

logger = logging.get_logger(__name__)

# Logit names per ordered pair (rows, columns); image-text keeps CLIP's names.
PAIR_LOGITS = {
    ("image", "text"): ("logits_per_image", "logits_per_text"),
    ("audio", "text"): ("logits_audio_text", "logits_text_audio"),
    ("image", "audio"): ("logits_image_audio", "logits_audio_image"),
}


def collect_inputs(config, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                   feature_attention_mask=None, token_type_ids=None, paired=True):
    """Checks which modalities a call has and, when the rows are `paired` samples, that they agree on the
    batch size; returns {modality: inputs}. Unpaired calls (scoring one image against many captions)
    may have any sizes."""
    given = {"text": input_ids, "image": pixel_values, "audio": input_features}
    present = {m: v for m, v in given.items() if v is not None}
    if not present:
        raise ValueError(
            "No modality given: pass at least one of `input_ids` (text), `pixel_values` (images) or "
            f"`input_features` (log-mel audio). This model has {config.modalities}."
        )
    for modality in present:
        if getattr(config, MODALITIES[modality].config_key) is None:
            raise ValueError(
                f"Got `{MODALITIES[modality].main_input}` but this model has no {modality} tower "
                f"({MODALITIES[modality].config_key}=None); it takes "
                f"{[MODALITIES[m].main_input for m in config.modalities]}."
            )
    check_model_inputs(config, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                       pixel_values=pixel_values, input_features=input_features,
                       feature_attention_mask=feature_attention_mask)
    sizes = {MODALITIES[m].main_input: v.shape[0] for m, v in present.items()}
    if paired and len(set(sizes.values())) > 1:
        raise ValueError(f"All modalities must have the same batch size; got {sizes}.")
    inputs = {}
    if input_ids is not None:
        inputs["text"] = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    if pixel_values is not None:
        inputs["image"] = {"pixel_values": pixel_values}
    if input_features is not None:
        inputs["audio"] = {"input_features": input_features, "feature_attention_mask": feature_attention_mask}
    return inputs


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


def take_rows(output: XModalTowerOutput, index):
    """The rows `index` of a tower output (for pairing samples with sampled negatives)."""
    mask = output.attention_mask
    return XModalTowerOutput(last_hidden_state=output.last_hidden_state[index],
                             pooler_output=output.pooler_output[index],
                             attention_mask=None if mask is None else mask[index])


class XModalPreTrainedModel(PreTrainedModel):
    config_class = XModalConfig
    base_model_prefix = "xmodal"
    main_input_name = "input_ids"
    input_modalities = ("image", "text", "audio")
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
            sub_config = getattr(config, key)
            if is_own_config(sub_config):
                requested = sub_config._attn_implementation
                sub_config._attn_implementation_internal = (
                    config._attn_implementation if requested is None
                    else self._check_and_adjust_attn_implementation(requested, is_init_check=True))

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
        if all(configs.get(m.config_key) is None for m in MODALITIES.values()):
            raise ValueError("from_towers_pretrained needs at least one of text=, vision=, audio=.")
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
            raise ValueError("XModalConfig has no tower: set at least one of text_config, vision_config, audio_config.")
        self.tower_sizes = {}
        for modality in config.modalities:
            spec = MODALITIES[modality]
            tower_config = getattr(config, spec.config_key)
            setattr(self, spec.tower, build_tower(tower_config, modality))
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
        return {
            m: call_tower(getattr(self, MODALITIES[m].tower), m, kwargs, output_attentions, output_hidden_states)
            for m, kwargs in inputs.items()
        }

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
        output = call_tower(getattr(self, MODALITIES[modality].tower), modality, inputs, output_attentions,
                            output_hidden_states)
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

    def contrastive_loss(self, embeds):
        """Mean of the configured contrastive loss over every pair of modalities present."""
        loss_fn = CONTRASTIVE_LOSSES[self.config.contrastive_loss]
        extra = (self.logit_bias,) if self.config.contrastive_loss == "sigmoid" else ()
        losses = [loss_fn(embeds[a], embeds[b], self.logit_scale, *extra) for a, b in PAIR_LOGITS
                  if a in embeds and b in embeds]
        if not losses:
            raise ValueError("A contrastive loss needs two modalities; got only " + ", ".join(embeds) + ".")
        return torch.stack(losses).mean()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, return_loss=None, output_attentions=None,
                output_hidden_states=None, return_dict=None) -> XModalOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        # Without a loss, rows need not be pairs: N captions may be scored against one image (as CLIP allows).
        inputs = collect_inputs(self.config, input_ids, attention_mask, pixel_values, input_features,
                                feature_attention_mask, token_type_ids, paired=bool(return_loss))
        towers = self.encode_towers(inputs, output_attentions, output_hidden_states)
        embeds = {m: self.project(m, out) for m, out in towers.items()}
        logits = {}
        for (rows, columns), (name, transposed_name) in PAIR_LOGITS.items():
            if rows in embeds and columns in embeds:
                matrix = self.similarity(embeds[rows], embeds[columns])
                logits[name], logits[transposed_name] = matrix, matrix.t()
        loss = self.contrastive_loss(embeds) if return_loss else None
        return finish(XModalOutput(
            loss=loss, **logits,
            text_embeds=embeds.get("text"), image_embeds=embeds.get("image"), audio_embeds=embeds.get("audio"),
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
                token_type_ids=None, output_attentions=False, output_hidden_states=False):
        inputs = collect_inputs(self.config, input_ids, attention_mask, pixel_values, input_features,
                                feature_attention_mask, token_type_ids)
        return self.xmodal.encode_towers(inputs, bool(output_attentions), bool(output_hidden_states))


def matching_pairs(modalities):
    """The pairs a matching head scores: image-text and audio-text, or image-audio when there is no text."""
    pairs = [(a, "text") for a in ("image", "audio") if a in modalities and "text" in modalities]
    if not pairs and "image" in modalities and "audio" in modalities:
        pairs = [("image", "audio")]
    return pairs


def hard_negative_matching(model, towers, embeds):
    """ITM with in-batch hard negatives for every matching pair: for each sample, one positive pair and two
    negatives, the other side drawn by the similarity of the normalised `embeds` (in `eval()` the most similar one,
    so that an evaluation loss does not change from run to run). The rows are the positive pairs sample by sample
    (a sample's rows do not depend on the rest of the batch), then the negatives. Returns (logits, labels)."""
    choose = sample_hard_negatives if model.training else hardest_negatives
    positives, negatives = [], []
    for a, b in matching_pairs(towers):
        similarity = embeds[a] @ embeds[b].t()
        negatives_for_a = choose(similarity)
        positives.append(model.fusion({a: towers[a], b: towers[b]}).pooler_output)
        if negatives_for_a is not None:
            negatives_for_b = choose(similarity.t())
            negatives.append(model.fusion({a: towers[a], b: take_rows(towers[b], negatives_for_a)}).pooler_output)
            negatives.append(model.fusion({a: take_rows(towers[a], negatives_for_b), b: towers[b]}).pooler_output)
    positives = torch.stack(positives, dim=1).flatten(0, 1)
    logits = model.itm_head(torch.cat([positives, *negatives]))
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    labels[:positives.shape[0]] = 1
    return logits, labels


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
               "modeling_base.py", "modeling_outputs.py", "modeling_xmodal.py", "towers.py")
