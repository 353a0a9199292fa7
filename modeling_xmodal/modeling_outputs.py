"""Output dataclasses: one per forward, `loss` first where there is a loss; and how a forward picks its output
options (`output_attentions`, `output_hidden_states`, `return_dict`) from its arguments and the config."""

from dataclasses import dataclass

import torch
from transformers.cache_utils import EncoderDecoderCache
from transformers.utils import ModelOutput

from .modalities import MODALITIES


@dataclass
class XModalTowerOutput(ModelOutput):
    """What every tower returns: token states, a pooled vector and the mask of valid tokens (None: all valid)."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None


@dataclass
class XModalVideoTowerOutput(XModalTowerOutput):
    """The video tower's output, with `frame_features` (batch, frames, width): each frame's pooled vector from the
    frame encoder, before time is seen (what a single picture of that frame would give)."""

    frame_features: torch.Tensor | None = None


@dataclass
class XModalFusionOutput(ModelOutput):
    """A fused sequence (for decoders and the demo's heatmaps), a pooled vector and, per fusion, its internals.

    `modality_weights` (gated fusion) is (batch, num_modalities) over `modalities`; `cross_attentions`
    (cross-attention fusion) holds one (batch, heads, query_tokens, context_tokens) tensor per layer.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    modality_weights: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    modalities: tuple[str, ...] | None = None


@dataclass
class XModalOutput(ModelOutput):
    """Contrastive outputs. Image-text logits keep CLIP's names (`logits_per_image` is images x texts);
    the other pairs are named `logits_<rows>_<columns>`."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    logits_audio_text: torch.Tensor | None = None
    logits_text_audio: torch.Tensor | None = None
    logits_image_audio: torch.Tensor | None = None
    logits_audio_image: torch.Tensor | None = None
    logits_video_text: torch.Tensor | None = None
    logits_text_video: torch.Tensor | None = None
    logits_video_image: torch.Tensor | None = None
    logits_image_video: torch.Tensor | None = None
    logits_video_audio: torch.Tensor | None = None
    logits_audio_video: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    text_model_output: XModalTowerOutput | None = None
    vision_model_output: XModalTowerOutput | None = None
    audio_model_output: XModalTowerOutput | None = None
    video_model_output: XModalTowerOutput | None = None


@dataclass
class XModalVideoFrameOutput(ModelOutput):
    """Each frame of each clip in the shared space, (batch, frames, projection_dim), with the clips' embeddings and
    the frame mask and times that say which frames are real and when they are."""

    frame_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    video_frame_mask: torch.Tensor | None = None
    video_timestamps: torch.Tensor | None = None


@dataclass
class XModalMatchingOutput(ModelOutput):
    """Match / no-match logits for each fused pair; `labels` are the targets used (sampled negatives included).

    In every head's output, `<tower>_model_output` (as in `XModalOutput`) carries the towers' hidden states and
    attentions; they are set only when `output_hidden_states` or `output_attentions` asks for them.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    pair_modalities: tuple[str, ...] | None = None
    fusion_output: XModalFusionOutput | None = None
    text_model_output: XModalTowerOutput | None = None
    vision_model_output: XModalTowerOutput | None = None
    audio_model_output: XModalTowerOutput | None = None
    video_model_output: XModalTowerOutput | None = None


@dataclass
class XModalSequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    fusion_output: XModalFusionOutput | None = None
    text_model_output: XModalTowerOutput | None = None
    vision_model_output: XModalTowerOutput | None = None
    audio_model_output: XModalTowerOutput | None = None
    video_model_output: XModalTowerOutput | None = None


@dataclass
class XModalEncoderOutput(ModelOutput):
    """What the generation heads' encoder hands to the decoder (the fused states and their mask)."""

    last_hidden_state: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class XModalSeq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: EncoderDecoderCache | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_attention_mask: torch.Tensor | None = None
    text_model_output: XModalTowerOutput | None = None
    vision_model_output: XModalTowerOutput | None = None
    audio_model_output: XModalTowerOutput | None = None
    video_model_output: XModalTowerOutput | None = None


@dataclass
class XModalForVideoPreTrainingOutput(ModelOutput):
    """The weighted total and each named part of the video loss; the frame-level scores each part reads: the
    clip captions against the clips (`logits_text_video`), each picture against its clip's frames (`moment_logits`),
    each event against each frame (`grounding_logits`, logits of "inside the span") and each candidate offset of the
    sound (`sync_logits`, -max..+max frames); the caption and clip embeddings."""

    loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    moment_loss: torch.Tensor | None = None
    grounding_loss: torch.Tensor | None = None
    sync_loss: torch.Tensor | None = None
    logits_text_video: torch.Tensor | None = None
    moment_logits: torch.Tensor | None = None
    grounding_logits: torch.Tensor | None = None
    sync_logits: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    text_model_output: XModalTowerOutput | None = None
    audio_model_output: XModalTowerOutput | None = None
    video_model_output: XModalTowerOutput | None = None


@dataclass
class XModalForPreTrainingOutput(ModelOutput):
    """The weighted total and each named part of the multi-task loss."""

    loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    negative_caption_loss: torch.Tensor | None = None
    matching_loss: torch.Tensor | None = None
    caption_loss: torch.Tensor | None = None
    transcription_loss: torch.Tensor | None = None
    ctc_loss: torch.Tensor | None = None
    matching_logits: torch.Tensor | None = None
    caption_logits: torch.Tensor | None = None
    transcription_logits: torch.Tensor | None = None
    text_model_output: XModalTowerOutput | None = None
    vision_model_output: XModalTowerOutput | None = None
    audio_model_output: XModalTowerOutput | None = None
    video_model_output: XModalTowerOutput | None = None


@dataclass
class XModalCTCOutput(ModelOutput):
    """The CTC loss (with `labels`), per-state logits over the vocabulary and a blank (last), and which states are
    real (`state_mask`, the speech tower's: padding frames give none)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state_mask: torch.Tensor | None = None
    audio_model_output: XModalTowerOutput | None = None


def output_options(config, output_attentions=None, output_hidden_states=None, return_dict=None):
    """(output_attentions, output_hidden_states, return_dict): the arguments given, else the config's defaults,
    as every `transformers` model reads them."""
    return (
        bool(config.output_attentions if output_attentions is None else output_attentions),
        bool(config.output_hidden_states if output_hidden_states is None else output_hidden_states),
        bool(config.return_dict if return_dict is None else return_dict),
    )


def tower_outputs(towers, output_attentions, output_hidden_states):
    """The `<tower>_model_output` fields of a head's output: the tower outputs, when either option asks for them."""
    if not (output_attentions or output_hidden_states):
        return {}
    return {MODALITIES[m].output: out for m, out in towers.items()}


def finish(output, return_dict):
    """`output`, or its tuple (non-None fields in order) when `return_dict=False`, as `transformers` models do."""
    return output if return_dict else output.to_tuple()
