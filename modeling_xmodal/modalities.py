"""The vocabulary of modalities and model parts, in one table that every other file imports.

`MODALITIES` says, for each modality, which `forward` arguments carry it, which attribute holds its
tower and its projection into the shared space, and which config key describes the tower. `PARTS`
groups a model's top-level modules into the parts that training settings (learning rates, LoRA,
freezing, parameter counts) speak of. Nothing else restates these names.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    """One input modality of an XModal model."""

    name: str
    inputs: tuple  # the `forward` arguments that carry it; the first is the tensor, the others its masks (and times)
    tower: str  # attribute of `XModalModel` holding the tower
    projection: str  # attribute holding the projection into the shared embedding space
    config_key: str  # attribute of `XModalConfig` holding the tower's config
    # The modality whose tower this one's is built on (video: each frame is an image), else None. Such a tower
    # is not in the default model, and no single pretrained `transformers` model fills it: fill the one it is
    # built on and share it (`XModalConfig.share_vision_tower`).
    built_on: str | None = None
    # Whether the modality says a caption (written or spoken) rather than shows a scene: which in-batch pairs of
    # different samples match all the same (`losses.pair_overlap`) depends on it.
    says_caption: bool = False

    @property
    def main_input(self):
        return self.inputs[0]

    @property
    def output(self):
        """The field of a model output that holds this modality's tower output (CLIP's `text_model_output`)."""
        return f"{self.tower}_output"


MODALITIES = {
    "text": Modality("text", ("input_ids", "attention_mask", "token_type_ids"), "text_model", "text_projection",
                     "text_config", says_caption=True),
    "image": Modality("image", ("pixel_values",), "vision_model", "visual_projection", "vision_config"),
    "audio": Modality("audio", ("input_features", "feature_attention_mask"), "audio_model", "audio_projection",
                      "audio_config", says_caption=True),
    # `video_timestamps` (seconds of each frame) is not read for positions (frame indices are, at the processor's
    # fixed fps); it is taken so that a processor's output can be passed whole, and it travels with the frames.
    "video": Modality("video", ("pixel_values_videos", "video_frame_mask", "video_timestamps"), "video_model",
                      "video_projection", "video_config", built_on="image"),
}
MODALITY_NAMES = tuple(MODALITIES)  # the canonical order: text, image, audio, video
BASE_MODALITY_NAMES = tuple(m.name for m in MODALITIES.values() if m.built_on is None)  # the default model's
TARGET_INPUTS = ("labels",)  # decoder targets / class labels: not a modality, but droppable like one

# Parts of a model that settings address; a tower part shares its modality's name.
TOWER_PARTS = (*BASE_MODALITY_NAMES, "decoder")  # parts a pretrained model can fill
PART_CONFIG_KEYS = {**{name: MODALITIES[name].config_key for name in BASE_MODALITY_NAMES}, "decoder": "decoder_config"}
PARTS = (*MODALITY_NAMES, "projections", "fusion", "decoder", "heads")
# Top-level module name (below `xmodal.` and PEFT's `base_model.model.`) -> its part.
MODULE_PARTS = {
    **{m.tower: m.name for m in MODALITIES.values()},
    **dict.fromkeys((*(m.projection for m in MODALITIES.values()), "logit_scale", "logit_bias"), "projections"),
    "fusion": "fusion", "decoder": "decoder", "lm_head": "decoder", "decoder_bridges": "decoder",
    "itm_head": "heads", "ctc_head": "heads", "classifier": "heads", "video_heads": "heads",
}
# A projection trains with the tower it projects (for per-part learning rates).
PROJECTION_MODALITY = {m.projection: m.name for m in MODALITIES.values()}


def top_module(name):
    """The top-level module of a parameter name, below PEFT's `base_model.model.` and the heads' `xmodal.`."""
    for prefix in ("base_model.model.", "xmodal."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.split(".", 1)[0]


def parameter_part(name):
    """The part (`PARTS`) a parameter belongs to, from its name in the model or its PEFT wrapper."""
    return MODULE_PARTS.get(top_module(name), "other")


def modality_inputs(batch, modality):
    """The entries of `batch` that carry `modality` (or `"labels"`)."""
    keys = TARGET_INPUTS if modality == "labels" else MODALITIES[modality].inputs
    return {key: batch[key] for key in keys if key in batch}


__all__ = ["BASE_MODALITY_NAMES", "MODALITIES", "MODALITY_NAMES", "MODULE_PARTS", "Modality", "PARTS",
           "PART_CONFIG_KEYS", "PROJECTION_MODALITY", "TARGET_INPUTS", "TOWER_PARTS", "modality_inputs", "parameter_part",
           "top_module"]
