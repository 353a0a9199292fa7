"""Fusion of modalities, picked by `config.fusion_type` from `FUSION_LAYERS`.

Every fusion takes the tower outputs of whichever modalities a batch has (a dict keyed by the names in
`MODALITY_NAMES`) and leaves absent modalities out: nothing is zero-filled. A video's tokens are its frames.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .layers import XModalTransformer, masked_mean, padding_mask
from .modalities import MODALITY_NAMES
from .modeling_outputs import XModalFusionOutput


class ModalityEmbeddings(nn.ParameterDict):
    """A learned vector per modality, added to that modality's tokens. Read through `forward`, so that a model
    dispatched with offloading (`device_map`) loads the vectors before they are used."""

    __call__ = nn.Module.__call__  # `ParameterDict` refuses calls; this one has a forward

    def forward(self, states, modality):
        return states + self[modality]


class BlockLinear(nn.Linear):
    """A linear map of concatenated blocks (one per modality) that also takes any subset of them: a missing block
    drops its columns from the weight, which is exactly concatenating fewer vectors."""

    def __init__(self, block_sizes, out_features):
        super().__init__(sum(block_sizes), out_features)
        self.offsets = [sum(block_sizes[:i]) for i in range(len(block_sizes) + 1)]

    def forward(self, blocks, bias=True):
        """`blocks`: {block index: (batch, block size)}, in increasing index order."""
        weight = torch.cat([self.weight[:, self.offsets[i]:self.offsets[i + 1]] for i in blocks], dim=1)
        return F.linear(torch.cat(list(blocks.values()), dim=-1), weight, self.bias if bias else None)


class _FusionBase(nn.Module):
    """Projects every modality's tokens to the fusion width and tags them with a modality embedding.

    `with_sequence=False` (heads that only use the pooled vector) leaves the token projections out,
    so no parameter goes unused.
    """

    def __init__(self, config, tower_sizes, with_sequence=True):
        super().__init__()
        self.config = config
        self.hidden_size = config.fusion_hidden_size
        self.modalities = [m for m in MODALITY_NAMES if m in tower_sizes]
        self.with_sequence = with_sequence
        if with_sequence:
            self.token_projections = nn.ModuleDict(
                {m: nn.Linear(tower_sizes[m], self.hidden_size) for m in self.modalities}
            )
            self.modality_embeddings = ModalityEmbeddings(
                {m: nn.Parameter(torch.zeros(1, 1, self.hidden_size)) for m in self.modalities}
            )

    def _present(self, tower_outputs):
        present = [m for m in self.modalities if tower_outputs.get(m) is not None]
        unknown = set(k for k, v in tower_outputs.items() if v is not None) - set(self.modalities)
        if unknown:
            raise ValueError(f"Fusion got modalities {sorted(unknown)} that this model has no tower for; "
                             f"it has {self.modalities}.")
        if not present:
            raise ValueError(f"Fusion needs at least one modality of {self.modalities}; got none.")
        return present

    def pooled_vector(self, modality, output):
        """A modality's pooled vector as this fusion projects it to its width. The matching head, which has no
        shared embedding space, compares these to pick hard negatives."""
        raise NotImplementedError

    def _tokens(self, modality, output):
        states = self.modality_embeddings(self.token_projections[modality](output.last_hidden_state), modality)
        mask = output.attention_mask
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        return states, mask

    def _sequence(self, tower_outputs, present, scales=None, pooled=None):
        """The projected token sequences of the present modalities, concatenated, and their mask;
        `pooled` (the fused vector) goes first, as a summary token the decoder can attend to."""
        if not self.with_sequence:
            return None, None
        states, masks = [], []
        if pooled is not None:
            states.append(pooled.unsqueeze(1))
            masks.append(torch.ones(pooled.shape[0], 1, dtype=torch.long, device=pooled.device))
        for i, modality in enumerate(present):
            tokens, mask = self._tokens(modality, tower_outputs[modality])
            if scales is not None:
                tokens = tokens * scales[:, i, None, None]
            states.append(tokens)
            masks.append(mask)
        return torch.cat(states, dim=1), torch.cat(masks, dim=1)


class ConcatFusion(_FusionBase):
    """z = LayerNorm(act(W [x; y; ...] + b)) over the pooled vectors of the modalities present (the seed's
    concatenation).

    The activation is what lets a head on z compare the modalities: without it z is a sum of one term per
    modality (up to the norm), so a linear head scores text and image each on its own and a match / no-match
    head stays at chance. A missing modality drops its block of columns from W, which is exactly concatenating
    fewer vectors.
    """

    def __init__(self, config, tower_sizes, with_sequence=True):
        super().__init__(config, tower_sizes, with_sequence)
        self.proj = BlockLinear([tower_sizes[m] for m in self.modalities], self.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(self.hidden_size, eps=config.layer_norm_eps)

    def pooled_vector(self, modality, output):
        return self.proj({self.modalities.index(modality): output.pooler_output}, bias=False)

    def forward(self, tower_outputs, output_attentions=False):
        present = self._present(tower_outputs)
        pooled = self.norm(self.act(self.proj({self.modalities.index(m): tower_outputs[m].pooler_output
                                               for m in present})))
        states, mask = self._sequence(tower_outputs, present, pooled=pooled)
        return XModalFusionOutput(last_hidden_state=states, pooler_output=pooled, attention_mask=mask,
                                  modalities=tuple(present))


class GatedFusion(_FusionBase):
    """A gating network scores each present modality per sample; the fused vector is the weighted sum.

    The gate's last layer has no bias: it scores every modality with the same weights, so a bias would
    add one constant to every score and cancel in the softmax over modalities (a parameter whose
    gradient is zero in exact arithmetic, and non-zero only by rounding on some CPUs).
    """

    def __init__(self, config, tower_sizes, with_sequence=True):
        super().__init__(config, tower_sizes, with_sequence)
        self.pooled_projections = nn.ModuleDict(
            {m: nn.Linear(tower_sizes[m], self.hidden_size) for m in self.modalities}
        )
        self.gate = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.Tanh(),
                                  nn.Linear(self.hidden_size, 1, bias=False))
        self.norm = nn.LayerNorm(self.hidden_size, eps=config.layer_norm_eps)

    def pooled_vector(self, modality, output):
        return self.pooled_projections[modality](output.pooler_output)

    def forward(self, tower_outputs, output_attentions=False):
        present = self._present(tower_outputs)
        vectors = torch.stack(
            [torch.tanh(self.pooled_projections[m](tower_outputs[m].pooler_output)) for m in present], dim=1
        )
        scores = self.gate(vectors).squeeze(-1)  # softmax in at least fp32 (bf16 autocast), float64 stays float64
        weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(vectors.dtype)
        pooled = self.norm((weights.unsqueeze(-1) * vectors).sum(dim=1))
        states, mask = self._sequence(tower_outputs, present, scales=weights, pooled=pooled)
        return XModalFusionOutput(last_hidden_state=states, pooler_output=pooled, attention_mask=mask,
                                  modality_weights=weights, modalities=tuple(present))


class CrossAttentionFusion(_FusionBase):
    """ALBEF/BLIP-style fusion encoder: the query modality's tokens (text, else audio, else video frames, else image)
    self-attend and cross-attend to the tokens of the other modalities present. A learned [FUSE]
    token at the front of the query stream gives the pooled vector."""

    QUERY_ORDER = ("text", "audio", "video", "image")

    def __init__(self, config, tower_sizes, with_sequence=True):
        super().__init__(config, tower_sizes, with_sequence=True)  # its layers always work on tokens
        self.fuse_token = nn.Parameter(torch.zeros(1, 1, self.hidden_size))
        self.pooling = config.fusion_pooling
        self.encoder = XModalTransformer(
            config, self.hidden_size, config.fusion_num_layers, config.fusion_num_attention_heads,
            config.fusion_intermediate_size, cross_attention_size=self.hidden_size,
        )

    def pooled_vector(self, modality, output):
        return self.token_projections[modality](output.pooler_output)

    def forward(self, tower_outputs, output_attentions=False):
        present = self._present(tower_outputs)
        query_modality = next(m for m in self.QUERY_ORDER if m in present)
        context = [m for m in present if m != query_modality]
        query, query_mask = self._tokens(query_modality, tower_outputs[query_modality])
        batch = query.shape[0]
        query = torch.cat([self.fuse_token.expand(batch, -1, -1), query], dim=1)
        query_mask = torch.cat([query_mask.new_ones(batch, 1), query_mask], dim=1)
        context_states = context_mask = None
        if context:
            context_states, context_mask = self._sequence(tower_outputs, context)
        states, _, _, cross_attentions = self.encoder(
            query, attention_mask=padding_mask(query_mask, query.shape[1]),
            encoder_hidden_states=context_states,
            encoder_attention_mask=padding_mask(context_mask, query.shape[1]) if context else None,
            output_attentions=output_attentions,
        )
        pooled = states[:, 0] if self.pooling == "cls" else masked_mean(states, query_mask)
        return XModalFusionOutput(last_hidden_state=states, pooler_output=pooled, attention_mask=query_mask,
                                  cross_attentions=cross_attentions, modalities=(query_modality, *context))


FUSION_LAYERS = {"concat": ConcatFusion, "gated": GatedFusion, "cross_attention": CrossAttentionFusion}


def build_fusion(config, tower_sizes, with_sequence=True):
    return FUSION_LAYERS[config.fusion_type](config, tower_sizes, with_sequence)
