"""Where a run's data comes from: a built-in dataset, or the user's own through `datasets`.

One `data` section names the source:

- `name: scenes | digits`: the built-in data, built into `path` when missing (`build: true`);
- `name: null`, `path: DIR`: a folder written by `save_to_disk` (a `Dataset` or a `DatasetDict`);
- `name: null`, `builder: B`: `load_dataset(B, data_dir=path, data_files=data_files)`, where B is a builder
  that `datasets` ships (`imagefolder`, `csv`, `json`, `parquet`, `webdataset`, ...), `audiofolder`, or a
  Hub dataset id (read from the local cache when offline).

`columns` maps the roles (`text`, `image`, `audio`, `label`, `target`) to the dataset's columns (a dotted
name reaches into a struct, e.g. `json.caption` in WebDataset shards) and `splits` maps `train`,
`validation` and `test` to its split names. Images and audio stay as the source holds them (paths, bytes,
arrays); `rows.py` decodes them when the split is encoded.
"""

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from xmodal.processing.held_out import HELD_OUT_VARIANTS, held_out_variant
from xmodal.processing.speech_pico import require_pico

from .errors import DataError

IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
AUDIO_SUFFIXES = ("wav", "flac", "mp3", "ogg", "opus")
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.json")


def load_raw_dataset(data_config, streaming=False):
    """The configured dataset as a `DatasetDict` (built-in ones are built first when missing); with
    `streaming`, files and Hub ids are read as an `IterableDatasetDict` (folders on disk stay memory-mapped)."""
    if data_config.name is not None:
        dataset = _load_built_in(data_config)
    else:
        dataset = _load_own(data_config, streaming)
    if not len(dataset):
        raise DataError(f"The dataset at {_where(data_config)} has no splits.")
    if any("." in column for column in data_config.columns.values() if column):  # struct fields as `parent.child`
        if hasattr(dataset, "flatten"):
            dataset = dataset.flatten()
        else:  # a stream
            dataset = type(dataset)({name: split.map(_flatten_row) for name, split in dataset.items()})
    return dataset


MEDIA_RECORDS = ({"bytes", "path"}, {"array", "sampling_rate"}, {"array", "path", "sampling_rate"})


def _flatten_row(row, prefix=""):
    """A streamed row with its struct fields as `parent.child` keys (image and audio records stay whole)."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict) and set(value) not in MEDIA_RECORDS:
            flat.update(_flatten_row(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _where(data):
    if data.builder:
        return f"data.builder={data.builder!r}" + (f" (data_dir {data.path!r})" if data.path else "")
    return f"data.path={data.path!r}"


# ----------------------------------------------------------------------------- built in
def _load_built_in(data_config):
    from datasets import DatasetDict, load_from_disk

    path = Path(data_config.path)
    if data_config.name == "digits":
        from xmodal.processing import build_digits_dataset

        if not _is_saved_dataset(path):
            if not data_config.build:
                raise _missing(data_config)
            _atomic_build(path, lambda out: build_digits_dataset(**data_config.build_args).save_to_disk(out))
        return load_from_disk(str(path))
    if data_config.name == "video_scenes":
        from xmodal.processing.video_scenes import build_video_scenes, video_scenes_folder

        if not data_config.build and not video_scenes_folder(path, **data_config.build_args).is_dir():
            raise _missing(data_config)
        return build_video_scenes(str(path), progress=False, **data_config.build_args)
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


# ----------------------------------------------------------------------------- your own data
def _load_own(data, streaming=False):
    from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_from_disk

    if data.builder is None:
        path = Path(data.path or "")
        if not _is_saved_dataset(path):
            raise DataError(f"data.path={data.path!r}: no dataset saved with `save_to_disk` there (no "
                            "dataset_dict.json or state.json). To read files, set data.builder (imagefolder, "
                            "audiofolder, csv, json, parquet, webdataset, or a Hub dataset id).")
        loaded = load_from_disk(str(path))
    elif data.builder == "audiofolder":
        loaded = _load_audiofolder(data)
    else:
        loaded = _load_with_builder(data, streaming)
    if isinstance(loaded, IterableDataset):
        return IterableDatasetDict({"train": loaded})
    return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded


def base_dir(data):
    """The folder that relative file paths in the data are read from: `data.path`, else the folder of the
    first data file."""
    if data.path:
        return Path(data.path)
    files = data.data_files
    first = files if isinstance(files, str) else (next(iter(files.values())) if isinstance(files, dict)
                                                  else (files or [None])[0])
    if isinstance(first, list):
        first = first[0] if first else None
    return Path(first).parent if first else None


def _load_with_builder(data, streaming=False):
    from datasets import load_dataset

    kwargs = {"streaming": True} if streaming else {}
    if data.path:
        if not Path(data.path).is_dir():
            raise DataError(f"data.path={data.path!r} is not a folder (the data_dir of data.builder="
                            f"{data.builder!r}).")
        kwargs["data_dir"] = data.path
    if data.data_files is not None:
        kwargs["data_files"] = data.data_files
    if data.builder == "webdataset":
        kwargs["features"] = webdataset_features(_shards(data))
    try:
        return load_dataset(data.builder, **kwargs)
    except FileNotFoundError as error:
        raise DataError(f"{_where(data)}: {_first_line(error)}") from None
    except (ConnectionError, OSError) as error:  # a Hub id that is not in the local cache, offline
        raise DataError(f"{_where(data)}: could not load it ({_first_line(error)}). A Hub dataset loads from "
                        "the local cache when the machine is offline: download it once where there is a "
                        "network (or give a local folder).") from None
    except ValueError as error:
        raise DataError(f"{_where(data)}: {_first_line(error)}") from None


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _shards(data):
    """The WebDataset tar files named by `data_files` (or every tar under `path`)."""
    files = data.data_files
    if files is None:
        return sorted(str(p) for p in Path(data.path or ".").rglob("*.tar"))
    listed = [files] if isinstance(files, str) else (
        [f for v in files.values() for f in ([v] if isinstance(v, str) else v)] if isinstance(files, dict) else files)
    found = []
    for pattern in listed:
        base = Path(data.path) if data.path and not Path(pattern).is_absolute() else Path()
        found += sorted(str(p) for p in base.glob(pattern)) if any(c in pattern for c in "*?[") else [
            str(base / pattern)]
    return found


def webdataset_features(shards):
    """`features=` for WebDataset shards, from the members of their first sample: images stay `Image()`,
    audio stays raw bytes (`datasets.Audio` needs torchcodec even to pass bytes through), JSON members
    keep the fields of the first one."""
    from datasets import Dataset, Features, Image, Value

    if not shards:
        raise DataError("data.builder=webdataset: no .tar shards found (set data.data_files, e.g. "
                        "{train: 'train-*.tar'}).")
    try:
        with tarfile.open(shards[0]) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if not members:
                raise DataError(f"{shards[0]}: the shard is empty.")
            key = members[0].name.split(".", 1)[0]
            sample = {m.name.split(".", 1)[1]: m for m in members if m.name.split(".", 1)[0] == key}
            features = {"__key__": Value("string"), "__url__": Value("string")}
            for suffix, member in sample.items():
                last = suffix.rsplit(".", 1)[-1].lower()
                if last in IMAGE_SUFFIXES:
                    features[suffix] = Image()
                elif last in AUDIO_SUFFIXES:
                    features[suffix] = Value("binary")
                elif last == "json":
                    record = json.loads(tar.extractfile(member).read())
                    features[suffix] = Dataset.from_list([record]).features
                elif last == "cls":
                    features[suffix] = Value("int64")
                else:
                    features[suffix] = Value("string")
    except (tarfile.TarError, OSError, ValueError) as error:
        raise DataError(f"{shards[0]}: not a readable WebDataset shard ({_first_line(error)}).") from None
    return Features(features)


def _load_audiofolder(data):
    """An audiofolder (`<split>/metadata.jsonl|csv` with a `file_name` column beside the sound files) read
    through its metadata, with `audio` holding each file's path: `datasets`' own audiofolder decodes with
    torchcodec, which need not be installed."""
    from datasets import DatasetDict, load_dataset

    root = Path(data.path or "")
    if not root.is_dir():
        raise DataError(f"data.path={data.path!r} is not a folder (the audiofolder to read).")
    found = {}
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for name in METADATA_FILES:
            if (folder / name).is_file():
                found[folder.name if folder != root else "train"] = folder / name
                break
    if not found:
        raise DataError(f"{root}: no {' / '.join(METADATA_FILES)} in it or its split folders; an audiofolder "
                        "has a metadata file with a file_name column next to the sound files.")
    splits = {}
    for split, metadata in found.items():
        builder = "csv" if metadata.suffix == ".csv" else "json"
        table = load_dataset(builder, data_files=str(metadata), split="train")
        if "file_name" not in table.column_names:
            raise DataError(f"{metadata}: has no file_name column (it has {table.column_names}).")
        # relative to data.path, where relative paths are read from (`base_dir`), whether data.path is or not
        folder = os.path.relpath(metadata.parent, root)
        splits[split] = table.map(lambda row: {"audio": os.path.normpath(os.path.join(folder, row["file_name"]))})
    return DatasetDict(splits)


# ----------------------------------------------------------------------------- splits
# What each held-out variant reads from a split, beyond the scenes themselves.
_VARIANT_COLUMNS = {"unseen-voice": ("caption", "audio"), "unseen-engine": ("caption", "audio"),
                    "unseen-phrasing": ("image", "captions", "emoji_ids", "boxes", "audio")}
assert set(_VARIANT_COLUMNS) == set(HELD_OUT_VARIANTS), "a held-out variant without its columns"


def split_variant(name):
    """(base split, held-out variant or None): `test:unseen-phrasing` -> (`test`, `unseen-phrasing`)."""
    base, _, variant = name.rpartition(":")
    if base and variant in HELD_OUT_VARIANTS:
        return base, variant
    if base:
        raise DataError(f"Unknown held-out variant {variant!r} in split {name!r}; the variants are "
                        + ", ".join(f"`{v}` ({what})" for v, what in HELD_OUT_VARIANTS.items()))
    return name, None


def split_name(data_config, name):
    """The dataset's name for a split: `data.splits` maps `train`, `validation` and `test` (others as named)."""
    return data_config.splits.get(name, name)


def check_split_names(names):
    """Before a run trains: every held-out variant named is known, and what it needs is installed (a split
    scored only after ten minutes of training must not fail then)."""
    for name in filter(None, names):
        if split_variant(name)[1] == "unseen-engine":
            try:
                require_pico()
            except ImportError as error:
                raise DataError(f"Split {name!r}: {error}") from None


def select_split(dataset, name, max_samples=None, data_config=None):
    """A split by name (through `data.splits`); `<split>:<variant>` is that split made into a held-out variant
    (`xmodal.processing.held_out.HELD_OUT_VARIANTS`: an unheard voice, an unheard speech engine, unheard
    phrasings). An empty split is an error."""
    base, variant = split_variant(name)
    actual = split_name(data_config, base) if data_config is not None else base
    if actual not in dataset:
        mapped = f" (data.splits maps {base!r} to {actual!r})" if actual != base else ""
        raise DataError(f"The dataset has no split {actual!r}{mapped}; it has {sorted(dataset)}. Map the names "
                        "with data.splits, e.g. {train: train, validation: dev, test: test}.")
    split = dataset[actual]
    if not hasattr(split, "num_rows"):  # a stream: its length is unknown until it has been read
        return split.take(max_samples) if max_samples is not None else split
    if len(split) == 0:
        raise DataError(f"The split {actual!r} of the dataset is empty (0 rows).")
    if max_samples is not None and max_samples < len(split):
        split = split.select(range(max_samples))
    if variant is not None:
        missing = [c for c in _VARIANT_COLUMNS[variant] if c not in split.column_names]
        if missing:
            raise DataError(f"{name!r} needs the columns {list(_VARIANT_COLUMNS[variant])} (the built-in scenes' "
                            f"layout); {base!r} lacks {missing}: it has {split.column_names}.")
        split = held_out_variant(split, variant)
    return split


def check_columns(split, name, data_config, roles):
    """Every role the run reads has its column in the split; the error lists the columns there are."""
    if split.column_names is None:  # a stream whose columns are known only when read: rows are checked then
        return
    for role in roles:
        column = data_config.column(role)
        if column is None or column not in split.column_names:
            raise DataError(f"data.columns.{role}={column!r}: the split {name!r} has no such column; it has "
                            f"{split.column_names}. Map it with data.columns, e.g. {{{role}: <column>}}.")


def validation_split_name(dataset, data_config):
    """The split validated on during training: `data.splits.validation` (null: none, and a name the data lacks
    is an error), else `validation` when the data has one."""
    if "validation" in data_config.splits:
        name = data_config.splits["validation"]
        if name is not None and name not in dataset:
            raise DataError(f"data.splits.validation={name!r}: the dataset has no such split; it has "
                            f"{sorted(dataset)} (null: no validation during training).")
        return name
    return "validation" if "validation" in dataset else None


def encoded_cache_dir(data_config):
    """Where encoded splits are cached: beside the data, else (a Hub dataset, files listed one by one) under
    `$XMODAL_CACHE` (default `~/.cache/xmodal`)."""
    if data_config.path and Path(data_config.path).is_dir():
        return Path(data_config.path) / ".xmodal_cache"
    return Path(os.environ.get("XMODAL_CACHE") or Path.home() / ".cache" / "xmodal") / "encoded"
