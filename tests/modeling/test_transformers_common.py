"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) run against every XModal head.

The test files come from the sdist of the installed transformers, which pip fetches at test time into a cache
outside the repository (`$XMODAL_TEST_CACHE`, default ~/.cache/xmodal-tests). Without it the module is skipped,
saying why.
"""

import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

import pytest
import torch
import transformers

from xmodal import (
    XModalAudioConfig,
    XModalConfig,
    XModalDecoderConfig,
    XModalForConditionalGeneration,
    XModalForMatching,
    XModalForPreTraining,
    XModalForSequenceClassification,
    XModalModel,
    XModalTextConfig,
    XModalVideoConfig,
    XModalVisionConfig,
)
from xmodal.modalities import MODALITY_NAMES
from xmodal.modeling_xmodal import shift_tokens_right

from .test_conventions import ALL_CLASSES, DECODER_HEADS
from .tiny import caption_labels, tiny_config, tiny_inputs, tiny_video_inputs

# The sdist ships only the top level of transformers' tests/; the two files import three modules from its
# subfolders, which it leaves out. They are stood in for: the export and generation mixins by empty classes (their
# tests cannot run; test_conventions.py checks `torch.export` and `generate`), and the common config kwargs by an
# empty dict (which turns `ConfigTester.check_config_arguments_init` into a no-op for the tower configs).
FILES = ("test_modeling_common.py", "test_configuration_common.py")
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": "config_common_kwargs = {}\n",
}
PACKAGE = "transformers_common_tests"


def pip_download(*args, into):
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise OSError(f"`{' '.join(command[2:])}` failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return next(Path(into).iterdir())


def fetch_common_tests():
    """The folder to put on sys.path: the package of the sdist's common test files (and `parameterized`, which
    they import, as a wheel when it is not installed)."""
    version = transformers.__version__
    cache = Path(os.environ.get("XMODAL_TEST_CACHE", Path.home() / ".cache" / "xmodal-tests"))
    cache = cache / f"transformers-{version}"
    package = cache / PACKAGE
    cache.mkdir(parents=True, exist_ok=True)
    if not (package / FILES[0]).is_file():
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            sdist = pip_download(f"transformers=={version}", "--no-binary", ":all:", into=Path(scratch) / "sdist")
            staging = Path(scratch) / PACKAGE
            with tarfile.open(sdist) as archive:
                for name in FILES:
                    member = archive.getmember(f"transformers-{version}/tests/{name}")
                    member.name = name
                    archive.extract(member, staging, filter="data")
            for name, text in {"__init__.py": "", **STAND_INS}.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_text(text)
                (staging / name).with_name("__init__.py").touch()
            try:
                staging.rename(package)  # whole or not at all, should a run stop half-way
            except OSError:
                if not (package / FILES[0]).is_file():  # else another run got there first
                    raise
    paths = [str(cache)]
    if importlib.util.find_spec("parameterized") is None:
        wheels = sorted((cache / "wheels").glob("parameterized-*.whl"))
        paths.append(str(wheels[-1] if wheels else pip_download("parameterized", "--only-binary", ":all:",
                                                                  into=cache / "wheels")))
    return paths


try:
    sys.path[:0] = fetch_common_tests()
except (OSError, subprocess.SubprocessError, KeyError, tarfile.TarError) as error:
    pytest.skip(f"transformers' common tests could not be fetched from the sdist of transformers=="
                f"{transformers.__version__}: {error}", allow_module_level=True)

from parameterized import parameterized  # noqa: E402
from transformers_common_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_common_tests.test_modeling_common import (  # noqa: E402
    TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION,
    ModelTesterMixin,
)

BATCH = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and then lose little to other work on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class XModalModelTester:
    """What `ModelTesterMixin` reads of a model tester: the tiny config, inputs of every modality, sizes."""

    def __init__(self, parent, model_class):
        self.parent, self.model_class = parent, model_class
        self.batch_size, self.seq_length, self.is_training = BATCH, 9, True
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 32, 2, 2

    def get_config(self):
        extra = {"num_labels": 4} if self.model_class is XModalForSequenceClassification else {}
        # A decoder head's checkpoint says it is an encoder-decoder (the model sets it when built).
        return tiny_config(is_encoder_decoder=self.model_class in DECODER_HEADS, **extra)

    def prepare_config_and_inputs_for_common(self):
        inputs = tiny_inputs(batch_size=self.batch_size)
        if self.model_class is XModalForConditionalGeneration:
            inputs["decoder_input_ids"] = shift_tokens_right(caption_labels(self.batch_size), 0, 1)
        elif self.model_class is XModalForPreTraining:
            inputs["labels"] = caption_labels(self.batch_size)  # as BLIP's tester
        elif self.model_class is XModalModel:
            inputs["return_loss"] = True  # as CLIP's tester
        return self.get_config(), inputs


class XModalCommonTests(ModelTesterMixin):
    model_class = None
    _is_composite = True
    additional_model_inputs = ["pixel_values", "input_features", "feature_attention_mask"]

    @property
    def all_model_classes(self):
        return (self.model_class,)

    def setUp(self):
        self.model_tester = XModalModelTester(self, self.model_class)
        self.is_encoder_decoder = self.model_class in DECODER_HEADS

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels and model_class in (XModalForMatching, XModalForSequenceClassification):
            inputs["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        elif return_labels and model_class in DECODER_HEADS:
            inputs["labels"] = caption_labels(self.model_tester.batch_size)
        return inputs

    def _video_features_prepare_config_and_inputs(self):
        """`get_video_features` needs a model with a video tower, which the tiny config of the other tests leaves out
        (the library's fallback would pass it the images renamed): the four-modality tiny config and clips."""
        return tiny_config(MODALITY_NAMES), tiny_video_inputs(batch_size=BATCH)

    def test_config(self):
        ConfigTester(self, config_class=XModalConfig, has_text_modality=False,
                     common_properties=["projection_dim", "logit_scale_init_value"]).run_common_tests()

    def test_sdpa_can_dispatch_composite_models(self):
        """As CLIP's override: every tower follows the implementation asked for at load time."""
        model = self.model_class(self.model_tester.get_config())
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            for asked, expected in ((None, "sdpa"), ("eager", "eager")):
                loaded = self.model_class.from_pretrained(folder, attn_implementation=asked)
                assert loaded.config._attn_implementation == expected
                attention = [m for m in loaded.modules() if type(m).__name__ == "XModalAttention"]
                assert attention and all(m.config._attn_implementation == expected for m in attention)

    # Skipped as CLIP's and BLIP's own tests skip them: the towers' outputs sit in `<tower>_model_output`, and are
    # checked tower by tower for every head in test_conventions.py.
    @unittest.skip(reason="Hidden_states is tested in individual model tests")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="Attentions are tested in individual model tests")
    def test_attention_outputs(self):
        pass

    @unittest.skip(reason="Retain_grad is tested in individual model tests")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    # As CLIP's tests, but marked with this repository's `slow` (they still run in CI) rather than transformers'
    # (which skips them unless RUN_SLOW is set): 25 cases, each saving and loading the model twice.
    @parameterized.expand(TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    @pytest.mark.slow
    def test_eager_matches_sdpa_inference(self, *args):
        if self.model_class in (XModalForMatching, XModalForPreTraining):
            # Not a CLIP or BLIP skip: the test compares `hidden_states`, `decoder_hidden_states`, `logits_per_text`
            # or the `logits` of a class named *Classification*, and these two heads return none of them. Their
            # attention layers are those of the three heads it runs on.
            self.skipTest(reason="the head returns none of the outputs the test compares")
        return getattr(ModelTesterMixin, self._testMethodName)(self)

    def test_bc_torch_dtype(self):
        if self.model_class in (XModalForMatching, XModalForConditionalGeneration, XModalForSequenceClassification):
            # Not a CLIP or BLIP skip: ~10 s a head of saving and loading in five dtypes. Loading in a dtype is
            # PreTrainedModel's, and XModalForPreTraining holds every part these heads have (towers, fusion,
            # matching head, decoder) bar the classifier's one linear layer: it and the base model run it.
            self.skipTest(reason="dtype loading is checked on XModalForPreTraining, which holds this head's parts")
        getattr(ModelTesterMixin, self._testMethodName)(self)

    def test_generation_tester_mixin_inheritance(self):
        if self.all_generative_model_classes:
            # Not a CLIP or BLIP skip: the sdist has no tests/generation/, so `GenerationTesterMixin`'s tests cannot
            # run here; the generation head's `generate` is tested in test_modeling_xmodal.py and test_conventions.py.
            self.skipTest(reason="GenerationTesterMixin is not in the transformers sdist")
        super().test_generation_tester_mixin_inheritance()


# One test case per head, as transformers has one per model class: TestXModalModelCommon, TestXModalForMatchingCommon...
for _model_class in ALL_CLASSES:
    _name = f"Test{_model_class.__name__}Common"
    globals()[_name] = type(_name, (XModalCommonTests, unittest.TestCase), {"model_class": _model_class})


class TestXModalTowerConfigs(unittest.TestCase):
    def test_tower_configs(self):
        for config_class in (XModalTextConfig, XModalVisionConfig, XModalAudioConfig, XModalVideoConfig,
                             XModalDecoderConfig):
            reads_tokens = "vocab_size" in config_class.__annotations__
            ConfigTester(self, config_class=config_class, has_text_modality=reads_tokens, hidden_size=36,
                         num_attention_heads=2).run_common_tests()
