"""XModal heads on the base model: matching (image-text, audio-text, video-text...), classification, and the two
heads with a text decoder (conditional generation, multi-task pre-training). `AUTO_MAP` names these classes."""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, GenerationMixin
from transformers.utils import logging

from .configuration_xmodal import XModalConfig, is_own_config
from .layers import XModalDecoder
from .losses import caption_overlaps, ctc_loss, matching_loss, negative_caption_loss, token_loss, weighted_total
from .modalities import MODALITIES
from .modeling_base import AUTO_MAP, DecoderBridge, XModalModel, XModalPreTrainedModel, _XModalHeadModel
from .modeling_outputs import (
    XModalEncoderOutput,
    XModalForPreTrainingOutput,
    XModalMatchingOutput,
    XModalSeq2SeqLMOutput,
    XModalSequenceClassifierOutput,
    finish,
    output_options,
    tower_outputs,
)
from .modeling_ctc import XModalForCTC  # noqa: F401 (exported with the heads)
from .modeling_video import XModalForVideoPreTraining  # noqa: F401 (exported with the heads)
from .negatives import hard_negative_matching, negative_captions
from .towers import tower_output_size

logger = logging.get_logger(__name__)


class XModalForMatching(_XModalHeadModel):
    """Binary match head on fused features (image-text, audio-text, video-text; without text, every pair given).

    Given `labels` (1 match, 0 no match) it scores the samples as paired; with `return_loss=True` and
    no labels it trains on in-batch hard negatives, drawn by how alike the fusion's projections of the two sides are.
    It has no shared embedding space (projections, logit scale): load the checkpoint as `XModalModel` for that.
    """

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        if len(config.modalities) < 2:
            raise ValueError(f"XModalForMatching needs two modalities; the config has {config.modalities}.")
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, labels=None, return_loss=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, pixel_values_videos=None,
                video_frame_mask=None, video_timestamps=None) -> XModalMatchingOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                              token_type_ids, output_attentions, output_hidden_states, pixel_values_videos,
                              video_frame_mask, video_timestamps)
        if len(towers) < 2:
            raise ValueError(f"Matching needs two modalities in a batch; got only {list(towers)}.")
        extra = tower_outputs(towers, output_attentions, output_hidden_states)
        if labels is None and return_loss:
            # Without a shared embedding space, hard negatives are the pairs most alike as the fusion projects them.
            embeds = {m: F.normalize(self.fusion.pooled_vector(m, out), dim=-1) for m, out in towers.items()}
            logits, used_labels = hard_negative_matching(self, towers, embeds)
            return finish(XModalMatchingOutput(loss=matching_loss(logits, used_labels), logits=logits,
                                               labels=used_labels, pair_modalities=tuple(towers), **extra),
                          return_dict)
        fusion_output = self.fusion(towers, output_attentions=output_attentions)
        logits = self.itm_head(fusion_output.pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != (logits.shape[0],):
                raise ValueError(f"`labels` should have shape ({logits.shape[0]},) with values 0/1; "
                                 f"got {tuple(labels.shape)}.")
            loss = matching_loss(logits, labels.long())
        return finish(XModalMatchingOutput(loss=loss, logits=logits, labels=labels, pair_modalities=tuple(towers),
                                           fusion_output=fusion_output, **extra), return_dict)


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
                output_hidden_states=None, return_dict=None, pixel_values_videos=None, video_frame_mask=None,
                video_timestamps=None) -> XModalSequenceClassifierOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                              token_type_ids, output_attentions, output_hidden_states, pixel_values_videos,
                              video_frame_mask, video_timestamps)
        fusion_output = self.fusion(towers, output_attentions=output_attentions)
        pooled = fusion_output.pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = self._loss(logits, labels) if labels is not None else None
        return finish(XModalSequenceClassifierOutput(
            loss=loss, logits=logits, pooled_output=pooled, fusion_output=fusion_output,
            **tower_outputs(towers, output_attentions, output_hidden_states)), return_dict)

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


# The decoder's special tokens that `generate` needs; a checkpoint carries them in `generation_config.json`.
GENERATION_TOKEN_FIELDS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")


def decoder_generation_config(config):
    """What `generate()` needs with no arguments, read from the decoder's config: its special tokens (and, for
    a Whisper decoder, the tokens it suppresses), and the longest sequence its position table covers (start
    token and `decoder_prompt_ids` included). Both decoder heads save it as `generation_config.json`."""
    from transformers import GenerationConfig

    generation_config = GenerationConfig.from_model_config(config.decoder_config)
    generation_config.max_length = decoder_positions(config.decoder_config)
    return generation_config


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
    head_is_encoder_decoder = True

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

    def get_input_embeddings(self):
        """The decoder's token embeddings, as in `VisionEncoderDecoderModel` and Whisper (whose encoders read no
        tokens): the vocabulary that `labels` index and the LM head is tied to, which `resize_token_embeddings`
        resizes. The text tower's are `self.xmodal.get_input_embeddings()`."""
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def _follow_vocabulary(self, size, mean_resizing):
        """After the decoder's vocabulary is resized: the text tower that shares it follows, so that new tokens can
        be read as well as written."""
        text = self.xmodal.get_input_embeddings()
        if text.num_embeddings != size:
            resized = self._get_resized_embeddings(text, size, mean_resizing=mean_resizing)
            resized.requires_grad_(text.weight.requires_grad)
            self.xmodal.set_input_embeddings(resized)
        self.config.text_config.vocab_size = size

    def encode(self, towers, output_attentions=False):
        """The fused token states the decoder attends to (a pretrained decoder: the bridged tower states)."""
        if self.decoder_bridges is not None:
            present = [m for m in self.decoder_bridges if towers.get(m) is not None]
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
    """Encoder-decoder: a Transformer decoder writes text (captions of images and videos, transcripts) while
    cross-attending to the fused states of the modalities given (images, speech, text, video frames)."""

    # A `forward` argument, as transformers requires. The pipeline that reads it is automatic-speech-recognition,
    # which calls `generate(input_features=..., attention_mask=<the features' mask>)`; image-text-to-text passes
    # the processor's outputs by their own names. `generate(inputs)` still takes any one modality, by rank.
    main_input_name = "input_features"

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        self.generation_config = decoder_generation_config(config)
        self.post_init()

    def get_encoder(self):
        return self.fusion

    def adjust_generation_fn(self, *args, **kwargs):
        """After `from_pretrained` loads the generation config: a checkpoint without `generation_config.json` (that
        of a head that does not generate, such as pre-training, which `transformers` saves without one) gets the
        decoder's, so that `generate()` still needs no arguments."""
        super().adjust_generation_fn(*args, **kwargs)
        if self.generation_config.decoder_start_token_id is None:
            # Without the file the library builds one from config.json, whose only token ids are the text
            # tower's (no decoder start token): they are not the decoder's.
            self.generation_config = decoder_generation_config(self.config)

    # `main_input_name` first, as transformers expects (and as Whisper's and BLIP's generation heads do).
    def forward(self, input_features=None, input_ids=None, attention_mask=None, pixel_values=None,
                feature_attention_mask=None, token_type_ids=None, decoder_input_ids=None,
                decoder_attention_mask=None, encoder_outputs=None, cache=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, pixel_values_videos=None,
                video_frame_mask=None, video_timestamps=None, **kwargs) -> XModalSeq2SeqLMOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        towers = {}
        if encoder_outputs is None:
            towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                                  token_type_ids, output_attentions, output_hidden_states, pixel_values_videos,
                                  video_frame_mask, video_timestamps)
            encoder_outputs = self.encode(towers, output_attentions=output_attentions)
        loss, logits, hidden, self_attentions, cross_attentions = self.decode(
            encoder_outputs, labels, decoder_input_ids, decoder_attention_mask, cache=cache if use_cache is not False
            else None, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        return finish(XModalSeq2SeqLMOutput(
            loss=loss, logits=logits, cache=cache, decoder_hidden_states=hidden, decoder_attentions=self_attentions,
            cross_attentions=cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_attention_mask=encoder_outputs.attention_mask,
            **tower_outputs(towers, output_attentions, output_hidden_states),
        ), return_dict)

    @torch.no_grad()
    def generate(self, inputs=None, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                 feature_attention_mask=None, token_type_ids=None, encoder_outputs=None, pixel_values_videos=None,
                 video_frame_mask=None, video_timestamps=None, **kwargs):
        """Greedy or beam search (any `GenerationMixin` option) from the modalities given.

        The encoder runs once here and its states go to `GenerationMixin.generate` as `encoder_outputs`.
        `inputs` may be any one modality, told apart by rank: 2-D token ids, 3-D log-mel features, 4-D pixels,
        5-D video frames.
        With log-mel features and no token ids, `attention_mask` is the features' mask (as Whisper takes it, and
        as the automatic-speech-recognition pipeline passes it).
        """
        if inputs is not None:
            if inputs.dim() == 2:
                input_ids = inputs
            elif inputs.dim() == 3:
                input_features = inputs
            elif inputs.dim() == 4:
                pixel_values = inputs
            elif inputs.dim() == 5:
                pixel_values_videos = inputs
            else:
                raise ValueError(f"`inputs` should be token ids (2-D), log-mel features (3-D), pixels (4-D) or video "
                                 f"frames (5-D); got shape {tuple(inputs.shape)}.")
        if input_features is not None and input_ids is None and feature_attention_mask is None:
            feature_attention_mask, attention_mask = attention_mask, None
        if encoder_outputs is None:
            towers = self._towers(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                                  token_type_ids, pixel_values_videos=pixel_values_videos,
                                  video_frame_mask=video_frame_mask, video_timestamps=video_timestamps)
            encoder_outputs = self.encode(towers)
        prompt = self.config.decoder_prompt_ids
        if prompt and kwargs.get("decoder_input_ids") is None:
            start = kwargs.get("decoder_start_token_id")
            start = self.generation_config.decoder_start_token_id if start is None else start
            rows = encoder_outputs.last_hidden_state.shape[0]
            kwargs["decoder_input_ids"] = torch.tensor([[start, *prompt]] * rows,
                                                       device=encoder_outputs.last_hidden_state.device)
        # The start token and any prompt take positions too.
        given = kwargs.get("decoder_input_ids")
        limit = decoder_positions(self.config.decoder_config) - (1 if given is None else given.shape[-1])
        if kwargs.get("max_new_tokens") is not None and kwargs["max_new_tokens"] > limit:
            logger.warning_once(f"max_new_tokens={kwargs['max_new_tokens']} is more than the decoder's position "
                                f"table allows; generating at most {limit} tokens.")
            kwargs["max_new_tokens"] = limit
        if kwargs.get("max_new_tokens") is not None and "max_length" not in kwargs:
            # The saved generation config's max_length (the position table) is a ceiling, not a request: without
            # this, every call with max_new_tokens warns that both are set.
            kwargs["max_length"] = None
        return super().generate(encoder_outputs=encoder_outputs, **kwargs)

    def _prepare_encoder_decoder_kwargs_for_generation(self, inputs_tensor, model_kwargs, model_input_name,
                                                       generation_config):
        # `generate` above always supplies `encoder_outputs`; the library hook is never needed.
        return model_kwargs


class XModalForPreTraining(_XModalDecoderHead):
    """Multi-task pre-training: contrastive + matching (hard negatives) + captioning (image -> text)
    + transcription (speech -> text), weighted by `config.loss_weights`, each part returned by name. Video takes
    part in the contrastive and matching parts; video captioning is `XModalForConditionalGeneration`'s.

    `negative_input_ids` (false captions: a sample's caption with its objects swapped, its relation turned round...)
    add the `negative_caption` part (each image or speech nearer its caption than its false one, as NegCLIP) and
    one more matching negative per false caption. `caption_hashes` / `true_caption_hashes` (see `XModalModel`) keep
    the other samples that match all the same out of the contrastive negatives and the matching draw. With
    `loss_weights["ctc"] > 0` a `ctc_head` also reads the speech tower's states and adds the `ctc` part (hybrid
    CTC/attention training, Watanabe et al., 2017: the monotonic alignment CTC forces helps the encoder early)."""

    uses_embedding_space = True
    _keys_to_ignore_on_load_unexpected = None

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.ctc_head = None
        if config.loss_weights["ctc"] > 0 and config.audio_config is not None:  # the vocabulary and a blank
            self.ctc_head = nn.Linear(tower_output_size(config.audio_config), config.decoder_config.vocab_size + 1)
        self.post_init()

    def _follow_vocabulary(self, size, mean_resizing):
        """The CTC head follows the decoder's vocabulary too: kept rows for the tokens that stay, new ones as
        initialised, the blank last."""
        super()._follow_vocabulary(size, mean_resizing)
        old = self.ctc_head
        if old is None or old.out_features == size + 1:
            return
        new = nn.Linear(old.in_features, size + 1).to(old.weight.device, old.weight.dtype)
        self._init_weights(new)
        kept = min(size, old.out_features - 1)
        with torch.no_grad():
            for target, source in ((new.weight, old.weight), (new.bias, old.bias)):
                target[:kept] = source[:kept]
                target[-1] = source[-1]
        self.ctc_head = new

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_features=None,
                feature_attention_mask=None, token_type_ids=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, pixel_values_videos=None, video_frame_mask=None,
                video_timestamps=None, negative_input_ids=None, negative_attention_mask=None,
                negative_rows=None, caption_hashes=None, true_caption_hashes=None) -> XModalForPreTrainingOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        # The base model's own forward runs the towers and gives the embeddings and the contrastive loss: its
        # weights (the logit scale too) are then loaded before use when the model is dispatched with offloading.
        given = sum(main is not None for main in (input_ids, pixel_values, input_features, pixel_values_videos))
        base = self.xmodal(input_ids, attention_mask, pixel_values, input_features, feature_attention_mask,
                           token_type_ids, return_loss=given > 1, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, return_dict=True,
                           pixel_values_videos=pixel_values_videos, video_frame_mask=video_frame_mask,
                           video_timestamps=video_timestamps, caption_hashes=caption_hashes,
                           true_caption_hashes=true_caption_hashes)
        towers = {m: base[spec.output] for m, spec in MODALITIES.items() if base.get(spec.output) is not None}
        parts = dict.fromkeys(("contrastive", "negative_caption", "matching", "caption", "transcription", "ctc"))
        matching_logits = caption_logits = transcription_logits = negatives = None
        if negative_input_ids is not None:
            if "text" not in towers or len(towers) < 2:
                raise ValueError("`negative_input_ids` are false captions of the batch's own: give them with "
                                 f"`input_ids` and another modality; got {list(towers)}.")
            negatives = negative_captions(self, input_ids.shape[0], negative_input_ids, negative_attention_mask,
                                          negative_rows)
        if len(towers) > 1:
            parts["contrastive"] = base.loss
            embeds = {m: base[f"{m}_embeds"] for m in towers}
            if negatives is not None:
                negative_embeds = self.xmodal.project("text", negatives[1])
                parts["negative_caption"] = negative_caption_loss(embeds, negatives[0], negative_embeds,
                                                                  self.xmodal.logit_scale)
            overlaps = None if caption_hashes is None else caption_overlaps(caption_hashes, true_caption_hashes,
                                                                            across_ranks=False)
            matching_logits, matching_labels = hard_negative_matching(self, towers, embeds, negatives, overlaps)
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
            if self.ctc_head is not None and "audio" in towers:
                speech = towers["audio"]
                parts["ctc"] = ctc_loss(self.ctc_head(speech.last_hidden_state), speech.attention_mask, labels,
                                        left_out=(self.config.decoder_config.eos_token_id,))
        computed = {k: v for k, v in parts.items() if v is not None}
        if not computed:
            raise ValueError("XModalForPreTraining computes no loss from this batch: give two modalities "
                             "(contrastive, matching) and/or `labels` with images or audio (captioning, transcription).")
        total = weighted_total(computed, self.config.loss_weights)
        return finish(XModalForPreTrainingOutput(
            loss=total, contrastive_loss=parts["contrastive"], negative_caption_loss=parts["negative_caption"],
            matching_loss=parts["matching"],
            caption_loss=parts["caption"], transcription_loss=parts["transcription"], ctc_loss=parts["ctc"],
            matching_logits=matching_logits,
            caption_logits=caption_logits, transcription_logits=transcription_logits,
            **tower_outputs(towers, output_attentions, output_hidden_states),
        ), return_dict)


__all__ = [
    "AUTO_MAP",
    "XModalForCTC",
    "XModalForConditionalGeneration",
    "XModalForMatching",
    "XModalForPreTraining",
    "XModalForSequenceClassification",
    "XModalForVideoPreTraining",
    "XModalModel",
    "XModalPreTrainedModel",
]
