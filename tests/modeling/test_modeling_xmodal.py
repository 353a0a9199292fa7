"""Common checks applied to every model class, as transformers' ModelTesterMixin does.

Each head's `...Spec` says how to call it and what its output looks like; `Test...` adds the head's own tests.
test_video_tower.py runs the same common checks on models with a video tower through the specs."""

import itertools
import re

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForNextSentencePrediction,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForSpeechSeq2Seq,
)

from xmodal import (
    XModalForConditionalGeneration,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
)
from xmodal.modeling_base import PAIR_LOGITS

from .tiny import VOCAB, caption_labels, tiny_config, tiny_inputs

ALL = ("text", "image", "audio")


def subsets(min_size, modalities=ALL):
    return [s for n in range(min_size, len(modalities) + 1) for s in itertools.combinations(modalities, n)]


class XModalModelTesterMixin:
    model_class = None
    auto_class = None
    min_modalities = 1
    fusion_type = "cross_attention"
    modalities = ALL  # of the tiny model, all given to the common checks

    def config(self, **overrides):
        return tiny_config(modalities=self.modalities, fusion_type=self.fusion_type, **overrides)

    def inputs(self, modalities=None, batch_size=3, seed=0, padded=True):
        """Random inputs of `modalities` (default: all of the model's)."""
        return tiny_inputs(self.modalities if modalities is None else modalities, batch_size, seed=seed,
                           padded=padded)

    def loss_kwargs(self, batch_size):
        return {}

    # Each test class defines `check_shapes(output, modalities, batch_size)` and `per_sample(output)`:
    # a tensor whose i-th row depends on sample i only (for the batch-size and SDPA/eager checks).

    def row_kwargs(self, batch_size):
        """Arguments a forward always needs besides the inputs (decoder targets for the generation heads)."""
        return {}

    def model(self, seed=0, **overrides):
        torch.manual_seed(seed)
        return self.model_class(self.config(**overrides))

    def run(self, model, modalities=None, batch_size=3, seed=0, with_loss=True, padded=True):
        inputs = self.inputs(modalities, batch_size, seed=seed, padded=padded)
        if with_loss:
            inputs.update(self.loss_kwargs(batch_size))
        torch.manual_seed(1234)  # matching draws hard negatives at random
        return model(**inputs)

    # --- the common checks -------------------------------------------------------------------
    def test_forward_shapes_for_each_subset_of_modalities(self):
        model = self.model().eval()
        for modalities in subsets(self.min_modalities, self.modalities):
            with torch.no_grad():
                output = self.run(model, modalities, with_loss=False)
            self.check_shapes(output, modalities, 3)

    def test_output_is_a_model_output_with_loss_first(self):
        model = self.model()
        output = self.run(model)
        assert list(type(output).__dataclass_fields__)[0] == "loss"
        assert output.loss is not None and torch.isfinite(output.loss)

    def test_loss_backward_reaches_every_parameter_that_should_learn(self):
        """Every trainable parameter gets a gradient that is non-zero for a reason, not by rounding.

        The model and its inputs run in float64: a gradient that is zero in exact arithmetic (a dead
        parameter, such as a bias that cancels in a softmax) then stays below ~1e-15 of the loss's scale on
        every CPU, while one that the loss really depends on is many orders of magnitude above the bar.
        The random inputs have no ties, no all-padding rows and every modality present, so each parameter takes part
        in the loss: a head builds no part its loss does not use (DDP without `find_unused_parameters` needs that).
        """
        model = self.model().double()
        inputs = {k: v.double() if v.is_floating_point() else v
                  for k, v in self.inputs(batch_size=3, seed=0, padded=True).items()}
        inputs.update(self.loss_kwargs(3))
        torch.manual_seed(1234)
        model(**inputs).loss.backward()
        scale = max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
        dead = {
            name: 0.0 if p.grad is None else float(p.grad.abs().max())
            for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or float(p.grad.abs().max()) <= 1e-10 * scale)
        }
        assert not dead, f"no gradient (beyond float64 rounding, largest {scale:.3g}) reached {dead}"

    def test_save_and_load_bit_for_bit(self, tmp_path):
        model = self.model().eval()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        original_state, reloaded_state = model.state_dict(), reloaded.state_dict()
        assert original_state.keys() == reloaded_state.keys()
        for key in original_state:
            assert torch.equal(original_state[key], reloaded_state[key]), key
        with torch.no_grad():
            assert torch.equal(self.run(model).loss, self.run(reloaded).loss)

    def test_auto_class_resolves_the_saved_checkpoint(self, tmp_path):
        self.model().save_pretrained(tmp_path)
        loaded = self.auto_class.from_pretrained(tmp_path)
        assert type(loaded) is self.model_class

    def test_sdpa_and_eager_agree(self, tmp_path):
        model = self.model().eval()
        assert model.config._attn_implementation == "sdpa"
        model.save_pretrained(tmp_path)
        eager = self.model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
        assert eager.config.text_config._attn_implementation == "eager"
        with torch.no_grad():
            a, b = self.per_sample(self.run(model)), self.per_sample(self.run(eager))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        plain, checkpointed = self.model(seed=3), self.model(seed=3)
        checkpointed.activation_checkpointing_enable()
        assert checkpointed.is_activation_checkpointing
        assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.modules())
        for model in (plain, checkpointed):
            model.train()
            self.run(model).loss.backward()
        for (name, p), (_, q) in zip(plain.named_parameters(), checkpointed.named_parameters()):
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)

    def test_batch_sizes_one_and_seven_agree_row_by_row(self):
        model = self.model().eval()
        with torch.no_grad():
            seven = self.per_sample(self.run(model, batch_size=7, with_loss=False, padded=False))
            one = self.per_sample(self.run(model, batch_size=1, with_loss=False, padded=False))
        assert seven.shape[0] == 7 and one.shape[0] == 1
        # tiny_inputs draws row 0 first for the same seed only for the first modality; compare by recomputing row 0.
        first_row = {k: v[:1] for k, v in self.inputs(batch_size=7, padded=False).items()}
        first_row.update(self.row_kwargs(1))
        with torch.no_grad():
            alone = self.per_sample(model(**first_row))
        torch.testing.assert_close(alone, seven[:1], atol=1e-5, rtol=1e-5)

    def test_determinism_under_a_seed(self):
        first, second = self.model(seed=7), self.model(seed=7)
        for p, q in zip(first.parameters(), second.parameters()):
            assert torch.equal(p, q)
        assert torch.equal(self.run(first).loss, self.run(second).loss)


class XModalModelSpec(XModalModelTesterMixin):
    model_class = XModalModel
    auto_class = AutoModel
    min_modalities = 1

    def loss_kwargs(self, batch_size):
        return {"return_loss": True}

    def check_shapes(self, output, modalities, batch_size):
        for modality in self.modalities:
            embeds = getattr(output, f"{modality}_embeds")
            if modality in modalities:
                assert embeds.shape == (batch_size, 16)
                torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(batch_size))
            else:
                assert embeds is None
        for (a, b), (name, transposed_name) in PAIR_LOGITS.items():
            logits = getattr(output, name)
            assert (logits is not None) == (a in modalities and b in modalities), name
            if logits is not None:
                assert logits.shape == (batch_size, batch_size)
                assert torch.equal(getattr(output, transposed_name), logits.t())

    def per_sample(self, output):
        return torch.cat([getattr(output, f"{m}_embeds") for m in self.modalities], dim=-1)


class TestXModalModel(XModalModelSpec):

    def test_sigmoid_loss_has_a_learnable_bias(self):
        model = self.model(contrastive_loss="sigmoid")
        output = self.run(model)
        output.loss.backward()
        assert model.logit_bias.grad is not None
        assert float(model.logit_bias.detach()) == pytest.approx(-10.0)

    def test_get_features_match_the_forward_embeddings(self):
        model = self.model().eval()
        inputs = tiny_inputs()
        with torch.no_grad():
            output = model(**inputs)
            text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
            image = model.get_image_features(inputs["pixel_values"]).pooler_output
            audio = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).pooler_output
        for features, embeds in ((text, output.text_embeds), (image, output.image_embeds),
                                 (audio, output.audio_embeds)):
            torch.testing.assert_close(torch.nn.functional.normalize(features, dim=-1), embeds)

    def test_padding_does_not_change_a_sample(self):
        model = self.model().eval()
        inputs = tiny_inputs(("text", "audio"), batch_size=2, padded=False)
        padded_text = torch.cat([inputs["input_ids"], torch.zeros(2, 4, dtype=torch.long)], dim=1)
        padded_mask = torch.cat([inputs["attention_mask"], torch.zeros(2, 4, dtype=torch.long)], dim=1)
        padded_audio = torch.cat([inputs["input_features"], torch.randn(2, 16, 12)], dim=2)
        padded_audio_mask = torch.cat([inputs["feature_attention_mask"], torch.zeros(2, 12, dtype=torch.long)], dim=1)
        with torch.no_grad():
            plain = model(**inputs)
            padded = model(input_ids=padded_text, attention_mask=padded_mask, input_features=padded_audio,
                           feature_attention_mask=padded_audio_mask)
        torch.testing.assert_close(plain.text_embeds, padded.text_embeds, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain.audio_embeds, padded.audio_embeds, atol=1e-5, rtol=1e-5)


class XModalForMatchingSpec(XModalModelTesterMixin):
    model_class = XModalForMatching
    auto_class = AutoModelForNextSentencePrediction
    min_modalities = 2

    def loss_kwargs(self, batch_size):
        return {"return_loss": True}

    def check_shapes(self, output, modalities, batch_size):
        assert output.logits.shape == (batch_size, 2)
        assert output.pair_modalities == tuple(m for m in self.modalities if m in modalities)

    def per_sample(self, output):
        return output.logits


class TestXModalForMatching(XModalForMatchingSpec):

    def test_hard_negative_batch_has_one_positive_and_two_negatives_per_pair(self):
        output = self.run(self.model(), ("text", "image"), batch_size=4)
        assert output.logits.shape == (12, 2)
        assert output.labels.tolist() == [1] * 4 + [0] * 8

    def test_explicit_labels(self):
        model = self.model()
        inputs = tiny_inputs(("text", "image"))
        output = model(**inputs, labels=torch.tensor([1, 0, 1]))
        assert output.logits.shape == (3, 2) and torch.isfinite(output.loss)


class XModalForSequenceClassificationSpec(XModalModelTesterMixin):
    model_class = XModalForSequenceClassification
    auto_class = AutoModelForSequenceClassification

    def config(self, **overrides):
        return super().config(num_labels=4, **overrides)

    def loss_kwargs(self, batch_size):
        return {"labels": torch.arange(batch_size) % 4}

    def check_shapes(self, output, modalities, batch_size):
        assert output.logits.shape == (batch_size, 4)
        assert output.pooled_output.shape == (batch_size, 32)

    def per_sample(self, output):
        return output.logits


class TestXModalForSequenceClassification(XModalForSequenceClassificationSpec):

    def test_multi_label(self):
        model = self.model(problem_type="multi_label_classification")
        labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.float)
        output = model(**tiny_inputs(), labels=labels)
        assert torch.isfinite(output.loss)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, labels)
        torch.testing.assert_close(output.loss, expected)


class XModalForConditionalGenerationSpec(XModalModelTesterMixin):
    model_class = XModalForConditionalGeneration
    auto_class = AutoModelForSeq2SeqLM

    def loss_kwargs(self, batch_size):
        return {"labels": caption_labels(batch_size)}

    def row_kwargs(self, batch_size):
        return self.loss_kwargs(batch_size)  # the decoder always needs targets in a forward

    def run(self, model, modalities=None, batch_size=3, seed=0, with_loss=True, padded=True):
        inputs = self.inputs(modalities, batch_size, seed=seed, padded=padded)
        inputs.update(self.loss_kwargs(batch_size))
        return model(**inputs)

    def check_shapes(self, output, modalities, batch_size):
        assert output.logits.shape == (batch_size, 7, VOCAB)
        assert output.encoder_last_hidden_state.shape[0] == batch_size

    def per_sample(self, output):
        return output.logits.flatten(1)


class TestXModalForConditionalGeneration(XModalForConditionalGenerationSpec):

    def test_speech_seq2seq_auto_class(self, tmp_path):
        self.model().save_pretrained(tmp_path)
        assert type(AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path)) is XModalForConditionalGeneration

    def test_lm_head_is_tied_to_the_decoder_embeddings(self):
        model = self.model()
        assert model.lm_head.weight.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()

    @pytest.mark.parametrize("modalities", [("image",), ("audio",), ("text", "image")])
    def test_greedy_generate_equals_a_hand_written_argmax_loop(self, modalities):
        model = self.model().eval()
        inputs = tiny_inputs(modalities, batch_size=2)
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=6, do_sample=False, num_beams=1,
                                       eos_token_id=None, pad_token_id=0)
            tokens = torch.full((2, 1), model.config.decoder_config.decoder_start_token_id)
            for _ in range(6):
                logits = model(**inputs, decoder_input_ids=tokens, use_cache=False).logits
                tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(generated, tokens)

    def test_kv_cache_and_beam_search(self):
        model = self.model().eval()
        inputs = tiny_inputs(("audio",), batch_size=2)
        with torch.no_grad():
            cached = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=True, eos_token_id=None)
            uncached = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=False, eos_token_id=None)
            beams = model.generate(**inputs, max_new_tokens=8, num_beams=3, do_sample=False)
        assert torch.equal(cached, uncached)
        assert beams.shape[0] == 2 and beams.shape[1] <= 9

    def test_generate_accepts_a_single_positional_modality(self):
        model = self.model().eval()
        inputs = tiny_inputs(("audio",), batch_size=2)
        with torch.no_grad():
            by_name = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            by_rank = model.generate(inputs["input_features"], attention_mask=inputs["feature_attention_mask"],
                                     max_new_tokens=4, do_sample=False)
        assert torch.equal(by_name, by_rank)


class XModalForPreTrainingSpec(XModalModelTesterMixin):
    model_class = XModalForPreTraining
    auto_class = AutoModelForPreTraining
    min_modalities = 2

    def loss_kwargs(self, batch_size):
        return {"labels": caption_labels(batch_size)}

    def row_kwargs(self, batch_size):
        return self.loss_kwargs(batch_size)

    def run(self, model, modalities=None, batch_size=3, seed=0, with_loss=True, padded=True):
        inputs = self.inputs(modalities, batch_size, seed=seed, padded=padded)
        inputs.update(self.loss_kwargs(batch_size))
        torch.manual_seed(1234)
        return model(**inputs)

    def check_shapes(self, output, modalities, batch_size):
        assert output.contrastive_loss is not None and output.matching_loss is not None
        assert (output.caption_loss is not None) == ("image" in modalities)
        assert (output.transcription_loss is not None) == ("audio" in modalities)
        if output.caption_logits is not None:
            assert output.caption_logits.shape == (batch_size, 7, VOCAB)

    def per_sample(self, output):
        return torch.cat([output.caption_logits.flatten(1), output.transcription_logits.flatten(1)], dim=1)


class TestXModalForPreTraining(XModalForPreTrainingSpec):
    def test_total_is_the_weighted_sum_of_the_named_parts(self):
        weights = {"contrastive": 0.5, "matching": 2.0, "caption": 1.5, "transcription": 0.25}
        output = self.run(self.model(loss_weights=weights))
        expected = sum(weights[k] * getattr(output, f"{k}_loss") for k in weights)
        torch.testing.assert_close(output.loss, expected)

    def negatives(self, inputs, rows):
        """False captions for `rows`: each row's own caption reversed (a reordering, as a swap is)."""
        ids, mask = inputs["input_ids"][rows].flip(1), inputs["attention_mask"][rows].flip(1)
        return {"negative_input_ids": ids, "negative_attention_mask": mask, "negative_rows": torch.tensor(rows)}

    def test_false_captions_add_the_negative_caption_part_and_matching_negatives(self):
        model = self.model().eval()
        inputs = {**self.inputs(), **self.loss_kwargs(3)}
        with torch.no_grad():
            plain = model(**inputs)
            output = model(**inputs, **self.negatives(inputs, [0, 2]))
        assert plain.negative_caption_loss is None
        # image-text and audio-text each score the two false captions beside their 3 positives and 6 negatives
        assert plain.matching_logits.shape == (2 * 3 + 2 * 6, 2)
        assert output.matching_logits.shape == (2 * 3 + 2 * 6 + 2 * 2, 2)
        torch.testing.assert_close(output.matching_logits[:-4], plain.matching_logits)
        weights = model.config.loss_weights
        torch.testing.assert_close(output.loss - plain.loss, weights["negative_caption"] * output.negative_caption_loss
                                   + weights["matching"] * (output.matching_loss - plain.matching_loss))
        # by hand: each image and clip of rows 0, 2 against its caption and its false one, a two-way cross-entropy
        negatives = self.negatives(inputs, [0, 2])
        embeds = model.xmodal.get_embeddings(**inputs)
        false = model.xmodal.get_embeddings(input_ids=negatives["negative_input_ids"],
                                            attention_mask=negatives["negative_attention_mask"])["text"]
        expected = []
        for modality in ("image", "audio"):
            true_score = (embeds[modality][[0, 2]] * embeds["text"][[0, 2]]).sum(-1)
            false_score = (embeds[modality][[0, 2]] * false).sum(-1)
            logits = model.xmodal.logit_scale.exp() * torch.stack([true_score, false_score], 1)
            expected.append(torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long)))
        torch.testing.assert_close(output.negative_caption_loss, torch.stack(expected).mean())

    def test_a_false_caption_equal_to_the_true_one_costs_log_2(self):
        model = self.model().eval()
        inputs = {**self.inputs(), **self.loss_kwargs(3)}
        with torch.no_grad():
            output = model(**inputs, negative_input_ids=inputs["input_ids"],
                           negative_attention_mask=inputs["attention_mask"])
        torch.testing.assert_close(output.negative_caption_loss, torch.log(torch.tensor(2.0)))

    def test_no_false_caption_rows_is_no_negative_caption_part(self):
        model = self.model().eval()
        inputs = {**self.inputs(), **self.loss_kwargs(3)}
        with torch.no_grad():
            output = model(**inputs, **self.negatives(inputs, []))
            plain = model(**inputs)
        assert output.negative_caption_loss is None
        torch.testing.assert_close(output.loss, plain.loss)

    def test_false_captions_gradients_reach_the_text_tower(self):
        model = self.model()
        inputs = {**self.inputs(), **self.loss_kwargs(3)}
        model(**inputs, **self.negatives(inputs, [1])).negative_caption_loss.backward()
        assert model.xmodal.get_input_embeddings().weight.grad.abs().sum() > 0

    @pytest.mark.parametrize("given, message", [
        ({"negative_rows": torch.tensor([[0]])}, "`negative_rows` should have shape (1,)"),
        ({"negative_rows": torch.tensor([3])}, "`negative_rows` should index the batch of 3; got values 3..3"),
        ({}, "`negative_input_ids` has 1 rows for a batch of 3"),
    ])
    def test_bad_false_captions_are_named(self, given, message):
        inputs = {**self.inputs(), **self.loss_kwargs(3)}
        negatives = {"negative_input_ids": inputs["input_ids"][:1], "negative_attention_mask": inputs["attention_mask"][:1],
                     **given}
        with pytest.raises(ValueError, match=re.escape(message)):
            self.model()(**inputs, **negatives)

    def test_false_captions_need_text_and_another_modality(self):
        inputs = {**self.inputs(("image",)), **self.loss_kwargs(3)}
        with pytest.raises(ValueError, match="`negative_input_ids` are false captions of the batch's own"):
            self.model()(**inputs, negative_input_ids=torch.ones(3, 4, dtype=torch.long))


    def test_caption_hashes_take_the_samples_that_match_out_of_the_negatives(self):
        model = self.model().eval()
        inputs = {**self.inputs(), **self.loss_kwargs(3)}
        distinct = {"caption_hashes": torch.tensor([1, 2, 3]), "true_caption_hashes": torch.tensor([[1], [2], [3]])}
        shared = {"caption_hashes": torch.tensor([1, 2, 3]),
                  "true_caption_hashes": torch.tensor([[1, -1], [2, 1], [3, -1]])}
        with torch.no_grad():
            plain, unrelated, masked = model(**inputs), model(**inputs, **distinct), model(**inputs, **shared)
        torch.testing.assert_close(unrelated.loss, plain.loss)
        # caption 0 is true of scene 1: fewer negatives in its rows and columns, so a lower contrastive loss
        assert masked.contrastive_loss < plain.contrastive_loss

    @pytest.mark.parametrize("given, message", [
        ({"caption_hashes": torch.tensor([1, 2, 3])}, "`caption_hashes` and `true_caption_hashes` go together"),
        ({"caption_hashes": torch.tensor([1.0, 2.0, 3.0]), "true_caption_hashes": torch.ones(3, 1)},
         "`caption_hashes` should be integers shaped (batch,)"),
        ({"caption_hashes": torch.tensor([1, 2]), "true_caption_hashes": torch.ones(2, 1, dtype=torch.long)},
         "`caption_hashes` has 2 rows for a batch of 3"),
    ])
    def test_bad_caption_hashes_are_named(self, given, message):
        with pytest.raises(ValueError, match=re.escape(message)):
            self.model()(**self.inputs(), **self.loss_kwargs(3), **given)


class TestGatedFusionModels(TestXModalForSequenceClassification):
    fusion_type = "gated"


class TestConcatFusionModels(TestXModalForMatching):
    fusion_type = "concat"


class TestConcatFusionGeneration(TestXModalForConditionalGeneration):
    fusion_type = "concat"
