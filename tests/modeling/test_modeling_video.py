"""XModalForVideoPreTraining: each loss part from its inputs, the frame-level scores, the sound pooled to the frames,
offsets scored on hand-made embeddings, and save/load bit for bit."""

import pytest
import torch

from xmodal import XModalForVideoPreTraining
from xmodal.modeling_video import VIDEO_LOSS_PARTS, offset_similarity, pool_to_frames

from .tiny import MAX_FRAMES, VOCAB, tiny_config


def video_head(**overrides):
    torch.manual_seed(0)
    config = tiny_config(("text", "image", "audio", "video"), decoder=False, share_vision_tower=True,
                         video_sync_max_offset=2, **overrides)
    return XModalForVideoPreTraining(config).eval()


def video_batch(batch=3, frames=MAX_FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, frames, dtype=torch.long)
    mask[1, frames - 2:] = 0  # the second clip is two frames shorter
    events = torch.randint(3, VOCAB, (batch, 2, 5), generator=g)
    event_mask = torch.ones(batch, 2, 5, dtype=torch.long)
    event_mask[0, 1] = 0  # the first clip has one event
    return {
        "pixel_values_videos": torch.randn(batch, frames, 3, 32, 32, generator=g), "video_frame_mask": mask,
        "input_ids": torch.randint(3, VOCAB, (batch, 7), generator=g),
        "attention_mask": torch.ones(batch, 7, dtype=torch.long),
        "pixel_values": torch.randn(batch, 3, 32, 32, generator=g),
        "moment_labels": torch.nn.functional.one_hot(torch.tensor([0, 2, 5]), frames)[:batch] * mask,
        "event_input_ids": events, "event_attention_mask": event_mask,
        "event_labels": torch.randint(0, 2, (batch, 2, frames), generator=g),
        "input_features": torch.randn(batch, 16, 40, generator=g),
        "feature_attention_mask": torch.ones(batch, 40, dtype=torch.long), "audio_offsets": torch.tensor([0, -2, 1]),
    }


def test_every_part_and_score_from_a_full_batch():
    model, batch = video_head(), video_batch()
    out = model(**batch)
    parts = {name: getattr(out, f"{name}_loss") for name in VIDEO_LOSS_PARTS}
    assert all(torch.isfinite(value) for value in parts.values())
    torch.testing.assert_close(out.loss, sum(parts.values()))  # default weights are 1
    assert out.logits_text_video.shape == (3, 3)
    assert out.moment_logits.shape == (3, MAX_FRAMES) and torch.isinf(out.moment_logits[1, -2:]).all()
    assert out.grounding_logits.shape == (3, 2, MAX_FRAMES)
    assert out.sync_logits.shape == (3, 5)  # offsets -2..2
    frames = model.get_frame_embeddings(batch["pixel_values_videos"], batch["video_frame_mask"])
    clip = frames.pop("clip")
    torch.testing.assert_close(clip, out.video_embeds)  # the clip as the forward embeds it
    assert set(frames) == {"moment", "grounding", "sync"}
    assert all(f.shape == (3, MAX_FRAMES, 16) and (f[1, -2:] == 0).all() for f in frames.values())
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []  # every part trains every weight


@pytest.mark.parametrize("left_out, missing", [
    (("pixel_values", "moment_labels"), "moment"),
    (("event_input_ids", "event_attention_mask", "event_labels"), "grounding"),
    (("input_features", "feature_attention_mask", "audio_offsets"), "sync"),
    (("input_ids", "attention_mask"), "contrastive"),
])
def test_a_part_without_its_inputs_is_left_out(left_out, missing):
    batch = {k: v for k, v in video_batch().items() if k not in left_out}
    out = video_head()(**batch)
    assert getattr(out, f"{missing}_loss") is None
    present = [getattr(out, f"{name}_loss") for name in VIDEO_LOSS_PARTS if name != missing]
    torch.testing.assert_close(out.loss, sum(present))


def test_loss_weights_scale_their_part():
    batch = video_batch()
    plain = video_head()(**batch)
    weighted = video_head(loss_weights={"sync": 3.0, "moment": 0.0})(**batch)
    expected = plain.contrastive_loss + plain.grounding_loss + 3 * plain.sync_loss
    torch.testing.assert_close(weighted.loss, expected)


def test_offsets_outside_the_range_are_refused_by_name():
    batch = {**video_batch(), "audio_offsets": torch.tensor([0, 3, 0])}
    with pytest.raises(ValueError, match=r"audio_offsets must lie in \+-video_sync_max_offset=2"):
        video_head()(**batch)


def test_pool_to_frames_averages_even_bins_of_the_real_sound():
    states = torch.arange(12, dtype=torch.float32).reshape(1, 12, 1).repeat(2, 1, 1)
    state_mask = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    pooled = pool_to_frames(states, state_mask, frame_mask)[..., 0]
    torch.testing.assert_close(pooled[0], torch.tensor([1.0, 4.0, 7.0, 10.0]))  # bins of 3
    torch.testing.assert_close(pooled[1], torch.tensor([1.5, 5.5, 0.0, 0.0]))  # 8 real states in 2 bins of 4


def test_offset_similarity_peaks_at_the_true_shift():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 10, 8, generator=g)
    audio = torch.zeros_like(video)
    audio[0, 2:] = video[0, :-2]  # the sound is two steps late: step t + 2 goes with frame t
    audio[1, :-1] = video[1, 1:]  # one step early
    mask = torch.ones(2, 10)
    scores = offset_similarity(audio, video, mask, mask, max_offset=3)
    assert scores.argmax(dim=1).tolist() == [2 + 3, -1 + 3]
    torch.testing.assert_close(scores[0, 5], torch.tensor(1.0))


def test_save_and_load_bit_for_bit(tmp_path):
    model, batch = video_head(), video_batch()
    model.save_pretrained(tmp_path)
    loaded = XModalForVideoPreTraining.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(model(**batch).loss, loaded(**batch).loss)
    assert (tmp_path / "modeling_video.py").is_file()  # the checkpoint carries the head's code


def test_needs_a_video_tower():
    with pytest.raises(ValueError, match="needs a video tower"):
        XModalForVideoPreTraining(tiny_config(decoder=False))


def test_moment_frames_read_what_the_frame_looks_like():
    model, batch = video_head(), video_batch()
    video = batch["pixel_values_videos"].clone()
    video[0, 3] = video[0, 0]  # the same picture at two times
    with torch.no_grad():
        model.video_heads.projections["moment"].weight.zero_()  # the temporal states' share, left out
        frames = model.get_frame_embeddings(video, batch["video_frame_mask"])
        output = model.xmodal.run_tower("video", {"pixel_values_videos": video,
                                                  "video_frame_mask": batch["video_frame_mask"]})
    assert output.frame_features.shape == (3, MAX_FRAMES, model.xmodal.video_model.frame_projection.in_features)
    torch.testing.assert_close(frames["moment"][0, 3], frames["moment"][0, 0])
    assert not torch.allclose(frames["grounding"][0, 3], frames["grounding"][0, 0])  # time is seen there
