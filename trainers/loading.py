"""Loading what `xmodal train` wrote: the model folder (or its `merged/` copy after a LoRA run) and one
head's view of it, quietly. A pre-training checkpoint holds every head, so each view leaves the other
heads' weights unused by design: the load report that would list them is silenced here, in one place."""

import contextlib
from pathlib import Path


def resolve_model_dir(model_dir):
    """The folder with `config.json`: `model_dir` itself, or its `merged/` copy after a LoRA run."""
    path = Path(model_dir)
    if (path / "config.json").is_file():
        return path
    if (path / "merged" / "config.json").is_file():
        return path / "merged"
    raise FileNotFoundError(f"No model at {path}: expected config.json, model.safetensors and the processor files "
                            "that `xmodal train` writes (a LoRA run keeps its merged model in <dir>/merged).")


def weights_have(folder, prefix):
    """Whether a checkpoint has parameters under `prefix` (e.g. the matching head or the decoder), read from the
    safetensors headers alone (nothing is loaded)."""
    from safetensors import safe_open

    for file in Path(folder).glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            if any(key.startswith(prefix) for key in handle.keys()):
                return True
    return False


def has_model(model_dir):
    try:
        resolve_model_dir(model_dir)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def quiet_transformers():
    """transformers' logging at error level and no progress bars, restored afterwards."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def load_head(cls, model_dir):
    """(`cls` loaded from `model_dir` in eval mode, or None when the checkpoint lacks that head's weights;
    the missing keys, or the error that says why the head does not fit)."""
    with quiet_transformers():
        try:
            model, info = cls.from_pretrained(model_dir, output_loading_info=True)
        except ValueError as error:  # e.g. a generation head without decoder_config
            return None, [str(error)]
    missing = sorted(info.get("missing_keys") or [])
    return (None if missing else model.eval()), missing
