"""`xmodal eval --model DIR`: scores a saved checkpoint on a split of its data.

- retrieval: recall@1/5/10 in both directions for every modality pair (XModalModel);
- matching: accuracy and ROC-AUC of the match head on positive pairs and as many mismatched pairs;
- generation: character and word error rates of generated captions (images) and transcripts (speech);
- classification: accuracy of a sequence-classification head;
- composition: whether the true caption of a two-object scene beats it with the objects swapped, the
  relation turned round, a count or a size changed (`composition`), by similarity and by the match head;
- pointing game: whether the fusion's cross-attention peaks inside the box of each object a caption names
  (`pointing`), beside the hit rate of uniform attention.

Every head loads from the same checkpoint with `from_pretrained` (the weight names are shared), so
a pre-training checkpoint is scored on all of them. Results go to JSON and to a Markdown table.
"""

import dataclasses
import json
from pathlib import Path

import torch
from xmodal.modalities import modality_inputs

from .checkpointing import write_text_atomic
from .composition import composition_metrics, composition_triples
from .config import ConfigError, DataConfig, RunConfig, load_config
from .data import (
    XModalDataCollator,
    base_dir,
    check_columns,
    encode_split,
    encoded_cache_dir,
    label_roles,
    load_raw_dataset,
    select_split,
)
from .data.encoding import tokenize_texts
from .loading import load_head, resolve_model_dir, weights_have
from .metrics import (
    caption_relevance,
    classification_accuracy,
    closest_reference_error_rates,
    error_rates,
    matching_metrics,
    metrics_markdown,
    retrieval_metrics,
)
from .object_sets import object_set_metrics
from .pointing import pointing_game


def _load_part(cls, model_dir):
    """One head's view of a checkpoint, in eval mode (`loading.load_head`, quiet about the other heads)."""
    model, missing = load_head(cls, model_dir)
    if model is None:
        raise ConfigError(f"{model_dir} has no weights for {cls.__name__} (missing {missing[:3]}).")
    return model


def _batches(dataset, indices, batch_size, collator):
    for start in range(0, len(indices), batch_size):
        yield collator([dataset[i] for i in indices[start:start + batch_size]])


def _relevance(dataset):
    """Retrieval ground truth from the captions when the data has them (see `caption_relevance`)."""
    captions = dataset.metadata.get("caption")
    if captions is None:
        return None
    return caption_relevance(captions, dataset.metadata.get("captions") or [[c] for c in captions])


def _object_sets(split, dataset):
    """Each encoded row's objects (`emoji_ids` of the built-in scenes, found by `scene_id`), or None."""
    if "emoji_ids" not in split.column_names or "scene_id" not in dataset.metadata:
        return None
    by_scene = dict(zip(split["scene_id"], split["emoji_ids"]))
    return [by_scene[scene] for scene in dataset.metadata["scene_id"]]


@torch.no_grad()
def embed_all(model, dataset, batch_size, collator):
    """L2-normalised embeddings of every modality in the dataset, row i = sample i (`XModalModel.get_embeddings`).
    With several captions per item the text rows are every caption (see `EncodedDataset.caption_rows`)."""
    embeds = {}
    for batch in _batches(dataset, list(range(len(dataset))), batch_size, collator):
        for modality, vectors in model.get_embeddings(**batch).items():
            embeds.setdefault(modality, []).append(vectors)
    embeds = {m: torch.cat(v) for m, v in embeds.items()}
    if "text" in embeds and dataset.offsets is not None:
        captions, owner = dataset.caption_rows()
        rows = [{k: v[i] for k, v in captions.items()} for i in range(len(owner))]
        embeds["text"] = torch.cat([model.get_embeddings(**collator(rows[s:s + batch_size]))["text"]
                                    for s in range(0, len(rows), batch_size)])
    return embeds


def _owner_relevance(owner, count):
    """Flickr30k / COCO: a caption query hits its own item; an item query hits any of its captions."""
    describes = torch.nn.functional.one_hot(owner, count).bool()  # [caption, item]

    def relevant(query, gallery):
        if query == "text":
            return describes
        if gallery == "text":
            return describes.t()
        return torch.eye(count, dtype=torch.bool)

    return relevant


@torch.no_grad()
def matching_scores(model, dataset, pair, batch_size, collator, seed=0):
    """Match probabilities for every sample with its own partner and with a random other sample's."""
    count = len(dataset)
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, max(count, 2), (count,), generator=generator)
    partners = (torch.arange(count) + shift) % count
    relevant = _relevance(dataset)
    describes = relevant("text", "image") if relevant is not None else None
    scores, labels = [], []
    for negative in (False, True):
        for start in range(0, count, batch_size):
            rows = list(range(start, min(start + batch_size, count)))
            first = collator([dataset[i] for i in rows])
            second_rows = [int(partners[i]) for i in rows] if negative else rows
            second = first if not negative else collator([dataset[i] for i in second_rows])
            inputs = {**modality_inputs(first, pair[0]), **modality_inputs(second, pair[1])}
            probability = model(**inputs).logits.float().softmax(-1)[:, 1]
            # A "negative" whose caption happens to be true of the other scene is a positive.
            labels += [int(not negative or (describes is not None and bool(describes[j, i] or describes[i, j])))
                       for i, j in zip(rows, second_rows)]
            scores += probability.tolist()
    return scores, labels


@torch.no_grad()
def read_texts(read, dataset, source, count, batch_size, collator, tokenizer):
    """The texts `read(**inputs)` writes (token ids per sample) from the `source` inputs of the first `count`
    samples: captions (source "image") or transcripts (source "audio")."""
    texts = []
    for batch in _batches(dataset, list(range(count)), batch_size, collator):
        texts += tokenizer.batch_decode(read(**modality_inputs(batch, source)), skip_special_tokens=True)
    return texts


def generate_texts(model, dataset, source, count, batch_size, collator, tokenizer, evaluation):
    """`read_texts` through the decoder: `generate`, with the token ids of the checkpoint's generation config."""
    def generate(**inputs):
        return model.generate(**inputs, do_sample=False, max_new_tokens=evaluation.max_new_tokens,
                              num_beams=evaluation.num_beams)

    return read_texts(generate, dataset, source, count, batch_size, collator, tokenizer)


@torch.no_grad()
def evaluate_checkpoint(model_dir, config=None, split=None, data_path=None, max_samples=None, data=None):
    """All metrics that apply to the checkpoint in `model_dir`; `config` defaults to its training_config.yaml,
    `data` (a `DataConfig`) to its data section."""
    import xmodal
    from xmodal.processing import XModalProcessor

    try:  # a LoRA run's folder holds the adapters, and its merged model in merged/
        model_dir = resolve_model_dir(model_dir)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    if config is None:
        config_file = model_dir / "training_config.yaml"
        config = load_config(config_file) if config_file.is_file() else RunConfig()
    if data_path is not None:
        config.data.path = str(data_path)
    if data is not None:
        config.data = data
    # false captions are a training signal (the composition metrics make their own): not encoded here
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, negative_captions=False))
    evaluation = config.evaluation
    split_name = split or evaluation.split
    max_samples = max_samples if max_samples is not None else evaluation.max_samples
    try:
        processor = XModalProcessor.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{model_dir}: no usable processor files ({str(error).splitlines()[0][:160]}); a "
                          "checkpoint needs the processor saved beside the model (processor_config.json, the "
                          "tokenizer files), as `xmodal train` writes it.") from None
    model_config = xmodal.XModalConfig.from_pretrained(model_dir)
    if config.task == "video":
        return _evaluate_video_checkpoint(model_dir, processor, config, split_name, max_samples)
    modalities = [m for m in config.data.modalities if m in model_config.modalities]
    raw = load_raw_dataset(config.data)
    split = select_split(raw, split_name, max_samples, config.data)
    check_columns(split, split_name, config.data, (*modalities, *label_roles(config.task, config.data)))
    dataset = encode_split(split, processor, config.data, config.task, modalities,
                           cache_dir=encoded_cache_dir(config.data), base_dir=base_dir(config.data), name=split_name)
    collator = XModalDataCollator(processor, config.data, config.task, modalities)
    batch_size = evaluation.batch_size
    metrics = {"split": split_name, "samples": len(dataset), "skipped_rows": dict(dataset.skipped)}
    # (row, true caption, kind, false caption): word order, relation, count and size (see `composition`)
    triples = composition_triples(dataset.metadata.get("caption") or []) if {"text", "image"} <= set(modalities) \
        else []

    if len(modalities) > 1 and config.task in ("pretraining", "contrastive"):  # the heads that train the space
        model = _load_part(xmodal.XModalModel, model_dir)
        embeds = embed_all(model, dataset, batch_size, collator)
        if dataset.offsets is not None:
            relevant = _owner_relevance(dataset.caption_rows()[1], len(dataset))
            metrics.update(retrieval_metrics(embeds, ks=tuple(evaluation.recall_at), relevant=relevant, exact=False))
        else:
            relevant = _relevance(dataset)
            metrics.update(retrieval_metrics(embeds, ks=tuple(evaluation.recall_at), relevant=relevant))
            objects = _object_sets(split, dataset)
            if relevant is not None and objects is not None:  # the built-in scenes: which objects, which arrangement
                metrics.update(object_set_metrics(embeds, relevant, objects))
        if triples and "image" in embeds:
            metrics.update(composition_metrics(triples, embeds["image"], lambda texts: model.get_embeddings(
                **tokenize_texts(processor, texts, config.data))["text"], batch_size=batch_size))
        del model

    if weights_have(model_dir, "itm_head") and len(modalities) > 1:
        model = _load_part(xmodal.XModalForMatching, model_dir)
        if config.task == "matching" and "labels" in dataset.tensors:
            logits = torch.cat([model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
                                for batch in _batches(dataset, list(range(len(dataset))), batch_size, collator)])
            metrics.update(matching_metrics(logits.softmax(-1)[:, 1].numpy(), dataset.tensors["labels"].numpy()))
        else:
            for pair in (("image", "text"), ("audio", "text")):
                if set(pair) <= set(modalities):
                    scores, labels = matching_scores(model, dataset, pair, batch_size, collator,
                                                     evaluation.matching_negatives_seed)
                    metrics.update({f"{pair[0]}_text_{k}": v for k, v in matching_metrics(scores, labels).items()})
        if triples:
            def match_probability(rows, texts):
                pixels = modality_inputs(collator([dataset[i] for i in rows]), "image")
                return model(**pixels, **tokenize_texts(processor, texts, config.data)).logits.float().softmax(-1)[:, 1]

            found = composition_metrics(triples, None, None, match_probability, batch_size=batch_size)
            metrics.update({k: v for k, v in found.items() if k.endswith("_matching")})
        del model

    # Grounding: where the cross-attention fusion looks for each object a caption names (left out, with a note,
    # for other fusions and for data without object boxes).
    metrics.update(pointing_game(model_dir, model_config, modalities, config, split, dataset, processor, collator))

    if model_config.decoder_config is not None and weights_have(model_dir, "decoder.") and "caption" in dataset.metadata:
        model = _load_part(xmodal.XModalForConditionalGeneration, model_dir)
        count = min(len(dataset), evaluation.generation_samples or len(dataset))
        references = dataset.metadata["caption"][:count]
        for source, prefix in (("image", "caption_"), ("audio", "speech_to_text_")):
            if source in modalities:
                hypotheses = generate_texts(model, dataset, source, count, batch_size, collator,
                                            processor.target_tokenizer, evaluation)
                metrics.update(error_rates(references, hypotheses, prefix=prefix))
                if source == "image" and dataset.metadata.get("captions"):  # a scene may be said in many ways
                    true_captions = [[said, *others] for said, others in zip(references, dataset.metadata["captions"])]
                    metrics.update(closest_reference_error_rates(true_captions, hypotheses, "caption_closest_"))
                metrics[f"{prefix}examples"] = [{"reference": r, "generated": h}
                                                for r, h in list(zip(references, hypotheses))[:3]]
        del model

    # Speech to text through the CTC head too (`XModalForCTC`: one pass of the speech tower), on the same clips.
    if "audio" in modalities and "caption" in dataset.metadata and weights_have(model_dir, "ctc_head"):
        model = _load_part(xmodal.XModalForCTC, model_dir)
        count = min(len(dataset), evaluation.generation_samples or len(dataset))
        hypotheses = read_texts(model.transcribe, dataset, "audio", count, batch_size, collator,
                                processor.target_tokenizer)
        metrics.update(error_rates(dataset.metadata["caption"][:count], hypotheses, prefix="speech_to_text_ctc_"))
        del model

    if config.task == "classification" and "labels" in dataset.tensors:
        model = _load_part(xmodal.XModalForSequenceClassification, model_dir)
        logits = torch.cat([model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
                            for batch in _batches(dataset, list(range(len(dataset))), batch_size, collator)])
        metrics.update(classification_accuracy(logits, dataset.tensors["labels"]))
    return metrics


def _evaluate_video_checkpoint(model_dir, processor, config, split_name, max_samples):
    """task: video — the four video tasks on a held-out split (`video_task.evaluate_video`)."""
    from xmodal import XModalForVideoPreTraining

    from .data.video_encoding import encode_video_split
    from .video_task import EVALUATION_SEED, evaluate_video

    model = XModalForVideoPreTraining.from_pretrained(model_dir)
    split = select_split(load_raw_dataset(config.data), split_name, max_samples, config.data)
    dataset = encode_video_split(split, processor, config.data, model.config.video_sync_max_offset, evaluation=True,
                                 cache_dir=encoded_cache_dir(config.data), max_events=config.data.max_events,
                                 name=split_name, seed=EVALUATION_SEED)
    metrics = {"split": split_name, "samples": len(dataset), "skipped_rows": dict(dataset.skipped)}
    metrics.update(evaluate_video(model, dataset, recall_at=tuple(config.evaluation.recall_at)))
    return metrics


def scalar_metrics(metrics):
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def print_metrics(metrics, title="Metrics"):
    print(f"\n{title}\n{metrics_markdown(scalar_metrics(metrics))}\n", flush=True)


def write_metrics(metrics, folder, name):
    """`<name>.json` (everything) and `<name>.md` (the table of numbers) in `folder`; returns the JSON path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name.replace(":", "-")  # `test:unseen-voice` -> eval_test-unseen-voice.json
    write_text_atomic(folder / f"{name}.json", json.dumps(metrics, indent=2))  # whole or not at all
    write_text_atomic(folder / f"{name}.md", metrics_markdown(scalar_metrics(metrics)) + "\n")
    return folder / f"{name}.json"


def data_from(path, modalities):
    """`xmodal eval --data`: the data section of a YAML config, or a folder read as `save_to_disk` output or
    as an image / audio folder (a metadata file beside the files), with the modalities it has columns for."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return load_config(path).data
    if not path.is_dir():
        raise ConfigError(f"--data {str(path)!r}: give a YAML config or a data folder.")
    data = DataConfig(name=None, path=str(path), modalities=list(modalities))
    if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        audio = any(p.suffix.lower() in (".wav", ".flac") for p in path.rglob("*") if p.is_file())
        data.builder = "audiofolder" if audio and not any(p.suffix.lower() in (".png", ".jpg", ".jpeg")
                                                          for p in path.rglob("*")) else "imagefolder"
    columns = next(iter(load_raw_dataset(data).values())).column_names
    data.modalities = [m for m in modalities if data.column(m) in columns] or list(modalities)
    return data


def main(args):
    config = load_config(args.config) if args.config else None
    data = None
    if args.data:
        import xmodal

        try:
            modalities = xmodal.XModalConfig.from_pretrained(resolve_model_dir(args.model)).modalities
        except FileNotFoundError as error:
            raise ConfigError(str(error)) from None
        data = data_from(args.data, modalities)
    metrics = evaluate_checkpoint(args.model, config=config, split=args.split, data_path=args.data_path,
                                  max_samples=args.max_samples, data=data)
    output = Path(args.output_dir or args.model)
    print_metrics(metrics, title=f"{args.model} on {metrics['split']}")  # first: a failed write loses nothing
    written = write_metrics(metrics, output, "eval_" + metrics["split"])
    print(f"Written to {written}")
    return 0
