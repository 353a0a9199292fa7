"""Retrieval split into its two questions: which objects, and which arrangement of them.

R@1 on the built-in scenes asks both at once, and how hard each is depends on the gallery: a `test` scene shares its
set of objects with ~8 of the 1,000 (counts, sizes and relations vary), a `test_novel` scene with ~58, because the
novel split draws from a few held-out pairs (and its 1,000 scenes hold ~21 sets of objects where `test` holds ~350). So
R@1 on the two splits compares galleries as much as models. Per query-to-image direction:

- `<query>_to_image_R@1_objects`: the top image shows the query scene's set of objects, in any arrangement (its chance
  still depends on how many sets the gallery holds);
- `<query>_to_image_objects_pairwise`: over every query and every image of other objects, how often the query's own
  scene scores higher (ties count half): an AUC, free of the gallery's size;
- `<query>_to_image_details_pairwise`: the same over the images with the query scene's objects that the query is not
  true of (another count, size or relation): the arrangement alone, free of the gallery's size.
"""

import torch

from .metrics import RETRIEVAL_PAIRS


def object_set_metrics(embeds, relevant, object_sets):
    """The figures above for every `<query>_to_image` pair in `embeds` (normalised embeddings by modality);
    `relevant(query, gallery)` is the boolean truth matrix retrieval is scored with, `object_sets` each row's objects
    (any iterable of ids; order and repeats ignored)."""
    sets = [frozenset(int(i) for i in ids) for ids in object_sets]
    index = {s: n for n, s in enumerate(dict.fromkeys(sets))}
    codes = torch.tensor([index[s] for s in sets])
    same = codes[:, None] == codes[None, :]
    metrics = {}
    for query, gallery in RETRIEVAL_PAIRS:
        if gallery != "image" or query not in embeds or "image" not in embeds:
            continue
        similarity = embeds[query].float() @ embeds["image"].float().T
        rows = torch.arange(len(sets))
        metrics[f"{query}_to_image_R@1_objects"] = float(same[rows, similarity.argmax(1)].float().mean())
        truth = relevant(query, "image")
        own = similarity[rows, rows][:, None]
        wins = (own > similarity).float() + 0.5 * (own == similarity).float()
        for name, others in (("objects", ~same), ("details", same & ~truth)):
            if others.any():
                metrics[f"{query}_to_image_{name}_pairwise"] = float(wins[others].mean())
    return metrics
