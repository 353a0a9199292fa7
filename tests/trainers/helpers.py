"""Tiny data and configs shared by the trainer tests (hidden 32, 1-2 layers, 32 px images, 16 mel bins)."""

import copy
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Built once and reused (tests/artifacts/ is git-ignored); the build is a pure function of its arguments.
DATA_DIR = REPO / "tests" / "artifacts" / "scenes"
TINY_DATA = {"num_emoji": 6, "num_train": 96, "num_validation": 16, "num_test": 32, "num_test_novel": 8,
             "image_size": 32, "seed": 0, "num_proc": 1}

TOWER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_MODEL = {
    "projection_dim": 16, "fusion_hidden_size": 32, "fusion_num_layers": 1, "fusion_num_attention_heads": 2,
    "fusion_intermediate_size": 64,
    "text_config": dict(TOWER),
    "vision_config": {"image_size": 32, "patch_size": 8, **TOWER},
    "audio_config": {"num_mel_bins": 16, "max_source_positions": 100, **TOWER},
    "decoder_config": dict(TOWER),
}


def tiny_config(output_dir, task="pretraining", modalities=("text", "image", "audio"), **sections):
    """A config dict for `config_from_dict`; `sections` update the defaults section by section."""
    model = copy.deepcopy(TINY_MODEL)
    for key, modality in (("text_config", "text"), ("vision_config", "image"), ("audio_config", "audio")):
        if modality not in modalities:
            model[key] = None
    if task not in ("pretraining", "generation"):
        model["decoder_config"] = None
    config = {
        "task": task,
        "data": {"path": str(DATA_DIR), "build_args": dict(TINY_DATA), "modalities": list(modalities),
                 "tokenizer_vocab_size": 200, "max_audio_seconds": 4.0, "max_text_length": 24,
                 "max_target_length": 24},
        "model": model,
        "training": {"output_dir": str(output_dir), "max_steps": 6, "batch_size": 8, "learning_rate": 2e-3,
                     "warmup_steps": 1, "log_every": 2, "report_to": ["none"], "progress_bar": False,
                     "mixed_precision": "no", "num_threads": 1},
        "evaluation": {"split": None, "batch_size": 32, "generation_samples": 8, "max_new_tokens": 12},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def write_yaml(values, path):
    import yaml

    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))
    return Path(path)


def ensure_tiny_scenes():
    from xmodal.processing import build_scene_dataset

    return build_scene_dataset(str(DATA_DIR), progress=False, **TINY_DATA)


def cli_environment(threads=1):
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return environment


def run_cli(*args, timeout=240, **kwargs):
    """Runs `xmodal ...` in a fresh process; returns the CompletedProcess (output captured)."""
    return subprocess.run([sys.executable, "-m", "xmodal.trainers.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=cli_environment(), cwd=REPO, **kwargs)
