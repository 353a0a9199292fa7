"""Video metric functions on hand-made inputs with known answers."""

import pytest
import torch

from xmodal.trainers.video_metrics import (
    estimate_offsets,
    grounding_metrics,
    image_moment_metrics,
    offset_scores,
    predict_image_moments,
    predict_segments,
    shift_audio,
    sync_metrics,
    temporal_iou,
    video_retrieval_metrics,
)


def one_hot_scores(best_frames, frames):
    scores = torch.zeros(len(best_frames), frames)
    scores[torch.arange(len(best_frames)), torch.tensor(best_frames)] = 1.0
    return scores


def grid(batch, frames, fps=1.0):
    """Timestamps at `fps` and an all-real frame mask."""
    timestamps = torch.arange(frames).float().div(fps).expand(batch, frames).clone()
    return timestamps, torch.ones(batch, frames, dtype=torch.long)


# ---- retrieval -----------------------------------------------------------------------------------------------------

def test_video_retrieval_known_ranks_in_both_directions():
    # Every text finds its video first; video 1 is nearer text 0 (cos 0.91) than text 1 (0.41): second, not first.
    texts = torch.eye(3)
    videos = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.4, 0.0], [0.0, 0.0, 2.0]])
    metrics = video_retrieval_metrics(texts, videos, ks=(1, 2))
    assert metrics == pytest.approx({"text_to_video_R@1": 1.0, "text_to_video_R@2": 1.0,
                                     "video_to_text_R@1": 2 / 3, "video_to_text_R@2": 1.0})
    assert list(metrics) == ["text_to_video_R@1", "text_to_video_R@2", "video_to_text_R@1", "video_to_text_R@2"]


def test_video_retrieval_with_several_captions_per_video():
    # Texts 0 and 1 describe video 0, text 2 video 1; text 1 lies nearer video 1 and misses.
    texts = torch.tensor([[1.0, 0.0], [0.2, 1.0], [0.0, 1.0]])
    videos = torch.eye(2)
    relevant = torch.tensor([[True, False], [True, False], [False, True]])
    metrics = video_retrieval_metrics(texts, videos, ks=(1,), relevant=relevant)
    assert metrics["text_to_video_R@1"] == pytest.approx(2 / 3)
    assert metrics["video_to_text_R@1"] == 1.0


def test_video_retrieval_rejects_bad_shapes():
    with pytest.raises(ValueError, match="relevant must have shape"):
        video_retrieval_metrics(torch.eye(3), torch.eye(3), relevant=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="without relevant"):
        video_retrieval_metrics(torch.eye(3), torch.eye(2, 3))
    with pytest.raises(ValueError, match="same width"):
        video_retrieval_metrics(torch.eye(3), torch.eye(3, 4))
    with pytest.raises(ValueError, match="text_embeds must be a non-empty"):
        video_retrieval_metrics(torch.zeros(0, 3), torch.eye(3))


# ---- image → moment ------------------------------------------------------------------------------------------------

def test_image_moment_one_hot_frames():
    timestamps, mask = grid(3, 8, fps=4.0)  # frames every 0.25 s
    scores = one_hot_scores([1, 4, 7], 8)  # predicted 0.25, 1.0, 1.75 s
    metrics = image_moment_metrics(scores, timestamps, mask, true_times=[0.25, 1.2, 1.0])
    assert metrics["image_to_moment_accuracy"] == pytest.approx(2 / 3)  # 0.2 s off is within 0.25 s; 0.75 s is not
    assert metrics["image_to_moment_mean_abs_error_s"] == pytest.approx((0 + 0.2 + 0.75) / 3)
    exactly_on_tolerance = image_moment_metrics(scores[:1], timestamps[:1], mask[:1], true_times=[0.5])
    assert exactly_on_tolerance["image_to_moment_accuracy"] == 1.0


def test_image_moment_never_picks_padding():
    timestamps, mask = grid(1, 6)
    mask[0, 4:] = 0
    scores = torch.tensor([[0.1, 0.3, 0.2, 0.0, 9.0, 9.0]])  # the highest scores sit on padding frames
    assert predict_image_moments(scores, timestamps, mask).tolist() == [1.0]
    # The best real frame's right neighbour is padding: parabolic keeps its time.
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.5, 9.0, 9.0]])
    assert predict_image_moments(scores, timestamps, mask, interpolation="parabolic").tolist() == [3.0]


def test_parabolic_refinement_helps_between_sparse_frames():
    # Frames each second; the picture appears at 1.4 s and the similarity falls off smoothly around it.
    timestamps, mask = grid(1, 4)
    scores = -(timestamps - 1.4) ** 2
    nearest = image_moment_metrics(scores, timestamps, mask, [1.4])
    parabolic = image_moment_metrics(scores, timestamps, mask, [1.4], interpolation="parabolic")
    assert nearest["image_to_moment_accuracy"] == 0.0
    assert nearest["image_to_moment_mean_abs_error_s"] == pytest.approx(0.4)
    assert parabolic["image_to_moment_accuracy"] == 1.0
    assert parabolic["image_to_moment_mean_abs_error_s"] == pytest.approx(0.0, abs=1e-6)
    # A one-hot peak has symmetric neighbours: no move.
    assert predict_image_moments(one_hot_scores([2], 4), timestamps, mask, "parabolic").tolist() == [2.0]


def test_image_moment_edge_cases():
    # One frame; all-equal scores pick the first real frame, and parabolic does not move on a flat top.
    assert predict_image_moments([[0.7]], [[2.5]], [[1]], "parabolic").tolist() == [2.5]
    timestamps, mask = grid(1, 5)
    assert predict_image_moments(torch.full((1, 5), 0.3), timestamps, mask, "parabolic").tolist() == [0.0]
    with pytest.raises(ValueError, match="empty batch"):
        image_moment_metrics(torch.zeros(0, 5), torch.zeros(0, 5), torch.zeros(0, 5), [])
    with pytest.raises(ValueError, match="timestamps must have the shape of scores"):
        image_moment_metrics(torch.zeros(2, 5), torch.zeros(2, 4), torch.ones(2, 5), [0.0, 0.0])
    with pytest.raises(ValueError, match="frame_mask must have the shape"):
        image_moment_metrics(torch.zeros(2, 5), torch.zeros(2, 5), torch.ones(2, 4), [0.0, 0.0])
    with pytest.raises(ValueError, match="true_times must have shape"):
        image_moment_metrics(torch.zeros(2, 5), torch.zeros(2, 5), torch.ones(2, 5), [0.0])
    with pytest.raises(ValueError, match=r"frame_mask: clip\(s\) \[1\] have no real frame"):
        image_moment_metrics(torch.zeros(2, 5), torch.zeros(2, 5), torch.tensor([[1] * 5, [0] * 5]), [0.0, 0.0])
    with pytest.raises(ValueError, match="interpolation must be one of"):
        predict_image_moments([[0.7]], [[2.5]], [[1]], "cubic")


# ---- sentence → moment ---------------------------------------------------------------------------------------------

def test_temporal_iou_known_values():
    assert float(temporal_iou([1.0, 3.0], [1.0, 3.0])) == 1.0
    assert float(temporal_iou([0.0, 2.0], [1.0, 3.0])) == pytest.approx(1 / 3)  # half of each overlaps
    assert float(temporal_iou([0.0, 1.0], [2.0, 3.0])) == 0.0
    assert float(temporal_iou([0.0, 1.0], [1.0, 2.0])) == 0.0  # touching
    assert float(temporal_iou([0.0, 4.0], [1.0, 2.0])) == pytest.approx(0.25)  # contained
    assert float(temporal_iou([1.0, 1.0], [1.0, 1.0])) == 1.0 and float(temporal_iou([1.0, 1.0], [2.0, 2.0])) == 0.0
    batch = temporal_iou(torch.tensor([[0.0, 2.0], [0.0, 1.0]]), torch.tensor([[1.0, 3.0], [0.0, 1.0]]))
    assert batch.tolist() == pytest.approx([1 / 3, 1.0])
    with pytest.raises(ValueError, match="segment_b: a segment ends before it starts"):
        temporal_iou([0.0, 1.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="segment_a must be"):
        temporal_iou([0.0, 1.0, 2.0], [0.0, 1.0])


def test_predicted_segment_is_the_run_above_half_maximum_extended_by_half_a_frame():
    timestamps, mask = grid(1, 8)
    scores = torch.tensor([[0.0, 0.1, 0.9, 1.0, 0.8, 0.2, 0.0, 0.0]])
    assert predict_segments(scores, timestamps, mask).tolist() == [[1.5, 4.5]]
    # A short dip below the level is bridged when the frames around it outweigh it ...
    scores = torch.tensor([[0.0, 1.0, 1.0, 0.4, 1.0, 1.0, 0.0, 0.0]])
    assert predict_segments(scores, timestamps, mask).tolist() == [[0.5, 5.5]]
    # ... and a lower threshold takes in more frames; a start before 0 s is clipped.
    scores = torch.tensor([[0.3, 0.4, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert predict_segments(scores, timestamps, mask, threshold=0.2).tolist() == [[0.0, 2.5]]


def test_grounding_metrics_known_ious():
    timestamps, mask = grid(3, 8)
    scores = torch.zeros(3, 8)
    scores[:, 2:5] = 1.0  # every clip predicts [1.5, 4.5]
    true = [[1.5, 4.5], [3.0, 6.0], [6.0, 7.5]]  # IoU 1, 1.5 / 4.5 = 1/3, 0
    metrics = grounding_metrics(scores, timestamps, mask, true)
    assert metrics == pytest.approx({"grounding_mean_iou": 4 / 9, "grounding_R@1_IoU0.3": 2 / 3,
                                     "grounding_R@1_IoU0.5": 1 / 3, "grounding_R@1_IoU0.7": 1 / 3})


def test_grounding_never_includes_padding_and_handles_flat_and_one_frame_clips():
    timestamps, mask = grid(1, 8)
    mask[0, 5:] = 0
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 5.0]])  # padding scores highest
    assert predict_segments(scores, timestamps, mask).tolist() == [[2.5, 4.5]]
    # All-equal scores say nothing: the whole (real) clip.
    assert predict_segments(torch.full((1, 8), 0.2), timestamps, mask).tolist() == [[0.0, 4.5]]
    # A one-frame clip has no spacing to read: an instant, or the given frame interval around it.
    assert predict_segments([[0.4]], [[2.0]], [[1]]).tolist() == [[2.0, 2.0]]
    assert predict_segments([[0.4]], [[2.0]], [[1]], frame_interval=0.5).tolist() == [[1.75, 2.25]]
    assert grounding_metrics([[0.4]], [[2.0]], [[1]], [[1.75, 2.25]], frame_interval=0.5)["grounding_mean_iou"] == 1.0


def test_grounding_rejects_bad_arguments():
    timestamps, mask = grid(2, 4)
    with pytest.raises(ValueError, match="true_segments must have shape"):
        grounding_metrics(torch.zeros(2, 4), timestamps, mask, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="threshold must be a fraction"):
        predict_segments(torch.zeros(2, 4), timestamps, mask, threshold=1.5)
    with pytest.raises(ValueError, match="empty batch"):
        grounding_metrics(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="scores must be"):
        predict_segments(torch.zeros(4), timestamps, mask)


# ---- audio–video synchronisation -----------------------------------------------------------------------------------

def test_shift_audio_sign_convention():
    audio = torch.arange(1.0, 6.0).reshape(1, 5, 1)
    late, late_mask = shift_audio(audio, 2)  # audio late: what the video shows at t is heard at t + 2
    assert late.flatten().tolist() == [0, 0, 1, 2, 3] and late_mask.tolist() == [[False, False, True, True, True]]
    early, early_mask = shift_audio(audio, -1)
    assert early.flatten().tolist() == [2, 3, 4, 5, 0] and early_mask.tolist() == [[True, True, True, True, False]]
    both, _ = shift_audio(torch.cat([audio, audio]), torch.tensor([1, 0]), audio_mask=torch.ones(2, 5))
    assert both[:, :, 0].tolist() == [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="offset must be one int or one per clip"):
        shift_audio(audio, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="audio_mask must have shape"):
        shift_audio(audio, 1, audio_mask=torch.ones(1, 4))


def test_late_audio_gives_a_positive_offset():
    # Built by hand, not with shift_audio: audio step t + 2 carries video frame t.
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(1, 20, 8, generator=generator)
    audio = torch.randn(1, 20, 8, generator=generator)
    audio[:, 2:] = video[:, :-2]
    assert estimate_offsets(audio, video, max_offset=4).tolist() == [2]
    assert estimate_offsets(video, audio, max_offset=4).tolist() == [-2]  # the roles swapped: audio early


def test_estimated_offsets_of_shifted_noisy_audio():
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(5, 32, 16, generator=generator)
    true = torch.tensor([3, 0, -4, 8, -8])
    audio, audio_mask = shift_audio(video, true)
    audio = audio + 0.05 * torch.randn(audio.shape, generator=generator)
    predicted = estimate_offsets(audio, video, audio_mask, torch.ones(5, 32), max_offset=8)
    assert predicted.tolist() == true.tolist()
    scores = offset_scores(audio, video, audio_mask, None, max_offset=8)
    assert scores.shape == (5, 17) and scores[0, 8 + 3] > 0.99 and scores[0, 8].abs() < 0.5


def test_offsets_ignore_masked_steps():
    # The real audio is the video 3 steps late; the padded audio steps hold a decoy that matches at offset 0.
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(1, 24, 16, generator=generator)
    audio = torch.randn(1, 24, 16, generator=generator)
    audio[:, 3:10] = video[:, :7]
    audio[:, 10:] = video[:, 10:]
    audio_mask = torch.zeros(1, 24)
    audio_mask[:, :10] = 1
    assert estimate_offsets(audio, video, None, None, max_offset=4).tolist() == [0]  # fooled without the mask
    assert estimate_offsets(audio, video, audio_mask, None, max_offset=4).tolist() == [3]


def test_offset_edge_cases():
    # All-equal (here identical, constant) embeddings: every offset ties and the clip is called in sync.
    flat = torch.ones(2, 10, 4)
    assert estimate_offsets(flat, flat, max_offset=3).tolist() == [0, 0]
    # A one-step clip overlaps itself only at offset 0.
    one = torch.randn(1, 1, 4)
    inf = float("inf")
    assert offset_scores(one, one, max_offset=2)[0].tolist() == pytest.approx([-inf, -inf, 1.0, -inf, -inf])
    assert estimate_offsets(one, -one, max_offset=2).tolist() == [0]
    with pytest.raises(ValueError, match="audio must have the shape of video"):
        estimate_offsets(torch.zeros(2, 10, 4), torch.zeros(2, 9, 4))
    with pytest.raises(ValueError, match="video_mask must have shape"):
        estimate_offsets(flat, flat, None, torch.ones(2, 9))
    with pytest.raises(ValueError, match="video must be a non-empty"):
        estimate_offsets(torch.zeros(0, 10, 4), torch.zeros(0, 10, 4))
    with pytest.raises(ValueError, match="max_offset must be an int"):
        estimate_offsets(flat, flat, max_offset=-1)


def test_sync_metrics_known_values():
    metrics = sync_metrics(torch.tensor([3, 1, 0, -5, 2]), torch.tensor([3, 0, 0, 0, 5]))
    assert metrics == pytest.approx({"av_offset_accuracy": 3 / 5, "av_in_sync_accuracy": 2 / 3,
                                     "av_offset_mean_abs_error_frames": (0 + 1 + 0 + 5 + 3) / 5})
    assert "av_in_sync_accuracy" not in sync_metrics([2], [2])  # no in-sync clip to score
    assert sync_metrics([2], [3], tolerance=0)["av_offset_accuracy"] == 0.0
    with pytest.raises(ValueError, match="true_offsets must have shape"):
        sync_metrics([1, 2], [1])
    with pytest.raises(ValueError, match="predicted must be a non-empty"):
        sync_metrics([], [])
