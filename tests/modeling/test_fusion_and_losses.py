"""Fusion leaves absent modalities out; losses compute what they say."""

import torch
from torch.nn import functional as F

from xmodal import XModalForConditionalGeneration, XModalForPreTraining, XModalForSequenceClassification
from xmodal.losses import (
    caption_overlaps, clip_loss, hardest_negatives, pair_overlap, sample_hard_negatives, sigmoid_loss,
)

from .tiny import tiny_config, tiny_inputs


def _towers(model, modalities, batch_size=3):
    inputs = tiny_inputs(modalities, batch_size)
    return model._towers(inputs.get("input_ids"), inputs.get("attention_mask"), inputs.get("pixel_values"),
                         inputs.get("input_features"), inputs.get("feature_attention_mask"))


def test_concat_fusion_is_an_activated_projection_of_the_concatenated_pooled_vectors():
    torch.manual_seed(0)
    model = XModalForSequenceClassification(tiny_config(fusion_type="concat")).eval()
    towers = _towers(model, ("text", "audio"))
    with torch.no_grad():
        fused = model.fusion(towers).pooler_output
        weight = model.fusion.proj.weight
        text_cols, audio_cols = weight[:, :32], weight[:, 64:96]  # tower widths are 32: text, image, audio
        manual = towers["text"].pooler_output @ text_cols.t() + towers["audio"].pooler_output @ audio_cols.t()
        manual = model.fusion.norm(F.gelu(manual + model.fusion.proj.bias))  # hidden_act: gelu
    torch.testing.assert_close(fused, manual)


def test_gated_fusion_weights_cover_only_the_modalities_present():
    torch.manual_seed(0)
    model = XModalForSequenceClassification(tiny_config(fusion_type="gated")).eval()
    for modalities in (("text", "image"), ("image", "audio"), ("text", "image", "audio"), ("audio",)):
        with torch.no_grad():
            output = model.fusion(_towers(model, modalities))
        assert output.modality_weights.shape == (3, len(modalities))
        torch.testing.assert_close(output.modality_weights.sum(-1), torch.ones(3))
        assert output.modalities == tuple(m for m in ("text", "image", "audio") if m in modalities)


def test_cross_attention_fusion_returns_text_to_image_attention_maps():
    torch.manual_seed(0)
    model = XModalForConditionalGeneration(tiny_config()).eval()
    towers = _towers(model, ("text", "image"))
    with torch.no_grad():
        output = model.fusion(towers, output_attentions=True)
    assert output.modalities == ("text", "image")
    assert len(output.cross_attentions) == 2
    # [FUSE] + 9 text tokens attend over 1 + 16 image tokens (class token and 4x4 patches), per head.
    assert output.cross_attentions[0].shape == (3, 2, 10, 17)
    torch.testing.assert_close(output.cross_attentions[0].sum(-1), torch.ones(3, 2, 10))
    with torch.no_grad():
        alone = model.fusion({"image": towers["image"]}, output_attentions=True)
    assert alone.modalities == ("image",) and not alone.cross_attentions


def _last_cross_attention_grad(pooling):
    """Gradient of the pooled vector at the last fusion layer's cross-attention output, and the query mask."""
    torch.manual_seed(0)
    model = XModalForPreTraining(tiny_config(fusion_pooling=pooling, fusion_num_layers=1))
    captured = []
    model.fusion.encoder.layers[-1].cross_attn.register_forward_hook(
        lambda module, args, output: captured.append(output[0]) or output[0].retain_grad())
    towers = _towers(model, ("text", "image"))
    output = model.fusion(towers)
    # a random direction: a plain sum of a LayerNorm's output does not depend on its input
    (output.pooler_output * torch.randn(output.pooler_output.shape[-1])).sum().backward()
    return output, captured[0].grad, output.attention_mask


def test_mean_fusion_pooling_lets_every_word_cross_attention_reach_the_pool():
    """With one fusion layer and the [FUSE] token pooled, only [FUSE]'s cross-attention reaches the loss: the words'
    maps over the image (the pointing game's, the demo's Explain tab's) get no gradient. Mean pooling reaches each
    word and no padding."""
    _, grad, mask = _last_cross_attention_grad("cls")
    assert grad[:, 0].abs().sum() > 0 and grad[:, 1:].abs().sum() == 0
    output, grad, mask = _last_cross_attention_grad("mean")
    assert not mask.all()  # the tiny inputs pad some captions
    per_token = grad.abs().sum(-1)
    assert (per_token[mask.bool()] > 0).all() and (per_token[~mask.bool()] == 0).all()
    weights = mask.unsqueeze(-1).float()
    torch.testing.assert_close(output.pooler_output, (output.last_hidden_state * weights).sum(1) / weights.sum(1))


def test_cross_attention_fusion_starts_fan_in_scaled_and_looks_somewhere():
    """At std 0.02 every query read the same average of the context (attention 0.0005 from uniform in total
    variation) and a matching head on the fused vector never left its prior; fan-in scaled weights start
    with attention that depends on the pair."""
    torch.manual_seed(0)
    model = XModalForPreTraining(tiny_config()).eval()
    for name, module in model.fusion.named_modules():
        if isinstance(module, torch.nn.Linear):
            expected = module.in_features ** -0.5
            assert abs(module.weight.std().item() - expected) < 0.2 * expected, name
    assert abs(model.itm_head.weight.std().item() - 0.02) < 0.01  # the head keeps the config's initializer_range
    with torch.no_grad():
        attention = model.fusion(_towers(model, ("text", "image"), 8), output_attentions=True).cross_attentions[0]
    distance_from_uniform = 0.5 * (attention - 1 / attention.shape[-1]).abs().sum(-1).mean()
    assert distance_from_uniform > 0.1


def test_clip_loss_matches_a_direct_computation():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(2.0)
    logits = scale.exp() * a @ b.t()
    expected = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))) / 2
    torch.testing.assert_close(clip_loss(a, b, scale), expected)
    assert clip_loss(a, a, torch.tensor(4.6)) < clip_loss(a, b, torch.tensor(4.6))


def test_sigmoid_loss_matches_a_direct_computation():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.tensor(1.0), torch.tensor(-2.0)
    logits = scale.exp() * a @ b.t() + bias
    signs = 2 * torch.eye(4) - 1
    expected = -F.logsigmoid(signs * logits).sum() / 4
    torch.testing.assert_close(sigmoid_loss(a, b, scale, bias), expected)


def test_hard_negatives_are_never_the_positive_and_follow_the_similarity():
    similarity = torch.tensor([[9.0, 8.0, -9.0], [0.0, 9.0, 8.0], [8.0, -9.0, 9.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(similarity, generator) for _ in range(200)])
    assert not (draws == torch.arange(3)).any()
    # The most similar wrong column is drawn almost always.
    assert (draws == torch.tensor([1, 2, 0])).float().mean() > 0.95
    assert sample_hard_negatives(torch.zeros(1, 1)) is None


# Three samples: 0 says "a zebra" (hash 1), true of its scene and of scene 1 (one big zebra: 1 and 3 are true of
# it); 1 says "a big zebra" (3); 2 says "a cat" (5), true only of its own scene. Column -1 pads.
SAID = torch.tensor([1, 3, 5])
TRUE = torch.tensor([[1, -1], [1, 3], [5, -1]])


def test_caption_overlaps_find_the_other_samples_a_caption_is_true_of():
    fits, fitted = caption_overlaps(SAID, TRUE)
    assert fits.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    assert fitted.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    assert pair_overlap((fits, fitted), True, False).equal(fits)  # text rows, image columns
    assert pair_overlap((fits, fitted), False, True).equal(fitted)  # image rows, text columns
    assert pair_overlap((fits, fitted), True, True).equal(fits | fitted)  # text against speech
    assert pair_overlap((fits, fitted), False, False) is None  # two scenes


def test_clip_loss_leaves_the_samples_that_match_out_of_the_negatives():
    torch.manual_seed(0)
    text, image = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    scale = torch.tensor(2.0)
    logits = scale.exp() * text @ image.t()
    # text 0 ("a zebra") is not pushed from image 1; image 1 is not pushed from text 0 either
    text_rows = logits.masked_fill(torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool), float("-inf"))
    image_rows = logits.t().masked_fill(torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool),
                                        float("-inf"))
    expected = (F.cross_entropy(text_rows, torch.arange(3)) + F.cross_entropy(image_rows, torch.arange(3))) / 2
    overlaps = caption_overlaps(SAID, TRUE)
    masked = clip_loss(text, image, scale, overlaps=(pair_overlap(overlaps, True, False),
                                                     pair_overlap(overlaps, False, True)))
    torch.testing.assert_close(masked, expected)
    assert not torch.isclose(masked, clip_loss(text, image, scale))
    bias = torch.tensor(-1.0)
    signs = 2 * torch.eye(3) - 1
    terms = -F.logsigmoid(signs * (logits + bias))
    terms[0, 1] = 0.0
    torch.testing.assert_close(sigmoid_loss(text, image, scale, bias, overlaps=(pair_overlap(overlaps, True, False),)),
                               terms.sum() / 3)


def test_hard_negatives_skip_the_samples_that_match():
    similarity = torch.tensor([[9.0, 8.0, -9.0], [0.0, 9.0, 8.0], [8.0, -9.0, 9.0]])
    exclude = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)  # row 2: nothing left
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(similarity, generator, exclude=exclude) for _ in range(200)])
    assert (draws[:, 0] == 2).all() and (draws[:, 1] != 1).all()
    assert set(draws[:, 2].tolist()) <= {0, 1} and (draws[:, 2] == 0).float().mean() > 0.95  # falls back to all
    assert hardest_negatives(similarity, exclude=exclude).tolist() == [2, 2, 0]


def test_training_steps_lower_the_contrastive_loss():
    from xmodal import XModalModel

    torch.manual_seed(0)
    model = XModalModel(tiny_config(("text", "image"), decoder=False))
    inputs = tiny_inputs(("text", "image"), batch_size=8, padded=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(**inputs, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
