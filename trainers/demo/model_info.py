"""What the demo's model-card tab shows of a checkpoint: its card, metrics, parameter counts and credits."""

import json
import re


def model_info(predictor):
    """Card text (without front matter), metrics, parameter counts, config, data credits, curve path."""
    card_path = predictor.model_dir / "README.md"
    card = card_path.read_text() if card_path.is_file() else ""
    body = re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.S)
    body = re.sub(r"!\[[^\]]*\]\([^)]*\)\n?", "", body)  # pictures are shown beside the card, not in it
    credits = re.search(r"^## Data\s*\n(.*?)(?=^## |\Z)", body, flags=re.S | re.M)
    if credits:  # shown under its own heading
        body = body.replace(credits.group(0), "")
    metrics = {}
    for name in ("metrics.json", *sorted(p.name for p in predictor.model_dir.glob("eval_*.json"))):
        path = predictor.model_dir / name
        if path.is_file():
            values = json.loads(path.read_text())
            prefix = "" if name == "metrics.json" else f"{path.stem[5:]}/"
            metrics.update({prefix + k: v for k, v in values.items() if isinstance(v, (int, float))})
    curve = predictor.model_dir / "training_curve.png"
    return {"card": body.strip() or f"(no model card in {predictor.model_dir})", "metrics": metrics,
            "parameters": parameter_counts(predictor), "config": json.loads(predictor.config.to_json_string()),
            "data_credits": credits.group(1).strip() if credits else _default_credits(),
            "curve": str(curve) if curve.is_file() else None, "model_dir": str(predictor.model_dir),
            "heads": {"matching": predictor.matcher is not None, "generation": predictor.generator is not None,
                      "ctc": predictor.ctc_reader is not None}}


def parameter_counts(predictor):
    """Parameters per part of the model, counting tied weights once."""
    parts = {"text tower": (predictor.base, "text_model"), "vision tower": (predictor.base, "vision_model"),
             "audio tower": (predictor.base, "audio_model"), "fusion": (predictor.matcher or predictor.generator, "fusion"),
             "matching head": (predictor.matcher, "itm_head"), "text decoder": (predictor.generator, "decoder")}
    counts = {name: _count(getattr(model, attribute, None)) for name, (model, attribute) in parts.items()
              if model is not None and getattr(model, attribute, None) is not None}
    towers = sum(counts.get(name, 0) for name in ("text tower", "vision tower", "audio tower"))
    counts["projections and logit scale"] = _count(predictor.base) - towers
    generator = predictor.generator
    if generator is not None and generator.lm_head.weight is not generator.decoder.embed_tokens.weight:
        counts["LM head"] = _count(generator.lm_head)
    counts["total"] = sum(counts.values())
    return counts


def _count(module):
    return 0 if module is None else sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def _default_credits():
    try:
        from ..export import DATA_CREDITS

        return DATA_CREDITS
    except ImportError:
        return "See the model card of the checkpoint for the data it was trained on."
