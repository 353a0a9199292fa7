"""The pointing game: does the fusion look at the object a caption names?

For every test scene and every emoji the caption names, the cross-attention of the name's tokens over the
image's patch grid (the cross-attention fusion's weights, averaged over heads, layers and the name's tokens) has
a peak patch; it is a hit when that patch's centre lies in one of the object's boxes (Zhang et al., "Top-down
neural attention by excitation backprop", 2016). A name said in the plural ("two cats") names every copy, so a
peak in any of their boxes is a hit. Beside the accuracy stands the score of attention that knows nothing: a
peak drawn uniformly over the patches hits with the share of patch centres inside the boxes. Models without
cross-attention over image patches (concat or gated fusion, no image tower, a tower with no patch grid) and data
without `emoji` / `boxes` columns get a one-line note instead of the keys.
"""

import math
import re
import sys
from collections import defaultdict

import torch
from xmodal.modalities import modality_inputs
from xmodal.processing.emoji_assets import pluralize

from .loading import quiet_transformers

KEYS = ("pointing_game_accuracy", "pointing_game_uniform", "pointing_game_objects")
OBJECT_COLUMNS = ("emoji", "boxes")  # the scene generator's names and [x0, y0, x1, y1] pixel boxes, one per emoji


# ---------------------------------------------------------------------------------------
# Geometry: the patch grid over the image
# ---------------------------------------------------------------------------------------
def grid_layout(num_tokens):
    """(side, leading) of an image tower's token sequence: `leading` class tokens (0 or 1), then side x side
    patches in row-major order. The built-in ViT puts a class token first; the CNN only with pooling="cls"
    (`towers.py`); a square and a square plus one never coincide, so the count alone tells. None when the count is
    neither, or the grid is one patch (a tower that hands the fusion a pooled vector has no place to point at)."""
    for leading in (0, 1):
        side = math.isqrt(max(num_tokens - leading, 0))
        if side >= 2 and side * side == num_tokens - leading:
            return side, leading
    return None


def patch_centres(side, image_size):
    """Pixel (x, y) centres of a side x side grid's patches in row-major order, the grid spread over an image of
    `image_size` = (width, height) pixels (the processor resizes a square scene whole onto the model's input)."""
    width, height = image_size
    steps = torch.arange(side, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(steps * height / side, steps * width / side, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


def peak_centre(attention, side, image_size, leading=0):
    """Pixel centre (x, y) of the patch with the most attention; `attention` is one weight per image token,
    `leading` class tokens first (left out: they have no place in the image)."""
    grid = attention[leading:]
    if grid.numel() != side * side:
        raise ValueError(f"{attention.numel()} image tokens are not {leading} + {side}x{side}.")
    return tuple(patch_centres(side, image_size)[int(grid.argmax())].tolist())


def inside(points, boxes):
    """Whether each (x, y) point lies in any of the [x0, y0, x1, y1] boxes, taken half-open (x0 <= x < x1) as
    the scene generator draws them (x1 = x0 + size), so a point on a shared edge is in one box only."""
    points = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    x, y = points[:, None, 0], points[:, None, 1]
    return ((boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])).any(dim=1)


def uniform_hit_rate(side, image_size, boxes):
    """Expected hit rate of a peak drawn uniformly over the patches: the share of patch centres in the boxes."""
    return float(inside(patch_centres(side, image_size), boxes).double().mean())


# ---------------------------------------------------------------------------------------
# Text: which tokens say a name
# ---------------------------------------------------------------------------------------
def name_char_spans(caption, names):
    """{name: [(start, end), ...]}: every place the caption says each name, singular or plural ("person in
    tuxedo" / "people in tuxedo"), as whole words, case aside. Every occurrence is kept, since each names the
    same objects. Longer names claim their words first, so "man" is not found inside "man detective"."""
    spans, taken = {}, []
    for name in sorted(set(names), key=len, reverse=True):
        forms = sorted({name, pluralize(name)}, key=len, reverse=True)  # "cats" before "cat" at one place
        pattern = r"\b(?:" + "|".join(map(re.escape, forms)) + r")\b"
        found = [m.span() for m in re.finditer(pattern, caption, flags=re.IGNORECASE)
                 if not any(m.start() < end and start < m.end() for start, end in taken)]
        spans[name] = found
        taken += found
    return {name: spans[name] for name in names}


def token_positions(offsets, spans):
    """Positions of the tokens whose characters overlap any of `spans`, from the fast tokenizer's
    `offset_mapping`; special and padding tokens have empty offsets and never do."""
    return [position for position, (start, end) in enumerate(offsets) if end > start
            and any(start < span_end and span_start < end for span_start, span_end in spans)]


def caption_objects(caption, offsets, emoji, boxes):
    """[(token positions, boxes)] for each distinct emoji of a scene that the caption names within the tokens
    kept (a name cut off by truncation is left out); copies of one emoji share their name, so their boxes go
    together."""
    grouped = defaultdict(list)
    for name, box in zip(emoji, boxes):
        grouped[name].append(list(box))
    spans = name_char_spans(caption, list(grouped))
    objects = [(token_positions(offsets, spans[name]), grouped[name]) for name in grouped]
    return [(tokens, object_boxes) for tokens, object_boxes in objects if tokens]


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------
def pointing_results(cross_attentions, objects, image_sizes, query_offset=1):
    """[(hit, uniform)] for every object of every row. `cross_attentions`: one (batch, heads, queries, image
    tokens) tensor per fusion layer; `objects[row]`: [(text token positions, boxes)] as `caption_objects` gives;
    `image_sizes[row]`: (width, height) of the image the boxes are drawn on; `query_offset`: the query tokens before
    the text's (the fusion's [FUSE] token)."""
    maps = torch.stack([layer.float() for layer in cross_attentions]).mean(dim=(0, 2))  # (batch, queries, image)
    layout = grid_layout(maps.shape[-1])
    if layout is None:
        raise ValueError(f"{maps.shape[-1]} image tokens are no patch grid (a square, after at most one class token).")
    side, leading = layout
    results = []
    for row, row_objects in enumerate(objects):
        for tokens, boxes in row_objects:
            attention = maps[row, [query_offset + t for t in tokens]].mean(dim=0)
            peak = peak_centre(attention, side, image_sizes[row], leading)
            results.append((float(inside([peak], boxes)[0]), uniform_hit_rate(side, image_sizes[row], boxes)))
    return results


def pointing_summary(results):
    """The accuracy, the uniform baseline and the number of objects scored; {} when none was."""
    if not results:
        return {}
    hits, uniform = zip(*results)
    return {"pointing_game_accuracy": sum(hits) / len(hits), "pointing_game_uniform": sum(uniform) / len(uniform),
            "pointing_game_objects": len(results)}


# ---------------------------------------------------------------------------------------
# On a checkpoint (`xmodal eval`)
# ---------------------------------------------------------------------------------------
def missing_requirement(model_config, modalities, columns, tokenizer):
    """Why the pointing game cannot be played with this model and data (one line), or None."""
    if "image" not in modalities or "text" not in modalities:
        return f"it needs a text and an image tower and data with both (scoring {sorted(modalities)})"
    if model_config.fusion_type != "cross_attention":
        return f"fusion_type={model_config.fusion_type!r} has no cross-attention over image patches"
    absent = [c for c in OBJECT_COLUMNS if c not in columns]
    if absent:
        return f"the data has no {' / '.join(absent)} column (object names and boxes)"
    if not getattr(tokenizer, "is_fast", False):
        return "the tokenizer is not a fast one (no offset mapping to find the names' tokens)"
    return None


def load_fusion_model(model_dir):
    """The towers and cross-attention fusion of any head's checkpoint, viewed as `XModalForMatching` (whose
    match head may be missing: it is not used here); None when the checkpoint has no fusion weights."""
    import xmodal

    with quiet_transformers():
        model, info = xmodal.XModalForMatching.from_pretrained(model_dir, output_loading_info=True)
    missing = [key for key in info.get("missing_keys") or [] if not key.startswith("itm_head.")]
    return None if missing else model.eval()


def _scene_rows(split, dataset, image_column):
    """(emoji, boxes, (width, height)) for each row of the encoded `dataset`, matched to the raw split by
    `scene_id` (rows may have been skipped in encoding), or by position when neither is missing rows."""
    keys = split["scene_id"] if "scene_id" in split.column_names else None
    wanted = dataset.metadata.get("scene_id")
    if keys is not None and wanted is not None:
        where = {key: index for index, key in enumerate(keys)}
        indices = [where.get(key) for key in wanted]
    elif len(split) == len(dataset):
        indices = list(range(len(split)))
    else:
        return None
    if any(index is None for index in indices):
        return None
    emoji, boxes = split["emoji"], split["boxes"]
    images = split.select_columns([image_column])
    return [(emoji[i], boxes[i], images[i][image_column].size) for i in indices]


def _note(reason):
    print(f"  note: pointing game left out: {reason}", file=sys.stderr)
    return {}


@torch.no_grad()
def pointing_game(model_dir, model_config, modalities, config, split, dataset, processor, collator):
    """`pointing_game_accuracy`, `pointing_game_uniform` and `pointing_game_objects` of the checkpoint in
    `model_dir` on an evaluated split (`split` raw, `dataset` encoded from it); {} and a note on stderr when the
    model or the data cannot play (see `missing_requirement`)."""
    tokenizer = processor.tokenizer
    reason = missing_requirement(model_config, modalities, split.column_names, tokenizer)
    if reason:
        return _note(reason)
    model = load_fusion_model(model_dir)
    if model is None:
        return _note(f"{model_dir} has no fusion weights (a checkpoint of the embedding space alone)")
    scenes = _scene_rows(split, dataset, config.data.column("image"))
    captions = dataset.metadata.get("caption")
    if scenes is None or captions is None:
        return _note("the encoded rows cannot be matched to the split's scenes and captions")
    results, batch_size = [], config.evaluation.batch_size
    for start in range(0, len(dataset), batch_size):
        rows = list(range(start, min(start + batch_size, len(dataset))))
        text = tokenizer([captions[i] for i in rows], padding="longest", truncation=True,
                         max_length=config.data.max_text_length, return_offsets_mapping=True, return_tensors="pt")
        offsets = text.pop("offset_mapping").tolist()
        text.pop("token_type_ids", None)
        pixels = modality_inputs(collator([dataset[i] for i in rows]), "image")
        cross_attentions = model(**text, **pixels, output_attentions=True).fusion_output.cross_attentions
        if not cross_attentions or grid_layout(cross_attentions[0].shape[-1]) is None:
            return _note(f"the fusion's image tokens ({cross_attentions[0].shape[-1] if cross_attentions else 0}) "
                         "are no patch grid")
        objects = [caption_objects(captions[i], offsets[k], *scenes[i][:2]) for k, i in enumerate(rows)]
        query_offset = cross_attentions[0].shape[2] - text["input_ids"].shape[1]  # the [FUSE] token
        results += pointing_results(cross_attentions, objects, [scenes[i][2] for i in rows], query_offset)
    del model
    return pointing_summary(results) or _note("no caption of the split names one of its scene's objects")
