"""The pointing game: the geometry of peaks, patches and boxes, the names' tokens, the scoring on cross-attention
built by hand (peak in the box -> 1.0, outside -> 0.0), and a whole run through `xmodal eval` on the tiny scenes."""

import pytest
import torch

import xmodal
from xmodal import XModalConfig, XModalDecoderConfig, XModalTextConfig, XModalVisionConfig
from xmodal.towers import XModalVisionCNN, XModalVisionTransformer
from xmodal.trainers.config import config_from_dict
from xmodal.trainers.evaluate import evaluate_checkpoint
from xmodal.trainers.pointing import (
    KEYS,
    caption_objects,
    grid_layout,
    inside,
    name_char_spans,
    patch_centres,
    peak_centre,
    pointing_game,
    pointing_results,
    pointing_summary,
    token_positions,
    uniform_hit_rate,
)

from .helpers import tiny_config


# ---------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("count, layout", [(64, (8, 0)), (65, (8, 1)), (16, (4, 0)), (17, (4, 1)), (196, (14, 0)),
                                           (1, None), (2, None), (7, None), (198, None), (0, None)])
def test_grid_layout_from_the_token_count(count, layout):
    assert grid_layout(count) == layout


@pytest.mark.parametrize("vision, layout", [
    # the default config's CNN: 64 px, three halvings, max pooling -> an 8x8 grid and no class token
    (dict(encoder_type="cnn", image_size=64, cnn_channels=[16, 32, 64, 128], pooling="max"), (8, 0)),
    (dict(encoder_type="cnn", image_size=64, cnn_channels=[16, 32, 64, 128], pooling="cls"), (8, 1)),
    (dict(encoder_type="vit", image_size=32, patch_size=8), (4, 1)),  # the tests' tiny ViT: class token first
])
def test_the_towers_token_layouts_are_read_right(vision, layout):
    config = XModalVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                **vision)
    tower = (XModalVisionCNN if config.encoder_type == "cnn" else XModalVisionTransformer)(config).eval()
    with torch.no_grad():
        tokens = tower(torch.zeros(1, 3, config.image_size, config.image_size)).last_hidden_state
    assert grid_layout(tokens.shape[1]) == layout


def test_patch_centres_row_major():
    centres = patch_centres(4, (32, 32))
    assert centres[0].tolist() == [4.0, 4.0] and centres[1].tolist() == [12.0, 4.0]  # along a row first
    assert centres[4].tolist() == [4.0, 12.0] and centres[15].tolist() == [28.0, 28.0]
    assert patch_centres(2, (64, 32)).tolist() == [[16, 8], [48, 8], [16, 24], [48, 24]]  # width, height apart


def test_peak_to_pixel_centre_with_and_without_a_class_token():
    attention = torch.full((64,), 0.1)
    attention[2 * 8 + 5] = 0.9  # row 2, column 5 of an 8x8 grid over 64 px
    assert peak_centre(attention, 8, (64, 64)) == (44.0, 20.0)
    with_class = torch.cat([torch.tensor([5.0]), attention])  # the class token's weight is no place
    assert peak_centre(with_class, 8, (64, 64), leading=1) == (44.0, 20.0)
    assert peak_centre(torch.eye(16)[0], 4, (32, 32)) == (4.0, 4.0)
    with pytest.raises(ValueError, match="not 0 \\+ 8x8"):
        peak_centre(with_class, 8, (64, 64))


def test_hit_or_miss_against_half_open_boxes():
    boxes = [[0, 0, 8, 8], [20, 20, 30, 30]]
    assert inside([[4, 4], [8, 4], [25, 29.5], [30, 25], [0, 0]], boxes).tolist() == [True, False, True, False, True]
    assert inside([[8, 4]], [[8, 0, 16, 8]]).tolist() == [True]  # a shared edge belongs to the box to its right


@pytest.mark.parametrize("box, share", [([0, 0, 32, 64], 0.5), ([8, 8, 16, 16], 1 / 64), ([1, 1, 3, 3], 0.0),
                                        ([0, 0, 64, 64], 1.0), ([0, 0, 64, 16], 0.25)])
def test_uniform_baseline_is_the_share_of_patch_centres_in_the_box(box, share):
    assert uniform_hit_rate(8, (64, 64), [box]) == pytest.approx(share)


def test_uniform_baseline_of_several_boxes_counts_a_patch_once():
    assert uniform_hit_rate(8, (64, 64), [[0, 0, 32, 64], [0, 0, 16, 64]]) == pytest.approx(0.5)
    assert uniform_hit_rate(8, (64, 64), [[0, 0, 32, 64], [32, 0, 40, 8]]) == pytest.approx(0.5 + 1 / 64)


# ---------------------------------------------------------------------------------------
# Names and their tokens
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_processor):
    return tiny_processor.tokenizer


def _tokens_of(tokenizer, caption, name, **kwargs):
    encoded = tokenizer(caption, return_offsets_mapping=True, **kwargs)
    positions = token_positions(encoded["offset_mapping"], name_char_spans(caption, [name])[name])
    return [tokenizer.convert_ids_to_tokens(encoded["input_ids"][p]) for p in positions]


@pytest.mark.parametrize("caption, name, tokens", [
    ("a small man detective to the left of a ninja", "man detective", ["man", "detective"]),
    ("a small man detective to the left of a ninja", "ninja", ["ninja"]),
    ("there are two small man detectives above a ninja", "man detective", ["man", "detectives"]),  # plural
    ("three small people in tuxedo", "person in tuxedo", ["people", "in", "tuxedo"]),  # irregular plural
    ("a japanese monthly amount button", "japanese monthly amount button", ["japanese", "monthly", "amount",
                                                                            "button"]),
])
def test_token_span_of_a_name_from_the_offsets(tokenizer, caption, name, tokens):
    assert _tokens_of(tokenizer, caption, name) == tokens


def test_a_name_said_twice_takes_both_occurrences(tokenizer):
    caption = "a ninja to the left of a technologist and a ninja"
    assert name_char_spans(caption, ["ninja"]) == {"ninja": [(2, 7), (44, 49)]}
    assert _tokens_of(tokenizer, caption, "ninja") == ["ninja", "ninja"]


def test_names_are_whole_words_and_the_longer_name_claims_its_words():
    caption = "a man to the left of a man detective and a woman"
    assert name_char_spans(caption, ["man", "man detective"]) == {"man": [(2, 5)], "man detective": [(23, 36)]}
    assert name_char_spans("a technologist", ["cat", "technologist"]) == {"cat": [], "technologist": [(2, 14)]}


def test_caption_objects_group_copies_and_drop_names_cut_off(tokenizer):
    caption = "a small technologist above two small man detectives"
    boxes = [[6, 1, 13, 8], [4, 11, 11, 18], [3, 20, 11, 28]]
    emoji = ["technologist", "man detective", "man detective"]
    offsets = tokenizer(caption, return_offsets_mapping=True)["offset_mapping"]  # [BOS] first
    assert caption_objects(caption, offsets, emoji, boxes) == [([3], boxes[:1]), ([7, 8], boxes[1:])]
    cut = tokenizer(caption, return_offsets_mapping=True, truncation=True, max_length=6)["offset_mapping"]
    assert caption_objects(caption, cut, emoji, boxes) == [([3], boxes[:1])]


# ---------------------------------------------------------------------------------------
# Scoring cross-attention built by hand
# ---------------------------------------------------------------------------------------
def forced_attention(peaks, queries, layers=2, heads=2, side=8, leading=1):
    """Cross-attention tensors (per layer: batch, heads, queries, image tokens) whose query tokens peak on a patch:
    `peaks[row][query]` is a patch index (row-major) or None (uniform). One head of each layer is uniform and the
    class token gets a large weight, so the peak survives the averaging and the class token is ignored."""
    tokens = leading + side * side
    logits = torch.zeros(len(peaks), heads, queries, tokens)
    for row, row_peaks in enumerate(peaks):
        for query, patch in row_peaks.items():
            if patch is not None:
                logits[row, 0, query, leading + patch] = 6.0
    if leading:
        logits[:, 0, :, 0] = 5.0
    return tuple(logits.softmax(-1) for _ in range(layers))


PATCH_IN_BOX = 2 * 8 + 5  # centre (44, 20) in a 64 px image
BOX = [[40, 16, 48, 24]]  # exactly that patch


@pytest.mark.parametrize("patch, expected", [(PATCH_IN_BOX, 1.0), (0, 0.0), (63, 0.0)])
def test_attention_forced_inside_the_box_scores_one_and_outside_zero(patch, expected):
    # row 0: the name is text tokens 1 and 2 (queries 2 and 3 after the [FUSE] token); the other tokens look away
    peaks = [{2: patch, 3: patch, 1: 7, 4: 7}, {1: patch}]
    objects = [[([1, 2], BOX)], [([0], BOX)]]
    results = pointing_results(forced_attention(peaks, queries=6), objects, [(64, 64), (64, 64)])
    assert results == [(expected, 1 / 64), (expected, 1 / 64)]
    assert pointing_summary(results) == {"pointing_game_accuracy": expected, "pointing_game_uniform": 1 / 64,
                                         "pointing_game_objects": 2}


def test_the_names_tokens_are_averaged_and_other_tokens_ignored():
    # queries: [FUSE], then text tokens 0 (weakly in the box), 1 (uniform) and 2 (strongly on patch 0)
    logits = torch.zeros(1, 1, 4, 64)
    logits[0, 0, 1, PATCH_IN_BOX], logits[0, 0, 3, 0] = 1.0, 9.0
    attention = (logits.softmax(-1),)
    corner = [[0, 0, 8, 8]]
    assert pointing_results(attention, [[([0, 1], BOX), ([2], corner)]], [(64, 64)]) == [(1.0, 1 / 64)] * 2
    assert pointing_results(attention, [[([0, 1, 2], BOX)]], [(64, 64)]) == [(0.0, 1 / 64)]


def test_scoring_without_a_patch_grid_is_refused():
    with pytest.raises(ValueError, match="no patch grid"):
        pointing_results((torch.ones(1, 1, 3, 7) / 7,), [[([0], BOX)]], [(64, 64)])
    assert pointing_summary([]) == {}


# ---------------------------------------------------------------------------------------
# Through `xmodal eval`
# ---------------------------------------------------------------------------------------
TOWER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
VISION = {"vit": dict(encoder_type="vit", image_size=32, patch_size=8),  # 4x4 after a class token
          "cnn": dict(encoder_type="cnn", image_size=32, cnn_channels=[8, 16, 16], pooling="max")}  # 8x8, none


def _model_config(tokenizer, vision="vit", **overrides):
    vocab = len(tokenizer)
    return XModalConfig(text_config=XModalTextConfig(vocab_size=vocab, **TOWER),
                        vision_config=XModalVisionConfig(**VISION[vision], **TOWER),
                        decoder_config=XModalDecoderConfig(vocab_size=vocab, **TOWER), projection_dim=16,
                        fusion_hidden_size=32, fusion_num_layers=2, fusion_num_attention_heads=2,
                        fusion_intermediate_size=64, **overrides)


def _run_config(tmp_path, **evaluation):
    return config_from_dict(tiny_config(tmp_path / "run", modalities=("text", "image"),
                                        evaluation={"max_samples": 16, "generation_samples": 2, **evaluation}))


@pytest.mark.parametrize("vision", ["vit", "cnn"])
def test_eval_of_an_untrained_model_reports_the_pointing_game(tmp_path, tiny_scenes, tiny_processor, vision):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    xmodal.XModalForPreTraining(_model_config(tiny_processor.tokenizer, vision)).save_pretrained(model_dir)
    tiny_processor.save_pretrained(model_dir)
    for split in ("test", "test_novel"):
        metrics = evaluate_checkpoint(model_dir, config=_run_config(tmp_path), split=split)
        assert set(KEYS) <= set(metrics), sorted(metrics)
        assert 0 <= metrics["pointing_game_accuracy"] <= 1 and 0 < metrics["pointing_game_uniform"] < 1
        # every scene names each of its emoji, so there is an object per distinct emoji of each scene scored
        scenes = tiny_scenes[split].select(range(metrics["samples"]))
        assert metrics["pointing_game_objects"] == sum(len(set(names)) for names in scenes["emoji"])


@pytest.mark.parametrize("overrides, modalities, drop, note", [
    ({"fusion_type": "concat"}, ("text", "image"), (), "fusion_type='concat'"),
    ({"fusion_type": "gated"}, ("text", "image"), (), "fusion_type='gated'"),
    ({}, ("text",), (), "text and an image tower"),
    ({}, ("text", "image"), ("boxes",), "no boxes column"),
])
def test_models_and_data_that_cannot_play_get_a_note_not_an_error(tmp_path, tiny_scenes, tiny_processor, capsys,
                                                                  overrides, modalities, drop, note):
    config = _model_config(tiny_processor.tokenizer, **overrides)
    split = tiny_scenes["test"].remove_columns(list(drop))
    assert pointing_game(tmp_path, config, modalities, _run_config(tmp_path), split, None, tiny_processor, None) == {}
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pointing game left out" in lines[0] and note in lines[0]


def test_a_checkpoint_without_fusion_weights_gets_a_note(tmp_path, tiny_scenes, tiny_processor, capsys):
    config = _model_config(tiny_processor.tokenizer)
    xmodal.XModalModel(config).save_pretrained(tmp_path / "model")  # the embedding space alone
    assert pointing_game(tmp_path / "model", config, ("text", "image"), _run_config(tmp_path), tiny_scenes["test"],
                         None, tiny_processor, None) == {}
    assert "no fusion weights" in capsys.readouterr().err
