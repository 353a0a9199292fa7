"""A searchable index of a user's own folder of images and speech (`xmodal demo --gallery DIR`).

Every image and audio file under the folder is embedded once with the checkpoint's towers; the
embeddings (safetensors) and the file list (JSON) are saved beside the gallery, in
`DIR/.xmodal_index/<checkpoint key>/`, and reused at the next start while the files and the checkpoint
are unchanged (added, removed or modified files are embedded again). Above `FAISS_ABOVE` items of a
modality, a faiss HNSW index (inner product on normalised embeddings, i.e. cosine) is built and saved
too, so a query does not scan the whole gallery; below it an exact matrix product is as fast. Files
that cannot be read are left out and counted by reason, never silently.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


from ..checkpointing import atomic_folder, write_text_atomic
from ..data.sources import AUDIO_SUFFIXES, IMAGE_SUFFIXES

FAISS_ABOVE = 10_000  # items of one modality above which a faiss index answers the queries
INDEX_FOLDER = ".xmodal_index"
HNSW_NEIGHBOURS, HNSW_SEARCH_DEPTH = 32, 128


def gallery_files(folder):
    """{modality: [relative paths]} of the images and audio files under `folder`, sorted; the index is skipped."""
    found = {"image": [], "audio": []}
    for path in sorted(Path(folder).rglob("*")):
        if INDEX_FOLDER in path.parts or not path.is_file():
            continue
        suffix = path.suffix.lower().lstrip(".")
        modality = "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None
        if modality is not None:
            found[modality].append(path.relative_to(folder).as_posix())
    return found


def checkpoint_key(model_dir):
    """A short key of the checkpoint's config and weights files (name, size, modification time)."""
    digest = hashlib.sha1()
    for path in sorted(Path(model_dir).glob("*")):
        if path.suffix in (".json", ".safetensors"):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _signature(folder, relative):
    stat = (Path(folder) / relative).stat()
    return [relative, stat.st_size, stat.st_mtime_ns]


@dataclass
class GalleryIndex:
    """Embedded files of one gallery folder: `search(query, modality, k)` -> [(path, score)], best first."""

    folder: Path
    paths: dict  # modality -> relative paths, in the order of `embeddings`
    embeddings: dict  # modality -> (N, D) float32, normalised
    skipped: dict = field(default_factory=dict)  # reason -> files left out
    faiss_indices: dict = field(default_factory=dict, repr=False)  # modality -> faiss index (large galleries)

    def __len__(self):
        return sum(len(paths) for paths in self.paths.values())

    def search(self, query, modality, k):
        """The `k` files of `modality` nearest `query` (a (1, D) normalised embedding)."""
        paths = self.paths.get(modality) or []
        k = min(k, len(paths))
        if k == 0:
            return []
        query = query.detach().float().reshape(1, -1)
        if modality in self.faiss_indices:
            scores, rows = self.faiss_indices[modality].search(query.numpy(), k)
            return [(self.folder / paths[r], float(s)) for s, r in zip(scores[0], rows[0]) if r >= 0]
        top = (query @ self.embeddings[modality].t())[0].topk(k)
        return [(self.folder / paths[r], float(s)) for s, r in zip(top.values.tolist(), top.indices.tolist())]

    # ------------------------------------------------------------------ building, saving, loading
    @classmethod
    def open(cls, folder, model_dir, embed, faiss_above=FAISS_ABOVE, log=print):
        """The folder's index for this checkpoint: loaded when saved and current, else (re)built and saved.

        `embed(modality, absolute paths)` returns ((n, D) embeddings, {reason: [paths left out]})."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"--gallery {folder}: no such folder.")
        found = gallery_files(folder)
        if not any(found.values()):
            raise FileNotFoundError(f"--gallery {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) or audio files "
                                    f"({', '.join(AUDIO_SUFFIXES)}) in it.")
        location = folder / INDEX_FOLDER / checkpoint_key(model_dir)
        signatures = {m: [_signature(folder, p) for p in paths] for m, paths in found.items()}
        saved = cls._load(location, signatures, faiss_above)
        if saved is not None:
            saved.folder = folder
            return saved
        log(f"Embedding the gallery {folder}: " + ", ".join(f"{len(p)} {m} files" for m, p in found.items() if p))
        paths, embeddings, skipped = {}, {}, {}
        for modality, relative in found.items():
            if not relative:
                continue
            vectors, left_out = embed(modality, [folder / p for p in relative])
            dropped = {Path(p).relative_to(folder).as_posix() for files in left_out.values() for p in files}
            paths[modality] = [p for p in relative if p not in dropped]
            embeddings[modality] = vectors.float().contiguous()
            for reason, files in left_out.items():
                skipped[reason] = skipped.get(reason, 0) + len(files)
        if skipped:
            log("Gallery files left out: " + ", ".join(f"{reason}: {count}" for reason, count in skipped.items()))
        index = cls(folder, paths, embeddings, skipped)
        index.faiss_indices = {m: _faiss_index(e) for m, e in embeddings.items() if len(e) > faiss_above}
        try:
            index._save(location, signatures)
        except OSError as error:  # a read-only gallery: the index serves from memory, built again next time
            log(f"Could not save the gallery index in {location} ({error.strerror or error}); it is kept in memory.")
        return index

    def _save(self, location, signatures):
        from safetensors.torch import save_file

        with atomic_folder(location) as staging:
            save_file({m: e for m, e in self.embeddings.items()}, str(staging / "embeddings.safetensors"))
            for modality, faiss_index in self.faiss_indices.items():
                import faiss

                faiss.write_index(faiss_index, str(staging / f"{modality}.faiss"))
            write_text_atomic(staging / "items.json", json.dumps(
                {"files": signatures, "paths": self.paths, "skipped": self.skipped}, indent=1))

    @classmethod
    def _load(cls, location, signatures, faiss_above):
        from safetensors.torch import load_file

        try:
            items = json.loads((location / "items.json").read_text())
            if items["files"] != signatures:
                return None
            embeddings = load_file(str(location / "embeddings.safetensors"))
        except (OSError, ValueError, KeyError):  # none saved, or a damaged one: build it again
            return None
        index = cls(location.parents[1], items["paths"], embeddings, items.get("skipped", {}))
        for modality, vectors in embeddings.items():
            if len(vectors) > faiss_above:
                saved = location / f"{modality}.faiss"
                import faiss

                index.faiss_indices[modality] = faiss.read_index(str(saved)) if saved.is_file() else \
                    _faiss_index(vectors)
        return index


def _faiss_index(embeddings):
    """An HNSW graph over normalised embeddings, searched by inner product (cosine)."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(f"A gallery of more than {FAISS_ABOVE:,} items is searched with faiss: "
                          "pip install faiss-cpu") from error
    faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
    index = faiss.IndexHNSWFlat(embeddings.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_SEARCH_DEPTH
    index.add(embeddings.float().numpy())
    return index
