"""Metrics: retrieval recall@k, matching accuracy and ROC-AUC, error rates, classification accuracy.

Plain functions of tensors and lists, so the Accelerate loop, `xmodal eval` and the Trainer's
`compute_metrics` share them. Error rates come from `jiwer`, ROC-AUC from scikit-learn.
"""

import re

import numpy as np
import torch

# The pairs scored in both directions, named "<query>_to_<gallery>".
RETRIEVAL_PAIRS = (("text", "image"), ("text", "audio"), ("audio", "image"))


def recall_at_k(similarity, ks=(1, 5, 10), relevant=None):
    """Fraction of queries (rows) with a relevant gallery item (column) among their k most similar.

    `relevant` is a boolean (queries, gallery) matrix; by default query i matches gallery item i only.
    """
    similarity = similarity.float()
    if relevant is None:
        relevant = torch.eye(*similarity.shape, dtype=torch.bool)
    ranking = similarity.argsort(dim=1, descending=True)
    hits = torch.gather(relevant, 1, ranking)
    return {k: float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def caption_relevance(captions, true_captions):
    """Which samples answer which queries when captions can be ambiguous ("a zebra" is true of a
    scene captioned "a big zebra"): returns `relevant(query_modality, gallery_modality)`.

    `captions[i]` is what sample i's text says (and its speech speaks); `true_captions[i]` is every
    phrasing true of its image. A description matches an image when it is one of the image's true
    phrasings; two descriptions match when either is true of the other's scene.
    """
    said = [normalize_text(c) for c in captions]
    true = [{normalize_text(c) for c in options} | {s} for options, s in zip(true_captions, said)]
    describes = torch.tensor([[s in t for t in true] for s in said])  # [i, j]: description i is true of scene j

    def relevant(query, gallery):
        if gallery == "image" and query != "image":
            return describes
        if query == "image" and gallery != "image":
            return describes.t()
        return describes | describes.t()

    return relevant


def retrieval_metrics(embeds, ks=(1, 5, 10), relevant=None, exact=True):
    """Recall@k in both directions for every pair of modalities in `embeds` (L2-normalised, row i = sample i).

    With `relevant` (from `caption_relevance`) a retrieved item counts when its caption fits the
    query; `..._R@1_exact` then also reports the strict score (only the paired item counts).
    """
    metrics = {}
    for a, b in RETRIEVAL_PAIRS:
        if a not in embeds or b not in embeds:
            continue
        similarity = embeds[a].float() @ embeds[b].float().t()
        for query, gallery, matrix in ((a, b, similarity), (b, a, similarity.t())):
            name = f"{query}_to_{gallery}"
            mask = relevant(query, gallery) if relevant is not None else None
            for k, value in recall_at_k(matrix, ks, mask).items():
                metrics[f"{name}_R@{k}"] = value
            if relevant is not None and exact:
                metrics[f"{name}_R@1_exact"] = recall_at_k(matrix, (1,))[1]
    return metrics


def matching_metrics(match_probability, labels):
    """Accuracy at 0.5 and ROC-AUC of match probabilities against 0/1 labels."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(match_probability, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    metrics = {"matching_accuracy": float(((scores >= 0.5).astype(int) == labels).mean())}
    if len(set(labels.tolist())) == 2:
        metrics["matching_roc_auc"] = float(roc_auc_score(labels, scores))
    return metrics


def normalize_text(text):
    """Lower case, punctuation removed, single spaces: error rates score words, not typography."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def error_rates(references, hypotheses, prefix=""):
    """Character and word error rates (jiwer) over a corpus, after `normalize_text`."""
    import jiwer

    references = [normalize_text(r) or "<empty>" for r in references]
    hypotheses = [normalize_text(h) for h in hypotheses]
    return {f"{prefix}cer": float(jiwer.cer(references, hypotheses)),
            f"{prefix}wer": float(jiwer.wer(references, hypotheses))}


def closest_reference_error_rates(reference_lists, hypotheses, prefix=""):
    """Error rates when an output may say any of several true texts (a scene in any of its phrasings, as COCO
    scores a caption against all of its references): each hypothesis is scored against the reference it is
    closest to (fewest edits per reference unit, characters for CER and words for WER, chosen separately), and
    edits and reference lengths are summed over the corpus as `error_rates` sums them over one reference each."""
    import jiwer

    if len(reference_lists) != len(hypotheses):
        raise ValueError(f"{len(reference_lists)} reference lists for {len(hypotheses)} hypotheses")
    # sorted: of two references equally close, the same one counts in every process (set order is hash-seeded)
    reference_lists = [sorted({normalize_text(r) or "<empty>" for r in references}) for references in reference_lists]
    hypotheses = [normalize_text(h) for h in hypotheses]
    rates = {}
    for unit, process in (("cer", jiwer.process_characters), ("wer", jiwer.process_words)):
        edits = length = 0
        for references, hypothesis in zip(reference_lists, hypotheses):
            best = None
            for reference in references:
                out = process(reference, hypothesis)
                errors = out.substitutions + out.deletions + out.insertions
                size = out.substitutions + out.deletions + out.hits  # the reference's length
                if best is None or errors * best[1] < best[0] * size:
                    best = (errors, size)
            if best is None:
                raise ValueError("closest_reference_error_rates needs at least one reference per hypothesis")
            edits, length = edits + best[0], length + best[1]
        rates[f"{prefix}{unit}"] = float(edits / length)
    return rates


def classification_accuracy(logits, labels):
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    return {"accuracy": float((logits.argmax(dim=-1) == labels).float().mean())}


def make_compute_metrics(task):
    """`compute_metrics` for `transformers.Trainer` on a task's head (see `xmodal.trainers.config.TASKS`).

    The Trainer hands over the model outputs (without the loss) and `labels`. Matching and
    classification score the logits; the contrastive model scores in-batch retrieval from its
    image/text logits (the Trainer concatenates them batch by batch, so this is R@1 within a batch).
    """

    def first(predictions):
        return predictions[0] if isinstance(predictions, (tuple, list)) else predictions

    def compute_metrics(eval_prediction):
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        if task == "matching":
            logits = torch.as_tensor(first(predictions)).float()
            return matching_metrics(logits.softmax(-1)[:, 1].numpy(), labels)
        if task == "classification":
            return classification_accuracy(first(predictions), labels)
        if task == "contrastive":
            logits = torch.as_tensor(first(predictions)).float()
            return {"in_batch_R@1": float((logits.argmax(-1) == torch.arange(len(logits)) % logits.shape[1])
                                          .float().mean())}
        return {}

    return compute_metrics


def metrics_markdown(metrics):
    """A two-column Markdown table of flat metrics."""
    lines = ["| metric | value |", "|---|---|"]
    for name, value in metrics.items():
        lines.append(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    return "\n".join(lines)
