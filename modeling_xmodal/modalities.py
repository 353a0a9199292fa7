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
    inputs: tuple  # the `forward` arguments that carry it; the first is the tensor, the others its masks
    tower: str  # attribute of `XModalModel` holding the tower
    projection: str  # attribute holding the projection into the shared embedding space
    config_key: str  # attribute of `XModalConfig` holding the tower's config

    @property
    def main_input(self):
        return self.inputs[0]

    @property
    def output(self):
        """The field of a model output that holds this modality's tower output (CLIP's `text_model_output`)."""
        return f"{self.tower}_output"


MODALITIES = {
    "text": Modality("text", ("input_ids", "attention_mask", "token_type_ids"), "text_model", "text_projection",
                     "text_config"),
    "image": Modality("image", ("pixel_values",), "vision_model", "visual_projection", "vision_config"),
    "audio": Modality("audio", ("input_features", "feature_attention_mask"), "audio_model", "audio_projection",
                      "audio_config"),
}
MODALITY_NAMES = tuple(MODALITIES)  # the canonical order: text, image, audio
TARGET_INPUTS = ("labels",)  # decoder targets / class labels: not a modality, but droppable like one

# Parts of a model that settings address; a tower part shares its modality's name.
TOWER_PARTS = (*MODALITY_NAMES, "decoder")  # parts a pretrained model can fill
PART_CONFIG_KEYS = {**{m.name: m.config_key for m in MODALITIES.values()}, "decoder": "decoder_config"}
PARTS = ("text", "image", "audio", "projections", "fusion", "decoder", "heads")
# Top-level module name (below `xmodal.` and PEFT's `base_model.model.`) -> its part.
MODULE_PARTS = {
    **{m.tower: m.name for m in MODALITIES.values()},
    **dict.fromkeys((*(m.projection for m in MODALITIES.values()), "logit_scale", "logit_bias"), "projections"),
    "fusion": "fusion", "decoder": "decoder", "lm_head": "decoder", "decoder_bridges": "decoder",
    "itm_head": "heads", "classifier": "heads",
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


__all__ = ["MODALITIES", "MODALITY_NAMES", "MODULE_PARTS", "Modality", "PARTS", "PART_CONFIG_KEYS",
           "PROJECTION_MODALITY", "TARGET_INPUTS", "TOWER_PARTS", "modality_inputs", "parameter_part", "top_module"]
