"""The tiny study the workflow tests run: tiny BERTs and tiny labelled corpora in a directory, and the
project's Snakefile run on it offline."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.models import make_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

MOOD_WORDS = {
    "positive": ["good", "great", "love", "fun", "happy", "easy", "really"],
    "negative": ["bad", "terrible", "hate", "boring", "sad", "hard", "slow"],
}
TOPIC_WORDS = {
    "film": ["movie", "film", "plot", "acting", "story"],
    "app": ["app", "update", "music", "fast", "slow"],
    "sport": ["sport", "news", "health", "book", "fun"],
}
FILLER = [
    "the",
    "a",
    "this",
    "that",
    "is",
    "was",
    "and",
    "very",
    "so",
    "i",
    "it",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
]


def make_corpus(path: Path, classes: dict[str, list[str]], n_rows: int, seed: int) -> Path:
    """A tiny labelled CSV: each text mixes filler words with two words of its class."""
    rng = random.Random(seed)
    labels = sorted(classes)
    rows = ["text,label"]
    for i in range(n_rows):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 4) + rng.sample(classes[label], 2)
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_config(models: dict, datasets: dict) -> dict:
    return {
        "seed": 3,
        "models": models,
        "datasets": datasets,
        "data": {"max_rows": 120},
        "finetune": {"lr": 1.0e-3, "epochs": 2, "batch_size": 16, "max_length": 24},
        "activations": {
            "max_sentences": 64,
            "max_tokens": 512,
            "batch_size": 16,
            "rows_per_group": 128,
            "groups_per_shard": 2,
        },
        "similarity": {"token_sample": 200},
        "sae": {"d_sae": 32, "lr": 1.0e-2, "epochs": 2, "batch_size": 64},
        "crosscoder": {"d_latent": 32, "k": 4, "n_shared": 2, "lr": 1.0e-2, "epochs": 2, "batch_size": 64},
        "features": {"top_k": 2, "top_tokens": 3},
        "resources": {"threads": 1},
    }


def build_tiny_study(workdir: Path, n_models: int = 1, n_datasets: int = 1) -> Path:
    """Write tiny models, corpora and config.yaml into ``workdir``; return the config path."""
    workdir.mkdir(parents=True, exist_ok=True)
    models = {"tiny2": {"source": "path:models/tiny2", "sae_layers": [1, 2]}}
    make_tiny_bert(workdir / "models/tiny2", n_layers=2, hidden=32, heads=2, seed=0)
    if n_models > 1:
        models["tiny1"] = {"source": "path:models/tiny1", "sae_layers": [1]}
        make_tiny_bert(workdir / "models/tiny1", n_layers=1, hidden=32, heads=2, seed=1)
    datasets = {
        "mood": {
            "source": "data/mood.csv",
            "text": "text",
            "label": "label",
            "probes": ["i love this movie", "the plot was bad !"],
        },
    }
    make_corpus(workdir / "data/mood.csv", MOOD_WORDS, 100, seed=1)
    if n_datasets > 1:
        datasets["topic"] = {"source": "data/topic.csv", "text": "text", "label": "label"}
        make_corpus(workdir / "data/topic.csv", TOPIC_WORDS, 105, seed=2)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(models, datasets), sort_keys=False))
    return config


def default_study_inputs(workdir: Path, config: str = "config.yaml") -> Path:
    """A shipped study's inputs (``config``, default the default study, as ``config.yaml``; data/) in an empty
    ``workdir``: a results tree of the repository itself (a user's `make study`) must not change what a test
    sees. Returns ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / config, workdir / "config.yaml")
    (workdir / "data").symlink_to(ROOT / "data", target_is_directory=True)
    return workdir


def set_verdict_curve(config_path: Path, curve: dict | None) -> Path:
    """Rewrite a study's config file with ``curve`` as its ``verdict_curve`` section (None: without one, the
    curve off); return the path."""
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    config.pop("verdict_curve", None)
    if curve is not None:
        config["verdict_curve"] = curve
    Path(config_path).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return Path(config_path)


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 900, configfile: bool = True
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` with its config.yaml (``--configfile`` unless told not to)."""
    config = ["--configfile", str(workdir / "config.yaml")] if configfile else []
    cmd = [str(SNAKEMAKE), "-s", str(SNAKEFILE), "--directory", str(workdir), *config, *args]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
