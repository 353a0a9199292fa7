"""The training configuration: typed dataclasses read from YAML, checked at once, nothing loaded.

A config file has six sections (`data`, `model`, `towers`, `training`, `evaluation`, `lora`) and a `task`.
Every key is checked when the file is read, before any data is built: an unknown one is an error that
names the valid keys of its section (so a typo never silently falls back to a default), and every value
is checked against its field's type and range. `model` holds `XModalConfig` arguments and is checked by
building that config (its fields, each tower's, the fusion and loss names). Reading a config never
loads, converts or downloads a model: pretrained towers are resolved when a run starts
(`xmodal.trainers.pretrained.compose.resolve_towers`).
"""

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from xmodal.modalities import BASE_MODALITY_NAMES, PARTS, TARGET_INPUTS, TOWER_PARTS

# task -> (model class name in `xmodal`, what `labels` means for it)
TASKS = {
    "pretraining": ("XModalForPreTraining", "target"),
    "contrastive": ("XModalModel", None),
    "matching": ("XModalForMatching", "column"),
    "classification": ("XModalForSequenceClassification", "column"),
    "generation": ("XModalForConditionalGeneration", "target"),
    # Clips with their caption, events and soundtrack (`xmodal.trainers.data.video_encoding`): text <-> video,
    # image -> moment, sentence -> moment and audio-video sync.
    "video": ("XModalForVideoPreTraining", None),
}
DATASETS = ("scenes", "digits", "video_scenes")  # built in
VIDEO_DATASETS = ("video_scenes",)  # the built-in data that task: video reads (and only it)
# What a column means to a run (`data.columns`): the modalities, the class label, the decoder target. The other
# tasks read text, images and speech; task: video reads whole clips (`video_encoding.VIDEO_COLUMNS`).
DATA_MODALITIES = BASE_MODALITY_NAMES
COLUMN_ROLES = (*DATA_MODALITIES, "label", "target")
COLUMN_DEFAULTS = {"text": "caption", "image": "image", "audio": "audio", "label": None}  # target: the text column
SPLIT_ROLES = ("train", "validation", "test")
ON_ERROR = ("skip", "raise")
PRECISIONS = ("auto", "bf16", "fp16", "no")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")  # torch's AdamW, by the names of transformers' `optim`


class ConfigError(ValueError):
    """A config file that cannot be used as written."""


@dataclass
class DataConfig:
    """Which data, where it lives, and how it becomes model inputs (sources: `xmodal.trainers.data.sources`).

    Built in: `name: scenes | digits`, built into `path` when missing. Your own: `name: null` and `path` (a
    `save_to_disk` folder, or the `data_dir` of `builder`), `builder` (`imagefolder`, `audiofolder`, `csv`,
    `json`, `parquet`, `webdataset`, or a Hub dataset id) and/or `data_files`.
    """

    name: str | None = "scenes"  # scenes | digits, or null for your own data
    path: str | None = "data_cache/scenes"
    builder: str | None = None  # a `datasets.load_dataset` builder or Hub id, for your own data
    data_files: str | list | dict | None = None  # `load_dataset(..., data_files=...)`, e.g. {train: train.csv}
    columns: dict = field(default_factory=dict)  # role (COLUMN_ROLES) -> column; see `column`
    splits: dict = field(default_factory=dict)  # train / validation / test -> the dataset's split names
    on_error: str = "skip"  # a row that cannot be used: skip (and count it) | raise
    streaming: bool = False  # read, decode and encode rows on the fly (memory flat in the dataset's size)
    num_workers: int = 0  # DataLoader worker processes decoding a stream
    shuffle_buffer: int = 1000  # rows a stream is shuffled within
    build: bool = True
    build_args: dict = field(default_factory=dict)  # keyword arguments of build_scene_dataset / build_digits_dataset
    modalities: list = field(default_factory=lambda: list(DATA_MODALITIES))
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_text_length: int = 32
    max_target_length: int = 32
    # Also encode one false variant of each two-object caption (`trainers.composition.false_caption`): the
    # pre-training head's `negative_caption` loss and one more matching negative per sample (NegCLIP's recipe).
    negative_captions: bool = False
    # Give the model each sample's caption hashes (`encoding.add_caption_hashes`), so that other samples of the batch
    # that the caption is true of ("a zebra": every scene of one zebra) are not contrastive or matching negatives.
    mask_false_negatives: bool = False
    max_audio_seconds: float = 8.0
    audio_hop_length: int = 160  # samples between log-mel frames (160 = 10 ms at 16 kHz)
    tokenizer: str = "train"  # "train" (on the training captions), "default" (built-in), or a folder
    tokenizer_vocab_size: int = 1024
    video_fps: float = 4.0  # frames per second the video processor samples (task: video)
    max_events: int = 5  # event sentences per clip that grounding trains and measures (task: video)

    def column(self, role):
        """The column holding `role`: `columns[role]`, else the default (`text`: caption, `image`: image,
        `audio`: audio, `label`: none); the `target` (decoder text) defaults to the text column."""
        if role in self.columns:
            return self.columns[role]
        return self.column("text") if role == "target" else COLUMN_DEFAULTS[role]

    def resolved_columns(self):
        return {role: self.column(role) for role in COLUMN_ROLES}


# Parts with a learning rate of their own: a tower's projection goes with its tower.
LEARNING_RATE_PARTS = tuple(part for part in PARTS if part != "projections")


@dataclass
class TrainingConfig:
    """The optimisation loop. `batch_size` is global: it is split over the processes."""

    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000
    # A time budget: stop when it is spent, and run the schedule by steps or time, whichever is further along
    # (so warmup and decay still complete). A run with a budget does not resume bit for bit.
    max_minutes: float | None = None
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    min_learning_rate_ratio: float = 0.0
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp16 | no
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: no intermediate training state
    save_total_limit: int = 2
    # Light steps: of every `full_step_every` optimizer steps, the first sees the whole batch and the others
    # leave out `light_step_drop` (modalities and/or "labels"), e.g. the speech, whose pretrained encoder is
    # most of a step's time, so that the cheap pairs see many more samples in the same minutes.
    full_step_every: int = 1
    light_step_drop: list = field(default_factory=lambda: ["audio"])
    # {part: factor} on the learning rate, parts from LEARNING_RATE_PARTS (a tower's factor covers its
    # projection), e.g. {audio: 3} for a tower that only the full steps train.
    learning_rate_scales: dict = field(default_factory=dict)
    num_processes: int = 1  # processes `xmodal train` starts (GPUs, or CPU processes joined by gloo)
    num_threads: int | None = None  # per process; None = cores / processes
    attn_implementation: str = "eager"
    # Speed (issue 18; benchmarks/README.md): the AdamW kernel (OPTIMIZERS; fused by default, as transformers'
    # `optim`), batches of similar lengths (less padding: each epoch's shuffled order is sorted by length within
    # windows of 50 batches, as transformers' `group_by_length`), and `torch.compile` of the model (through
    # Accelerate's dynamo plugin, static sizes: below).
    optimizer: str = "adamw_torch_fused"
    group_by_length: bool = False
    compile: bool = False
    # Under `compile`, sizes are static: captions pad to data.max_text_length, labels to max_target_length, and speech
    # up to a multiple of this many frames (length buckets: one compilation per bucket). 0: no speech buckets.
    compile_audio_bucket: int = 64
    pretrained: str | None = None  # start from a saved checkpoint folder instead of random weights
    report_to: list = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True
    # After training, upload <output_dir>/model to the Hub (as `xmodal push`): to `hub_model_id`, by default
    # the output folder's name. Names as in transformers' TrainingArguments.
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False


@dataclass
class EvaluationConfig:
    """The evaluation after training (and `xmodal eval`)."""

    split: str | None = "test"  # None: no evaluation after training
    extra_splits: list = field(default_factory=list)  # e.g. [test_novel]
    batch_size: int = 256
    max_samples: int | None = None
    recall_at: list = field(default_factory=lambda: [1, 5, 10])
    generation_samples: int | None = 500  # generated captions/transcripts scored for CER/WER
    max_new_tokens: int = 24
    num_beams: int = 1
    matching_negatives_seed: int = 0


@dataclass
class LoraSettings:
    """PEFT LoRA adapters; see `xmodal.trainers.lora.LORA_TARGET_MODULES` for the modules per part."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    parts: list = field(default_factory=lambda: list(DATA_MODALITIES))
    modules: list | None = None  # default: every attention and MLP projection of the parts
    modules_to_save: list | None = None  # default: the task head


TOWER_TRAIN_MODES = ("full", "lora", "frozen")
TOWER_KEYS = {"from": None, "train": "full", "window_seconds": None}


@dataclass
class TowersConfig:
    """Where each tower starts and how it trains: `{from: SOURCE, train: full | lora | frozen, window_seconds: N}`.

    `from` is a model folder or a named offline source (`minilm`, `whisper-tiny.en`; see
    `xmodal.trainers.pretrained.sources.NAMED_SOURCES`); without it the tower is built from
    `model.<part>_config`. `window_seconds` shortens a Whisper encoder's 30-second window. Parts left out
    train in full. When a run starts, each pretrained tower's config replaces `model.<part>_config` (so the
    processor and the model read the same towers), and `train: lora` adds the part to `lora.parts` and turns
    LoRA on. Projections, fusion and heads always train in full.
    """

    text: dict | None = None
    image: dict | None = None
    audio: dict | None = None
    decoder: dict | None = None

    def parts(self):
        """{part: settings with every key filled in} for the parts that are set."""
        return {part: {**TOWER_KEYS, **getattr(self, part)} for part in TOWER_PARTS if getattr(self, part)}


@dataclass
class RunConfig:
    """A whole run: `task` picks the model head (see `TASKS`)."""

    task: str = "pretraining"
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=dict)
    towers: TowersConfig = field(default_factory=TowersConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)

    def to_dict(self):
        return dataclasses.asdict(self)


def _unknown_key_error(where, key, valid):
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"Unknown key {where}{key!r}.{hint} Valid keys: {', '.join(sorted(valid))}.")


TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
              dict: "a mapping", type(None): "null"}


def _allowed_types(annotation):
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _checked_value(value, annotation, where):
    """`value` if it has the field's type; a number that YAML read as a string (`1e-3`) becomes a float.
    Booleans are not integers here: `batch_size: true` is an error, not a batch of 1."""
    allowed = _allowed_types(annotation)
    for kind in allowed:
        if kind is type(None) and value is None:
            return value
        if kind in (int, float) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, float):
            return value
        if kind in (str, bool, list, dict) and isinstance(value, kind):
            return value
    if float in allowed and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    expected = " or ".join(TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind))) for kind in allowed)
    got = TYPE_NAMES.get(type(value), type(value).__name__)
    raise ConfigError(f"{where}={value!r}: expected {expected}, got {got}.")


def _from_dict(cls, values, where=""):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"Section {where.rstrip('.') or 'top level'} must be a mapping, got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key_error(where, key, list(fields))
        nested = fields[key].default_factory if fields[key].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            value = _from_dict(nested, value, f"{where}{key}.")
        else:
            value = _checked_value(value, fields[key].type, f"{where}{key}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_model_section(model):
    """Checks `model` keys against `XModalConfig` and its tower configs (which accept unknown keys silently),
    then builds the config, which checks the values (types, fusion and loss names, shapes): cheap, no weights."""
    from xmodal.configuration_xmodal import TOWER_CONFIG_CLASSES, XModalConfig

    top = [f.name for f in dataclasses.fields(XModalConfig)] + ["num_labels"]
    for key, value in model.items():
        if key not in top:
            raise _unknown_key_error("model.", key, top)
        if key in TOWER_CONFIG_CLASSES and isinstance(value, dict) and "model_type" not in value:
            valid = [f.name for f in dataclasses.fields(TOWER_CONFIG_CLASSES[key])]
            for sub_key in value:
                if sub_key not in valid:
                    raise _unknown_key_error(f"model.{key}.", sub_key, valid)
    own = {key: value for key, value in model.items()
           if not (key in TOWER_CONFIG_CLASSES and isinstance(value, dict) and "model_type" in value)}
    try:
        XModalConfig(**own)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {str(error).splitlines()[0]}") from None


def validate(config: RunConfig):
    """Checks values that the dataclasses' types do not; raises `ConfigError` naming the field."""
    if config.task not in TASKS:
        raise ConfigError(f"task={config.task!r} is not supported; choose one of {sorted(TASKS)}.")
    data, training = config.data, config.training
    if data.name is not None and data.name not in DATASETS:
        raise ConfigError(f"data.name={data.name!r} is not built in; choose one of {list(DATASETS)}, or set "
                          "data.name: null and data.path / data.builder for your own data.")
    if data.name is None and not (data.path or data.builder or data.data_files):
        raise ConfigError("data.name: null (your own data) needs data.path (a save_to_disk folder or a data "
                          "folder), data.builder or data.data_files.")
    if set(data.columns) - set(COLUMN_ROLES) or any(v is not None and not isinstance(v, str)
                                                    for v in data.columns.values()):
        raise ConfigError(f"data.columns={data.columns!r}: a mapping from roles {list(COLUMN_ROLES)} to "
                          "column names, e.g. {text: sentence, image: img}.")
    if set(data.splits) - set(SPLIT_ROLES) or any(v is not None and not isinstance(v, str)
                                                  for v in data.splits.values()):
        raise ConfigError(f"data.splits={data.splits!r}: a mapping from {list(SPLIT_ROLES)} to the dataset's "
                          "split names (null: none), e.g. {validation: dev}.")
    if data.on_error not in ON_ERROR:
        raise ConfigError(f"data.on_error={data.on_error!r}; choose one of {list(ON_ERROR)}.")
    if data.num_workers < 0 or data.shuffle_buffer < 1:
        raise ConfigError(f"data.num_workers={data.num_workers} must be >= 0 and data.shuffle_buffer="
                          f"{data.shuffle_buffer} >= 1.")
    unknown = set(data.modalities) - set(DATA_MODALITIES)
    if unknown or not data.modalities:
        raise ConfigError(f"data.modalities={data.modalities!r}: choose a non-empty subset of {list(DATA_MODALITIES)}.")
    if training.mixed_precision not in PRECISIONS:
        raise ConfigError(f"training.mixed_precision={training.mixed_precision!r}; choose one of {list(PRECISIONS)}.")
    if training.optimizer not in OPTIMIZERS:
        raise ConfigError(f"training.optimizer={training.optimizer!r}; choose one of {list(OPTIMIZERS)}.")
    for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every", "num_processes",
                 "full_step_every"):
        if not isinstance(getattr(training, name), int) or getattr(training, name) <= 0:
            raise ConfigError(f"training.{name}={getattr(training, name)!r} must be a positive integer.")
    for name in ("eval_every", "save_every", "warmup_steps", "compile_audio_bucket"):
        if not isinstance(getattr(training, name), int) or getattr(training, name) < 0:
            raise ConfigError(f"training.{name}={getattr(training, name)!r} must be an integer >= 0.")
    if not isinstance(training.learning_rate, (int, float)) or training.learning_rate <= 0:
        raise ConfigError(f"training.learning_rate={training.learning_rate!r} must be a positive number.")
    if training.max_minutes is not None and (isinstance(training.max_minutes, bool) or not isinstance(
            training.max_minutes, (int, float)) or training.max_minutes <= 0):
        raise ConfigError(f"training.max_minutes={training.max_minutes!r} must be a positive number of minutes "
                          "(or null for no time budget).")
    droppable = [*DATA_MODALITIES, *TARGET_INPUTS]
    if not isinstance(training.light_step_drop, list) or set(training.light_step_drop) - set(droppable):
        raise ConfigError(f"training.light_step_drop={training.light_step_drop!r}: choose a list from {droppable}.")
    if training.full_step_every > 1 and not training.light_step_drop:
        raise ConfigError(f"training.full_step_every={training.full_step_every} needs training.light_step_drop: "
                          "the inputs that the light steps leave out.")
    scales = training.learning_rate_scales
    if not isinstance(scales, dict) or set(scales) - set(LEARNING_RATE_PARTS) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in scales.values()):
        raise ConfigError(f"training.learning_rate_scales={scales!r}: a mapping from parts "
                          f"{list(LEARNING_RATE_PARTS)} to positive factors, e.g. {{audio: 3.0}}.")
    if (config.task == "video") != (data.name in VIDEO_DATASETS) and data.name is not None:
        raise ConfigError(f"task={config.task!r} with data.name={data.name!r}: the built-in videos "
                          f"({list(VIDEO_DATASETS)}) go with task: video, and task: video reads clips (data.name: "
                          f"{VIDEO_DATASETS[0]}, or your own data with the same columns).")
    if config.task == "video" and not config.training.pretrained and not (config.model or {}).get("video_config"):
        raise ConfigError("task: video needs a video tower: set model.video_config (and model.share_vision_tower: "
                          "true to encode frames with the vision tower).")
    if config.task == "video" and data.streaming:
        raise ConfigError("task: video encodes its clips once and caches them; data.streaming: true is not supported "
                          "for it (set data.streaming: false).")
    if isinstance(data.video_fps, bool) or not isinstance(data.video_fps, (int, float)) or data.video_fps <= 0 or \
            not isinstance(data.max_events, int) or data.max_events < 1:
        raise ConfigError(f"data.video_fps={data.video_fps!r} must be a positive number and data.max_events="
                          f"{data.max_events!r} a positive integer.")
    if data.negative_captions is not False and (data.negative_captions is not True or config.task != "pretraining"
                                                or "text" not in data.modalities):
        raise ConfigError(f"data.negative_captions={data.negative_captions!r}: true or false; the false captions train "
                          "task: pretraining (its negative_caption loss), with text among data.modalities.")
    if TASKS[config.task][1] == "column" and not data.column("label"):
        raise ConfigError(f"task={config.task!r} needs data.columns.label (the column holding `labels`).")
    _check_model_section(config.model)
    _check_towers_section(config)


def _check_towers_section(config):
    """Checks `towers` (keys, training modes, which parts may come from a folder)."""
    for part in TOWER_PARTS:
        settings = getattr(config.towers, part)
        if settings is None:
            continue
        if not isinstance(settings, dict):
            raise ConfigError(f"towers.{part} must be a mapping like {{from: minilm, train: lora}}, got {settings!r}.")
        for key in settings:
            if key not in TOWER_KEYS:
                raise _unknown_key_error(f"towers.{part}.", key, list(TOWER_KEYS))
    for part, settings in config.towers.parts().items():
        if settings["train"] not in TOWER_TRAIN_MODES:
            raise ConfigError(f"towers.{part}.train={settings['train']!r}; choose one of {list(TOWER_TRAIN_MODES)}.")
        if settings["from"] is not None and not isinstance(settings["from"], str):
            raise ConfigError(f"towers.{part}.from={settings['from']!r} must be a folder or a named source.")
        seconds = settings["window_seconds"]
        if seconds is not None and (part != "audio" or isinstance(seconds, bool) or not isinstance(seconds, int)
                                    or seconds < 1):
            raise ConfigError(f"towers.{part}.window_seconds={seconds!r}: only the audio tower has a window, in "
                              "whole seconds >= 1.")
        if part == "decoder" and TASKS[config.task][1] != "target":
            raise ConfigError(f"towers.decoder is set but task={config.task!r} has no decoder; use pretraining or "
                              "generation.")


def load_config(path, overrides=None) -> RunConfig:
    """Reads a YAML file into a `RunConfig`; `overrides` are dotted keys (`training.max_steps=10`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No config file at {str(path)!r}.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save the config as UTF-8.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {_yaml_problem(error)}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections (task, data, model, ...), got "
                          f"{type(values).__name__}.")
    for item in overrides or ():
        apply_override(values, item)
    return config_from_dict(values)


def _yaml_problem(error):
    """`line L, column C: what` from a YAML error (1-based, as editors count)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if "\\t" in problem or "\t" in problem:  # PyYAML writes a tab as the two characters \t
        problem += " (YAML indents with spaces, not tabs)"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def config_from_dict(values) -> RunConfig:
    """A checked `RunConfig` from plain values (no I/O, no models)."""
    config = _from_dict(RunConfig, values)
    validate(config)
    return config


def apply_override(values, item):
    """Sets `section.key=value` (the value parsed as YAML) in a nested dict."""
    import yaml

    if "=" not in item:
        raise ConfigError(f"Override {item!r} should look like section.key=value.")
    dotted, raw = item.split("=", 1)
    keys = dotted.split(".")
    target = values
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"Override {item!r}: {key!r} is not a section.")
    try:
        target[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"Override {item!r}: the value is not valid YAML ({_yaml_problem(error)}).") from None


def save_config(config: RunConfig, path):
    """Writes `config` as YAML, whole or not at all (a kill mid-write leaves the previous file)."""
    import yaml

    from .checkpointing import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
