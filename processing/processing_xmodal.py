"""One processor for every XModal input: text, images, audio, videos and decoder targets, in any subset.

Outputs carry the names the model reads: `input_ids`, `attention_mask`, `pixel_values`,
`input_features`, `feature_attention_mask`, `pixel_values_videos`, `video_frame_mask`,
`video_timestamps` and `labels`.
"""

import os

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MODALITY_TO_AUTOPROCESSOR_MAPPING, ProcessorMixin
from transformers.utils import VIDEO_PROCESSOR_NAME
from transformers.video_processing_utils import VideoProcessorMixin

from .feature_extraction_xmodal import XModalFeatureExtractor, split_audio_batch
from .image_processing_xmodal import XModalImageProcessor, split_image_batch
from .video_processing_xmodal import XModalVideoProcessor, load_video_audio, split_video_batch

_PADDING_CHOICES = (True, False, "longest", "max_length", "do_not_pad")


def _text_batch(text, name):
    """Validate `text` (a string or a list of strings); return (list, is_batched)."""
    if isinstance(text, str):
        return [text], False
    is_list = isinstance(text, (list, tuple))
    if is_list and text and all(isinstance(t, str) for t in text):
        return list(text), True
    if is_list:
        got = f"a list of {sorted({type(t).__name__ for t in text})}" if text else "an empty list"
    else:
        got = type(text).__name__
    raise ValueError(f"{name} must be a string or a non-empty list of strings, got {got}.")


class XModalProcessor(ProcessorMixin):
    """Wraps `XModalImageProcessor`, `XModalFeatureExtractor`, a tokenizer (any `AutoTokenizer`), an
    `XModalVideoProcessor` and, when the decoder writes with another vocabulary than the text tower reads (a
    pretrained Whisper decoder next to a MiniLM text tower), a `target_tokenizer` for the `labels` and for
    decoding generated ids.

    Parts left out are built with defaults (the default tokenizer is trained once and cached); without a
    target tokenizer the tokenizer serves both. A separate one is saved in the `target_tokenizer/` subfolder.
    The video processor comes last so that positional arguments keep their meaning, and a checkpoint saved
    before it existed loads with a default one.
    """

    def __init__(self, image_processor=None, feature_extractor=None, tokenizer=None, target_tokenizer=None,
                 video_processor=None, **kwargs):
        if image_processor is None:
            image_processor = XModalImageProcessor()
        if feature_extractor is None:
            feature_extractor = XModalFeatureExtractor()
        if tokenizer is None:
            from .tokenization_xmodal import load_default_tokenizer

            tokenizer = load_default_tokenizer()
        if video_processor is None:
            video_processor = XModalVideoProcessor()
        super().__init__(image_processor, feature_extractor, tokenizer,
                         tokenizer if target_tokenizer is None else target_tokenizer, video_processor, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        """As `ProcessorMixin`, but the video processor is checked here: transformers 5.24 looks its base class
        (`VideoProcessorMixin`) up by name in the top-level module, where it is missing without torchvision, and
        then in the registered classes, where it fails on the per-backend dicts processors are registered with."""
        if argument_name != "video_processor":
            return super().check_argument_for_proper_class(argument_name, argument)
        if not isinstance(argument, VideoProcessorMixin):
            raise TypeError(f"Received a {type(argument).__name__} for argument video_processor, but a "
                            "VideoProcessorMixin was expected.")
        return VideoProcessorMixin

    @property
    def has_target_tokenizer(self):
        """Whether labels and generated ids use a vocabulary of their own."""
        return self.target_tokenizer is not self.tokenizer

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves every part, with this code and an `auto_map` (see `register_for_auto_class` in
        `registration.py`) so that `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` loads it
        where xmodal is not installed; the `target_tokenizer/` subfolder only when it differs from the tokenizer."""
        import copy
        import shutil

        shared = not self.has_target_tokenizer
        if shared:
            # `ProcessorMixin.save_pretrained` adds an `auto_map` to each tokenizer's `init_kwargs` and then
            # deletes it once per tokenizer attribute: one object in both roles would be deleted from twice.
            twin = copy.copy(self.tokenizer)
            twin.init_kwargs = dict(self.tokenizer.init_kwargs)
            self.target_tokenizer = twin
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if shared:
                self.target_tokenizer = self.tokenizer
        if shared:
            shutil.rmtree(os.path.join(save_directory, "target_tokenizer"), ignore_errors=True)
        return result

    @classmethod
    def _load_tokenizer_from_pretrained(cls, sub_processor_type, pretrained_model_name_or_path, subfolder="",
                                        **kwargs):
        if sub_processor_type == "target_tokenizer" and not os.path.isdir(
                os.path.join(pretrained_model_name_or_path, subfolder, "target_tokenizer")):
            return None  # no vocabulary of its own: __init__ uses the tokenizer
        return super()._load_tokenizer_from_pretrained(sub_processor_type, pretrained_model_name_or_path,
                                                       subfolder=subfolder, **kwargs)

    @staticmethod
    def _holds_video_processor(pretrained_model_name_or_path, subfolder, processor_dict):
        """Whether a saved processor has a video processor (checkpoints saved before videos existed have none)."""
        return "video_processor" in (processor_dict or {}) or os.path.isfile(
            os.path.join(pretrained_model_name_or_path, subfolder or "", VIDEO_PROCESSOR_NAME))

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        """transformers >= 5.25 loads the parts here: a checkpoint saved before videos existed gets a default video
        processor instead of an error from `AutoVideoProcessor`."""
        if kwargs.get("video_processor") is None and not cls._holds_video_processor(
                pretrained_model_name_or_path, kwargs.get("subfolder"), processor_dict):
            kwargs["video_processor"] = XModalVideoProcessor()
        return super()._resolve_subprocessors(pretrained_model_name_or_path, processor_dict, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """transformers < 5.25: loads the parts as `ProcessorMixin` does (its Auto class for each; tokenizers through
        `_load_tokenizer_from_pretrained`), except that a checkpoint saved before videos existed, which holds
        no video processor, gets None (a default one) instead of an error from `AutoVideoProcessor`."""
        subfolder = kwargs.pop("subfolder", "")
        saved_video = cls._holds_video_processor(pretrained_model_name_or_path, subfolder, processor_dict)
        args = []
        for name in cls.get_attributes():
            if "tokenizer" in name:
                args.append(cls._load_tokenizer_from_pretrained(name, pretrained_model_name_or_path,
                                                                subfolder=subfolder, **kwargs))
            elif name == "video_processor" and not saved_video:
                args.append(None)
            else:
                args.append(MODALITY_TO_AUTOPROCESSOR_MAPPING[name].from_pretrained(
                    pretrained_model_name_or_path, subfolder=subfolder, **kwargs))
        return args

    @property
    def label_start_token_id(self):
        """The start token dropped from `labels`: the special token the target tokenizer puts before every text
        (BOS; CLS for BERT-style tokenizers; <|startoftranscript|> for Whisper's); None if there is none."""
        tokenizer = self.target_tokenizer
        ids = tokenizer("", add_special_tokens=True)["input_ids"]
        if ids and ids[0] in tokenizer.all_special_ids:
            return ids[0]
        bos = tokenizer.bos_token_id
        return bos if bos is not None else tokenizer.cls_token_id

    def __call__(self, text=None, images=None, audio=None, sampling_rate=None, text_target=None,
                 return_tensors=None, padding=True, truncation=True, max_length=None,
                 text_kwargs=None, images_kwargs=None, audio_kwargs=None, videos=None, audio_from_videos=False,
                 videos_kwargs=None, **kwargs):
        """Process any subset of text, images, audio, videos and `text_target`.

        `padding`, `truncation` and `max_length` apply to the text and the labels; audio is padded
        to the longest clip and cut at the feature extractor's `max_duration`, images are resized,
        videos are sampled (`fps` or `num_frames`) and padded to the longest clip (change these through
        `audio_kwargs` / `images_kwargs` / `videos_kwargs`). `audio_from_videos=True` reads the sound
        track of each video (files or bytes) into `input_features` in place of `audio`. A list in one
        modality and a single item in another is allowed (one image scored against many captions); two
        lists must have the same length. `labels` are the target ids without the start token and ending
        with EOS, padded with -100; the model shifts them right behind its decoder start token.
        """
        if kwargs:
            raise ValueError(f"XModalProcessor got unexpected arguments {sorted(kwargs)}; pass part-specific "
                             "options in text_kwargs, images_kwargs, audio_kwargs or videos_kwargs.")
        if text is None and images is None and audio is None and videos is None and text_target is None:
            raise ValueError("XModalProcessor needs at least one of text, images, audio, videos or text_target.")
        if padding not in _PADDING_CHOICES:
            raise ValueError(f"padding must be one of {_PADDING_CHOICES}, got {padding!r}.")
        self._check_batch_sizes(text=text, images=images, audio=audio, videos=videos, text_target=text_target)
        if audio_from_videos:
            audio = self._video_sound(videos, audio)

        data = {}
        if text is not None:
            texts, _ = _text_batch(text, "text")
            encoded = self.tokenizer(texts, padding=padding, truncation=truncation, max_length=max_length,
                                     return_token_type_ids=False, **(text_kwargs or {}))
            data.update(encoded)
        if images is not None:
            data.update(self.image_processor(images, **(images_kwargs or {})))
        if audio is not None:
            data.update(self.feature_extractor(audio, sampling_rate=sampling_rate, **(audio_kwargs or {})))
        if videos is not None:
            data.update(self.video_processor(videos, **(videos_kwargs or {})))
        if text_target is not None:
            data["labels"] = self._labels(text_target, padding, truncation, max_length)
        return BatchFeature(data, tensor_type=return_tensors)

    def _check_batch_sizes(self, **inputs):
        sizes = {}
        for name, value in inputs.items():
            if value is None:
                continue
            if name in ("text", "text_target"):
                items, batched = _text_batch(value, name)
            elif name == "images":
                items, batched = split_image_batch(value)
            elif name == "videos":
                items, batched = split_video_batch(value)
            else:
                items, batched = split_audio_batch(value)
            if batched:
                sizes[name] = len(items)
        if len(set(sizes.values())) > 1:
            described = " but ".join(f"{name} has {size} items" for name, size in sizes.items())
            raise ValueError(f"Batch sizes differ across inputs: {described}.")

    @staticmethod
    def _video_sound(videos, audio):
        """The sound tracks of `videos` as `{"array", "sampling_rate"}` dicts for the feature extractor."""
        if videos is None:
            raise ValueError("audio_from_videos=True needs videos= (video files or their bytes).")
        if audio is not None:
            raise ValueError("Pass audio= or audio_from_videos=True, not both: each fills input_features.")
        clips, is_batched = split_video_batch(videos)
        tracks = [load_video_audio(clip, where=f"videos[{index}]" if is_batched else "video")
                  for index, clip in enumerate(clips)]
        sound = [{"array": samples, "sampling_rate": rate} for samples, rate in tracks]
        return sound if is_batched else sound[0]

    def _labels(self, text_target, padding, truncation, max_length):
        """Decoder targets: ids without the start token, right-padded with -100."""
        targets, _ = _text_batch(text_target, "text_target")
        rows = self.target_tokenizer(targets, truncation=truncation, max_length=max_length,
                                     return_token_type_ids=False, return_attention_mask=False)["input_ids"]
        start = self.label_start_token_id
        rows = [row[1:] if start is not None and row and row[0] == start else row for row in rows]
        if padding in (False, "do_not_pad"):
            return rows
        width = max(len(row) for row in rows)
        if padding == "max_length":
            limit = max_length if max_length is not None else self.target_tokenizer.model_max_length
            if limit > 100_000:  # tokenizers without a length limit report ~1e30
                raise ValueError("padding='max_length' needs max_length= for a tokenizer without model_max_length.")
            width = max(width, limit)
        labels = np.full((len(rows), width), -100, dtype=np.int64)
        for index, row in enumerate(rows):
            labels[index, : len(row)] = row
        return labels

    def batch_decode(self, sequences, **kwargs):
        """Decode generated or label ids with the target tokenizer (-100 is read as padding)."""
        return self.target_tokenizer.batch_decode(self._without_ignore_index(sequences), **kwargs)

    def decode(self, token_ids, **kwargs):
        """Decode one sequence of generated or label ids (-100 is read as padding)."""
        return self.target_tokenizer.decode(self._without_ignore_index(token_ids), **kwargs)

    def _without_ignore_index(self, ids):
        tokenizer = self.target_tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if hasattr(ids, "masked_fill"):  # torch tensor
            return ids.masked_fill(ids == -100, pad)
        if isinstance(ids, np.ndarray):
            return np.where(ids == -100, pad, ids)
        if isinstance(ids, (list, tuple)):
            return [self._without_ignore_index(x) if isinstance(x, (list, tuple, np.ndarray)) else
                    (pad if x == -100 else x) for x in ids]
        return ids


__all__ = ["XModalProcessor"]
