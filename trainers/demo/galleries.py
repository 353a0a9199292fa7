"""The demo's galleries: the built-in data's split (captioned images, the caption pool, examples) and uploaded
images, embedded once and cached. `GalleriesMixin` is part of `Predictor`: it embeds with the predictor's
`embed_images` / `embed_texts` and reads its `limits`, `split` and training config."""

import atexit
import hashlib
import io
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .inputs import DemoInputError, load_image


@dataclass
class Gallery:
    """Images to search, their labels (captions or file names) and normalised embeddings."""

    name: str
    images: list
    labels: list
    captions: list | None = None  # true captions when the images come with them (a dataset split)
    embeddings: torch.Tensor | None = field(default=None, repr=False)


def read_yaml(path):
    """A YAML file as a dict; {} when it is missing or unreadable."""
    try:
        import yaml

        return yaml.safe_load(Path(path).read_text()) or {}
    except Exception:  # a missing or unreadable training config only costs the built-in gallery
        return {}


class GalleriesMixin:
    """Galleries and the built-in data for `Predictor` (see the module's docstring)."""

    def dataset_split(self):
        """The built-in data's split (default "test") the checkpoint was trained with, or None."""
        with self._lock:
            if self._dataset is None and self._dataset_error is None:
                try:
                    self._dataset = _load_split(self._data_location(), self.split,
                                                (self.training_config.get("data") or {}).get("build_args") or {})
                except (FileNotFoundError, KeyError, ValueError) as error:
                    self._dataset_error = str(error)
                except ImportError as error:  # the built-in data needs `datasets`
                    self._dataset_error = f"{error}; pip install 'xmodal[train]'"
            return self._dataset

    def _data_location(self):
        if self.data_path is not None:
            return Path(self.data_path)
        configured = (self.training_config.get("data") or {}).get("path")
        if not configured:
            raise FileNotFoundError(f"{self.model_dir} has no training_config.yaml naming its data; pass a data path")
        candidates = [Path(configured)] + [parent / configured for parent in self.model_dir.resolve().parents[:3]]
        return next((path for path in candidates if path.exists()), candidates[0])

    def pairs(self):
        """The split as a captioned gallery plus its unique captions (the caption search pool), or None."""
        with self._lock:
            if self._pairs is None:
                split = self.dataset_split()
                if split is None or "caption" not in split.column_names:
                    return None
                rows = split.select(range(min(len(split), self.limits.max_gallery)))
                images = [image.convert("RGB") for image in rows["image"]]
                captions = list(rows["caption"])
                gallery = Gallery(f"{self.split} split", images, captions, captions, self.embed_images(images))
                pool = list(dict.fromkeys(captions))
                self._pairs = {"gallery": gallery, "pool": pool, "pool_embeddings": self.embed_texts(pool)}
            return self._pairs

    def default_gallery(self):
        """The gallery folder given at start, else the test split; DemoInputError when there is neither."""
        with self._lock:
            if self._default_gallery is None:
                if self.pairs() is not None:
                    self._default_gallery = self.pairs()["gallery"]
                else:
                    raise DemoInputError(f"No gallery to search: upload images to search, or start the demo with "
                                         f"--gallery DIR or the built-in data ({self._dataset_error}).")
            return self._default_gallery

    def gallery_from_files(self, paths):
        """A gallery of uploaded images, cached by content (the same upload is embedded once)."""
        paths = [Path(p) for p in paths]
        if len(paths) > self.limits.max_upload_files:
            raise DemoInputError(f"{len(paths)} files uploaded; a gallery holds at most "
                                 f"{self.limits.max_upload_files}.")
        digest = hashlib.sha1()
        for path in paths:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        key = digest.hexdigest()
        with self._lock:
            if key not in self._galleries:
                self._galleries[key] = self._folder_gallery(f"{len(paths)} uploaded images", paths)
                while len(self._galleries) > 4:
                    self._galleries.popitem(last=False)
            self._galleries.move_to_end(key)
            return self._galleries[key]

    def _folder_gallery(self, name, paths):
        images = [load_image(path, self.limits) for path in paths]
        return Gallery(name, images, [Path(p).name for p in paths], None, self.embed_images(images))

    def examples(self, count=3):
        """Up to `count` test-split samples written to files, for the app's examples: dicts with
        "image" and "audio" paths, "caption", and "distractors" (other captions)."""
        split = self.dataset_split()
        if split is None or len(split) < 2:
            return []
        folder = Path(tempfile.mkdtemp(prefix="xmodal-demo-examples-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        rows = split.select(range(min(count, len(split))))
        others = list(dict.fromkeys(split.select(range(min(len(split), 50)))["caption"]))
        examples = []
        for index, row in enumerate(rows):
            image_path = folder / f"example_{index}.png"
            row["image"].convert("RGB").save(image_path)
            audio_path = None
            if row.get("audio"):  # encoded bytes (WAV or FLAC, depending on the build)
                import soundfile

                kind = soundfile.info(io.BytesIO(row["audio"])).format.lower()
                audio_path = folder / f"example_{index}.{kind}"
                audio_path.write_bytes(row["audio"])
            distractors = [c for c in others if c != row["caption"]][index: index + 2]
            examples.append({"image": str(image_path), "audio": str(audio_path) if audio_path else None,
                             "caption": row["caption"], "distractors": distractors})
        return examples


def _load_split(path, split, build_args):
    """One split of a saved dataset folder; with several scene builds in `path`, the one built with `build_args`."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        builds = sorted(p.parent for p in path.glob("*/build_params.json")) if path.is_dir() else []
        chosen = [b for b in builds if all(json.loads((b / "build_params.json").read_text())["params"].get(k) == v
                                           for k, v in build_args.items() if k not in ("num_proc", "progress"))]
        if not chosen:
            raise FileNotFoundError(f"no built dataset at {path} (build it with `xmodal data build --out {path}`)")
        path = chosen[0]
    dataset = load_from_disk(str(path))
    if split not in dataset:
        raise KeyError(f"the dataset at {path} has no {split!r} split (it has {sorted(dataset)})")
    return dataset[split]


__all__ = ["Gallery", "GalleriesMixin"]
