"""Checks on the tensors a model call receives, so that a bad input fails with a message that says what was wrong
and what is accepted instead of an IndexError, an AttributeError or NaN losses deep inside a tower.

The value checks (token ids in range, finite pixels and features) read the tensors back: one device sync per
call on a GPU. They are skipped while `torch.compile` or `torch.jit.trace` traces the model, where reading a
value back would break the graph.
"""

import torch

from .modalities import MODALITIES

TENSOR_INPUTS = tuple(name for spec in MODALITIES.values() for name in spec.inputs)
MAIN_INPUTS = tuple(spec.main_input for spec in MODALITIES.values())
# Float inputs whose NaN or inf would silently turn every output and the loss into NaN.
FLOAT_INPUTS = tuple(MODALITIES[m].main_input for m in ("image", "audio", "video"))


def is_tracing():
    """Whether `torch.compile`, `torch.export` or `torch.jit.trace` is tracing the model: no tensor value may be read
    back into Python then (it would break or specialise the graph)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def check_types(inputs):
    """Every given input is a torch tensor with a batch axis: numpy arrays and lists are rejected rather than
    converted, because only the caller knows the device they belong on."""
    for name in TENSOR_INPUTS:
        value = inputs.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{name}` is a {type(value).__module__}.{type(value).__name__}; the model takes "
                            "torch tensors: pass torch tensors (return_tensors='pt' in the processor or tokenizer) "
                            "on the model's device.")
        if value.dim() == 0:
            raise ValueError(f"`{name}` is a 0-d tensor; it needs a batch axis first (batch_size, ...).")


def check_batch_not_empty(inputs):
    for name in MAIN_INPUTS:
        value = inputs.get(name)
        if value is not None and value.shape[0] == 0:
            raise ValueError(f"`{name}` has an empty batch (shape {tuple(value.shape)}); pass at least one "
                             "sample (batch_size >= 1).")


def check_token_ids(text_config, input_ids):
    """Token ids are integers in [0, vocab_size) of the text tower (any config with an int `vocab_size`)."""
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"`input_ids` must hold integer token ids (torch.long), got dtype {input_ids.dtype}.")
    vocab_size = getattr(text_config, "vocab_size", None)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or is_tracing() or input_ids.numel() == 0:
        return
    smallest, largest = torch.stack([input_ids.min(), input_ids.max()]).tolist()
    if smallest < 0 or largest >= vocab_size:
        raise ValueError(
            f"`input_ids` has token ids outside the text tower's vocabulary: largest id {largest}, smallest "
            f"{smallest}, vocab_size {vocab_size}. Ids must lie in [0, {vocab_size - 1}]: pad with pad_token_id "
            "(-100 is for `labels` only), and use the tokenizer this model was trained with."
        )


def check_finite(inputs):
    if is_tracing():
        return
    for name in FLOAT_INPUTS:
        value = inputs.get(name)
        if value is not None and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"`{name}` contains NaN or infinite values; every value must be finite (check the "
                             "data and the processor's output).")


def check_caption_hashes(caption_hashes, true_caption_hashes):
    """The caption hashes come as a pair of integer tensors, (batch,) and (batch, k), one row per sample."""
    if caption_hashes is None and true_caption_hashes is None:
        return
    if caption_hashes is None or true_caption_hashes is None:
        raise ValueError("`caption_hashes` and `true_caption_hashes` go together: give both (what each sample's "
                         "caption says and every caption true of its scene) or neither.")
    shapes = (tuple(caption_hashes.shape), tuple(true_caption_hashes.shape))
    if caption_hashes.dim() != 1 or true_caption_hashes.dim() != 2 or shapes[0][0] != shapes[1][0] or \
            caption_hashes.is_floating_point() or true_caption_hashes.is_floating_point():
        raise ValueError(f"`caption_hashes` should be integers shaped (batch,) and `true_caption_hashes` integers "
                         f"shaped (batch, k); got {caption_hashes.dtype} {shapes[0]} and "
                         f"{true_caption_hashes.dtype} {shapes[1]}.")


def check_model_inputs(config, **inputs):
    """All the checks above for one model call (`inputs` by their `forward` names)."""
    check_types(inputs)
    check_batch_not_empty(inputs)
    if inputs.get("input_ids") is not None and config.text_config is not None:
        check_token_ids(config.text_config, inputs["input_ids"])
    check_finite(inputs)


def collect_inputs(config, paired=True, **given):
    """The modalities a call has, {modality: {input name: value}}, from the inputs `given` by their `forward` names
    (`MODALITIES`), after the checks above and that the model has a tower for each. When the rows are `paired`
    samples, they must agree on the batch size; unpaired calls (one image scored against many captions) need not."""
    unknown = set(given) - set(TENSOR_INPUTS)
    if unknown:
        raise TypeError(f"Unknown model inputs {sorted(unknown)}; the inputs are {list(TENSOR_INPUTS)}.")
    present = [m for m, spec in MODALITIES.items() if given.get(spec.main_input) is not None]
    if not present:
        names = ", ".join(f"`{spec.main_input}` ({m})" for m, spec in MODALITIES.items())
        raise ValueError(f"No modality given: pass at least one of {names}. This model has {config.modalities}.")
    for modality in present:
        if getattr(config, MODALITIES[modality].config_key) is None:
            raise ValueError(
                f"Got `{MODALITIES[modality].main_input}` but this model has no {modality} tower "
                f"({MODALITIES[modality].config_key}=None); it takes "
                f"{[MODALITIES[m].main_input for m in config.modalities]}."
            )
    check_model_inputs(config, **given)
    sizes = {MODALITIES[m].main_input: given[MODALITIES[m].main_input].shape[0] for m in present}
    if paired and len(set(sizes.values())) > 1:
        raise ValueError(f"All modalities must have the same batch size; got {sizes}.")
    return {m: {name: given.get(name) for name in MODALITIES[m].inputs} for m in present}


__all__ = ["check_model_inputs", "collect_inputs", "is_tracing"]
