"""SAE settings sweep: seed reproducibility against explained variance, L0 and cost, per setting.

For one layer's shards and a grid of SAE settings (each a partial ``sae:`` config section laid over the
study's own), train one SAE per seed with the study's trainer (same row-based hold-out) and report per
setting: held-out explained variance (the worse seed), L0, dead fraction, CPU seconds per SAE, and how well
the second seed reproduces the first: the median Hungarian-matched decoder cosine of the live features and
the share above the random-matching 99th percentile (:func:`layershift.analysis.chance.seed_reproducibility`).
A setting is *reproducible* at median ≥ 0.7 and share ≥ 0.8, *faithful* at EV ≥ 0.6.

The study-settings row (a grid point that leaves the study's section as it is) is the study's own SAEs when
they are given (``study_saes``: the layer's stage SAE and its seed nulls, saved by ``train_sae`` with the same
settings, rows and seeds): they are read, not trained a second time, after checking that their recorded
settings are the sweep's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from layershift.analysis.chance import seed_reproducibility
from layershift.core.io import read_json
from layershift.data.shards import ShardReader
from layershift.dictionaries.codes import firing_rates
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig, architecture_fields
from layershift.dictionaries.sae.files import load_sae
from layershift.dictionaries.sae.model import SAE
from layershift.dictionaries.sae.train import train_sae_on_shards, with_epochs_for_tokens
from layershift.study.acceptance import MIN_EXPLAINED_VARIANCE
from layershift.study.schema import from_section
from layershift.study.targets import is_study_setting

FIRING_BATCH_ROWS = 4096  # rows per batch when counting where a trained SAE's latents fire


def setting_label(point: dict) -> str:
    """A short, stable name of a grid point (its keys in order), e.g. ``d_sae=256 l1_coefficient=0.003``."""
    return " ".join(f"{key}={value}" for key, value in sorted(point.items())) or "study settings"


def train_setting(shard_dir: str | Path, section: dict, seed: int, split_seed: int, threads: int | None):
    """One SAE of ``section`` (a full ``sae:`` section) with ``seed``: (decoder, firing rates, metrics)."""
    reader = ShardReader(shard_dir)
    cfg = from_section(SAEConfig, section, d_in=reader.d_model)
    train = from_section(SAETrainConfig, section, seed=seed, split_seed=split_seed, threads=threads)
    sae, metrics = train_sae_on_shards(shard_dir, cfg, train, progress=False)
    return trained_setting(sae, reader, metrics)


HOW_IT_RAN = ("threads", "device")  # training settings that do not change what is learned (beyond rounding)


def read_setting(
    directory: str | os.PathLike, shard_dir: str | Path, section: dict, seed: int, split_seed: int
):
    """The SAE saved in ``directory`` as :func:`train_setting` would have trained it: (decoder, firing rates,
    metrics). Raises ValueError when its recorded settings or seed are not ``section``'s and ``seed``."""
    reader = ShardReader(shard_dir)
    sae, metrics = load_sae(directory), read_json(Path(directory) / "metrics.json")
    expected_train = with_epochs_for_tokens(
        from_section(SAETrainConfig, section, seed=seed, split_seed=split_seed), metrics["n_train_rows"]
    )
    recorded = sae.cfg.metadata.get("train_config", {})
    differs = sorted(
        key
        for key, value in dataclasses.asdict(expected_train).items()
        if key not in HOW_IT_RAN and recorded.get(key) != value
    )
    expected_cfg, saved_cfg = (
        architecture_fields(cfg) for cfg in (from_section(SAEConfig, section, d_in=reader.d_model), sae.cfg)
    )
    differs += sorted(key for key, value in expected_cfg.items() if saved_cfg.get(key) != value)
    if differs:
        raise ValueError(f"{directory}: not an SAE of these settings and seed {seed} (differs in {differs})")
    metrics.setdefault("cpu_seconds", float("nan"))  # saved before metrics recorded it
    return trained_setting(sae, reader, metrics)


def trained_setting(sae: SAE, reader: ShardReader, metrics: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """What the sweep keeps of one SAE: its decoder ``[d_sae, d_in]`` (float64), the firing rate of each
    latent over every row of ``reader`` ``[d_sae]`` and its training metrics."""
    rates = firing_rates(sae, reader.iter_batches(FIRING_BATCH_ROWS))
    return sae.W_dec.detach().double().numpy(), rates, metrics


def sweep(
    shard_dir: str | Path,
    base: dict,
    grid: Sequence[dict],
    seeds: Sequence[int],
    split_seed: int,
    threads: int | None = 1,
    study_saes: Mapping[int, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """One row per grid point (``base`` overlaid with the point): quality, cost and seed reproducibility.

    ``study_saes`` maps a seed to the directory of the study's SAE of that seed, trained with ``base`` on
    these shards: the study-settings row reads those instead of training them again."""
    if len(seeds) != 2:
        raise ValueError(f"a sweep compares two seeds, got {list(seeds)}")
    study_saes = study_saes or {}

    def setting_of(section: dict, seed: int, reuse: bool):
        if reuse and seed in study_saes:
            return read_setting(study_saes[seed], shard_dir, section, seed, split_seed)
        return train_setting(shard_dir, section, seed, split_seed, threads)

    rows = []
    for point in grid:
        section = {**base, **point}
        reuse = is_study_setting(base, point)
        first, second = (setting_of(section, seed, reuse) for seed in seeds)
        rows.append(setting_row(point, section, first, second, split_seed))
    return pd.DataFrame(rows)


def setting_row(point: dict, section: dict, first: tuple, second: tuple, split_seed: int) -> dict:
    """The sweep's row for one grid point from its two seeds' (decoder, firing rates, metrics)."""
    (first_decoder, first_rates, first_metrics), (second_decoder, second_rates, second_metrics) = (
        first,
        second,
    )
    repro = seed_reproducibility(
        first_decoder, second_decoder, first_rates > 0, second_rates > 0, seed=split_seed
    )
    runs = (first_metrics, second_metrics)
    # the worse seed's EV; undefined (NaN, null in a reused metrics.json) when either is: too few rows
    worst_ev = float(
        np.min([np.nan if run["explained_variance"] is None else run["explained_variance"] for run in runs])
    )
    return {
        "setting": setting_label(point),
        "settings": json.dumps(point, sort_keys=True),
        **{key: section.get(key) for key in ("architecture", "d_sae", "k", "l1_coefficient", "lr")},
        **{key: section.get(key) for key in ("training_tokens", "lr_decay_fraction", "batch_size")},
        "epochs": first_metrics["epochs"],  # what ran (training_tokens sets it from the layer's rows)
        "steps": first_metrics["steps"],
        "explained_variance": worst_ev,
        "l0": float(np.mean([run["l0"] for run in runs])),
        "dead_fraction": float(np.mean([run["dead_fraction"] for run in runs])),
        "cpu_seconds_per_sae": float(np.mean([run["cpu_seconds"] for run in runs])),
        "n_train_rows": int(first_metrics["n_train_rows"]),
        **{key: repro[key] for key in ("median_matched_cosine", "share_above_chance", "n_live")},
        "chance_cosine_p99": repro["chance_cosine_p99"],
        "reproducible": repro["reproducible"],
        "faithful": bool(worst_ev >= MIN_EXPLAINED_VARIANCE),
    }
