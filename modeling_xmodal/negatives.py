"""Negatives for the heads that score pairs: in-batch hard negatives drawn by similarity (ALBEF/BLIP), and the false
captions that pre-training may be given (NegCLIP) as the other side of more no-match pairs."""

import torch

from .input_checks import collect_inputs, is_tracing
from .losses import hardest_negatives, overlaps_both_ways, sample_hard_negatives
from .modalities import MODALITIES
from .modeling_base import PAIR_LOGITS
from .modeling_outputs import XModalTowerOutput


def take_rows(output: XModalTowerOutput, index):
    """The rows `index` of a tower output (for pairing samples with sampled negatives)."""
    mask = output.attention_mask
    return XModalTowerOutput(last_hidden_state=output.last_hidden_state[index],
                             pooler_output=output.pooler_output[index],
                             attention_mask=None if mask is None else mask[index])


def matching_pairs(modalities):
    """The pairs a matching head scores, in `PAIR_LOGITS` order: each other modality with text, or every pair
    present when there is no text."""
    present = [pair for pair in PAIR_LOGITS if pair[0] in modalities and pair[1] in modalities]
    with_text = [pair for pair in present if "text" in pair]
    return with_text or present


def hard_negative_matching(model, towers, embeds, false_captions=None, overlaps=None):
    """ITM with in-batch hard negatives for every matching pair: for each sample, one positive pair and two
    negatives, the other side drawn by the similarity of the normalised `embeds` (in `eval()` the most similar one,
    so that an evaluation loss does not change from run to run). The rows are the positive pairs sample by sample
    (a sample's rows do not depend on the rest of the batch), then the negatives. `false_captions`, (rows, text
    tower output), adds negatives last, for each pair with text: sample `rows[k]`'s other side against the k-th
    false caption. `overlaps` (`losses.caption_overlaps` of this process's batch) keeps out of the draw the other
    samples that match all the same. Returns (logits, labels)."""
    choose = sample_hard_negatives if model.training else hardest_negatives
    positives, negatives, false_pairs = [], [], []
    for a, b in matching_pairs(towers):
        similarity = embeds[a] @ embeds[b].t()
        exclude = overlaps_both_ways(overlaps, MODALITIES[a].says_caption, MODALITIES[b].says_caption) or (None, None)
        negatives_for_a = choose(similarity, exclude=exclude[0])
        positives.append(model.fusion({a: towers[a], b: towers[b]}).pooler_output)
        if negatives_for_a is not None:
            negatives_for_b = choose(similarity.t(), exclude=exclude[1])
            negatives.append(model.fusion({a: towers[a], b: take_rows(towers[b], negatives_for_a)}).pooler_output)
            negatives.append(model.fusion({a: take_rows(towers[a], negatives_for_b), b: towers[b]}).pooler_output)
        if false_captions is not None and "text" in (a, b):
            rows, false_text = false_captions
            pair = {m: false_text if m == "text" else take_rows(towers[m], rows) for m in (a, b)}
            false_pairs.append(model.fusion(pair).pooler_output)
    positives = torch.stack(positives, dim=1).flatten(0, 1)
    logits = model.itm_head(torch.cat([positives, *negatives, *false_pairs]))
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    labels[:positives.shape[0]] = 1
    return logits, labels


def negative_captions(model, batch_size, negative_input_ids, negative_attention_mask, negative_rows):
    """(rows, text tower output) of the false captions given to a pre-training forward, or None when there are
    none; `negative_rows` (the sample each false caption belongs to) defaults to one per sample, in order."""
    if negative_rows is None:
        negative_rows = torch.arange(negative_input_ids.shape[0], device=negative_input_ids.device)
        if negative_input_ids.shape[0] != batch_size:
            raise ValueError(f"`negative_input_ids` has {negative_input_ids.shape[0]} rows for a batch of {batch_size}: "
                             "give one false caption per sample, or `negative_rows` (the sample of each).")
    if negative_rows.dim() != 1 or negative_rows.shape[0] != negative_input_ids.shape[0]:
        raise ValueError(f"`negative_rows` should have shape ({negative_input_ids.shape[0]},), one sample index per "
                         f"false caption; got {tuple(negative_rows.shape)}.")
    if negative_rows.shape[0] == 0:
        return None
    # a value check reads the tensor: not while `torch.compile` traces the step
    if not is_tracing() and not 0 <= int(negative_rows.min()) <= int(negative_rows.max()) < batch_size:
        raise ValueError(f"`negative_rows` should index the batch of {batch_size}; got values "
                         f"{int(negative_rows.min())}..{int(negative_rows.max())}.")
    inputs = collect_inputs(model.config, paired=False, input_ids=negative_input_ids,
                            attention_mask=negative_attention_mask)["text"]
    return negative_rows, model.xmodal.run_tower("text", inputs)
