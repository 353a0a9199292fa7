"""XModal models: towers + projections into one embedding space, fusion, and the task heads."""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import logging

from .configuration_xmodal import TOWER_CONFIG_CLASSES, XModalConfig, is_own_config
from .fusion import CrossAttentionFusion, _FusionBase, build_fusion
from .layers import XModalDecoder
from .losses import CONTRASTIVE_LOSSES, matching_loss, sample_hard_negatives, token_loss, weighted_total
from .modeling_outputs import (
    XModalEncoderOutput,
    XModalForPreTrainingOutput,
    XModalMatchingOutput,
    XModalOutput,
    XModalSeq2SeqLMOutput,
    XModalSequenceClassifierOutput,
    XModalTowerOutput,
)
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

TOWERS = {"text": "text_model", "image": "vision_model", "audio": "audio_model"}
PROJECTIONS = {"text": "text_projection", "image": "visual_projection", "audio": "audio_projection"}
CONFIG_KEYS = {"text": "text_config", "image": "vision_config", "audio": "audio_config"}
MODALITY_INPUTS = {"text": "input_ids", "image": "pixel_values", "audio": "input_features"}
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
        if getattr(config, CONFIG_KEYS[modality]) is None:
            raise ValueError(
                f"Got `{MODALITY_INPUTS[modality]}` but this model has no {modality} tower "
                f"({CONFIG_KEYS[modality]}=None); it takes {[MODALITY_INPUTS[m] for m in config.modalities]}."
            )
    sizes = {MODALITY_INPUTS[m]: v.shape[0] for m, v in present.items()}
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
    _no_split_modules = ["XModalEncoderLayer"]
    # `forward` takes no loss kwargs: the Trainer must not rescale the loss by the number of items.
    accepts_loss_kwargs = False

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # `PreTrainedModel` resolves the attention implementation on the top-level config only; xmodal's own
        # tower and decoder configs follow it (wrapped `transformers` towers resolve their own).
        for key in TOWER_CONFIG_CLASSES:
            sub_config = getattr(config, key)
            if is_own_config(sub_config):
                sub_config._attn_implementation_internal = config._attn_implementation

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights (safetensors) and config; the config's `auto_map` names every head, so any
        `AutoModel...` class loads the checkpoint with `trust_remote_code=True`."""
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)

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
        elif isinstance(module, XModalModel):
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
            key = CONFIG_KEYS.get(modality, "decoder_config")
            if source is None or isinstance(source, (dict, PreTrainedConfig)):
                if source is not None or key not in config_kwargs:
                    configs[key] = source
                continue
            pretrained = source if isinstance(source, PreTrainedModel) else AutoModel.from_pretrained(source)
            towers[modality] = pretrained
            configs[key] = pretrained.config
        configs.update({k: config_kwargs.pop(k) for k in list(config_kwargs) if k == "decoder_config"})
        if all(configs.get(CONFIG_KEYS[m]) is None for m in CONFIG_KEYS):
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
            setattr(base, TOWERS[modality], tower)
        return model


class XModalModel(XModalPreTrainedModel):
    """Towers and projections into one embedding space, with CLIP-style logits for every pair present."""

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        if not config.modalities:
            raise ValueError("XModalConfig has no tower: set at least one of text_config, vision_config, audio_config.")
        self.tower_sizes = {}
        for modality in config.modalities:
            tower_config = getattr(config, CONFIG_KEYS[modality])
            setattr(self, TOWERS[modality], build_tower(tower_config, modality))
            self.tower_sizes[modality] = tower_output_size(tower_config)
            setattr(self, PROJECTIONS[modality],
                    nn.Linear(self.tower_sizes[modality], config.projection_dim, bias=False))
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.logit_bias = (
            nn.Parameter(torch.tensor(config.logit_bias_init_value)) if config.contrastive_loss == "sigmoid" else None
        )
        self.post_init()

    def get_input_embeddings(self):
        tower = getattr(self, "text_model", None)
        if tower is None:
            return None
        return tower.model.get_input_embeddings() if isinstance(tower, XModalPretrainedTower) else tower.embed_tokens

    def encode_towers(self, inputs, output_attentions=False, output_hidden_states=False):
        """Runs the tower of every modality in `inputs` (from `collect_inputs`)."""
        return {
            m: call_tower(getattr(self, TOWERS[m]), m, kwargs, output_attentions, output_hidden_states)
            for m, kwargs in inputs.items()
        }

    def project(self, modality, tower_output):
        """L2-normalised embedding of a tower output in the shared space."""
        return F.normalize(getattr(self, PROJECTIONS[modality])(tower_output.pooler_output), dim=-1)

    def _features(self, modality, inputs):
        output = call_tower(getattr(self, TOWERS[modality]), modality, inputs)
        output.pooler_output = getattr(self, PROJECTIONS[modality])(output.pooler_output)
        return output

    def get_text_features(self, input_ids, attention_mask=None) -> XModalTowerOutput:
        """Text tower output whose `pooler_output` is the projected (not normalised) text embedding."""
        inputs = collect_inputs(self.config, input_ids=input_ids, attention_mask=attention_mask)
        return self._features("text", inputs["text"])

    def get_image_features(self, pixel_values) -> XModalTowerOutput:
        """Vision tower output whose `pooler_output` is the projected (not normalised) image embedding."""
        inputs = collect_inputs(self.config, pixel_values=pixel_values)
        return self._features("image", inputs["image"])

    def get_audio_features(self, input_features, feature_attention_mask=None) -> XModalTowerOutput:
        """Audio tower output whose `pooler_output` is the projected (not normalised) audio embedding."""
        inputs = collect_inputs(self.config, input_features=input_features,
                                feature_attention_mask=feature_attention_mask)
        return self._features("audio", inputs["audio"])

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
                output_hidden_states=None) -> XModalOutput:
        # Without a loss, rows need not be pairs: N captions may be scored against one image (as CLIP allows).
        inputs = collect_inputs(self.config, input_ids, attention_mask, pixel_values, input_features,
                                feature_attention_mask, token_type_ids, paired=bool(return_loss))
        towers = self.encode_towers(inputs, bool(output_attentions), bool(output_hidden_states))
        embeds = {m: self.project(m, out) for m, out in towers.items()}
        logits = {}
        scale = self.logit_scale.exp()
        for (rows, columns), (name, transposed_name) in PAIR_LOGITS.items():
            if rows in embeds and columns in embeds:
                matrix = scale * embeds[rows] @ embeds[columns].t()
                if self.logit_bias is not None:
                    matrix = matrix + self.logit_bias
                logits[name], logits[transposed_name] = matrix, matrix.t()
        loss = self.contrastive_loss(embeds) if return_loss else None
        return XModalOutput(
            loss=loss, **logits,
            text_embeds=embeds.get("text"), image_embeds=embeds.get("image"), audio_embeds=embeds.get("audio"),
            text_model_output=towers.get("text"), vision_model_output=towers.get("image"),
            audio_model_output=towers.get("audio"),
        )


class _XModalHeadModel(XModalPreTrainedModel):
    """Shared parts of the heads: the base model (`self.xmodal`) and a fusion module."""

    # Heads that decode attend to the fused token sequence; the others use only the pooled vector.
    fuses_sequence = False

    def __init__(self, config):
        super().__init__(config)
        self.xmodal = XModalModel(config)
        self.fusion = build_fusion(config, self.xmodal.tower_sizes, with_sequence=self.fuses_sequence)

    def get_input_embeddings(self):
        return self.xmodal.get_input_embeddings()

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


def hard_negative_matching(model, towers, embeds=None):
    """ITM with in-batch hard negatives for every matching pair: for each sample, one positive pair and
    two negatives (the other side drawn from the contrastive similarities). Returns (logits, labels)."""
    embeds = embeds or {m: model.xmodal.project(m, out) for m, out in towers.items()}
    all_logits, all_labels = [], []
    for a, b in matching_pairs(towers):
        similarity = embeds[a] @ embeds[b].t()
        negatives_for_a = sample_hard_negatives(similarity)
        batch = similarity.shape[0]
        positives = model.fusion({a: towers[a], b: towers[b]}).pooler_output
        pooled = [positives]
        if negatives_for_a is not None:
            negatives_for_b = sample_hard_negatives(similarity.t())
            pooled.append(model.fusion({a: towers[a], b: take_rows(towers[b], negatives_for_a)}).pooler_output)
            pooled.append(model.fusion({a: take_rows(towers[a], negatives_for_b), b: towers[b]}).pooler_output)
        logits = model.itm_head(torch.cat(pooled))
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:batch] = 1
        all_logits.append(logits)
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)


class XModalForMatching(_XModalHeadModel):
    """Binary match head on fused features (image-text, audio-text).

    Given `labels` (1 match, 0 no match) it scores the samples as paired; with `return_loss=True` and
    no labels it trains on in-batch hard negatives sampled from the contrastive similarities.
    """

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        if len(config.modalities) < 2:
            raise ValueError(f"XModalForMatching needs two modalities; the config has {config.modalities}.")
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, labels=None, return_loss=None,
                output_attentions=None, output_hidden_states=None) -> XModalMatchingOutput:
        towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                              token_type_ids, output_hidden_states=output_hidden_states)
        if len(towers) < 2:
            raise ValueError(f"Matching needs two modalities in a batch; got only {list(towers)}.")
        if labels is None and return_loss:
            logits, used_labels = hard_negative_matching(self, towers)
            return XModalMatchingOutput(loss=matching_loss(logits, used_labels), logits=logits, labels=used_labels,
                                        pair_modalities=tuple(towers))
        fusion_output = self.fusion(towers, output_attentions=bool(output_attentions))
        logits = self.itm_head(fusion_output.pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != (logits.shape[0],):
                raise ValueError(f"`labels` should have shape ({logits.shape[0]},) with values 0/1; "
                                 f"got {tuple(labels.shape)}.")
            loss = matching_loss(logits, labels.long())
        return XModalMatchingOutput(loss=loss, logits=logits, labels=labels, pair_modalities=tuple(towers),
                                    fusion_output=fusion_output)


class XModalForSequenceClassification(_XModalHeadModel):
    """Single-label, multi-label or regression head on the fused vector of the modalities given."""

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, labels=None, output_attentions=None,
                output_hidden_states=None) -> XModalSequenceClassifierOutput:
        towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                              token_type_ids, output_hidden_states=output_hidden_states)
        fusion_output = self.fusion(towers, output_attentions=bool(output_attentions))
        pooled = fusion_output.pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = self._loss(logits, labels) if labels is not None else None
        return XModalSequenceClassifierOutput(loss=loss, logits=logits, pooled_output=pooled,
                                              fusion_output=fusion_output)

    def _loss(self, logits, labels):
        batch, problem = logits.shape[0], self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if labels.numel() != batch:
                raise ValueError(f"`labels` for regression should have shape ({batch},); got {tuple(labels.shape)}.")
            return F.mse_loss(logits.squeeze(-1).float(), labels.reshape(batch).float())
        if problem == "single_label_classification":
            if labels.shape != (batch,):
                raise ValueError(f"`labels` for single-label classification should have shape ({batch},) with "
                                 f"class ids in [0, {self.num_labels}); got {tuple(labels.shape)}.")
            return F.cross_entropy(logits.float(), labels.long())
        if labels.shape != (batch, self.num_labels):
            raise ValueError(f"`labels` for multi-label classification should have shape ({batch}, "
                             f"{self.num_labels}) of 0/1; got {tuple(labels.shape)}.")
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def decoder_positions(decoder_config):
    """Longest sequence the decoder's position table covers (a Whisper decoder: max_target_positions)."""
    return getattr(decoder_config, "max_position_embeddings", None) or decoder_config.max_target_positions


def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: start token first, labels shifted right, -100 replaced by padding."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class _XModalDecoderHead(_XModalHeadModel):
    """Adds the text decoder and LM head (tied to the decoder's embeddings) to the base and fusion."""

    _tied_weights_keys = {"lm_head.weight": "decoder.embed_tokens.weight"}
    fuses_sequence = True

    def __init__(self, config):
        if config.decoder_config is None:
            raise ValueError(f"{type(self).__name__} needs `decoder_config` in XModalConfig; it is None. "
                             "Pass decoder_config=XModalDecoderConfig(...) (or a dict of its fields).")
        super().__init__(config)
        decoder_config = config.decoder_config
        if is_own_config(decoder_config):
            self.decoder = XModalDecoder(decoder_config, config.fusion_hidden_size)
            self.decoder_bridges = None
        else:
            # A pretrained (Whisper) decoder cross-attends to the tower states of the modality it writes from,
            # as it did to its own encoder's: through a bridge per modality, the identity for its encoder.
            self.decoder = AutoModel.from_config(decoder_config).get_decoder()
            width = tower_output_size(decoder_config)
            self.decoder_bridges = nn.ModuleDict({
                m: DecoderBridge(size, width) for m, size in self.xmodal.tower_sizes.items() if m != "text"
            })
        self.lm_head = nn.Linear(tower_output_size(decoder_config), decoder_config.vocab_size, bias=False)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def encode(self, towers, output_attentions=False):
        """The fused token states the decoder attends to (a pretrained decoder: the bridged tower states)."""
        if self.decoder_bridges is not None:
            present = [m for m in ("image", "audio") if towers.get(m) is not None]
            if not present:
                raise ValueError(f"A pretrained decoder writes from {list(self.decoder_bridges)}; got only "
                                 f"{[m for m in towers if towers[m] is not None]}.")
            states = torch.cat([self.decoder_bridges[m](towers[m].last_hidden_state) for m in present], dim=1)
            masks = [towers[m].attention_mask if towers[m].attention_mask is not None else torch.ones(
                towers[m].last_hidden_state.shape[:2], dtype=torch.long, device=states.device) for m in present]
            return XModalEncoderOutput(last_hidden_state=states, attention_mask=torch.cat(masks, dim=1))
        fused = self.fusion(towers, output_attentions=output_attentions)
        return XModalEncoderOutput(last_hidden_state=fused.last_hidden_state, attention_mask=fused.attention_mask,
                                   cross_attentions=fused.cross_attentions)

    def decode(self, encoder_outputs, labels=None, decoder_input_ids=None, decoder_attention_mask=None,
               cache=None, output_attentions=False, output_hidden_states=False):
        decoder_config = self.config.decoder_config
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, decoder_config.pad_token_id,
                                                   decoder_config.decoder_start_token_id)
        if decoder_input_ids is None:
            raise ValueError("The decoder needs `labels` or `decoder_input_ids`; got neither.")
        if self.decoder_bridges is None:
            states, hidden, self_attentions, cross_attentions = self.decoder(
                decoder_input_ids, encoder_outputs.last_hidden_state, encoder_outputs.attention_mask,
                decoder_attention_mask, cache=cache, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
        else:
            # Whisper's decoder attends to every encoder position (padding included), as it was trained to.
            outputs = self.decoder(
                input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                encoder_hidden_states=encoder_outputs.last_hidden_state, cache=cache, use_cache=cache is not None,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            )
            states, hidden = outputs.last_hidden_state, outputs.hidden_states
            self_attentions, cross_attentions = outputs.attentions, outputs.cross_attentions
        logits = self.lm_head(states)
        loss = None
        if labels is not None:
            if labels.shape != decoder_input_ids.shape:
                raise ValueError(f"`labels` should have shape {tuple(decoder_input_ids.shape)} "
                                 f"(batch_size, target_length); got {tuple(labels.shape)}.")
            loss = token_loss(logits, labels)
        return loss, logits, hidden, self_attentions, cross_attentions


class XModalForConditionalGeneration(_XModalDecoderHead, GenerationMixin):
    """Encoder-decoder: a Transformer decoder writes text (captions, transcripts) while cross-attending
    to the fused states of the modalities given (images, speech, text)."""

    # `generate(inputs)` takes any one modality (told apart by rank), so pipelines pass `inputs=`.
    main_input_name = "inputs"

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        # Sequences never outgrow the decoder's position table (start token included).
        self.generation_config.max_length = decoder_positions(config.decoder_config)
        self.post_init()

    def get_encoder(self):
        return self.fusion

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, decoder_input_ids=None,
                decoder_attention_mask=None, encoder_outputs=None, cache=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, **kwargs) -> XModalSeq2SeqLMOutput:
        if encoder_outputs is None:
            towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                                  token_type_ids)
            encoder_outputs = self.encode(towers, output_attentions=bool(output_attentions))
        loss, logits, hidden, self_attentions, cross_attentions = self.decode(
            encoder_outputs, labels, decoder_input_ids, decoder_attention_mask, cache=cache if use_cache is not False
            else None, output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states),
        )
        return XModalSeq2SeqLMOutput(
            loss=loss, logits=logits, cache=cache, decoder_hidden_states=hidden, decoder_attentions=self_attentions,
            cross_attentions=cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_attention_mask=encoder_outputs.attention_mask,
        )

    @torch.no_grad()
    def generate(self, inputs=None, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                 feature_attention_mask=None, token_type_ids=None, encoder_outputs=None, **kwargs):
        """Greedy or beam search (any `GenerationMixin` option) from the modalities given.

        The encoder runs once here and its states go to `GenerationMixin.generate` as `encoder_outputs`.
        `inputs` may be any one modality, told apart by rank: 2-D token ids, 3-D log-mel features (as the
        automatic-speech-recognition pipeline passes them, with their mask as `attention_mask`), 4-D pixels.
        """
        if inputs is not None:
            if inputs.dim() == 2:
                input_ids = inputs
            elif inputs.dim() == 3:
                input_features = inputs
                if input_ids is None and feature_attention_mask is None:
                    feature_attention_mask, attention_mask = attention_mask, None
            elif inputs.dim() == 4:
                pixel_values = inputs
            else:
                raise ValueError(f"`inputs` should be token ids (2-D), log-mel features (3-D) or pixels (4-D); "
                                 f"got shape {tuple(inputs.shape)}.")
        if encoder_outputs is None:
            towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                                  token_type_ids)
            encoder_outputs = self.encode(towers)
        prompt = self.config.decoder_prompt_ids
        if prompt and kwargs.get("decoder_input_ids") is None:
            start = kwargs.get("decoder_start_token_id") or self.config.decoder_config.decoder_start_token_id
            rows = encoder_outputs.last_hidden_state.shape[0]
            kwargs["decoder_input_ids"] = torch.tensor([[start, *prompt]] * rows,
                                                       device=encoder_outputs.last_hidden_state.device)
        limit = decoder_positions(self.config.decoder_config) - 1
        if kwargs.get("max_new_tokens") is not None and kwargs["max_new_tokens"] > limit:
            logger.warning_once(f"max_new_tokens={kwargs['max_new_tokens']} is more than the decoder's position "
                                f"table allows; generating at most {limit} tokens.")
            kwargs["max_new_tokens"] = limit
        return super().generate(encoder_outputs=encoder_outputs, **kwargs)

    def _prepare_encoder_decoder_kwargs_for_generation(self, inputs_tensor, model_kwargs, model_input_name,
                                                       generation_config):
        # `generate` above always supplies `encoder_outputs`; the library hook is never needed.
        return model_kwargs


class XModalForPreTraining(_XModalDecoderHead):
    """Multi-task pre-training: contrastive + matching (hard negatives) + captioning (image -> text)
    + transcription (speech -> text), weighted by `config.loss_weights`, each part returned by name."""

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, labels=None, output_attentions=None,
                output_hidden_states=None) -> XModalForPreTrainingOutput:
        towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                              token_type_ids)
        embeds = {m: self.xmodal.project(m, out) for m, out in towers.items()}
        parts = dict.fromkeys(("contrastive", "matching", "caption", "transcription"))
        matching_logits = caption_logits = transcription_logits = None
        if len(towers) > 1:
            parts["contrastive"] = self.xmodal.contrastive_loss(embeds)
            matching_logits, matching_labels = hard_negative_matching(self, towers, embeds)
            parts["matching"] = matching_loss(matching_logits, matching_labels)
        if labels is not None:
            for part, source in (("caption", "image"), ("transcription", "audio")):
                if source in towers:
                    loss, logits, *_ = self.decode(self.encode({source: towers[source]}), labels)
                    parts[part] = loss
                    if part == "caption":
                        caption_logits = logits
                    else:
                        transcription_logits = logits
        computed = {k: v for k, v in parts.items() if v is not None}
        if not computed:
            raise ValueError("XModalForPreTraining computes no loss from this batch: give two modalities "
                             "(contrastive, matching) and/or `labels` with images or audio (captioning, transcription).")
        total = weighted_total(computed, self.config.loss_weights)
        return XModalForPreTrainingOutput(
            loss=total, contrastive_loss=parts["contrastive"], matching_loss=parts["matching"],
            caption_loss=parts["caption"], transcription_loss=parts["transcription"],
            matching_logits=matching_logits,
            caption_logits=caption_logits, transcription_logits=transcription_logits,
        )


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

__all__ = [
    "XModalForConditionalGeneration",
    "XModalForMatching",
    "XModalForPreTraining",
    "XModalForSequenceClassification",
    "XModalModel",
    "XModalPreTrainedModel",
]
