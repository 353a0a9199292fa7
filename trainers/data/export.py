"""The scene dataset written in the layouts `datasets.load_dataset` reads natively, so users see a
working layout for their own data and tests can run each reader on real content.

    imagefolder  DIR/<split>/NNNNNN.png + DIR/<split>/metadata.jsonl      load_dataset("imagefolder", data_dir=DIR)
    audiofolder  DIR/<split>/NNNNNN.wav + DIR/<split>/metadata.jsonl      load_dataset("audiofolder", data_dir=DIR)
    webdataset   DIR/<split>-NNNNNN.tar holding KEY.png, KEY.wav, KEY.json load_dataset("webdataset", data_files=...)
    parquet      DIR/<split>.parquet (image, audio bytes, text columns)   load_dataset("parquet", data_files=...)

Every export also writes a README.md whose `configs` list each split's files, so `load_dataset(DIR)` keeps
every split name. `data_dir=DIR` alone does not: `datasets` maps folder and file names to splits by keyword
(train, validation/valid/dev/val, test/eval), and `test_novel` matches the `test` keyword, so it is merged
into `test`. Audio is written as the dataset holds it (WAV, or FLAC for `--audio-format flac` builds).
"""

import io
import json
import tarfile
from pathlib import Path

from ..checkpointing import atomic_folder
from .errors import DataError

EXPORT_FORMATS = ("imagefolder", "audiofolder", "webdataset", "parquet")
IMAGE_COLUMN, AUDIO_COLUMN = "image", "audio"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BATCH_SIZE = 256


def export_dataset(dataset_dict, out_dir, fmt, splits=None, shard_size=1000, overwrite=False):
    """Write `splits` (default: all) of `dataset_dict` to `out_dir` in format `fmt`; returns rows per split.

    The folder is written under a temporary name and renamed into place when complete, so a failed export
    leaves nothing behind. An existing non-empty `out_dir` is replaced only with `overwrite`."""
    if fmt not in EXPORT_FORMATS:
        raise DataError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if shard_size < 1:
        raise DataError(f"shard size must be at least 1, got {shard_size}")
    chosen = _choose_splits(dataset_dict, splits)
    out_dir = Path(out_dir)
    check_destination(out_dir, [dataset_dict[name] for name in chosen], overwrite)
    if fmt == "audiofolder" and any(AUDIO_COLUMN not in dataset_dict[name].column_names for name in chosen):
        raise DataError(f"audiofolder needs an {AUDIO_COLUMN!r} column; the data has none")
    write = {"imagefolder": _write_imagefolder, "audiofolder": _write_audiofolder,
             "webdataset": _write_webdataset, "parquet": _write_parquet}[fmt]
    with atomic_folder(out_dir) as staging:
        counts = {name: write(dataset_dict[name], staging, name, shard_size) for name in chosen}
        (staging / "README.md").write_text(_card(fmt, counts))
    return counts


def export_sentences(out_dir, seed=0, overwrite=False):
    """The held-out everyday sentences (`xmodal.processing.held_out_sentences`) written to `out_dir` as an
    audiofolder with one `test` split; the destination is checked before the ~20 s of speaking. Returns
    rows per split."""
    from datasets import DatasetDict
    from xmodal.processing.held_out_sentences import build_sentence_dataset

    check_destination(Path(out_dir), [], overwrite)
    return export_dataset(DatasetDict({"test": build_sentence_dataset(seed=seed)}), out_dir, "audiofolder",
                          overwrite=overwrite)


def _choose_splits(dataset_dict, splits):
    available = list(dataset_dict)
    chosen = available if splits is None else list(dict.fromkeys(splits))
    unknown = [name for name in chosen if name not in dataset_dict]
    if unknown or not chosen:
        raise DataError(f"unknown split(s) {', '.join(unknown) or '(none given)'}; the data holds "
                        f"{', '.join(available)}")
    return chosen


def check_destination(out_dir, datasets_to_read, overwrite):
    """An error unless `out_dir` may be written: new or empty, or `overwrite`; never a folder that holds a source."""
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    target = out_dir.resolve()
    for dataset in datasets_to_read:  # replacing a folder that holds the source would delete it mid-read
        for cache_file in dataset.cache_files:
            source = Path(cache_file["filename"]).resolve()
            if target == source or target in source.parents:
                raise DataError(f"{out_dir} holds the dataset being exported; choose another --out")


def _rows(split, media_columns):
    """(index, media values, metadata) per row; images come as stored bytes, not decoded."""
    from datasets import Image

    if IMAGE_COLUMN in split.column_names and isinstance(split.features[IMAGE_COLUMN], Image):
        split = split.cast_column(IMAGE_COLUMN, Image(decode=False))
    metadata_columns = [c for c in split.column_names if c not in (IMAGE_COLUMN, AUDIO_COLUMN)]
    index = 0
    for batch in split.iter(batch_size=_BATCH_SIZE):
        for row in range(len(next(iter(batch.values())))):
            media = {column: batch[column][row] for column in media_columns if column in batch}
            yield index, media, {column: batch[column][row] for column in metadata_columns}
            index += 1


def _png_bytes(value):
    """PNG bytes of a stored image (`{"bytes", "path"}`), re-encoded only when it is not a PNG already."""
    data = value["bytes"] if value["bytes"] is not None else Path(value["path"]).read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        return data
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return buffer.getvalue()


def _audio_bytes(data):
    if data is None:
        raise DataError("a row has no audio (was the data built with --no-speech?); audiofolder needs speech")
    return data


def _audio_suffix(data):
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    raise DataError(f"audio bytes are neither WAV nor FLAC (they start with {data[:4]!r})")


def _write_folder(split, root, name, media_column, encode, suffix):
    folder = root / name
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as metadata_file:
        for index, media, metadata in _rows(split, [media_column]):
            data = encode(media[media_column])
            file_name = f"{index:06d}{suffix(data)}"
            (folder / file_name).write_bytes(data)
            metadata_file.write(json.dumps({"file_name": file_name, **metadata}, ensure_ascii=False) + "\n")
    return len(split)


def _write_imagefolder(split, root, name, shard_size):
    return _write_folder(split, root, name, IMAGE_COLUMN, _png_bytes, lambda data: ".png")


def _write_audiofolder(split, root, name, shard_size):
    return _write_folder(split, root, name, AUDIO_COLUMN, _audio_bytes, _audio_suffix)


def _write_webdataset(split, root, name, shard_size):
    """Tar shards of at most `shard_size` samples; members sorted by key, fixed times, so output is reproducible."""
    shard = None
    try:
        for index, media, metadata in _rows(split, [IMAGE_COLUMN, AUDIO_COLUMN]):
            if index % shard_size == 0:
                if shard is not None:
                    shard.close()
                shard = tarfile.open(root / f"{name}-{index // shard_size:06d}.tar", "w", format=tarfile.PAX_FORMAT)
            key = f"{index:06d}"
            if media.get(IMAGE_COLUMN) is not None:
                _add_member(shard, f"{key}.png", _png_bytes(media[IMAGE_COLUMN]))
            if media.get(AUDIO_COLUMN) is not None:
                _add_member(shard, f"{key}{_audio_suffix(media[AUDIO_COLUMN])}", media[AUDIO_COLUMN])
            _add_member(shard, f"{key}.json", json.dumps(metadata, ensure_ascii=False).encode())
    finally:
        if shard is not None:
            shard.close()
    return len(split)


def _add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _write_parquet(split, root, name, shard_size):
    """One file per split; the `datasets` features ride in the schema, so `image` loads as an Image column."""
    split.to_parquet(str(root / f"{name}.parquet"))
    return len(split)


def reader_features(fmt, features, audio_suffix=".wav"):
    """The `features=` for `load_dataset` on an export of data with `features`, for where torchcodec is missing.

    `datasets.Audio` imports torchcodec to encode any value, even undecoded paths, so without it loading
    audiofolder or webdataset fails at generation time and no later `cast_column` can help. These features
    keep audio raw: audiofolder rows keep `file_name` (relative to `DIR/<split>/`), webdataset rows keep
    the audio bytes; metadata keeps the source types."""
    from datasets import Features, Image, Value

    metadata = {name: feature for name, feature in features.items() if name not in (IMAGE_COLUMN, AUDIO_COLUMN)}
    if fmt == "imagefolder":
        return Features({IMAGE_COLUMN: Image(), **metadata})
    if fmt == "audiofolder":
        return Features({"file_name": Value("string"), **metadata})
    if fmt == "webdataset":
        return Features({"__key__": Value("string"), "__url__": Value("string"), "png": Image(),
                         audio_suffix.lstrip("."): Value("binary"), "json": metadata})
    if fmt == "parquet":
        return Features(features)
    raise DataError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


# Files of each split, as `datasets` glob patterns relative to the export folder.
_SPLIT_FILES = {
    "imagefolder": "{split}/*", "audiofolder": "{split}/*",
    "webdataset": "{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar", "parquet": "{split}.parquet",
}


def split_files(fmt, split):
    """The glob, relative to an export folder, that matches exactly the files of `split`."""
    return _SPLIT_FILES[fmt].format(split=split)


def _card(fmt, counts):
    data_files = "".join(f"  - split: {name}\n    path: \"{split_files(fmt, name)}\"\n" for name in counts)
    rows = "\n".join(f"| {name} | {count:,} |" for name, count in counts.items())
    reader = {
        "imagefolder": 'load_dataset("imagefolder", data_dir=DIR)',
        "audiofolder": 'load_dataset("audiofolder", data_dir=DIR, drop_labels=True)',
        "webdataset": 'load_dataset("webdataset", data_files={"train": f"{DIR}/train-*.tar"})',
        "parquet": 'load_dataset("parquet", data_files={"train": f"{DIR}/train.parquet"})',
    }[fmt]
    from xmodal.processing.emoji_assets import OPENMOJI_ATTRIBUTION

    return f"""---
license: cc-by-sa-4.0
configs:
- config_name: default
  data_files:
{data_files}---
# xmodal emoji scenes ({fmt})

Written by `xmodal data export --format {fmt}`.

| split | rows |
|---|---|
{rows}

Load every split with its name: `datasets.load_dataset(DIR)` (reads the `configs` above), or
`{reader}`. With `data_dir`, `datasets` picks splits by keyword (train, validation, test) and merges
`test_novel` into `test`; pass `data_files` per split to keep it apart. Audio is WAV/FLAC: `datasets.Audio`
needs torchcodec even to load it undecoded; without it pass
`features=xmodal.trainers.data.export.reader_features(fmt, source_features)` and decode the bytes with
`soundfile.read(io.BytesIO(data))`.

Licence: CC BY-SA 4.0. {OPENMOJI_ATTRIBUTION} Speech synthesised with eSpeak NG.
"""
