"""Where a run's data comes from: the built-in datasets (built when missing), and split selection."""

import os
import shutil
import tempfile
from pathlib import Path

from .errors import DataError


def load_raw_dataset(data_config):
    """The configured dataset as a `DatasetDict`; builds it first when it is missing and `build` is set."""
    from datasets import DatasetDict, load_from_disk

    path = Path(data_config.path)
    if data_config.name == "digits":
        from xmodal.processing import build_digits_dataset

        if not _is_saved_dataset(path):
            if not data_config.build:
                raise _missing(data_config)
            _atomic_build(path, lambda out: build_digits_dataset(**data_config.build_args).save_to_disk(out))
        return load_from_disk(str(path))
    from xmodal.processing import build_scene_dataset, load_scene_dataset

    if data_config.build:  # reuses an earlier build with the same parameters
        dataset = build_scene_dataset(str(path), progress=False, **data_config.build_args)
    else:
        try:
            dataset = load_scene_dataset(str(path))
        except FileNotFoundError as error:
            raise _missing(data_config) from error
    return dataset if isinstance(dataset, DatasetDict) else DatasetDict(dataset)


def _is_saved_dataset(path):
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _missing(data_config):
    return DataError(
        f"No dataset at data.path={data_config.path!r} ({Path(data_config.path).resolve()}). Build it with "
        f"`xmodal data build --out {data_config.path}`, or set data.build: true to build it on the fly."
    )


def _atomic_build(path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


UNSEEN_VOICE_SUFFIX = ":unseen-voice"


def select_split(dataset, name, max_samples=None):
    """A split by name; `<split>:unseen-voice` is that split's scenes spoken again by voices that no
    split uses (`xmodal.processing.speech.UNSEEN_VOICES`), to test speech from an unheard voice."""
    base = name[: -len(UNSEEN_VOICE_SUFFIX)] if name.endswith(UNSEEN_VOICE_SUFFIX) else name
    if base not in dataset:
        raise DataError(f"The dataset has no split {base!r}; it has {sorted(dataset)} (each also as "
                        f"'<split>{UNSEEN_VOICE_SUFFIX}' where it has speech).")
    split = dataset[base]
    if max_samples is not None and max_samples < len(split):
        split = split.select(range(max_samples))
    if base != name:
        from xmodal.processing.scenes import respeak_split

        if "audio" not in split.column_names or "caption" not in split.column_names:
            raise DataError(f"{name!r} needs a split with captions and speech; {base!r} has "
                            f"{split.column_names}.")
        split = respeak_split(split)
    return split


# ----------------------------------------------------------------------------- tokenizer and processor
