"""The video tower (issue 15): every head with every subset of the four modalities, the common checks of
test_modeling_xmodal.py on models with video, padding frames that change nothing, a vision tower shared with the
video tower, saving and loading (bit for bit, and with remote code where xmodal is not installed), clear errors for
bad video inputs, and gradients that reach the video tower."""

import json
import os
import subprocess
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, ViTConfig, ViTModel

from xmodal import (
    MODALITIES,
    MODALITY_NAMES,
    XModalConfig,
    XModalForConditionalGeneration,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
    XModalVideoConfig,
    XModalVisionConfig,
)
from xmodal.modalities import PARTS, TOWER_PARTS, parameter_part
from xmodal.video_tower import XModalVideoTransformer, shared_frame_features

from .test_modeling_xmodal import (
    XModalForMatchingSpec,
    XModalForPreTrainingSpec,
    XModalForSequenceClassificationSpec,
    XModalModelSpec,
)
from .test_portable_checkpoint import python_without_xmodal
from .tiny import (
    MAX_FRAMES, caption_labels, offloaded_copy, tiny_config, tiny_inputs, tiny_video_config, tiny_video_inputs,
)

FOUR = MODALITY_NAMES  # text, image, audio, video


def video_batch(modalities=FOUR, batch_size=3, shared=False, seed=0, padded=True):
    """Tiny inputs of `modalities`, video frames sized for the frame encoder (16 px, or the vision tower's 32)."""
    inputs = tiny_inputs([m for m in modalities if m != "video"], batch_size, seed=seed, padded=padded)
    if "video" in modalities:
        inputs.update(tiny_video_inputs(batch_size, size=32 if shared else 16, seed=seed, padded=padded))
    return inputs


def build(model_class=XModalModel, modalities=FOUR, seed=0, **overrides):
    torch.manual_seed(seed)
    extra = {"num_labels": 4} if model_class is XModalForSequenceClassification else {}
    return model_class(tiny_config(modalities, **extra, **overrides)).eval()


# --- the common checks of the heads, on models with a video tower. Kept to what the CI budget allows: the
# generation head's decoder runs in the pre-training spec and `test_generate_captions_...`, every head class in the
# save/load tests below; the concatenation fusion reads video through the same per-modality code as gated. -------
class VideoSpec:
    """Makes a head's spec run on the four-modality tiny model (`shared`: frames through the vision tower)."""

    modalities = FOUR
    shared = False

    def config(self, **overrides):
        return super().config(share_vision_tower=self.shared, **overrides)

    def inputs(self, modalities=None, batch_size=3, seed=0, padded=True):
        return video_batch(self.modalities if modalities is None else modalities, batch_size, self.shared, seed,
                           padded)


class TestVideoXModalModel(VideoSpec, XModalModelSpec):
    pass


class TestVideoSharedVisionTower(VideoSpec, XModalModelSpec):
    shared = True


class TestVideoXModalForMatching(VideoSpec, XModalForMatchingSpec):
    pass


class TestVideoGatedFusionClassification(VideoSpec, XModalForSequenceClassificationSpec):
    fusion_type = "gated"


class TestVideoXModalForPreTraining(VideoSpec, XModalForPreTrainingSpec):
    pass


# --- outputs ---------------------------------------------------------------------------------------------------------
def test_the_video_tower_gives_a_state_per_frame_and_a_clip_vector():
    model = build()
    inputs = video_batch()
    with torch.no_grad():
        output = model(**inputs)
        features = model.get_video_features(inputs["pixel_values_videos"], inputs["video_frame_mask"])
    tower = output.video_model_output
    assert tower.last_hidden_state.shape == (3, 4, 32) and tower.pooler_output.shape == (3, 32)
    assert torch.equal(tower.attention_mask, inputs["video_frame_mask"])
    assert features.pooler_output.shape == (3, 16)
    torch.testing.assert_close(torch.nn.functional.normalize(features.pooler_output, dim=-1), output.video_embeds)
    with torch.no_grad():
        embeddings = model.get_embeddings(**inputs, labels=None)
    assert list(embeddings) == list(FOUR)
    torch.testing.assert_close(embeddings["video"], output.video_embeds)
    for name in ("logits_video_text", "logits_video_image", "logits_video_audio"):
        assert getattr(output, name).shape == (3, 3)
    assert torch.equal(output.logits_text_video, output.logits_video_text.t())


def test_frame_embeddings_average_to_the_clip_and_score_against_images():
    model = build()
    inputs = video_batch()
    with torch.no_grad():
        frames = model.get_video_frame_features(**{k: inputs[k] for k in MODALITIES["video"].inputs})
        raw = model.get_video_frame_features(inputs["pixel_values_videos"], inputs["video_frame_mask"],
                                             normalize=False)
        images = model.get_embeddings(pixel_values=inputs["pixel_values"])["image"]
        clips = model(**inputs).video_embeds
    mask = inputs["video_frame_mask"]
    assert frames.frame_embeds.shape == (3, 4, 16) and torch.equal(frames.video_timestamps, inputs["video_timestamps"])
    assert torch.equal(frames.frame_embeds[1, 2:], torch.zeros(2, 16))  # padding frames
    torch.testing.assert_close(frames.frame_embeds[mask.bool()].norm(dim=-1), torch.ones(int(mask.sum())))
    torch.testing.assert_close(frames.video_embeds, clips)
    # Mean pooling and a linear projection: the clip's embedding is the mean of its real frames' embeddings.
    mean = raw.frame_embeds.sum(dim=1) / mask.sum(dim=1, keepdim=True)
    torch.testing.assert_close(mean, raw.video_embeds, atol=1e-6, rtol=1e-5)
    # "Where in this video does this image belong": a logit per image and frame.
    scores = model.similarity(images, frames.frame_embeds[0])
    assert scores.shape == (3, 4)


@pytest.mark.parametrize("query", [("video",), ("image", "video"), ("audio", "video")])
def test_cross_attention_fusion_queries_with_the_frames_unless_text_or_audio_is_there(query):
    model = build(XModalForSequenceClassification)
    with torch.no_grad():
        output = model(**video_batch(query))
    expected = "audio" if "audio" in query else "video"
    assert output.fusion_output.modalities[0] == expected
    assert output.fusion_output.last_hidden_state.shape[1] == 1 + (40 // 4 if expected == "audio" else 4)


def test_generate_captions_a_video_given_by_name_or_by_rank():
    model = build(XModalForConditionalGeneration)
    inputs = tiny_video_inputs(batch_size=2, padded=False)
    with torch.no_grad():
        by_name = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
        by_rank = model.generate(inputs["pixel_values_videos"], max_new_tokens=4, do_sample=False, eos_token_id=None)
    assert torch.equal(by_name, by_rank) and by_name.shape == (2, 5)


def test_a_pretrained_transformers_image_model_can_encode_the_frames():
    frame_config = ViTConfig(image_size=16, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32)
    video = XModalVideoConfig(frame_config=frame_config.to_dict(), max_frames=MAX_FRAMES, hidden_size=32,
                              num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = XModalModel(tiny_config(("text",), video_config=video)).eval()
    assert model.config.video_config.frame_config.model_type == "vit"
    with torch.no_grad():
        output = model(**video_batch(("text", "video")), return_loss=True)
    assert output.logits_video_text.shape == (3, 3) and torch.isfinite(output.loss)


# --- padding frames --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True], ids=["own_frame_encoder", "shared_vision_tower"])
def test_padding_frames_change_nothing(shared):
    model = build(share_vision_tower=shared)
    size = 32 if shared else 16
    clip = torch.randn(2, 3, 3, size, size)
    padded = torch.cat([clip, torch.randn(2, 2, 3, size, size)], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        plain = model.get_video_features(clip)
        longer = model.get_video_features(padded, mask)
        frames = model.get_video_frame_features(clip).frame_embeds
        padded_frames = model.get_video_frame_features(padded, mask).frame_embeds
    torch.testing.assert_close(longer.pooler_output, plain.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(longer.last_hidden_state[:, :3], plain.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_frames[:, :3], frames, atol=1e-5, rtol=1e-5)
    # A clip padded inside a batch of longer clips gives what it gives alone.
    batch = torch.cat([padded[:1], torch.randn(1, 5, 3, size, size)])
    with torch.no_grad():
        together = model.get_video_features(batch, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    torch.testing.assert_close(together.pooler_output[:1], plain.pooler_output[:1], atol=1e-5, rtol=1e-5)


def test_forward_exports_with_torch_export():
    """No branch on the mask's values while tracing: the exported graph encodes padding frames too and masks them
    out, giving what eager mode (which skips them) gives."""
    model = build()
    kwargs = {**video_batch(), "return_loss": True}
    exported = torch.export.export(model, args=(), kwargs=kwargs)
    with torch.no_grad():
        expected, got = tensors(model(**kwargs)), tensors(exported.module()(**kwargs))
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5, msg=key)


def test_an_all_ones_mask_is_no_mask():
    model = build()
    inputs = tiny_video_inputs(padded=False)
    with torch.no_grad():
        masked = model.get_video_features(inputs["pixel_values_videos"], inputs["video_frame_mask"])
        unmasked = model.get_video_features(inputs["pixel_values_videos"])
    assert torch.equal(masked.pooler_output, unmasked.pooler_output)


# --- sharing the vision tower ----------------------------------------------------------------------------------------
def count(model):
    return sum(p.numel() for p in model.parameters())


def test_a_shared_vision_tower_is_one_set_of_weights():
    shared = build(XModalModel, ("text", "image", "video"), share_vision_tower=True)
    # The same model with a frame encoder of its own, of the vision tower's config.
    own_frame_encoder = tiny_video_config(frame_config=shared.config.vision_config)
    unshared = build(XModalModel, ("text", "image"), video_config=own_frame_encoder)
    assert shared.video_model.frame_encoder is None
    assert count(unshared) - count(shared) == count(unshared.video_model.frame_encoder) > 0
    assert not any(".frame_encoder." in name for name in shared.state_dict())

    frames = tiny_video_inputs(size=32)
    with torch.no_grad():
        before = shared(**frames).video_embeds
        other_before = unshared(**frames).video_embeds
        for model in (shared, unshared):
            model.vision_model.patch_embed.weight.mul_(1.5)
        after = shared(**frames).video_embeds
        other_after = unshared(**frames).video_embeds
    assert not torch.allclose(before, after)  # the frames went through the vision tower
    assert torch.equal(other_before, other_after)  # an own frame encoder does not


def test_the_frames_see_a_vision_tower_swapped_in_later():
    """`from_towers_pretrained` replaces the vision tower after the model is built; the video tower must use the new
    one (it keeps no reference of its own)."""
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32))
    video = tiny_video_config(shared=True)
    torch.manual_seed(0)
    model = XModalModel.from_towers_pretrained(vision=vit, video_config=video, share_vision_tower=True,
                                               projection_dim=16).eval()
    assert model.vision_model.model is vit
    frames = tiny_video_inputs(size=32)
    with torch.no_grad():
        before = model(**frames).video_embeds
        vit.embeddings.patch_embeddings.projection.weight.mul_(1.5)
        after = model(**frames).video_embeds
    assert not torch.allclose(before, after)


def test_a_shared_video_tower_called_alone_says_how_to_call_it():
    model = build(share_vision_tower=True)
    inputs = tiny_video_inputs(size=32)
    with pytest.raises(ValueError, match="shares the model's vision tower"):
        model.video_model(inputs["pixel_values_videos"])
    features = shared_frame_features(model.config.video_config, model.vision_model, **inputs)
    with torch.no_grad():
        alone = model.video_model(frame_features=features, video_frame_mask=inputs["video_frame_mask"])
        through_the_model = model.get_video_features(**inputs)
    assert torch.equal(model.video_projection(alone.pooler_output), through_the_model.pooler_output)


@pytest.mark.parametrize("model_class", [XModalModel, XModalForConditionalGeneration])
def test_a_shared_vision_tower_offloads_to_disk(model_class, tmp_path):
    """`accelerate`'s hooks move a call's arguments to the module's device: the video tower gets the frames' vectors,
    never the vision tower itself (which the hook would try to move, offloaded weights and all)."""
    pytest.importorskip("accelerate")
    model = build(model_class, share_vision_tower=True)
    offloaded = offloaded_copy(model, model_class, tmp_path)
    assert {"cpu", "disk"} <= set(offloaded.hf_device_map.values())
    inputs = {**video_batch(shared=True), **head_kwargs(model_class)}
    with torch.no_grad():
        expected, got = tensors(model(**inputs)), tensors(offloaded(**inputs))
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize("overrides, message", [
    ({"share_vision_tower": True, "vision_config": None}, "needs a vision tower to share, but vision_config is None"),
    ({"share_vision_tower": True, "video_config": None}, "only a video tower shares the vision tower"),
    ({"share_vision_tower": True, "video_config": tiny_video_config()}, "frame_config must be None"),
    ({"video_config": tiny_video_config(shared=True)}, "video_config.frame_config is None"),
    ({"video_config": {"model_type": "xmodal_vision_model"}}, "must be an XModalVideoConfig"),
    ({"share_vision_tower": "yes"}, "must be true or false"),
])
def test_the_config_refuses_what_it_cannot_build(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(FOUR, **overrides)


@pytest.mark.parametrize("field, value", [("max_frames", 0), ("pooling", "cls"), ("num_attention_heads", 5),
                                          ("hidden_dropout", 1.5)])
def test_the_video_config_checks_its_fields(field, value):
    with pytest.raises(ValueError, match=field):
        XModalVideoConfig(**{"frame_config": XModalVisionConfig(), "hidden_size": 32, "num_attention_heads": 2,
                             field: value})


def test_configs_round_trip_and_the_default_model_has_no_video(tmp_path):
    assert "video" not in XModalConfig().modalities
    config = tiny_config(FOUR)
    again = XModalConfig.from_dict(json.loads(config.to_json_string()))
    assert again.video_config.frame_config.to_dict() == config.video_config.frame_config.to_dict()
    assert again.video_config.max_frames == MAX_FRAMES and again.modalities == list(FOUR)
    tiny_video_config().save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is XModalVideoConfig and loaded.frame_config.encoder_type == "cnn"


def test_the_parts_table_knows_the_video_tower():
    assert "video" in PARTS and "video" not in TOWER_PARTS  # no single pretrained model fills a video tower
    assert parameter_part("video_model.frame_encoder.proj.weight") == "video"
    assert parameter_part("xmodal.video_projection.weight") == "projections"


# --- saving and loading -----------------------------------------------------------------------------------------------
HEADS = [XModalModel, XModalForMatching, XModalForSequenceClassification, XModalForConditionalGeneration,
         XModalForPreTraining]


def head_kwargs(model_class, batch_size=3):
    if model_class in (XModalForConditionalGeneration, XModalForPreTraining):
        return {"labels": caption_labels(batch_size)}
    if model_class is XModalForSequenceClassification:
        return {"labels": torch.arange(batch_size) % 4}
    return {"return_loss": True}


def tensors(output):
    return {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("shared", [False, True], ids=["own_frame_encoder", "shared_vision_tower"])
@pytest.mark.parametrize("model_class", HEADS)
def test_save_and_load_bit_for_bit(model_class, shared, tmp_path):
    model = build(model_class, share_vision_tower=shared)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "video_tower.py").is_file()
    reloaded = model_class.from_pretrained(tmp_path).eval()
    assert reloaded.config.share_vision_tower is shared
    for (name, p), (other, q) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert name == other and torch.equal(p, q), name
    inputs = {**video_batch(shared=shared), **head_kwargs(model_class)}
    with torch.no_grad():
        torch.manual_seed(1234)
        expected = tensors(model(**inputs))
        torch.manual_seed(1234)
        got = tensors(reloaded(**inputs))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


REMOTE = textwrap.dedent(
    """
    import importlib.util, json, sys
    import torch
    import transformers

    assert importlib.util.find_spec("xmodal") is None, "xmodal is importable in the fresh environment"
    for auto_name, folder in json.loads(sys.argv[1]).items():
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            output = model(**torch.load(f"{folder}/inputs.pt"))
        torch.save({k: v for k, v in output.items() if isinstance(v, torch.Tensor)}, f"{folder}/remote.pt")
        print(auto_name, type(model).__name__, type(model).__module__, type(model.config.video_config).__module__)
    """
)


@pytest.mark.slow
def test_a_video_checkpoint_loads_with_remote_code_where_xmodal_is_not_installed(tmp_path):
    jobs, expected = {}, {}
    for auto_name, model_class, shared in (("AutoModel", XModalModel, False),
                                           ("AutoModelForSeq2SeqLM", XModalForConditionalGeneration, True)):
        folder = tmp_path / auto_name
        model = build(model_class, share_vision_tower=shared)
        model.save_pretrained(folder)
        inputs = {**video_batch(shared=shared), **head_kwargs(model_class)}
        torch.save(inputs, folder / "inputs.pt")
        with torch.no_grad():
            expected[auto_name] = tensors(model(**inputs))
        jobs[auto_name] = str(folder)
    python = python_without_xmodal(tmp_path / "venv")
    (tmp_path / "remote.py").write_text(REMOTE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([python, str(tmp_path / "remote.py"), json.dumps(jobs)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for auto_name in jobs:
        assert f"{auto_name} " in result.stdout and "transformers_modules." in result.stdout, result.stdout
        remote = torch.load(tmp_path / auto_name / "remote.pt")
        assert remote.keys() == expected[auto_name].keys()
        for key, value in expected[auto_name].items():
            assert torch.equal(remote[key], value), (auto_name, key)


def test_auto_classes_resolve_a_video_checkpoint(tmp_path):
    build(XModalForConditionalGeneration, share_vision_tower=True).save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is XModalModel
    assert type(AutoModelForSeq2SeqLM.from_pretrained(tmp_path)) is XModalForConditionalGeneration


# --- bad inputs -------------------------------------------------------------------------------------------------------
def bad_call(model, **changes):
    inputs = {**tiny_video_inputs(), **changes}
    model(**{k: v for k, v in inputs.items() if v is not None})


@pytest.mark.parametrize("changes, message", [
    ({"pixel_values_videos": torch.randn(3, 3, 16, 16)},
     r"`pixel_values_videos` should have shape \(batch_size, num_frames, 3, 16, 16\), but got \(3, 3, 16, 16\)"),
    ({"pixel_values_videos": torch.randn(3, 4, 3, 32, 32)}, r"\(batch_size, num_frames, 3, 16, 16\)"),
    ({"video_frame_mask": torch.ones(3, 5, dtype=torch.long)},
     r"`video_frame_mask` should have shape \(3, 4\), but got \(3, 5\)"),
    ({"video_timestamps": torch.zeros(3)}, r"`video_timestamps` should have shape \(3, 4\)"),
    ({"pixel_values_videos": torch.randn(3, MAX_FRAMES + 1, 3, 16, 16), "video_frame_mask": None,
      "video_timestamps": None}, rf"{MAX_FRAMES + 1} frames but the video tower takes at most max_frames={MAX_FRAMES}"),
    ({"video_frame_mask": torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])}, "a clip with no real frame"),
    ({"pixel_values_videos": torch.full((3, 4, 3, 16, 16), float("nan"))}, "`pixel_values_videos` contains NaN"),
    ({"pixel_values_videos": torch.randn(0, 4, 3, 16, 16), "video_frame_mask": None, "video_timestamps": None},
     "`pixel_values_videos` has an empty batch"),
])
def test_bad_video_inputs_fail_with_a_clear_message(changes, message):
    with pytest.raises(ValueError, match=message):
        bad_call(build(), **changes)


def test_other_video_mistakes():
    model = build()
    with pytest.raises(TypeError, match="`pixel_values_videos` is a numpy.ndarray"):
        bad_call(model, pixel_values_videos=torch.randn(3, 4, 3, 16, 16).numpy())
    with pytest.raises(ValueError, match=r"same batch size; got \{'input_ids': 2, 'pixel_values_videos': 3\}"):
        model(**tiny_inputs(("text",), batch_size=2), **tiny_video_inputs(), return_loss=True)
    without_video = build(modalities=("text", "image"))
    with pytest.raises(ValueError, match="no video tower"):
        without_video(**tiny_video_inputs())
    with pytest.raises(ValueError, match="`pixel_values_videos` \\(video\\)"):
        model(video_frame_mask=torch.ones(3, 4))


# --- gradients --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True], ids=["own_frame_encoder", "shared_vision_tower"])
def test_the_contrastive_loss_trains_the_video_tower(shared):
    model = build(XModalModel, ("text", "image", "video"), share_vision_tower=shared).train()
    inputs = video_batch(("text", "video"), shared=shared)
    model(**inputs, return_loss=True).loss.backward()
    towers = [model.video_model] + ([model.vision_model] if shared else [])
    for tower in towers:
        for name, parameter in tower.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().max() > 0, name
    # Positions past the longest clip are the only rows without a gradient.
    used = model.video_model.embed_positions.weight.grad.abs().sum(dim=1) > 0
    assert used.tolist() == [True] * 4 + [False] * (MAX_FRAMES - 4)


def test_padding_frames_get_no_gradient():
    model = build(XModalModel, ("text", "video"))
    inputs = video_batch(("text", "video"))
    frames = inputs["pixel_values_videos"].requires_grad_()
    model(**inputs, return_loss=True).loss.backward()
    assert isinstance(model.video_model, XModalVideoTransformer)
    assert frames.grad[1, 2:].abs().max() == 0 and frames.grad[1, :2].abs().max() > 0


def test_frame_differences_see_what_moved_and_ignore_padding():
    config = tiny_config(FOUR, share_vision_tower=True)
    config.video_config.frame_differences = True
    torch.manual_seed(0)
    model = XModalModel(config).eval()
    still = torch.randn(1, 1, 3, 32, 32).repeat(1, 4, 1, 1, 1)
    moving = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        still_before, moving_before = (model.get_video_features(v).last_hidden_state for v in (still, moving))
        model.video_model.difference_projection.weight.mul_(3.0)
        still_after, moving_after = (model.get_video_features(v).last_hidden_state for v in (still, moving))
        padded = model.get_video_features(torch.cat([moving, torch.randn(1, 2, 3, 32, 32)], dim=1),
                                          torch.tensor([[1, 1, 1, 1, 0, 0]])).last_hidden_state
    torch.testing.assert_close(still_after, still_before)  # nothing moved: no change to add
    assert not torch.allclose(moving_after, moving_before, atol=1e-4)
    torch.testing.assert_close(padded[:, :4], moving_after, atol=1e-5, rtol=1e-5)
