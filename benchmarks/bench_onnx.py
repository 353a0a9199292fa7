"""ONNX Runtime against PyTorch: embeddings per second of each tower's graph from `xmodal export onnx`.

The default-size model (the `model` section of configs/default.yaml, random weights; vocabulary and text length
from its `data` section) is exported tower by tower with `export_tower`, the function behind the command, and
each graph runs in onnxruntime beside the model's own `get_embeddings`, both on the same inputs and the same
number of threads, alternating call by call, at batch 1 (a query) and batch 64 (indexing). Text is 32 tokens
(one row half padded), images 64 px, audio 6 s of 64-bin log-mel at 20 ms frames (300 frames).
"""

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    arguments, fmt, interleaved, machine_info, median, print_machine, print_table, spread, write_json,
)

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 64)


def default_model():
    from xmodal import XModalConfig, XModalModel
    from xmodal.trainers.config import load_config

    run = load_config(REPO / "configs" / "default.yaml")
    kwargs = dict(run.model)
    kwargs["text_config"] = {**kwargs["text_config"], "vocab_size": run.data.tokenizer_vocab_size,
                             "max_position_embeddings": run.data.max_text_length}
    kwargs["decoder_config"] = None  # the towers alone: a retrieval service embeds, it does not generate
    torch.manual_seed(0)
    return XModalModel(XModalConfig(**kwargs)).eval(), run.data


def batch_inputs(config, data, modality, batch_size):
    """{input name: tensor} for one tower at full length, the way the processor pads it."""
    generator = torch.Generator().manual_seed(batch_size)
    if modality == "text":
        length = data.max_text_length
        ids = torch.randint(3, config.text_config.vocab_size, (batch_size, length), generator=generator)
        mask = torch.ones(batch_size, length, dtype=torch.long)
        mask[0, length // 2:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    if modality == "image":
        size = config.vision_config.image_size
        return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=generator)}
    frames = int(data.max_audio_seconds * 16000 / data.audio_hop_length)
    return {"input_features": torch.randn(batch_size, config.audio_config.num_mel_bins, frames, generator=generator),
            "feature_attention_mask": torch.ones(batch_size, frames, dtype=torch.long)}


def main():
    args = arguments(__doc__.splitlines()[0])
    info = machine_info()
    print_machine(info)
    import onnxruntime

    from xmodal.trainers.export_onnx import export_tower

    model, data = default_model()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    repeats = 3 if args.quick else 15
    rows, payload = [], {"machine": info, "onnxruntime": onnxruntime.__version__, "results": {}}
    with tempfile.TemporaryDirectory() as folder:
        for modality in model.config.modalities:
            path = Path(folder) / f"{modality}.onnx"
            export_tower(model, modality, path)
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for batch_size in BATCHES:
                inputs = batch_inputs(model.config, data, modality, batch_size)
                arrays = {name: value.numpy() for name, value in inputs.items()}
                with torch.inference_mode():
                    expected = model.get_embeddings(**inputs)[modality]
                    difference = float((torch.from_numpy(session.run(None, arrays)[0]) - expected).abs().max())
                    times = interleaved({"pytorch": lambda: model.get_embeddings(**inputs),
                                         "onnxruntime": lambda: session.run(None, arrays)},
                                        repeats=repeats, warmup=2, budget_s=10 if args.quick else 30)
                torch_s, ort_s = median(times["pytorch"]), median(times["onnxruntime"])
                rows.append([modality, batch_size, fmt(batch_size / torch_s), fmt(batch_size / ort_s),
                             f"{torch_s / ort_s:.2f}x", f"{spread(times['pytorch']):.0%} / "
                             f"{spread(times['onnxruntime']):.0%}", f"{difference:.1e}"])
                payload["results"][f"{modality}/{batch_size}"] = {
                    "pytorch_per_s": batch_size / torch_s, "onnxruntime_per_s": batch_size / ort_s,
                    "onnxruntime_speedup": torch_s / ort_s, "max_difference": difference}
    print_table(f"Embeddings/s, PyTorch {torch.__version__} eager fp32 against onnxruntime {onnxruntime.__version__} "
                f"({torch.get_num_threads()} threads each; medians of interleaved calls)",
                ["tower", "batch", "pytorch /s", "onnxruntime /s", "onnxruntime speedup", "spread (pt / ort)",
                 "max |difference|"], rows)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
