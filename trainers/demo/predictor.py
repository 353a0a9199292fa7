"""Inference behind the demo (`spaces_demo/app.py`, `xmodal demo`): no Gradio here, and nothing
is loaded until a `Predictor` is made.

One checkpoint folder (as `xmodal train` writes it) is loaded into the heads the demo needs:
`XModalModel` (the shared embedding space: matching probabilities, search, similarity),
`XModalForMatching` (the matching score and its cross-attention maps),
`XModalForConditionalGeneration` (captions and transcripts) and, when the checkpoint trained one,
`XModalForCTC` (transcripts read off the speech tower in one pass). A head whose weights the
checkpoint lacks (a contrastive-only run has no decoder) is reported as missing rather than
run with random weights.

Input checks live in `inputs`; each raises `DemoInputError`, whose message is for the visitor. The
galleries and the built-in data are `galleries.GalleriesMixin`.
"""

import threading
from collections import OrderedDict

import numpy as np
import torch

from ..loading import load_head, resolve_model_dir, weights_have
from .drawing import heatmap_overlay, similarity_heatmap
from .galleries import Gallery, GalleriesMixin, read_yaml
from .gallery_index import FAISS_ABOVE, GalleryIndex
from .inputs import DemoInputError, DemoLimits, load_audio, load_image, parse_captions
from .model_info import model_info, parameter_counts
from .sync import VideoSync

DEFAULT_MODEL_DIR = "runs/default/model"  # `<training.output_dir>/model` of configs/default.yaml
# How the Transcribe tab reads speech: the CTC head when the checkpoint has one (it read better than the decoder on
# every default run measured: trainers/README.md), else the decoder.
READERS = {"ctc": "CTC head (one pass)", "decoder": "decoder (beam search)"}


class Predictor(GalleriesMixin):
    """Loads a checkpoint once and answers the demo's questions; thread-safe for concurrent requests."""

    def __init__(self, model_dir=DEFAULT_MODEL_DIR, gallery_dir=None, data_path=None, split="test",
                 limits=None, video_model_dir=None):
        from xmodal import XModalConfig, XModalForConditionalGeneration, XModalForCTC, XModalForMatching, XModalModel
        from xmodal.processing import XModalProcessor

        self.model_dir = resolve_model_dir(model_dir)
        self.limits = limits or DemoLimits()
        self.config = XModalConfig.from_pretrained(self.model_dir)
        self.processor = XModalProcessor.from_pretrained(self.model_dir)
        self.base, missing = load_head(XModalModel, self.model_dir)
        if self.base is None:
            raise ValueError(f"{self.model_dir} holds no XModal base model (missing {missing[:3]}...).")
        self.matcher, self.matcher_missing = load_head(XModalForMatching, self.model_dir)
        self.generator, self.generator_missing = (load_head(XModalForConditionalGeneration, self.model_dir)
                                                  if self.config.decoder_config is not None else (None, []))
        # read off the file's header first: a checkpoint without the head (pretrained.yaml's) is not built twice
        has_ctc = self.config.decoder_config is not None and self.config.audio_config is not None
        self.ctc_reader, self.ctc_reader_missing = (
            load_head(XModalForCTC, self.model_dir) if has_ctc and weights_have(self.model_dir, "ctc_head.")
            else (None, ["ctc_head.weight", "ctc_head.bias"] if has_ctc else []))
        self.modalities = list(self.config.modalities)
        # The Sync tab's video checkpoint (task: video): given apart, or this one when it has a video tower.
        video_model_dir = video_model_dir or (self.model_dir if self.config.video_config is not None else None)
        self.sync = VideoSync(video_model_dir) if video_model_dir else None
        self.training_config = read_yaml(self.model_dir / "training_config.yaml")
        self.gallery_dir, self.data_path, self.split = gallery_dir, data_path, split
        self._lock = threading.RLock()
        self._galleries = OrderedDict()  # uploaded galleries by content hash, least recently used first
        self._default_gallery = self._pairs = self._dataset = self._index = None
        self.faiss_above = FAISS_ABOVE
        self._dataset_error = None

    # ------------------------------------------------------------------ what this checkpoint can do
    @property
    def max_new_tokens(self):
        return self.config.decoder_config.max_position_embeddings - 1 if self.config.decoder_config else 0

    @property
    def max_text_length(self):
        text = self.config.text_config
        return getattr(text, "max_position_embeddings", None) or self.processor.tokenizer.model_max_length

    def require(self, *modalities):
        for modality in modalities:
            if modality not in self.modalities:
                raise DemoInputError(f"This model has no {modality} tower; it takes {', '.join(self.modalities)}.")

    def _require_generator(self):
        if self.generator is None:
            raise DemoInputError("This checkpoint has no text decoder (it was not trained for captioning or "
                                 "transcription), so it cannot write text.")

    # ------------------------------------------------------------------ encoders
    def _text_inputs(self, texts):
        return self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True,
                              max_length=self.max_text_length)

    def _image_inputs(self, images):
        return self._process(images=list(images))

    def _audio_inputs(self, clip):
        samples, rate = clip
        return self._process(audio=[samples], sampling_rate=rate)

    def _process(self, **inputs):
        try:
            return self.processor(**inputs, return_tensors="pt")
        except ValueError as error:  # the processor names what it could not use
            raise DemoInputError(str(error)) from error

    # Embeddings come from the model's own `get_embeddings` (normalised, float32), as in evaluation.
    @torch.inference_mode()
    def embed_texts(self, texts, batch_size=64):
        self.require("text")
        return torch.cat([self.base.get_embeddings(**self._text_inputs(texts[s:s + batch_size]))["text"]
                          for s in range(0, len(texts), batch_size)])

    @torch.inference_mode()
    def embed_images(self, images, batch_size=64):
        self.require("image")
        return torch.cat([self.base.get_embeddings(**self._image_inputs(images[s:s + batch_size]))["image"]
                          for s in range(0, len(images), batch_size)])

    @torch.inference_mode()
    def embed_audio(self, clip):
        self.require("audio")
        return self.base.get_embeddings(**self._audio_inputs(clip))["audio"]

    def _query_embedding(self, image=None, audio=None, text=None):
        given = [name for name, value in (("image", image), ("audio", audio), ("text", text)) if value is not None]
        if not given:
            raise DemoInputError("Type a query first, or record or upload a spoken one.")
        if len(given) > 1:
            raise DemoInputError(f"Give one query, not {' and '.join(given)}.")
        if image is not None:
            return "image", self.embed_images([load_image(image, self.limits)])
        if audio is not None:
            return "audio", self.embed_audio(load_audio(audio, self.limits))
        if not text.strip():
            raise DemoInputError("Type a query first.")
        if len(text) > self.limits.max_caption_chars:
            raise DemoInputError(f"Keep the query under {self.limits.max_caption_chars} characters.")
        return "text", self.embed_texts([text.strip()])

    def _logits(self, query, keys):
        return self.base.similarity(query, keys).float()  # the model's own logits of its embeddings

    # ------------------------------------------------------------------ tab 1: match
    @torch.inference_mode()
    def match(self, captions, image=None, audio=None):
        """Contrastive probabilities of the captions given an image or a clip, and the matching head's scores."""
        captions = parse_captions(captions, self.limits)
        if (image is None) == (audio is None):
            raise DemoInputError("Give an image or a speech clip (one of them) to compare the captions with.")
        query_modality = "image" if image is not None else "audio"
        self.require("text", query_modality)
        source = load_image(image, self.limits) if image is not None else load_audio(audio, self.limits)
        query = self.embed_images([source]) if image is not None else self.embed_audio(source)
        probabilities = self._logits(query, self.embed_texts(captions)).softmax(-1)[0]
        scores = None
        if self.matcher is not None:
            text = self._text_inputs(captions)
            count = len(captions)
            if image is not None:
                other = {"pixel_values": self._image_inputs([source])["pixel_values"].expand(count, -1, -1, -1)}
            else:
                audio_inputs = self._audio_inputs(source)
                other = {"input_features": audio_inputs["input_features"].expand(count, -1, -1),
                         "feature_attention_mask": audio_inputs["feature_attention_mask"].expand(count, -1)}
            logits = self.matcher(input_ids=text["input_ids"], attention_mask=text["attention_mask"], **other).logits
            scores = logits.float().softmax(-1)[:, 1].tolist()
        return {"query": query_modality, "captions": captions, "probabilities": probabilities.tolist(),
                "match_scores": scores}

    # ------------------------------------------------------------------ tab 2: search
    def search_images(self, text=None, audio=None, k=5, files=None):
        """The `k` gallery images nearest a text or speech query: [(image, label, score)], best first."""
        _, query = self._query_embedding(audio=audio, text=text if text and text.strip() else None)
        if not files and self.gallery_dir is not None:  # the folder's saved index, images loaded for the top k
            hits = self.gallery_index().search(query, "image", self._check_k(k, self.limits.max_top_k))
            if not hits:
                raise DemoInputError(f"No images to search in {self.gallery_dir}.")
            return [(load_image(path, self.limits), path.name, score) for path, score in hits]
        gallery = self.gallery_from_files(files) if files else self.default_gallery()
        k = self._check_k(k, len(gallery.images))
        scores = (query @ gallery.embeddings.t())[0]
        top = scores.topk(k)
        return [(gallery.images[i], gallery.labels[i], float(s)) for s, i in zip(top.values, top.indices.tolist())]

    def search_speech(self, text=None, image=None, k=5):
        """The `k` speech clips of the gallery folder nearest a text or image query: [(file name, score)]."""
        if self.gallery_dir is None:
            raise DemoInputError("No gallery folder: start the demo with --gallery DIR holding audio files.")
        self.require("audio")
        _, query = self._query_embedding(image=image, text=text if text and text.strip() else None)
        hits = self.gallery_index().search(query, "audio", self._check_k(k, self.limits.max_top_k))
        if not hits:
            raise DemoInputError(f"No audio files to search in {self.gallery_dir}.")
        return [(path.relative_to(self.gallery_dir).as_posix(), score) for path, score in hits]

    def gallery_index(self):
        """The `--gallery` folder's index (see `gallery_index`): built once, saved beside it, reused after."""
        with self._lock:
            if self._index is None:
                try:
                    self._index = GalleryIndex.open(self.gallery_dir, self.model_dir, self._embed_files,
                                                    faiss_above=self.faiss_above)
                except FileNotFoundError as error:
                    raise DemoInputError(str(error)) from error
            return self._index

    def _embed_files(self, modality, paths, batch_size=64):
        """(embeddings of the readable files, {reason: [paths left out]}) for the gallery index."""
        if modality not in self.modalities:
            return torch.zeros(0, self.config.projection_dim), {f"no {modality} tower": list(paths)}
        vectors, left_out, batch = [], {}, []
        for position, path in enumerate(paths):
            try:
                batch.append(load_image(path, self.limits) if modality == "image" else load_audio(path, self.limits))
            except DemoInputError:
                left_out.setdefault(f"unreadable {modality}", []).append(path)
            if batch and (len(batch) == batch_size or position == len(paths) - 1):
                vectors.append(self.embed_images(batch) if modality == "image"
                               else torch.cat([self.embed_audio(clip) for clip in batch]))
                batch = []
        return (torch.cat(vectors) if vectors else torch.zeros(0, self.config.projection_dim)), left_out

    def search_captions(self, image, k=5, captions=None):
        """The `k` captions nearest an image: [(caption, score)], best first. Pool: `captions` or the test split's."""
        self.require("image", "text")
        if captions is not None and (captions.strip() if isinstance(captions, str) else captions):
            pool = parse_captions(captions, DemoLimits(max_captions=self.limits.max_gallery))
            keys = self.embed_texts(pool)
        else:
            pairs = self.pairs()
            if pairs is None:
                raise DemoInputError("No captions to search: enter candidate captions, or start the demo with the "
                                     f"built-in data available ({self._dataset_error}).")
            pool, keys = pairs["pool"], pairs["pool_embeddings"]
        _, query = self._query_embedding(image=image)
        k = self._check_k(k, len(pool))
        top = (query @ keys.t())[0].topk(k)
        return [(pool[i], float(s)) for s, i in zip(top.values, top.indices.tolist())]

    def _check_k(self, k, available):
        try:
            k = int(k)
        except (TypeError, ValueError) as error:
            raise DemoInputError(f"k must be a whole number, got {k!r}.") from error
        if not 1 <= k <= self.limits.max_top_k:
            raise DemoInputError(f"k must be between 1 and {self.limits.max_top_k}, got {k}.")
        return min(k, available)

    # ------------------------------------------------------------------ tab 3: transcribe and caption
    @property
    def readers(self):
        """The ways this checkpoint can transcribe (keys of READERS), the better one first."""
        return [name for name, head in (("ctc", self.ctc_reader), ("decoder", self.generator)) if head is not None]

    def transcribe(self, audio, num_beams=1, max_new_tokens=24, reader=None):
        """Text of a recording, read by `reader` ("ctc" or "decoder"; default: the first of `readers`). The CTC
        head reads in one pass: `num_beams` does not apply to it, and its text is cut at `max_new_tokens`."""
        self.require("audio")
        if not self.readers:
            self._require_generator()
        reader = reader or self.readers[0]
        if reader not in READERS:
            raise DemoInputError(f"Unknown reader {reader!r}; choose one of: {', '.join(READERS)}.")
        if reader not in self.readers:
            raise DemoInputError(f"This checkpoint has no {READERS[reader].split(' (')[0]}; it reads speech with: "
                                 f"{', '.join(self.readers)}.")
        inputs = self._audio_inputs(load_audio(audio, self.limits))
        if reader == "decoder":
            return self._generate(dict(inputs), num_beams, max_new_tokens)
        max_new_tokens = self._check_generation(num_beams, max_new_tokens)[1]
        with torch.inference_mode():
            ids = self.ctc_reader.transcribe(inputs["input_features"], inputs.get("feature_attention_mask"))
        return self.processor.batch_decode([ids[0][:max_new_tokens]], skip_special_tokens=True)[0].strip()

    def caption(self, image, num_beams=1, max_new_tokens=24):
        self._require_generator()
        self.require("image")
        inputs = self._image_inputs([load_image(image, self.limits)])
        return self._generate({"pixel_values": inputs["pixel_values"]}, num_beams, max_new_tokens)

    @torch.inference_mode()
    def _generate(self, inputs, num_beams, max_new_tokens):
        num_beams, max_new_tokens = self._check_generation(num_beams, max_new_tokens)
        # the token ids come from the checkpoint's generation_config.json
        ids = self.generator.generate(**inputs, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def _check_generation(self, num_beams, max_new_tokens):
        num_beams, max_new_tokens = int(num_beams), int(max_new_tokens)
        if not 1 <= num_beams <= self.limits.max_beams:
            raise DemoInputError(f"Beam size must be between 1 and {self.limits.max_beams}, got {num_beams}.")
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise DemoInputError(f"Max length must be between 1 and {self.max_new_tokens} tokens, "
                                 f"got {max_new_tokens}.")
        return num_beams, max_new_tokens

    # ------------------------------------------------------------------ tab 4: explain
    @torch.inference_mode()
    def explain(self, image, caption, layer="mean", size=192):
        """Cross-attention of each caption word over the image patches, drawn over the image.

        Returns {"words": [...], "maps": [(overlay image, label)], "grids": [(g, g) arrays], "match_score"}.
        The first map is the [FUSE] token's (the caption as a whole); heads are averaged, and layers too
        unless `layer` picks one (1-based).
        """
        if self.matcher is None:
            raise DemoInputError("This checkpoint has no matching head, whose cross-attention the maps show.")
        if self.config.fusion_type != "cross_attention":
            raise DemoInputError(f"This model fuses by {self.config.fusion_type!r}, which has no "
                                 "cross-attention to draw.")
        self.require("image", "text")
        caption = parse_captions(caption, self.limits)[0]
        picture = load_image(image, self.limits)
        text = self._text_inputs([caption])
        output = self.matcher(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                              pixel_values=self._image_inputs([picture])["pixel_values"], output_attentions=True)
        layers = output.fusion_output.cross_attentions
        if layer in (None, "mean"):
            attention = torch.stack([a[0] for a in layers]).float().mean(dim=(0, 1))
        else:
            index = int(layer)
            if not 1 <= index <= len(layers):
                raise DemoInputError(f"Layer must be 'mean' or 1 to {len(layers)}, got {layer!r}.")
            attention = layers[index - 1][0].float().mean(0)
        grids = [_patch_grid(row) for row in self._word_rows(caption, attention)]
        words = ["[whole caption]"] + self._words(caption)
        maps = [(heatmap_overlay(picture, grid, size), word) for grid, word in zip(grids, words)]
        score = output.logits.float().softmax(-1)[0, 1].item()
        return {"words": words, "maps": maps, "grids": grids, "match_score": score}

    def _word_spans(self, caption):
        encoding = self.processor.tokenizer(caption, truncation=True, max_length=self.max_text_length)
        spans = OrderedDict()
        for position, word in enumerate(encoding.word_ids()):
            if word is not None:
                spans.setdefault(word, []).append(position)
        return encoding, spans

    def _words(self, caption):
        encoding, spans = self._word_spans(caption)
        return [caption[slice(*encoding.word_to_chars(word))] for word in spans]

    def _word_rows(self, caption, attention):
        """The [FUSE] row, then one row per word (its tokens averaged); query position 0 is [FUSE]."""
        _, spans = self._word_spans(caption)
        return [attention[0]] + [attention[[1 + p for p in positions]].mean(0) for positions in spans.values()]

    # ------------------------------------------------------------------ tab 4: similarity of a batch
    def similarity(self, count=6, seed=0):
        """Cosine similarity of `count` test-split images (columns) and their captions (rows)."""
        pairs = self.pairs()
        if pairs is None:
            raise DemoInputError(f"The similarity matrix needs image-caption pairs from the built-in data, "
                                 f"which is not available ({self._dataset_error}).")
        count = int(count)
        if not 2 <= count <= self.limits.max_batch:
            raise DemoInputError(f"Batch size must be between 2 and {self.limits.max_batch}, got {count}.")
        gallery = pairs["gallery"]
        rows = np.random.default_rng(int(seed)).choice(len(gallery.images), size=min(count, len(gallery.images)),
                                                       replace=False).tolist()
        captions = [gallery.captions[i] for i in rows]
        matrix = (self.embed_texts(captions) @ gallery.embeddings[rows].t()).numpy()
        images = [gallery.images[i] for i in rows]
        return {"images": images, "captions": captions, "matrix": matrix,
                "heatmap": similarity_heatmap(images, captions, matrix)}

    def warm_up(self):
        """Embeds the default gallery and caption pool now, so that the first search does not wait for it."""
        try:
            self.pairs()
            if self.gallery_dir is not None:
                self.gallery_index()
            else:
                self.default_gallery()
        except DemoInputError:
            pass

    # ------------------------------------------------------------------ tab 5: the model card
    def model_info(self):
        """Card text (without front matter), metrics, parameter counts, config, data credits, curve path."""
        return model_info(self)

    def parameter_counts(self):
        """Parameters per part of the model, counting tied weights once."""
        return parameter_counts(self)


def _patch_grid(row):
    """An attention row over image tokens as a square (g, g) grid; a leading class token is dropped."""
    values = row.float().numpy()
    for tokens in (values[1:], values):
        side = int(round(len(tokens) ** 0.5))
        if side * side == len(tokens) and side > 0:
            return tokens.reshape(side, side)
    raise DemoInputError(f"The image tower gives {len(values)} tokens, which do not form a square grid to draw.")


__all__ = ["DEFAULT_MODEL_DIR", "READERS", "Gallery", "Predictor", "resolve_model_dir"]
