"""`xmodal demo --gallery DIR`: a folder of images and speech embedded once, saved beside it, searched with
faiss above a size, bad files counted."""

import shutil

import numpy as np
import pytest
import torch

from xmodal.trainers.demo.gallery_index import INDEX_FOLDER, GalleryIndex, checkpoint_key
from xmodal.trainers.demo.inputs import DemoInputError
from xmodal.trainers.demo.predictor import Predictor

from .tiny_demo import _encode, shape_image, tone


@pytest.fixture()
def folder(assets, tmp_path):
    """Five images, two speech clips in a subfolder, a corrupt PNG, a WAV that is not one, and a text file."""
    gallery = tmp_path / "gallery"
    shutil.copytree(assets["gallery"], gallery)
    (gallery / "speech").mkdir()
    for index, pitch in enumerate((330, 550)):
        (gallery / "speech" / f"clip{index}.wav").write_bytes(_encode(tone(pitch, seconds=0.5)))
    (gallery / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (gallery / "speech" / "noise.wav").write_bytes(b"not a wave file at all")
    (gallery / "notes.txt").write_text("not searched")
    return gallery


class Counting:
    """The predictor's file embedder, counting the files it is asked to embed."""

    def __init__(self, predictor):
        self.predictor, self.files = predictor, 0

    def __call__(self, modality, paths):
        self.files += len(paths)
        return self.predictor._embed_files(modality, paths)


def test_the_index_is_built_once_saved_beside_the_gallery_and_reused(assets, folder):
    predictor = Predictor(assets["model"], gallery_dir=folder)
    embed = Counting(predictor)
    index = GalleryIndex.open(folder, predictor.model_dir, embed, log=lambda _: None)
    assert embed.files == 9  # 6 images (one corrupt), 3 audio files (one not audio)
    assert sorted(index.paths["image"]) == sorted(p.name for p in assets["gallery"].glob("*.png"))
    assert index.paths["audio"] == ["speech/clip0.wav", "speech/clip1.wav"]
    assert index.skipped == {"unreadable image": 1, "unreadable audio": 1}
    assert (folder / INDEX_FOLDER / checkpoint_key(predictor.model_dir) / "embeddings.safetensors").is_file()

    again = GalleryIndex.open(folder, predictor.model_dir, embed, log=lambda _: None)
    assert embed.files == 9, "a saved, current index is loaded, not embedded again"
    for modality in ("image", "audio"):
        assert torch.equal(again.embeddings[modality], index.embeddings[modality])
    assert again.paths == index.paths and again.skipped == index.skipped

    shape_image("red", "circle", "big").save(folder / "new_red_circle.png")
    grown = GalleryIndex.open(folder, predictor.model_dir, embed, log=lambda _: None)
    assert embed.files == 19 and "new_red_circle.png" in grown.paths["image"]


def test_search_ranks_by_the_models_own_similarity(assets, folder):
    predictor = Predictor(assets["model"], gallery_dir=folder)
    hits = predictor.search_images(text="a blue circle", k=3)
    index = predictor.gallery_index()
    scores = (predictor.embed_texts(["a blue circle"]) @ index.embeddings["image"].t())[0]
    best = scores.topk(3)
    assert [label for _, label, _ in hits] == [index.paths["image"][i] for i in best.indices.tolist()]
    assert [score for *_, score in hits] == pytest.approx(best.values.tolist(), abs=1e-6)
    assert all(image.mode == "RGB" for image, _, _ in hits)
    speech = predictor.search_speech(text="a blue circle", k=5)
    assert sorted(name for name, _ in speech) == ["speech/clip0.wav", "speech/clip1.wav"]
    assert speech[0][1] >= speech[1][1]


def test_a_large_gallery_is_searched_with_a_saved_faiss_index(assets, folder):
    pytest.importorskip("faiss")
    predictor = Predictor(assets["model"], gallery_dir=folder)
    predictor.faiss_above = 3  # the tiny gallery stands in for one of more than 10,000 items
    index = predictor.gallery_index()
    assert set(index.faiss_indices) == {"image"}  # 5 images are above 3, 2 clips are not
    location = folder / INDEX_FOLDER / checkpoint_key(predictor.model_dir)
    assert (location / "image.faiss").is_file() and not (location / "audio.faiss").exists()
    queries = predictor.embed_texts(["a red square", "a yellow circle", "a green thing"])
    for query in queries:
        exact = (query @ index.embeddings["image"].t()).topk(5)
        found = index.search(query[None], "image", 5)
        assert [p.name for p, _ in found] == [index.paths["image"][i] for i in exact.indices.tolist()]
        np.testing.assert_allclose([s for _, s in found], exact.values.numpy(), atol=1e-5)
    reloaded = GalleryIndex.open(folder, predictor.model_dir, None, faiss_above=3, log=lambda _: None)
    assert reloaded.search(queries[:1], "image", 2) == index.search(queries[:1], "image", 2)


def test_gallery_mistakes_are_clear(assets, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DemoInputError, match=r"no images \(png, jpg.*or audio files \(wav, flac"):
        Predictor(assets["model"], gallery_dir=tmp_path / "empty").search_images(text="a cat")
    with pytest.raises(DemoInputError, match="no such folder"):
        Predictor(assets["model"], gallery_dir=tmp_path / "nowhere").search_images(text="a cat")
    with pytest.raises(DemoInputError, match="No gallery folder: start the demo with --gallery DIR"):
        Predictor(assets["model"]).search_speech(text="a cat")


def test_an_index_that_cannot_be_saved_serves_from_memory(assets, folder):
    (folder / INDEX_FOLDER).write_text("a file where the index folder would go")  # mkdir fails, even for root
    messages = []
    predictor = Predictor(assets["model"], gallery_dir=folder)
    index = GalleryIndex.open(folder, predictor.model_dir, predictor._embed_files, log=messages.append)
    assert len(index.paths["image"]) == 5 and (folder / INDEX_FOLDER).is_file()
    assert any(m.startswith("Could not save the gallery index") for m in messages)
