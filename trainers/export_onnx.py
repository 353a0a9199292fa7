"""`xmodal export onnx`: one ONNX graph per tower of a saved checkpoint (inputs -> L2-normalised embedding in the
shared space), with the processor beside them, so that a retrieval service embeds with onnxruntime alone.

The graphs come from the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`), deprecated but working in
torch 2.13; the default `dynamo=True` exporter needs `onnxscript`, which xmodal does not install. Tracing records
the branch the example takes (`layers.padding_mask` skips the mask of an unpadded batch in eager mode), so the
examples here always hold a padded row (the masked path, which also gives the right answer on unpadded rows),
and every graph is checked against PyTorch at a second batch size and length before it is kept.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xmodal.modalities import MODALITIES

from .checkpointing import atomic_folder
from .loading import quiet_transformers, resolve_model_dir

DEFAULT_OPSET = 17
# Attention exports as scaled_dot_product_attention from opset 14; 20 is the TorchScript exporter's newest.
OPSETS = range(14, 21)
MANIFEST = "onnx_export.json"
# Axes that vary between calls, past the batch axis 0: text tokens and log-mel frames.
SEQUENCE_AXES = {"input_ids": (1, "sequence"), "attention_mask": (1, "sequence"),
                 "input_features": (2, "frames"), "feature_attention_mask": (1, "frames")}
GRAPH_INPUT_SKIPPED = ("token_type_ids",)  # our processor never emits it; a BERT tower defaults it to zeros
TOLERANCE = 1e-4  # on L2-normalised float32 embeddings


def require_onnx():
    """(onnx, onnxruntime), or an ImportError that names the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"ONNX export needs `onnx` and `onnxruntime` ({error.name} is not installed): "
                          "pip install 'xmodal[dev]' (or pip install onnx onnxruntime).") from error
    return onnx, onnxruntime


def graph_inputs(modality):
    """The graph's input names for `modality`: its `forward` arguments, main tensor first."""
    return [name for name in MODALITIES[modality].inputs if name not in GRAPH_INPUT_SKIPPED]


def dynamic_axes(modality):
    axes = {name: {0: "batch"} for name in graph_inputs(modality)}
    for name, (axis, label) in SEQUENCE_AXES.items():
        if name in axes:
            axes[name][axis] = label
    axes[f"{modality}_embeds"] = {0: "batch"}
    return axes


class TowerEmbedding(nn.Module):
    """One modality's embedding through the model's own `get_embeddings`, with the graph inputs positional
    (the exporter names them in this order)."""

    def __init__(self, model, modality):
        super().__init__()
        self.model = model
        self.modality = modality
        self.input_names = graph_inputs(modality)

    def forward(self, *inputs):
        return self.model.get_embeddings(**dict(zip(self.input_names, inputs)))[self.modality]


def example_inputs(config, modality, batch_size, length, seed=0):
    """Random inputs for one tower; row 0 is padded to half its length (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    tower = getattr(config, MODALITIES[modality].config_key)
    if modality == "image":
        size = tower.image_size if isinstance(tower.image_size, int) else tuple(tower.image_size)[0]
        return (torch.randn(batch_size, getattr(tower, "num_channels", 3), size, size, generator=generator),)
    if modality == "text":
        length = min(length, getattr(tower, "max_position_embeddings", None) or length)
        ids = torch.randint(3, tower.vocab_size, (batch_size, length), generator=generator)
        mask = torch.ones(batch_size, length, dtype=torch.long)
        mask[0, (length + 1) // 2:] = 0
        ids[0, (length + 1) // 2:] = getattr(tower, "pad_token_id", None) or 0
        return ids, mask
    limit = getattr(tower, "max_input_frames", None) or 2 * getattr(tower, "max_source_positions", length)
    length = min(length, limit)
    features = torch.randn(batch_size, tower.num_mel_bins, length, generator=generator)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[0, (length + 1) // 2:] = 0
    return features, mask


def export_tower(model, modality, path, opset=DEFAULT_OPSET):
    """Writes `modality`'s graph of `model` (eval mode) to `path` and checks it against PyTorch at two batch
    sizes and lengths; returns the graph's largest difference from PyTorch."""
    onnx, onnxruntime = require_onnx()
    wrapper = TowerEmbedding(model, modality).eval()
    names = wrapper.input_names
    example = example_inputs(model.config, modality, batch_size=2, length=96)
    with warnings.catch_warnings():
        # The exporter's deprecation notice, and tracing's notes on Python bools (shape checks and the padding
        # branch), which the comparison below stands in for.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(wrapper, example, str(path), dynamo=False, opset_version=opset, input_names=names,
                              output_names=[f"{modality}_embeds"], dynamic_axes=dynamic_axes(modality))
    graph = onnx.load(str(path))
    # Shape inference leaves the embedding axis symbolic after the L2 normalisation; it is the projection size.
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = model.config.projection_dim
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in (example, example_inputs(model.config, modality, batch_size=3, length=56, seed=1)):
        with torch.no_grad():
            expected = wrapper(*inputs).numpy()
        (actual,) = session.run(None, {name: value.numpy() for name, value in zip(names, inputs)})
        difference = float(np.abs(actual - expected).max())
        if actual.shape != expected.shape or not difference <= TOLERANCE:
            raise RuntimeError(
                f"The exported {modality} graph disagrees with PyTorch (max difference {difference:.3g}, shapes "
                f"{actual.shape} and {expected.shape}, input shape {tuple(inputs[0].shape)}): the tower takes a "
                "branch that tracing fixed to the example's shapes or values, so it cannot be exported this way.")
        worst = max(worst, difference)
    return worst


def _describe(onnx, path):
    """{inputs: {name: {dtype, shape}}, outputs: ...} of a saved graph, with named dynamic axes."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def values(items):
        return {
            item.name: {
                "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(item.type.tensor_type.elem_type)),
                "shape": [dim.dim_param or dim.dim_value for dim in item.type.tensor_type.shape.dim],
            }
            for item in items
        }

    return {"inputs": values(graph.input), "outputs": values(graph.output)}


def _check_out_dir(model_dir, out_dir):
    if out_dir.resolve() == model_dir.resolve() or model_dir.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"--out {out_dir} would replace the model folder {model_dir}; choose another folder.")
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file()):
        raise ValueError(f"{out_dir} exists and holds something other than an earlier ONNX export; "
                         "choose an empty or new folder.")


def export_onnx(model_dir, out_dir, opset=DEFAULT_OPSET):
    """Exports every tower of the checkpoint in `model_dir` to `out_dir` (written whole, then renamed into place,
    replacing an earlier export): `<modality>.onnx`, the processor files and `onnx_export.json`.
    Returns {modality: path of its graph}."""
    onnx, _ = require_onnx()
    if opset not in OPSETS:
        raise ValueError(f"opset {opset} is not supported: choose {OPSETS.start} to {OPSETS.stop - 1} "
                         f"(default {DEFAULT_OPSET}).")
    from xmodal import XModalModel
    from xmodal.processing import XModalProcessor

    model_dir, out_dir = resolve_model_dir(model_dir), Path(out_dir)
    _check_out_dir(model_dir, out_dir)
    with quiet_transformers():
        model = XModalModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        processor = XModalProcessor.from_pretrained(model_dir)
    graphs, differences = {}, {}
    with atomic_folder(out_dir) as staging:
        for modality in model.config.modalities:
            differences[modality] = export_tower(model, modality, staging / f"{modality}.onnx", opset)
            graphs[modality] = {"file": f"{modality}.onnx", **_describe(onnx, staging / f"{modality}.onnx"),
                                "normalized": True}
        processor.save_pretrained(staging)
        manifest = {
            "opset": opset, "exporter": "torch.onnx.export (TorchScript, dynamo=False)", "torch": torch.__version__,
            "source": str(model_dir), "graphs": graphs,
            "max_difference_from_pytorch": differences,
            "files": sorted(p.name for p in staging.iterdir()) + [MANIFEST],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {modality: out_dir / graph["file"] for modality, graph in graphs.items()}


__all__ = ["DEFAULT_OPSET", "MANIFEST", "TowerEmbedding", "export_onnx", "export_tower", "require_onnx"]
