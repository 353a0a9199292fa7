"""Speech to text through the CTC head: one pass of the speech tower, no decoder.

`XModalForPreTraining` with `loss_weights["ctc"] > 0` trains a `ctc_head` over the speech tower's states beside the
decoder's transcription (hybrid CTC/attention). `XModalForCTC` is that head on its own, as `Wav2Vec2ForCTC` is for
wav2vec 2.0: it loads the same checkpoint (the same weight names), scores `labels` with the same loss, and reads text
off the states greedily (the most likely class per state, repeats merged, blanks dropped): non-autoregressive, so
every clip of a batch is transcribed in one forward pass, and its alignment is monotonic by construction.
"""

import torch
from torch import nn

from .configuration_xmodal import XModalConfig
from .input_checks import collect_inputs
from .losses import ctc_loss
from .modeling_base import EMBEDDING_SPACE_KEYS, XModalModel, XModalPreTrainedModel
from .modeling_outputs import XModalCTCOutput, finish, output_options, tower_outputs
from .towers import tower_output_size


def ctc_greedy_ids(logits, state_mask=None):
    """Token ids per row of per-state `logits` (batch, states, vocabulary + 1; the last class is the blank): the best
    class of each real state, runs of one class merged, blanks dropped (so a blank between two equal classes keeps
    both)."""
    best = logits.argmax(-1)
    blank = logits.shape[-1] - 1
    lengths = state_mask.sum(1).tolist() if state_mask is not None else [best.shape[1]] * best.shape[0]
    rows = []
    for row, length in zip(best, lengths):
        merged = torch.unique_consecutive(row[: int(length)])
        rows.append(merged[merged != blank].tolist())
    return rows


class XModalForCTC(XModalPreTrainedModel):
    """The speech tower and a linear CTC head over its states (the decoder's vocabulary and a blank, last).

    `labels` are the decoder's (`-100` pads; EOS is not spoken): `loss` is the CTC part of pre-training. `transcribe`
    gives token ids for `processor.batch_decode`. The other towers of a checkpoint are built but not run."""

    main_input_name = "input_features"
    # a pre-training checkpoint also holds the fusion, the decoder and the other heads: not this model's
    _keys_to_ignore_on_load_unexpected = [r"^(?!xmodal\.|ctc_head\.)", *EMBEDDING_SPACE_KEYS]

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        if config.audio_config is None or config.decoder_config is None:
            raise ValueError("XModalForCTC needs an audio tower (audio_config) and a vocabulary (decoder_config); "
                             f"the config has modalities {config.modalities} and decoder_config "
                             f"{'set' if config.decoder_config is not None else 'None'}.")
        self.xmodal = XModalModel(config, add_projections=False)
        self.ctc_head = nn.Linear(tower_output_size(config.audio_config), config.decoder_config.vocab_size + 1)
        self.post_init()

    def forward(self, input_features=None, feature_attention_mask=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None) -> XModalCTCOutput:
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict)
        if input_features is None:
            raise ValueError("XModalForCTC transcribes speech: give `input_features` (the processor's `audio=`).")
        inputs = collect_inputs(self.config, input_features=input_features,
                                feature_attention_mask=feature_attention_mask)
        towers = self.xmodal.encode_towers(inputs, output_attentions, output_hidden_states)
        speech = towers["audio"]
        logits = self.ctc_head(speech.last_hidden_state)
        loss = None
        if labels is not None:
            loss = ctc_loss(logits, speech.attention_mask, labels, left_out=(self.config.decoder_config.eos_token_id,))
        return finish(XModalCTCOutput(loss=loss, logits=logits, state_mask=speech.attention_mask,
                                      **tower_outputs(towers, output_attentions, output_hidden_states)), return_dict)

    @torch.no_grad()
    def transcribe(self, input_features, feature_attention_mask=None):
        """Greedy CTC token ids per clip (`ctc_greedy_ids`); decode them with `processor.batch_decode(ids,
        skip_special_tokens=True)`."""
        output = self(input_features=input_features, feature_attention_mask=feature_attention_mask, return_dict=True)
        return ctc_greedy_ids(output.logits, output.state_mask)
