"""Losses: contrastive (InfoNCE and sigmoid), matching with in-batch hard negatives, token cross-entropy, CTC.

The contrastive losses gather embeddings from every rank with gradients and compute the local
rows of the global similarity matrix (open_clip's "local loss"): N ranks with batch B/N give the
same loss (averaged over ranks) and the same gradients as one rank with batch B.
"""

import torch
import torch.distributed as dist
from torch.nn import functional as F


def _world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(features):
    """All ranks' rows, concatenated in rank order; gradients flow back to each rank's own rows."""
    world_size, _ = _world()
    if world_size == 1:
        return features
    # The functional collective (torch 2.13 deprecates `torch.distributed.nn.functional.all_gather`); its
    # backward is a reduce-scatter with sum, so each rank's rows get the gradient from every rank's loss.
    from torch.distributed._functional_collectives import all_gather_single_autograd

    return all_gather_single_autograd(features.contiguous(), 0, dist.group.WORLD)


def gather_all_with_grad(features):
    """`gather_with_grad` of every tensor of a dict of (batch, dim) tensors in one collective (and one reduce-scatter
    back): each collective is a meeting of the ranks, which costs more than the bytes on a CPU."""
    world_size, _ = _world()
    if world_size == 1 or not features:
        return dict(features)
    names = list(features)
    dtype = features[names[0]].dtype
    for name in names[1:]:
        dtype = torch.promote_types(dtype, features[name].dtype)
    joined = torch.cat([features[name].to(dtype) for name in names], dim=-1)
    parts = gather_with_grad(joined).split([features[name].shape[-1] for name in names], dim=-1)
    return {name: part.to(features[name].dtype) for name, part in zip(names, parts)}


def gather_plain(tensor, pad_value=-1):
    """All ranks' rows of a tensor that takes no gradient (ids, hashes), in rank order; trailing dimensions are
    padded with `pad_value` to the longest of any rank first, so ranks may differ there."""
    world_size, _ = _world()
    if world_size == 1:
        return tensor
    if tensor.dim() > 1:
        longest = torch.tensor(tensor.shape[1:], device=tensor.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        padding = [p for size, most in zip(reversed(tensor.shape[1:]), reversed(longest.tolist()))
                   for p in (0, most - size)]
        tensor = F.pad(tensor, padding, value=pad_value)
    gathered = torch.empty((world_size * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    dist.all_gather_into_tensor(gathered, tensor.contiguous())
    return gathered


def caption_overlaps(caption_hashes, true_caption_hashes, across_ranks=True):
    """Pairs of different samples that match all the same: `caption_hashes` (batch,) hash what each sample's text
    says (its speech says the same), `true_caption_hashes` (batch, k) every caption true of its scene (-1 pads).
    Returns (fits, fitted), bools (local rows, columns of every rank or, without `across_ranks`, of this one):
    fits[i, j] when sample i's caption is true of sample j's scene, fitted[i, j] when j's caption is true of i's.
    Captions repeat across scenes ("a zebra" is true of every scene of one zebra), so a batch holds such pairs."""
    said = gather_plain(caption_hashes) if across_ranks else caption_hashes
    true = gather_plain(true_caption_hashes) if across_ranks else true_caption_hashes
    fits = (caption_hashes[:, None, None] == true[None]).any(-1)
    fitted = (said[None, :, None] == true_caption_hashes[:, None, :]).any(-1)
    return fits, fitted


def pair_overlap(overlaps, rows_say, columns_say):
    """The (local rows, gathered columns) pairs of two modalities that match though they are different samples:
    a caption (written or spoken) against a scene matches when it is true of it, two captions when either is true
    of the other's scene; two scenes (image and video) are never related by captions (None)."""
    fits, fitted = overlaps
    if rows_say and columns_say:
        return fits | fitted
    if rows_say or columns_say:
        return fits if rows_say else fitted
    return None


def overlaps_both_ways(overlaps, a_says, b_says):
    """(a rows x b columns, b rows x a columns) of `pair_overlap` for two modalities, or None without `overlaps` or
    where captions relate neither way (two scenes)."""
    forward = None if overlaps is None else pair_overlap(overlaps, a_says, b_says)
    return None if forward is None else (forward, pair_overlap(overlaps, b_says, a_says))


def _negatives_only(overlap, targets):
    """`overlap` without the positive pairs (each row's own sample), which are never taken out."""
    overlap = overlap.clone()
    overlap[torch.arange(len(targets), device=targets.device), targets] = False
    return overlap


def contrastive_logits(rows, columns, logit_scale, logit_bias=None, gathered=None):
    """Scaled cosine similarities of local `rows` against the gathered `columns` of every rank (`gathered`: those
    already gathered)."""
    gathered = gather_with_grad(columns) if gathered is None else gathered
    logits = logit_scale.exp() * rows @ gathered.t()
    if logit_bias is not None:
        logits = logits + logit_bias
    return logits


def _positive_targets(rows, device):
    _, rank = _world()
    return torch.arange(rows, device=device) + rank * rows


def clip_loss(embeds_a, embeds_b, logit_scale, overlaps=None, gathered=None):
    """Symmetric InfoNCE between L2-normalised embeddings whose i-th rows are pairs. `overlaps`, (a rows x b
    columns, b rows x a columns) from `pair_overlap`, takes the other samples that match out of the negatives.
    `gathered`: (a, b) of every rank, when the caller gathered them already (`gather_all_with_grad`)."""
    gathered_a, gathered_b = (None, None) if gathered is None else gathered
    logits_ab = contrastive_logits(embeds_a, embeds_b, logit_scale, gathered=gathered_b).float()
    logits_ba = contrastive_logits(embeds_b, embeds_a, logit_scale, gathered=gathered_a).float()
    targets = _positive_targets(embeds_a.shape[0], embeds_a.device)
    if overlaps is not None:
        logits_ab, logits_ba = (logits.masked_fill(_negatives_only(overlap, targets), float("-inf"))
                                for logits, overlap in zip((logits_ab, logits_ba), overlaps))
    return (F.cross_entropy(logits_ab, targets) + F.cross_entropy(logits_ba, targets)) / 2


def sigmoid_loss(embeds_a, embeds_b, logit_scale, logit_bias, overlaps=None, gathered=None):
    """SigLIP: every pair is a binary match / no-match decision, with a learnable bias. With `overlaps` and
    `gathered` (as `clip_loss`; only the first overlap and b are used) the other samples that match are left out of
    the sum."""
    logits = contrastive_logits(embeds_a, embeds_b, logit_scale, logit_bias,
                                gathered=None if gathered is None else gathered[1]).float()
    targets = torch.full_like(logits, -1.0)
    rows = torch.arange(logits.shape[0], device=logits.device)
    positives = _positive_targets(logits.shape[0], logits.device)
    targets[rows, positives] = 1.0
    terms = -F.logsigmoid(targets * logits)
    if overlaps is not None:
        terms = terms.masked_fill(_negatives_only(overlaps[0], positives), 0.0)
    return terms.sum(dim=1).mean()


CONTRASTIVE_LOSSES = {"clip": clip_loss, "sigmoid": sigmoid_loss}


def _negative_columns(similarity, exclude):
    """Bools (as `similarity`): the columns a row may take as its negative: not its own, not in `exclude`, unless
    that leaves none, when every other column may."""
    other = ~torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    allowed = other if exclude is None else other & ~exclude
    return torch.where(allowed.any(dim=1, keepdim=True), allowed, other)


def sample_hard_negatives(similarity, generator=None, exclude=None):
    """For each row, a column index other than its own, drawn with probability softmax(similarity)
    (ALBEF/BLIP hard negatives). The model passes bare cosines, a mild preference for the similar: drawn at the
    contrastive temperature, as ALBEF does, the matching head fell from 0.89 to 0.54 accuracy on the built-in
    scenes, whose batches hold other scenes their captions are true of (trainers/README.md, ablations).
    `exclude` (bools, as `similarity`) takes columns out of the draw: the other samples that match (`pair_overlap`);
    a row with nothing left draws from every other column. A batch of one has no negative: returns None."""
    if similarity.shape[0] < 2:
        return None
    allowed = _negative_columns(similarity, exclude)
    weights = torch.softmax(similarity.detach().float(), dim=1)
    weights = weights.masked_fill(~allowed, 0.0) + 1e-8 * allowed
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def hardest_negatives(similarity, exclude=None):
    """For each row, the most similar column other than its own (and, as far as any is left, not in `exclude`):
    the deterministic choice of `sample_hard_negatives` (for evaluation). A batch of one has no negative: None."""
    if similarity.shape[0] < 2:
        return None
    allowed = _negative_columns(similarity, exclude)
    return similarity.detach().float().masked_fill(~allowed, float("-inf")).argmax(dim=1)


def negative_caption_loss(embeds, rows, negative_embeds, logit_scale):
    """NegCLIP-style hard negatives: sample `rows[k]` of every other modality should be nearer its own caption than
    the k-th false one (its objects swapped, relation turned...). Cross-entropy over the two scaled cosine
    similarities, averaged over the modalities; `embeds` are normalised, text among them."""
    captions = embeds["text"][rows]
    losses = []
    for modality, embedding in embeds.items():
        if modality == "text":
            continue
        embedding = embedding[rows]
        logits = torch.stack([(embedding * captions).sum(-1), (embedding * negative_embeds).sum(-1)], dim=1)
        targets = torch.zeros(len(rows), dtype=torch.long, device=logits.device)
        losses.append(F.cross_entropy((logit_scale.exp() * logits).float(), targets))
    return torch.stack(losses).mean()


def matching_loss(logits, labels):
    """Cross-entropy over match (1) / no match (0)."""
    return F.cross_entropy(logits.float(), labels)


def token_loss(logits, labels):
    """Next-token cross-entropy; positions labelled -100 are ignored."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def ctc_loss(logits, state_mask, labels, left_out=()):
    """CTC (Graves et al., 2006) of per-state `logits` (batch, states, vocabulary + 1; the last class is the blank)
    against the decoder's `labels` (-100 pads; the ids in `left_out`, such as EOS, are not spoken). Alignments that
    cannot fit (more tokens than states) count 0 rather than infinity."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    lengths = state_mask.sum(1) if state_mask is not None else torch.full(
        (logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
    spoken = labels != -100
    for token in left_out:
        spoken &= labels != token
    # Each row's spoken tokens moved to its front (a stable sort keeps their order), as padded (batch, tokens) targets:
    # selecting them by the boolean mask would give a data-dependent size, which breaks a compiled graph.
    order = torch.sort((~spoken).int(), dim=1, stable=True).indices
    targets = labels.gather(1, order).masked_fill(~spoken.gather(1, order), 0)
    return F.ctc_loss(log_probs, targets, lengths.long(), spoken.sum(1), blank=logits.shape[-1] - 1,
                      zero_infinity=True)


def weighted_total(parts, weights):
    """The multi-task loss: sum of weight * part over the parts that were computed."""
    return sum(weights[name] * value for name, value in parts.items() if value is not None)
