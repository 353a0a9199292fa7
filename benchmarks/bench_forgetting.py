"""What fine-tuning keeps (issue 17): a checkpoint trained from pretrained speech towers against the same towers
untouched, transcribing speech that fine-tuning never saw.

`configs/pretrained.yaml` adapts Whisper tiny.en (encoder and decoder, LoRA) to the scenes' captions. That can
teach it the captions' template and unteach English. This script transcribes, with

- Whisper as converted (`transformers`' own `WhisperForConditionalGeneration`, its 30-second window): the
  reference the issue names;
- the composed model before fine-tuning, rebuilt from the checkpoint's own `training_config.yaml` (the same
  towers, window and processor, no adapters);
- the fine-tuned checkpoint, and with `--parts` the same with its speech encoder, then its decoder, put back
  as they were (which part's fine-tuning costs what is forgotten);

the held-out everyday sentences (`xmodal.processing.held_out_sentences`: sentences no split resembles, spoken by
SVOX Pico and eSpeak's unseen voices) and the first clips of the scenes' `test` split (what fine-tuning is for),
scored by `xmodal.trainers.metrics.error_rates` (WER and CER after lower-casing and removing punctuation).
The issue's goal: on the sentences, the fine-tuned WER within 1.5x of Whisper's; on the captions, as good or
better.

    python benchmarks/bench_forgetting.py --model runs/pretrained/model [--sentences data_cache/sentences]
"""

import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from common import arguments, machine_info, print_machine, print_table, write_json  # noqa: E402



def untouched_model(checkpoint, folder):
    """Saves into `folder` the model `checkpoint` was fine-tuned from: its towers composed as its config says,
    without LoRA adapters (an adapter starts as the identity), with the checkpoint's processor."""
    from xmodal.modeling_xmodal import decoder_generation_config
    from xmodal.processing import XModalProcessor
    from xmodal.trainers.config import load_config, save_config
    from xmodal.trainers.loop import build_model

    config = load_config(checkpoint / "training_config.yaml")
    if not config.towers.parts():
        sys.exit(f"{checkpoint}: its config has no pretrained towers (`towers:`); nothing to compare against.")
    untouched = copy.deepcopy(config)
    untouched.lora.enabled = False
    processor = XModalProcessor.from_pretrained(checkpoint)
    model = build_model(untouched, processor.tokenizer, processor.target_tokenizer)
    model.save_pretrained(folder)
    if model.config.decoder_config is not None:
        decoder_generation_config(model.config).save_pretrained(folder)
    processor.save_pretrained(folder)
    save_config(untouched, folder / "training_config.yaml")
    return config


def mixed_model(fine_tuned, untouched, prefixes, folder, config, keep=0.0):
    """Saves into `folder` the fine-tuned model with the parameters under `prefixes` moved back towards the
    untouched ones, keeping the fraction `keep` of their fine-tuning: 0 puts them back as they were (which part's
    fine-tuning costs what it forgets), 0 < keep < 1 is a weight-space ensemble (WiSE-FT)."""
    from xmodal.modeling_xmodal import decoder_generation_config
    from xmodal.processing import XModalProcessor
    from xmodal.trainers.config import save_config
    from xmodal.trainers.loop import model_class

    cls = model_class(config.task)
    model = cls.from_pretrained(fine_tuned)
    original = cls.from_pretrained(untouched).state_dict()
    replaced = {name: torch.lerp(original[name].float(), value.float(), keep).to(value.dtype)
                for name, value in model.state_dict().items() if name.startswith(tuple(prefixes))}
    if not replaced:
        sys.exit(f"No parameter of {fine_tuned} starts with one of {prefixes}.")
    model.load_state_dict(replaced, strict=False)
    model.save_pretrained(folder)
    decoder_generation_config(model.config).save_pretrained(folder)
    XModalProcessor.from_pretrained(fine_tuned).save_pretrained(folder)
    save_config(config, folder / "training_config.yaml")


def clips(sentences, data_config, count):
    """{data name: (references, float32 16-kHz arrays)}: the held-out sentences, and the first `count` clips of the
    test split of the checkpoint's data."""
    import json

    from xmodal.processing.speech import decode_audio
    from xmodal.processing.speech_pico import is_pico_voice
    from xmodal.trainers.data import load_raw_dataset, select_split

    rows = [json.loads(line) for line in (sentences / "test" / "metadata.jsonl").read_text().splitlines()]
    found = {}
    for row in rows:  # by engine: Pico's voices, eSpeak's unseen ones
        engine = "Pico" if is_pico_voice(row["voice"]) else "eSpeak, unseen voices"
        references, audio = found.setdefault(f"held-out sentences ({engine})", ([], []))
        references.append(row["caption"])
        audio.append(decode_audio((sentences / "test" / row["file_name"]).read_bytes())[0])
    test = select_split(load_raw_dataset(data_config), "test", count, data_config)
    found["test captions (eSpeak, training voices)"] = (list(test["caption"]),
                                                        [decode_audio(audio)[0] for audio in test["audio"]])
    return found


@torch.no_grad()
def transcribe_xmodal(folder, audio, batch_size=32, max_new_tokens=48):
    """Transcripts by an xmodal checkpoint, as `xmodal eval` makes them: its own processor and generation config."""
    from xmodal import XModalForConditionalGeneration
    from xmodal.processing import XModalProcessor

    processor = XModalProcessor.from_pretrained(folder)
    model = XModalForConditionalGeneration.from_pretrained(folder).eval()
    texts = []
    for start in range(0, len(audio), batch_size):
        inputs = processor(audio=audio[start:start + batch_size], sampling_rate=16_000, return_tensors="pt")
        ids = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        texts += processor.batch_decode(ids, skip_special_tokens=True)
    return texts


@torch.no_grad()
def transcribe_whisper(folder, audio, batch_size=32, max_new_tokens=48):
    """Transcripts by Whisper as converted, through transformers' own classes (its 30-second window)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    extractor = WhisperFeatureExtractor.from_pretrained(folder)
    tokenizer = WhisperTokenizerFast.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    texts = []
    for start in range(0, len(audio), batch_size):
        features = extractor(audio[start:start + batch_size], sampling_rate=16_000, return_tensors="pt",
                             return_attention_mask=True)
        ids = model.generate(features.input_features, attention_mask=features.attention_mask,
                             max_new_tokens=max_new_tokens)
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return texts


def main():
    def options(parser):
        parser.add_argument("--model", required=True, help="a checkpoint trained from pretrained towers (RUN/model)")
        parser.add_argument("--sentences", default="data_cache/sentences",
                            help="the held-out sentences as an audiofolder (built there by `xmodal data sentences` "
                                 "when missing)")
        parser.add_argument("--caption-samples", type=int, default=300, help="test-split clips to transcribe")
        parser.add_argument("--parts", action="store_true",
                            help="also score the fine-tuned model with its speech encoder, then its decoder, untouched")
        parser.add_argument("--keep", type=float, nargs="*", default=[],
                            help="also score the fine-tuned model with only this fraction of its speech encoder's and "
                                 "decoder's fine-tuning kept (WiSE-FT's weight-space ensemble with the untouched "
                                 "model; e.g. --keep 0.5 0.75)")
        parser.add_argument("--keep-decoder", type=float, nargs="*", default=[],
                            help="the same for the decoder alone (the speech encoder, which retrieval reads, stays "
                                 "fine-tuned)")

    args = arguments(__doc__.splitlines()[0], options)

    from xmodal.trainers.metrics import error_rates
    from xmodal.trainers.pretrained.sources import resolve_source

    checkpoint = Path(args.model)
    fine_tuned = checkpoint / "merged" if (checkpoint / "merged" / "config.json").is_file() else checkpoint
    sentences = Path(args.sentences)
    if not (sentences / "test" / "metadata.jsonl").is_file():
        from xmodal.trainers.data.export import export_sentences

        export_sentences(sentences)  # as `xmodal data sentences --out` does
    info = machine_info()
    print_machine(info)
    from xmodal.trainers.config import load_config

    data = clips(sentences, load_config(fine_tuned / "training_config.yaml").data, args.caption_samples)
    results = {"machine": info, "model": str(checkpoint), "sentences": str(sentences), "scores": {}}
    with tempfile.TemporaryDirectory() as tmp:
        untouched = Path(tmp) / "untouched"
        config = untouched_model(fine_tuned, untouched)
        audio_source = config.towers.parts().get("audio", {}).get("from")
        models = {}
        if audio_source:
            models["Whisper as converted (30-s window)"] = (transcribe_whisper, resolve_source(audio_source))
        models["composed, untouched"] = (transcribe_xmodal, untouched)
        models["fine-tuned"] = (transcribe_xmodal, fine_tuned)
        if args.parts:
            for name, prefix in (("fine-tuned, speech encoder untouched", "xmodal.audio_model."),
                                 ("fine-tuned, decoder untouched", "decoder.")):
                folder = Path(tmp) / name.replace(" ", "_").replace(",", "")
                mixed_model(fine_tuned, untouched, [prefix], folder, config)
                models[name] = (transcribe_xmodal, folder)
        for keep, prefixes, parts in [*((k, ["xmodal.audio_model.", "decoder."], "speech encoder and decoder")
                                        for k in args.keep),
                                      *((k, ["decoder."], "decoder") for k in args.keep_decoder)]:
            name = f"fine-tuning x {keep:g} ({parts})"
            folder = Path(tmp) / name.replace(" ", "_").replace("(", "").replace(")", "")
            mixed_model(fine_tuned, untouched, prefixes, folder, config, keep=keep)
            models[name] = (transcribe_xmodal, folder)
        for name, (transcribe, folder) in models.items():
            start = time.perf_counter()
            scores = {}
            for data_name, (references, audio) in data.items():
                hypotheses = transcribe(folder, audio)
                scores[data_name] = {**error_rates(references, hypotheses), "references": references,
                                     "hypotheses": hypotheses}
            results["scores"][name] = scores
            first = next(iter(scores.values()))
            print(f"{name}: {time.perf_counter() - start:.0f} s; e.g. {first['references'][0]!r} -> "
                  f"{first['hypotheses'][0]!r}", flush=True)
    reference = next(iter(models))
    rows = []
    for data_name in data:
        for metric in ("wer", "cer"):
            base = results["scores"][reference][data_name][metric]
            rows.append([data_name, metric.upper(), *(
                f"{results['scores'][name][data_name][metric]:.4f}"
                + (f" ({results['scores'][name][data_name][metric] / base:.2f}x)" if base and name != reference else "")
                for name in models)])
    print_table(f"Transcripts (ratio to {reference})", ["data", "metric", *models], rows)
    for data_name in data:
        if data_name.startswith("held-out"):
            before = results["scores"][reference][data_name]["wer"]
            after = results["scores"]["fine-tuned"][data_name]["wer"]
            print(f"goal, {data_name}: fine-tuned WER within 1.5x of {reference}'s: {after:.4f} against "
                  f"{1.5 * before:.4f} -> {'met' if after <= 1.5 * before else 'NOT met'}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
