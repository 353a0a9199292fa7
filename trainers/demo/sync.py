"""The demo's Sync tab: where in a video a picture or a sentence belongs, and how far the video's sound is off.

A video checkpoint (`task: video`, `XModalForVideoPreTraining`) answers both with the frame embeddings it was trained
on: the query's similarity to every frame over time, its best moment (the best frame for a picture; the span
`predict_segments` reads off for a sentence), and for a video with sound, the offset whose frames and sound agree best
(`estimate_offsets`, within +-`video_sync_max_offset` frames). No Gradio here.
"""

import threading
from pathlib import Path

import torch
from PIL import Image

from ..loading import load_head
from ..video_metrics import estimate_offsets, offset_scores, predict_segments
from .inputs import DemoInputError, load_image

MAX_VIDEO_BYTES = 50_000_000


class VideoSync:
    """Loads a video checkpoint once; `locate` answers one request (thread-safe)."""

    def __init__(self, model_dir, processor=None):
        from xmodal import XModalForVideoPreTraining
        from xmodal.processing import XModalProcessor

        self.model_dir = Path(model_dir)
        self.model, missing = load_head(XModalForVideoPreTraining, self.model_dir)
        if self.model is None:
            raise ValueError(f"{self.model_dir} is not a video checkpoint (task: video): {missing[:3]}")
        self.processor = processor or XModalProcessor.from_pretrained(self.model_dir)
        self._lock = threading.Lock()

    @property
    def fps(self):
        return self.processor.video_processor.fps

    @property
    def seconds(self):
        """The longest stretch of a video the model reads (its first `max_frames` frames)."""
        return self.model.config.video_config.max_frames / self.fps

    def _read(self, video):
        from xmodal.processing.video_processing_xmodal import decode_video

        if video is None:
            raise DemoInputError("Upload a video first (mp4, webm, mov...).")
        path = Path(video)
        if not path.is_file():
            raise DemoInputError(f"The video {path.name} could not be found; upload it again.")
        if path.stat().st_size > MAX_VIDEO_BYTES:
            raise DemoInputError(f"The video is {path.stat().st_size / 1e6:.0f} MB; the demo reads videos up to "
                                 f"{MAX_VIDEO_BYTES / 1e6:.0f} MB.")
        processor = self.processor.video_processor
        try:
            inputs = processor(videos=[str(path)], max_frames=processor.max_frames, return_tensors="pt")
            frames, _ = decode_video(str(path), fps=processor.fps, max_frames=processor.max_frames)
        except ValueError as error:  # the video processor says what is wrong with the file
            raise DemoInputError(f"{path.name}: {error}") from error
        return inputs, frames

    def _query(self, image, text):
        if (image is None) == (not (text or "").strip()):
            raise DemoInputError("Give either a picture or a sentence to look for (one of the two).")
        if image is not None:
            pixels = self.processor(images=[load_image(image)], return_tensors="pt")["pixel_values"]
            return "picture", self.model.xmodal.get_embeddings(pixel_values=pixels)["image"]
        tokens = self.processor(text=[text.strip()], return_tensors="pt", padding=True, truncation=True)
        return "sentence", self.model.xmodal.get_embeddings(input_ids=tokens["input_ids"],
                                                            attention_mask=tokens["attention_mask"])["text"]

    @torch.inference_mode()
    def locate(self, video, image=None, text=None):
        """{"times", "scores": the query's similarity to each frame; "best_time" (s), "best_frame" (PIL);
        "segment" [start, end] for a sentence; "offset_frames", "offset_seconds", "offset_scores" for a video with
        sound (positive: the sound is late), else None; "kind": picture | sentence}."""
        inputs, pictures = self._read(video)
        with self._lock:
            kind, query = self._query(image, text)
            mask, times = inputs["video_frame_mask"], inputs["video_timestamps"]
            frames = self.model.get_frame_embeddings(inputs["pixel_values_videos"], mask, times)
            scores = torch.einsum("d,btd->bt", query[0], frames["moment" if kind == "picture" else "grounding"])
            result = {"kind": kind, "times": times[0].tolist(), "scores": scores[0].tolist(), "segment": None}
            best = int(scores[0].masked_fill(~mask[0].bool(), float("-inf")).argmax())
            if kind == "sentence":
                result["segment"] = predict_segments(scores, times, mask)[0].tolist()
            result["best_time"], result["best_frame"] = float(times[0, best]), Image.fromarray(pictures[best])
            result.update(self._offset(video, frames["sync"], mask))
        return result

    def _offset(self, video, frame_embeds, mask):
        """The sound's offset against the frames, when the video has a sound track."""
        from xmodal.processing.video_processing_xmodal import load_video_audio

        try:
            samples, rate = load_video_audio(str(video))
        except ValueError:  # no sound track: nothing to synchronise
            return {"offset_frames": None, "offset_seconds": None, "offset_scores": None}
        features = self.processor.feature_extractor([samples], sampling_rate=rate, return_tensors="pt")
        audio = self.model.xmodal.run_tower("audio", {"input_features": features["input_features"],
                                                      "feature_attention_mask": features["feature_attention_mask"]})
        sound = self.model.sound_frames(audio, mask)
        limit = self.model.config.video_sync_max_offset
        offset = int(estimate_offsets(sound, frame_embeds, mask, mask, limit)[0])
        scores = offset_scores(sound, frame_embeds, mask, mask, limit)[0]
        return {"offset_frames": offset, "offset_seconds": offset / self.fps,
                "offset_scores": dict(zip(range(-limit, limit + 1), scores.tolist()))}
