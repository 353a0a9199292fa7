"""Invalid configs and bad inputs fail early with errors that name the field or argument."""

import pytest
import torch
from transformers import AutoConfig, BertConfig

from xmodal import (
    XModalConfig,
    XModalForConditionalGeneration,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
    XModalTextConfig,
    XModalVisionConfig,
)

from .tiny import tiny_config, tiny_inputs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: XModalTextConfig(hidden_size=30, num_attention_heads=4), "hidden_size=30"),
        (lambda: XModalTextConfig(encoder_type="gru"), "encoder_type='gru'"),
        (lambda: XModalVisionConfig(image_size=30, patch_size=8), "image_size=30"),
        (lambda: XModalVisionConfig(encoder_type="resnet50"), "encoder_type='resnet50'"),
        (lambda: tiny_config(fusion_type="sum"), "fusion_type='sum'"),
        (lambda: tiny_config(fusion_pooling="max"),
         "fusion_pooling='max' is not supported; choose one of ['cls', 'mean']"),
        (lambda: tiny_config(contrastive_loss="triplet"), "contrastive_loss='triplet'"),
        (lambda: tiny_config(loss_weights={"captioning": 1.0}), "loss_weights has unknown parts ['captioning']"),
        (lambda: tiny_config(loss_weights={"matching": -1.0}), "loss_weights['matching']=-1.0"),
        (lambda: tiny_config(projection_dim=0), "projection_dim=0"),
        (lambda: XModalConfig(text_config={"model_type": "no-such-model"}), "model_type='no-such-model'"),
    ],
)
def test_invalid_config_values_name_the_field_value_and_choices(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        make()


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(fusion_type="gated", contrastive_loss="sigmoid")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, XModalConfig)
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.to_dict()) == strip(config.to_dict())
    assert isinstance(loaded.text_config, XModalTextConfig)


def test_default_config_is_the_tri_modal_model_and_none_means_absent():
    assert XModalConfig().modalities == ["text", "image", "audio"]
    assert XModalConfig().decoder_config is not None
    config = tiny_config(("text", "image"), decoder=False)
    assert config.modalities == ["text", "image"] and config.audio_config is None
    assert not hasattr(XModalModel(config), "audio_model")


def test_any_transformers_config_is_a_tower(tmp_path):
    bert = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    config = XModalConfig(text_config=bert.to_dict(), vision_config=tiny_config().vision_config, projection_dim=16)
    assert isinstance(config.text_config, BertConfig)
    model = XModalModel(config)
    output = model(input_ids=torch.randint(0, 50, (2, 5)), pixel_values=torch.randn(2, 3, 32, 32), return_loss=True)
    assert output.text_embeds.shape == (2, 16) and torch.isfinite(output.loss)
    model.save_pretrained(tmp_path)
    assert isinstance(XModalModel.from_pretrained(tmp_path).config.text_config, BertConfig)


def _model():
    torch.manual_seed(0)
    return XModalModel(tiny_config())


def test_no_modality_at_all():
    with pytest.raises(ValueError, match="No modality given: pass at least one of `input_ids`"):
        _model()()


def test_pixel_values_with_the_wrong_channels_or_size():
    model = _model()
    with pytest.raises(ValueError, match=r"`pixel_values` should have shape \(batch_size, 3, 32, 32\), but got \(2, 1, 32, 32\)"):
        model(pixel_values=torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"but got \(2, 3, 48, 48\)"):
        model(pixel_values=torch.randn(2, 3, 48, 48))


def test_input_features_with_the_wrong_number_of_mel_bins():
    with pytest.raises(ValueError, match=r"`input_features` should have shape \(batch_size, 16, num_frames\), but got \(2, 80, 40\)"):
        _model()(input_features=torch.randn(2, 80, 40))


def test_too_many_frames_or_tokens():
    model = _model()
    with pytest.raises(ValueError, match="takes at most 64"):
        model(input_features=torch.randn(1, 16, 100))
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model(input_ids=torch.ones(1, 40, dtype=torch.long))


def test_batch_sizes_that_differ_across_modalities():
    inputs = tiny_inputs(("text", "image"))
    inputs["pixel_values"] = inputs["pixel_values"][:2]
    with pytest.raises(ValueError, match=r"same batch size; got \{'input_ids': 3, 'pixel_values': 2\}"):
        _model()(**inputs, return_loss=True)
    with pytest.raises(ValueError, match="same batch size"):
        XModalForSequenceClassification(tiny_config())(**inputs)
    # Without a loss the rows need not pair up: 3 captions scored against 2 images.
    assert _model()(**inputs).logits_per_image.shape == (2, 3)


def test_a_modality_the_model_has_no_tower_for():
    model = XModalModel(tiny_config(("text", "image"), decoder=False))
    with pytest.raises(ValueError, match="no audio tower"):
        model(input_features=torch.randn(1, 16, 40))


def test_masks_of_the_wrong_shape():
    inputs = tiny_inputs(("text", "audio"))
    with pytest.raises(ValueError, match="`attention_mask` should have shape"):
        _model()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"][:, :3])
    with pytest.raises(ValueError, match="`feature_attention_mask` should have shape"):
        _model()(input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"][:2])


def test_labels_of_the_wrong_shape():
    torch.manual_seed(0)
    classifier = XModalForSequenceClassification(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match=r"single-label classification should have shape \(3,\).*got \(3, 2\)"):
        classifier(**tiny_inputs(), labels=torch.zeros(3, 2, dtype=torch.long))
    generator = XModalForConditionalGeneration(tiny_config())
    with pytest.raises(ValueError, match=r"`labels` should have shape"):
        generator.decode(generator.encode(generator._towers(None, None, tiny_inputs(("image",))["pixel_values"],
                                                            None, None)),
                         labels=torch.ones(3, 5, dtype=torch.long), decoder_input_ids=torch.ones(3, 4, dtype=torch.long))


def test_a_generation_head_without_a_decoder_config():
    config = tiny_config(decoder=False)
    for head in (XModalForConditionalGeneration, XModalForPreTraining):
        with pytest.raises(ValueError, match="needs `decoder_config` in XModalConfig; it is None"):
            head(config)


def test_generate_rejects_inputs_of_unknown_rank():
    model = XModalForConditionalGeneration(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"`inputs` should be token ids \(2-D\), log-mel features \(3-D\), pixels "
                                         r"\(4-D\) or video frames \(5-D\)"):
        model.generate(torch.ones(5))


@pytest.mark.parametrize("layers, pooling", [(0, "max"), (0, "mean"), (1, "cls"), (1, "max")])
def test_cnn_vision_tower_tokens_pooling_and_init(layers, pooling):
    from xmodal import XModalModel

    vision = XModalVisionConfig(encoder_type="cnn", image_size=32, cnn_channels=[8, 16, 16], hidden_size=32,
                                num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                                pooling=pooling)
    model = XModalModel(tiny_config(("text", "image"), decoder=False, vision_config=vision)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    output = model.vision_model(pixels)
    grid_tokens = (32 // 4) ** 2  # two halvings after the first stage
    assert output.last_hidden_state.shape == (2, grid_tokens + (pooling == "cls"), 32)
    states = output.last_hidden_state
    expected = {"max": states.amax(dim=1), "mean": states.mean(dim=1), "cls": states[:, 0]}[pooling]
    torch.testing.assert_close(output.pooler_output, expected)
    # He initialisation (std = sqrt(2 / fan_out)), not the 0.02 of the Transformer layers.
    conv = model.vision_model.stages[1].conv.weight
    assert abs(conv.std().item() / (2 / (16 * 9)) ** 0.5 - 1) < 0.15


def test_cnn_config_rejects_an_image_size_the_stages_cannot_halve():
    with pytest.raises(ValueError, match=r"image_size=30 must be divisible by 2\*\*\(len\(cnn_channels\) - 1\)=4"):
        XModalVisionConfig(encoder_type="cnn", image_size=30, cnn_channels=[8, 16, 16])
    with pytest.raises(ValueError, match="num_hidden_layers=0 must be at least 1 for a ViT"):
        XModalVisionConfig(encoder_type="vit", num_hidden_layers=0)
