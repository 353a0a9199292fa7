"""Building blocks shared by the towers, the fusion encoder and the decoder.

Attention goes through `transformers`' attention interface, so `attn_implementation="sdpa"` (the
default) and `"eager"` are both available, and eager returns attention weights.

Two choices here are made for speed and memory on CPU, measured in `benchmarks/`:
- With `sdpa`, bf16/fp16 training on CPU runs the eager kernels: the CPU flash-attention kernel's
  backward in bf16 took about 3x the time of the eager matmul + softmax (and was slower still on a
  CPU without native bf16); fp32 and inference keep SDPA. Results agree to rounding.
- The MLP saves only the pre-activation for backward and recomputes the activation there
  (`ActivationLinear`): one elementwise pass more, a quarter less activation memory per layer.
"""

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .input_checks import is_tracing

# Dtypes for which the CPU flash-attention backward is slower than eager attention (see the module docstring).
_EAGER_TRAINING_DTYPES = (torch.bfloat16, torch.float16)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain softmax attention; q/k/v are (B, H, L, D), the output is (B, L, H, D)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    elif getattr(module, "is_causal", False) and query.shape[2] > 1:
        q_len, k_len = query.shape[2], key.shape[2]
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def nothing_padded(attention_mask):
    """Whether a (B, L) mask can be dropped: None, or all ones. Only eager code looks at the values: a traced graph
    (`torch.compile`, `torch.export`) keeps the mask, which gives the same result."""
    return attention_mask is None or (not is_tracing() and bool(attention_mask.all()))


def padding_mask(attention_mask, query_length=None):
    """A (B, L) 1/0 mask as a boolean (B, 1, Lq, L) attention mask, or None when nothing is padded."""
    if nothing_padded(attention_mask):
        return None
    mask = attention_mask.bool()[:, None, None, :]
    if query_length is not None:
        mask = mask.expand(-1, 1, query_length, -1)
    return mask


def causal_padding_mask(attention_mask, query_length, past_length, device):
    """Boolean (B, 1, Lq, past+Lq) mask for causal self-attention, with padded keys masked when given."""
    if nothing_padded(attention_mask):
        return None
    total = past_length + query_length
    causal = torch.ones(query_length, total, dtype=torch.bool, device=device).tril(past_length)
    keys = attention_mask.bool()[:, None, None, -total:]
    return causal[None, None] & keys


class XModalAttention(nn.Module):
    """Multi-head attention; a fused QKV projection for self-attention, separate Q and KV for cross-attention.

    With a cache it stores keys and values: appended step by step for self-attention, computed once
    for cross-attention.
    """

    def __init__(self, config, hidden_size, num_heads, kv_size=None, is_cross_attention=False,
                 is_causal=False, layer_idx=None):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = is_causal
        self.is_cross_attention = is_cross_attention
        self.layer_idx = layer_idx
        self.dropout = getattr(config, "attention_dropout", 0.0)
        if is_cross_attention:
            self.q_proj = nn.Linear(hidden_size, hidden_size)
            self.kv_proj = nn.Linear(kv_size or hidden_size, 2 * hidden_size)
        else:
            self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def _split_heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, -1, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states, key_value_states=None, attention_mask=None, cache=None,
                output_attentions=False):
        batch, length, _ = hidden_states.shape
        if self.is_cross_attention:
            query = self._split_heads(self.q_proj(hidden_states))
            cross_cache = cache.cross_attention_cache if isinstance(cache, EncoderDecoderCache) else None
            if cross_cache is not None and cache.is_updated.get(self.layer_idx):
                key, value = cross_cache.layers[self.layer_idx].keys, cross_cache.layers[self.layer_idx].values
            else:
                key, value = self.kv_proj(key_value_states).chunk(2, dim=-1)
                key, value = self._split_heads(key), self._split_heads(value)
                if cross_cache is not None:
                    key, value = cross_cache.update(key, value, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            query, key, value = (self._split_heads(t) for t in self.qkv_proj(hidden_states).chunk(3, dim=-1))
            if cache is not None:
                self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
                key, value = self_cache.update(key, value, self.layer_idx)

        implementation = self.config._attn_implementation
        if output_attentions or (implementation == "sdpa" and query.device.type == "cpu"
                                 and query.dtype in _EAGER_TRAINING_DTYPES and torch.is_grad_enabled()):
            implementation = "eager"
        attention_fn = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention_fn(
            self, query, key, value, attention_mask,
            dropout=self.dropout if self.training else 0.0, scaling=self.scaling, is_causal=self.is_causal,
        )
        output = self.out_proj(output.reshape(batch, length, -1))
        return output, weights


# hidden_act -> (activation, its backward given (grad, input)) for the activations the MLP recomputes in
# backward; the backward is the kernel autograd itself would call, so gradients are unchanged.
RECOMPUTED_ACTIVATIONS = {
    "gelu": (nn.functional.gelu, lambda grad, x: torch.ops.aten.gelu_backward(grad, x)),
    "gelu_pytorch_tanh": (lambda x: nn.functional.gelu(x, approximate="tanh"),
                          lambda grad, x: torch.ops.aten.gelu_backward(grad, x, approximate="tanh")),
    "relu": (nn.functional.relu, lambda grad, x: grad * (x > 0)),
    "silu": (nn.functional.silu, lambda grad, x: torch.ops.aten.silu_backward(grad, x)),
}


class ActivationLinear(torch.autograd.Function):
    """`linear(act(x), weight, bias)` that saves `x` alone and recomputes `act(x)` in backward.

    Autograd would keep both `x` (for the activation's backward) and `act(x)` (for the weight
    gradient): two tensors of the MLP's width per token. Recomputing the activation costs one
    elementwise pass. The autocast state of the forward is replayed in backward (`custom_bwd`).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, hidden_act, weight, bias):
        ctx.hidden_act = hidden_act
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return nn.functional.linear(RECOMPUTED_ACTIVATIONS[hidden_act][0](x), weight, bias)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        activation, activation_backward = RECOMPUTED_ACTIVATIONS[ctx.hidden_act]
        grad_x = grad_weight = grad_bias = None
        flat_grad = grad_output.reshape(-1, grad_output.shape[-1])
        if ctx.needs_input_grad[2]:
            activated = activation(x)
            grad_weight = flat_grad.t().mm(activated.reshape(-1, activated.shape[-1]).to(flat_grad.dtype))
            grad_weight = grad_weight.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = flat_grad.sum(dim=0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            grad_activated = grad_output.matmul(weight.to(grad_output.dtype))
            grad_x = activation_backward(grad_activated.to(x.dtype), x)
        return grad_x, None, grad_weight, grad_bias


class XModalMLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size, hidden_act, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.recomputed_act = hidden_act if hidden_act in RECOMPUTED_ACTIVATIONS else None

    def forward(self, hidden_states):
        hidden_states = self.fc1(hidden_states)
        if self.recomputed_act is not None and torch.is_grad_enabled() and (
            hidden_states.requires_grad or self.fc2.weight.requires_grad
        ):
            hidden_states = ActivationLinear.apply(hidden_states, self.recomputed_act, self.fc2.weight, self.fc2.bias)
        else:
            hidden_states = self.fc2(self.act(hidden_states))
        return self.dropout(hidden_states)


class XModalEncoderLayer(GradientCheckpointingLayer):
    """Pre-LN Transformer layer: self-attention, optional cross-attention, MLP.

    With `cross_attention_size` set it is a fusion layer (ALBEF-style): the tokens of one modality
    attend to the tokens of the others.
    """

    def __init__(self, config, hidden_size, num_heads, intermediate_size, cross_attention_size=None,
                 is_causal=False, layer_idx=None):
        super().__init__()
        eps = config.layer_norm_eps
        dropout = getattr(config, "hidden_dropout", 0.0)
        self.self_attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.self_attn = XModalAttention(config, hidden_size, num_heads, is_causal=is_causal, layer_idx=layer_idx)
        if cross_attention_size is not None:
            self.cross_attn_norm = nn.LayerNorm(hidden_size, eps=eps)
            self.cross_attn = XModalAttention(config, hidden_size, num_heads, kv_size=cross_attention_size,
                                              is_cross_attention=True, layer_idx=layer_idx)
        else:
            self.cross_attn = None
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = XModalMLP(hidden_size, intermediate_size, config.hidden_act, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, output_attentions=False):
        attn_out, self_weights = self.self_attn(
            self.self_attn_norm(hidden_states), attention_mask=attention_mask, cache=cache,
            output_attentions=output_attentions,
        )
        hidden_states = hidden_states + self.dropout(attn_out)
        cross_weights = None
        if self.cross_attn is not None and encoder_hidden_states is not None:
            cross_out, cross_weights = self.cross_attn(
                self.cross_attn_norm(hidden_states), key_value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask, cache=cache, output_attentions=output_attentions,
            )
            hidden_states = hidden_states + self.dropout(cross_out)
        hidden_states = hidden_states + self.mlp(self.mlp_norm(hidden_states))
        return hidden_states, self_weights, cross_weights


class XModalTransformer(nn.Module):
    """A stack of pre-LN layers with a final LayerNorm; collects hidden states and attentions on request."""

    def __init__(self, config, hidden_size, num_layers, num_heads, intermediate_size, cross_attention_size=None,
                 is_causal=False):
        super().__init__()
        self.layers = nn.ModuleList(
            XModalEncoderLayer(config, hidden_size, num_heads, intermediate_size, cross_attention_size,
                               is_causal=is_causal, layer_idx=i)
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, output_attentions=False, output_hidden_states=False):
        all_hidden = (hidden_states,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions and encoder_hidden_states is not None else None
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                cache=cache, output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                self_attentions += (self_weights,)
                if cross_attentions is not None:
                    cross_attentions += (cross_weights,)
        return self.norm(hidden_states), all_hidden, self_attentions, cross_attentions


def masked_mean(states, mask):
    """Mean over the valid positions of (B, L, D) states; a None mask means all positions are valid."""
    if mask is None:
        return states.mean(dim=1)
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class XModalDecoder(nn.Module):
    """Text decoder: token + position embeddings, causal self-attention, cross-attention to the encoder."""

    def __init__(self, config, encoder_hidden_size):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = XModalTransformer(
            config, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, cross_attention_size=encoder_hidden_size, is_causal=True,
        )

    def forward(self, input_ids, encoder_hidden_states, encoder_attention_mask=None, attention_mask=None,
                cache=None, output_attentions=False, output_hidden_states=False):
        past = cache.get_seq_length() if cache is not None else 0
        length = input_ids.shape[1]
        if past + length > self.config.max_position_embeddings:
            raise ValueError(
                f"The decoder writes at most max_position_embeddings={self.config.max_position_embeddings} tokens; "
                f"got {past + length} (decoder_input_ids or max_new_tokens too long)."
            )
        positions = torch.arange(past, past + length, device=input_ids.device)
        hidden = self.dropout(self.embed_tokens(input_ids) + self.embed_positions(positions))
        self_mask = causal_padding_mask(attention_mask, length, past, input_ids.device)
        cross_mask = padding_mask(encoder_attention_mask, length)
        return self.layers(hidden, self_mask, encoder_hidden_states, cross_mask, cache=cache,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
