"""The demo's inference module, in process: input checks, agreement with the model heads, missing heads."""

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.trainers.demo.drawing import heat_colors, heatmap_overlay
from xmodal.trainers.demo.inputs import DemoInputError, DemoLimits, load_audio, load_image, parse_captions
from xmodal.trainers.demo.predictor import Predictor
from xmodal.trainers.loading import resolve_model_dir

from .tiny_demo import GENERATED_WORD, HEARD_WORD, build_checkpoint


def test_parse_captions_strips_drops_blanks_and_repeats():
    assert parse_captions(" a cat \n\n a dog\na cat\n  ") == ["a cat", "a dog"]
    assert parse_captions(["x", " ", "y"]) == ["x", "y"]
    with pytest.raises(DemoInputError, match="at least one caption"):
        parse_captions(" \n \n")
    with pytest.raises(DemoInputError, match="at most 2"):
        parse_captions("a\nb\nc", DemoLimits(max_captions=2))
    with pytest.raises(DemoInputError, match="characters long"):
        parse_captions("x" * 300)


def test_load_image_rejects_what_is_not_an_image(assets, tmp_path):
    with pytest.raises(DemoInputError, match="Could not read notes.txt as an image"):
        load_image(str(assets["text"]))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(assets["image"].read_bytes()[:60])
    with pytest.raises(DemoInputError, match="cut.png"):
        load_image(str(truncated))
    with pytest.raises(DemoInputError, match="megapixels"):
        load_image(str(assets["image"]), DemoLimits(max_image_pixels=100))
    with pytest.raises(DemoInputError, match="No image file"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(DemoInputError, match="Upload an image"):
        load_image(None)


def test_load_image_puts_transparency_on_white():
    image = load_image(Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_load_audio_checks(assets):
    samples, rate = load_audio(str(assets["speech"]))
    assert rate == 16000 and samples.shape == (16000,) and samples.dtype == np.float32
    with pytest.raises(DemoInputError, match="Could not read corrupt.wav as audio"):
        load_audio(str(assets["corrupt_audio"]))
    with pytest.raises(DemoInputError, match="600 s long"):
        load_audio(str(assets["long_audio"]))
    with pytest.raises(DemoInputError, match="empty"):
        load_audio((16000, np.zeros(0, dtype=np.int16)))
    with pytest.raises(DemoInputError, match="NaN"):
        load_audio((16000, np.full(100, np.nan, dtype=np.float32)))
    samples, _ = load_audio((8000, np.full((10, 2), 16384, dtype=np.int16)))  # int PCM, stereo
    assert samples.shape == (10,) and np.allclose(samples, 0.5, atol=1e-3)


def test_match_agrees_with_the_model_heads(predictor, assets):
    captions = ["a big red circle", "a small blue square", "two dogs"]
    result = predictor.match("\n".join(captions), image=str(assets["image"]))
    inputs = predictor.processor(text=captions, images=[Image.open(assets["image"])] * 3, return_tensors="pt",
                                 padding=True)
    with torch.no_grad():
        logits = predictor.base(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                pixel_values=inputs["pixel_values"]).logits_per_image[0]
        matching = predictor.matcher(**inputs).logits.softmax(-1)[:, 1]
    assert result["probabilities"] == pytest.approx(logits.softmax(-1).tolist(), abs=1e-5)
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    assert result["match_scores"] == pytest.approx(matching.tolist(), abs=1e-5)
    with pytest.raises(DemoInputError, match="one of them"):
        predictor.match("a cat", image=str(assets["image"]), audio=str(assets["speech"]))


def test_search_ranks_by_similarity_and_caps_k(predictor, assets):
    results = predictor.search_images(text="a big red circle", k=20)
    scores = [score for _, _, score in results]
    assert len(results) == 16 and scores == sorted(scores, reverse=True)  # the 16 test images
    gallery = predictor.default_gallery()
    expected = (predictor.embed_texts(["a big red circle"]) @ gallery.embeddings.t())[0].max().item()
    assert scores[0] == pytest.approx(expected)
    files = sorted(str(p) for p in assets["gallery"].glob("*.png"))
    assert predictor.gallery_from_files(files) is predictor.gallery_from_files(files)  # embedded once
    with pytest.raises(DemoInputError, match="Give one query"):
        predictor.search_images(text="a cat", audio=str(assets["speech"]))


def test_generation_follows_beam_and_length(predictor, assets):
    assert predictor.caption(str(assets["image"]), num_beams=2, max_new_tokens=4) == " ".join([GENERATED_WORD] * 4)
    assert predictor.transcribe(str(assets["speech"]), 1, 2, reader="decoder") == f"{GENERATED_WORD} {GENERATED_WORD}"
    with pytest.raises(DemoInputError, match="Max length must be between 1 and 15"):
        predictor.caption(str(assets["image"]), 1, 40)


def test_transcribe_reads_with_the_ctc_head_first(predictor, assets):
    """The rigged CTC head hears "blue" in every state: greedy CTC merges the repeats into one word."""
    assert predictor.readers == ["ctc", "decoder"]
    assert predictor.transcribe(str(assets["speech"]), 1, 5) == HEARD_WORD
    assert predictor.transcribe(str(assets["speech"]), 3, 5, reader="ctc") == HEARD_WORD  # beams do not apply
    features = predictor._audio_inputs(load_audio(str(assets["speech"]), predictor.limits))
    logits = predictor.ctc_reader(**features).logits[0]
    assert (logits.argmax(-1) == predictor.processor.tokenizer.convert_tokens_to_ids(HEARD_WORD)).all()
    with pytest.raises(DemoInputError, match="Unknown reader 'beam'; choose one of: ctc, decoder"):
        predictor.transcribe(str(assets["speech"]), reader="beam")
    with pytest.raises(DemoInputError, match="Max length must be between 1 and 15"):
        predictor.transcribe(str(assets["speech"]), 1, 0, reader="ctc")


def test_without_a_ctc_head_the_decoder_transcribes(assets, tmp_path):
    folder = build_checkpoint(tmp_path / "no_ctc", assets["data"], assets["captions"], ctc=False)
    predictor = Predictor(folder, data_path=tmp_path / "no-data")
    assert predictor.ctc_reader is None and "ctc_head.weight" in predictor.ctc_reader_missing
    assert predictor.readers == ["decoder"] and predictor.model_info()["heads"]["ctc"] is False
    assert predictor.transcribe(str(assets["speech"]), 1, 3) == " ".join([GENERATED_WORD] * 3)
    with pytest.raises(DemoInputError, match="This checkpoint has no CTC head; it reads speech with: decoder"):
        predictor.transcribe(str(assets["speech"]), reader="ctc")


def test_explain_maps_are_attention_over_the_patch_grid(predictor, assets):
    result = predictor.explain(str(assets["image"]), "a big redd circle")
    assert result["words"] == ["[whole caption]", "a", "big", "redd", "circle"]  # "redd" is several tokens
    assert all(grid.shape == (4, 4) for grid in result["grids"])  # 32 px / 8 px patches
    assert all(grid.min() >= 0 and grid.sum() <= 1 + 1e-5 for grid in result["grids"])  # softmax rows
    assert [image.size for image, _ in result["maps"]] == [(192, 192)] * 5
    assert 0 <= result["match_score"] <= 1
    assert not np.allclose(predictor.explain(str(assets["image"]), "a cat", layer="1")["grids"][1],
                           predictor.explain(str(assets["image"]), "a cat", layer="2")["grids"][1])
    with pytest.raises(DemoInputError, match="Layer must be"):
        predictor.explain(str(assets["image"]), "a cat", layer="3")


def test_similarity_of_a_batch(predictor):
    result = predictor.similarity(5, seed=3)
    assert result["matrix"].shape == (5, 5) and len(result["captions"]) == len(result["images"]) == 5
    assert np.abs(result["matrix"]).max() <= 1 + 1e-5
    assert result["heatmap"].size == (260 + 5 * 64, 6 * 64)
    assert predictor.similarity(5, seed=3)["captions"] == result["captions"]
    with pytest.raises(DemoInputError, match="between 2 and 8"):
        predictor.similarity(20)


def test_model_info(predictor):
    info = predictor.model_info()
    assert info["card"].startswith("# Tiny xmodal test model") and "![" not in info["card"]
    assert "coloured shapes" in info["data_credits"] and "## Data" not in info["card"]
    assert info["metrics"] == {"test_recall@1_image_text": 0.25, "train_seconds": 0.6}
    counts = info["parameters"]
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert counts["text tower"] == sum(p.numel() for p in predictor.base.text_model.parameters())
    assert info["heads"] == {"matching": True, "generation": True, "ctc": True}


def test_a_contrastive_only_checkpoint_reports_missing_heads(assets, tmp_path):
    folder = build_checkpoint(tmp_path / "contrastive", assets["data"], assets["captions"], head="contrastive")
    predictor = Predictor(folder, data_path=tmp_path / "no-data")
    assert predictor.matcher is None and predictor.generator is None and predictor.matcher_missing
    assert predictor.match("a cat\na dog", image=str(assets["image"]))["match_scores"] is None
    with pytest.raises(DemoInputError, match="no matching head"):
        predictor.explain(str(assets["image"]), "a cat")
    with pytest.raises(DemoInputError, match="no text decoder"):
        predictor.caption(str(assets["image"]))
    with pytest.raises(DemoInputError, match="no text decoder"):
        predictor.transcribe(str(assets["speech"]))
    with pytest.raises(DemoInputError, match="No captions to search"):
        predictor.search_captions(str(assets["image"]))
    with pytest.raises(DemoInputError, match="No gallery to search"):
        predictor.search_images(text="a cat")
    assert predictor.search_captions(str(assets["image"]), k=1, captions="a cat\na dog")[0][0] in ("a cat", "a dog")
    assert predictor.examples() == []


def test_a_gallery_folder_is_searched_by_file_name(assets):
    predictor = Predictor(assets["model"], gallery_dir=assets["gallery"])
    labels = {label for _, label, _ in predictor.search_images(text="a blue circle", k=5)}
    assert labels == {p.name for p in assets["gallery"].glob("*.png")}


def test_resolve_model_dir_finds_a_lora_runs_merged_model(assets, tmp_path):
    assert resolve_model_dir(assets["model"]) == assets["model"]
    (tmp_path / "merged").symlink_to(assets["model"])
    assert resolve_model_dir(tmp_path) == tmp_path / "merged"
    with pytest.raises(FileNotFoundError, match="No model at"):
        resolve_model_dir(tmp_path / "merged" / "nothing")


def test_drawing():
    assert heat_colors(np.array([0.0, 1.0])).tolist() == [[0, 0, 4], [252, 255, 164]]
    overlay = heatmap_overlay(Image.new("RGB", (40, 30), "white"), np.eye(4), size=64)
    assert overlay.size == (64, 64) and overlay.mode == "RGB"
