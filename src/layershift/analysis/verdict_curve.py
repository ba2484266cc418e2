"""How much text a verdict needs: one layer's feature diff recomputed on the first fractions of its token rows.

The diff of a layer is conclusive only when enough of each stage's live features are stable (reproduced by
that stage's seed null; :func:`~layershift.analysis.diff.verdict.diff_verdict`). Stability needs data, so
the curve asks how the verdict and its inputs move with the amount of text: for each fraction f it trains the
four SAEs the diff needs (each stage's SAE and its first seed null, with the study's seeds and ``sae``
settings) on the layer's first ⌈f·rows⌉ token rows — the same rows for both stages, whose shards are paired
row for row — and runs :func:`~layershift.analysis.diff.pipeline.diff_saes` on those rows. The study's own
diff is the point at f = 1 (:func:`full_data_point`), read, not retrained.

``training_tokens`` fixes the number of optimiser steps, so fewer rows mean more passes over them (the
``passes`` column): the curve separates *how much text* from *how long the SAE trains*.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layershift.analysis.diff.pipeline import diff_saes
from layershift.analysis.diff.settings import DiffConfig
from layershift.core.checkpoints import remove_checkpoints
from layershift.data.shards import ShardReader, holdout_rows, keep_pair_in_memory, open_paired, zip_paired
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.train import train_sae_on_shards, with_epochs_for_tokens
from layershift.study.schema import from_section
from layershift.study.targets import STAGES

# what the curve keeps of a diff summary, per point (the verdict and its share of resamples meeting the bar,
# counts and shares per stage, label fractions)
SUMMARY_COLUMNS = (
    "verdict",
    "verdict_reason",
    "conclusive_share",
    *(
        f"{key}_{stage}"
        for key in ("n_live", "n_stable", "stable_fraction", "null_median_cosine")
        for stage in STAGES
    ),
    "retained_fraction",
    "changed_fraction",
    "lost_fraction",
    "new_fraction",
)
CURVE_COLUMNS = ("fraction", "rows", "tokens", "train_tokens", "passes", "source", *SUMMARY_COLUMNS)


@dataclass(frozen=True)
class CurveLayer:
    """One layer of the curve: both stages' shards and how the study trains and diffs SAEs on them."""

    shard_dirs: dict[str, str]  # stage -> the layer's token shards of that stage (paired row for row)
    sae_section: dict  # the study's validated ``sae`` section
    diff_cfg: DiffConfig
    stage_seeds: dict[str, int]  # stage -> seed of the stage's SAE
    null_seeds: dict[str, int]  # stage -> seed of the stage's (first) seed null
    split_seed: int  # the held-out rows' seed, one for every SAE of the layer
    layer: int
    metadata: dict = field(default_factory=dict)  # model / dataset, recorded in each SAE's cfg
    threads: int | None = None

    def training_settings(self, seed: int) -> SAETrainConfig:
        return from_section(
            SAETrainConfig, self.sae_section, seed=seed, split_seed=self.split_seed, threads=self.threads
        )


def fraction_rows(n_rows: int, fraction: float) -> int:
    """Token rows of the first ``fraction`` of a layer: ⌈fraction·n_rows⌉, at least 2 (a held-out row and a
    training row), at most ``n_rows``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return min(n_rows, max(2, math.ceil(round(fraction * n_rows, 6))))  # 0.07 x 100 is 7, not 8


def rows_and_tokens(shard_dir: str | os.PathLike, max_rows: int | None = None) -> tuple[int, int]:
    """(text rows, token rows) of a layer's first ``max_rows`` token rows (all without a limit): a text row is
    a sentence with at least one token among them."""
    reader = ShardReader(shard_dir, max_rows)
    sentence_ids = [
        reader.read_group(index, ["sentence_id"]).column(0).to_numpy() for index in range(len(reader.groups))
    ]
    return len(np.unique(np.concatenate(sentence_ids))) if sentence_ids else 0, reader.n_rows


def training_budget(layer: CurveLayer, n_rows: int) -> tuple[int, int]:
    """(training rows, passes over them) of an SAE on ``n_rows`` token rows: the held-out rows leave, and
    ``training_tokens`` (when set) fixes the steps, so fewer rows take more passes."""
    settings = layer.training_settings(layer.stage_seeds[STAGES[0]])
    train_rows = n_rows - len(holdout_rows(n_rows, settings.holdout_fraction, settings.split_seed))
    return train_rows, with_epochs_for_tokens(settings, train_rows).epochs


def train_point_saes(
    layer: CurveLayer, n_rows: int, checkpoint_root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The four SAEs of one curve point on the layer's first ``n_rows`` rows: ``{stage: SAE}`` and
    ``{stage}_seed_null``, trained as the study's ``train_sae`` rule trains them (settings, seeds, held-out
    rows drawn with the split seed among these rows). With ``checkpoint_root`` each SAE checkpoints every
    epoch there, as the study's do (a job cut short resumes the SAE it was training; with few rows and a fixed
    ``training_tokens`` that is many small writes), and removes them once trained."""
    runs = [(stage, layer.stage_seeds[stage], stage) for stage in STAGES]
    runs += [(stage, layer.null_seeds[stage], f"{stage}_seed_null") for stage in STAGES]
    saes = {}
    for stage, seed, name in runs:
        d_in = ShardReader(layer.shard_dirs[stage]).d_model
        meta = layer.metadata | {"stage": stage, "layer": layer.layer, "seed": seed}
        sae_cfg = from_section(
            SAEConfig, layer.sae_section, d_in=d_in, hook_name=f"hidden_states.{layer.layer}", metadata=meta
        )
        resume = (
            None if checkpoint_root is None else Path(checkpoint_root) / f"rows{n_rows}-{stage}-seed{seed}"
        )
        saes[name], _ = train_sae_on_shards(
            layer.shard_dirs[stage],
            sae_cfg,
            layer.training_settings(seed),
            checkpoint_dir=resume,
            progress=False,
            max_rows=n_rows,
        )
        remove_checkpoints(resume)  # the SAE is kept in memory only: nothing left to resume
    return saes


def diff_on_rows(layer: CurveLayer, saes: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """The diff summary of the four SAEs on the layer's first ``n_rows`` paired rows, on the CPU as the
    study's ``diff`` rule runs it (it loads the SAEs there), whatever device trained them."""
    saes = {name: sae.to("cpu") for name, sae in saes.items()}
    readers = open_paired(*(layer.shard_dirs[stage] for stage in STAGES), max_rows=n_rows)
    keep_pair_in_memory(*readers, layer.diff_cfg.memory_cache_mb)

    def pairs():  # fresh (x_pretrained, x_finetuned) batches of the first n_rows tokens, in storage order
        return zip_paired(*readers, batch_size=4096)

    _, summary = diff_saes(
        saes["pretrained"],
        saes["finetuned"],
        pairs,
        layer.diff_cfg,
        saes["pretrained_seed_null"],
        saes["finetuned_seed_null"],
    )
    return summary


def curve_row(layer: CurveLayer, fraction: float, n_rows: int, summary: dict[str, Any], source: str) -> dict:
    """One row of the curve: how much text (text rows, token rows, training rows, passes) and what the diff
    made of it (:data:`SUMMARY_COLUMNS`; missing keys of an older summary are None)."""
    rows, tokens = rows_and_tokens(layer.shard_dirs[STAGES[0]], n_rows)
    train_tokens, passes = training_budget(layer, tokens)
    return {
        "fraction": float(fraction),
        "rows": rows,
        "tokens": tokens,
        "train_tokens": train_tokens,
        "passes": passes,
        "source": source,
        **{key: summary.get(key) for key in SUMMARY_COLUMNS},
    }


def curve_point(
    layer: CurveLayer, fraction: float, checkpoint_root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The curve at ``fraction`` of the layer's token rows: four SAEs trained and diffed on the first rows."""
    n_rows = fraction_rows(ShardReader(layer.shard_dirs[STAGES[0]]).n_rows, fraction)
    saes = train_point_saes(layer, n_rows, checkpoint_root)
    return curve_row(layer, fraction, n_rows, diff_on_rows(layer, saes, n_rows), "retrained")


def full_data_point(layer: CurveLayer, study_summary: dict[str, Any]) -> dict[str, Any]:
    """The curve at fraction 1: the study's own diff summary (its SAEs saw every row of the layer)."""
    n_rows = ShardReader(layer.shard_dirs[STAGES[0]]).n_rows
    return curve_row(layer, 1.0, n_rows, study_summary, "study diff")


def verdict_curve(
    layer: CurveLayer,
    fractions: list[float],
    study_summary: dict[str, Any] | None = None,
    checkpoint_root: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The layer's curve, one row per fraction (ascending): each fraction below 1 retrained
    (:func:`curve_point`), then the study's own diff as fraction 1 when ``study_summary`` is given."""
    points = [
        curve_point(layer, fraction, checkpoint_root) for fraction in sorted(set(fractions)) if fraction < 1
    ]
    if study_summary is not None:
        points.append(full_data_point(layer, study_summary))
    return pd.DataFrame(points, columns=list(CURVE_COLUMNS))
