"""Feature-level model diff: which SAE features a fine-tuned model retained, changed, lost or gained.

Two SAEs are trained independently at one layer, one on the pretrained model's activations and one on the
fine-tuned model's (the token rows of the two activation sets line up: row ``t`` is the same token in both).
Each feature is compared by two independent signals (:mod:`~layershift.analysis.diff.match`):

* its **decoder direction**: the cosine matrix of the two SAEs' unit decoder rows and a one-to-one
  assignment of live features maximising Σ max(cos, 0)^p (``DiffConfig.assignment_power``);
* its **activation pattern**: the Pearson correlation of the two matched features' activations on the same
  tokens, accumulated in float64 over streamed batches for the matched pairs only.

:func:`diff_saes` runs the steps in order: match the stages and each stage's SAE against its seed null; the
chance level c of those matchings (:mod:`~layershift.analysis.diff.chance_levels`); stability of every
feature against its seed null (:mod:`~layershift.analysis.diff.labels`); thresholds calibrated on the seed
nulls (:mod:`~layershift.analysis.diff.thresholds`: the headline ``label`` has no cap; ``label_capped`` /
``capped_*`` additionally cap τ at the fixed effect sizes, which can only lower it); the labels; the verdict
with its feature resamples (:mod:`~layershift.analysis.diff.bootstrap`) and the summary
(:mod:`~layershift.analysis.diff.verdict`), whose ``baseline_*`` rates are those the same thresholds give on
the pretrained seed-null matching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from layershift.analysis.diff.activations import PairedBatches, sample_rows
from layershift.analysis.diff.chance_levels import chance_level, cross_stage_chance, seed_null_chance
from layershift.analysis.diff.labels import label_features, mark_stability
from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE, match_saes, swap_sides
from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.diff.thresholds import (
    Thresholds,
    calibrate_thresholds,
    fallback_thresholds,
    thresholds_between,
)
from layershift.analysis.diff.verdict import diff_summary, diff_verdict, json_safe


@dataclass
class StageSAEs:
    """The SAEs of one layer's diff: one per stage and each stage's seed null (``None``: not trained)."""

    pretrained: torch.nn.Module
    finetuned: torch.nn.Module
    pretrained_seed_null: torch.nn.Module | None = None
    finetuned_seed_null: torch.nn.Module | None = None


@dataclass
class Matchings:
    """Match tables: pretrained (reference) against fine-tuned (compared), and each stage's SAE (reference)
    against its seed null (compared; ``None`` without one)."""

    cross_stage: pd.DataFrame
    pretrained_seed_null: pd.DataFrame | None
    finetuned_seed_null: pd.DataFrame | None


def diff_saes(
    pretrained: torch.nn.Module,
    finetuned: torch.nn.Module,
    paired_batches: Callable[[], PairedBatches],
    cfg: DiffConfig,
    pretrained_seed_null: torch.nn.Module | None = None,
    finetuned_seed_null: torch.nn.Module | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The whole diff of the pretrained SAE and the fine-tuned SAE on ``paired_batches()`` (fresh
    ``(x_pretrained, x_finetuned)`` batches of the same tokens on every call).

    ``pretrained_seed_null`` / ``finetuned_seed_null``: a second SAE of that stage (another seed). Without
    any seed null the fallback thresholds of ``cfg`` (raised above chance) label every live feature and the
    verdict is inconclusive. Returns the labelled per-feature table and the summary.
    """
    saes = StageSAEs(pretrained, finetuned, pretrained_seed_null, finetuned_seed_null)
    matchings = match_stages_and_seed_nulls(saes, paired_batches, cfg)
    chance_summary = measure_chance(saes, matchings, paired_batches, cfg)
    stability = stability_cut(chance_summary, cfg)
    thresholds, capped = calibrate_on_seed_nulls(matchings, stability, cfg)
    labels = label_cross_stage(matchings, stability, thresholds, capped)
    seed_null_labels = label_pretrained_seed_null(matchings, stability, thresholds)
    return labels, summarize(labels, seed_null_labels, thresholds, capped, chance_summary, saes, cfg)


def match_stages_and_seed_nulls(
    saes: StageSAEs, paired_batches: Callable[[], PairedBatches], cfg: DiffConfig
) -> Matchings:
    """Step 1: match pretrained against fine-tuned, and each stage's SAE against its seed null on that
    stage's rows (passed as both sides of the pair)."""

    def same_stage(index: int) -> Callable[[], PairedBatches]:
        return lambda: ((pair[index], pair[index]) for pair in paired_batches())

    def against_seed_null(sae, seed_null, index: int) -> pd.DataFrame | None:
        return match_saes(sae, seed_null, same_stage(index), cfg) if seed_null is not None else None

    cross_stage = match_saes(saes.pretrained, saes.finetuned, paired_batches, cfg)
    return Matchings(
        cross_stage,
        against_seed_null(saes.pretrained, saes.pretrained_seed_null, 0),
        against_seed_null(saes.finetuned, saes.finetuned_seed_null, 1),
    )


def measure_chance(
    saes: StageSAEs, matchings: Matchings, paired_batches: Callable[[], PairedBatches], cfg: DiffConfig
) -> dict[str, Any]:
    """Step 2: chance quantiles of every matching's live shapes on the first ``cfg.chance_rows`` rows
    (:mod:`~layershift.analysis.diff.chance_levels`), and how well each seed null reproduces its SAE."""
    sample = sample_rows(paired_batches, cfg.chance_rows)  # (x_pretrained, x_finetuned) [rows, d] each
    summary = cross_stage_chance(saes.pretrained, saes.finetuned, matchings.cross_stage, sample, cfg)
    per_stage = (
        (
            REFERENCE_SIDE,
            saes.pretrained,
            saes.pretrained_seed_null,
            matchings.pretrained_seed_null,
            sample[0],
        ),
        (COMPARED_SIDE, saes.finetuned, saes.finetuned_seed_null, matchings.finetuned_seed_null, sample[1]),
    )
    for stage, sae, seed_null, seed_null_match, x_stage in per_stage:
        if seed_null_match is not None:
            summary |= seed_null_chance(stage, sae, seed_null, seed_null_match, x_stage, cfg)
    return summary


def stability_cut(chance_summary: dict[str, Any], cfg: DiffConfig) -> Thresholds:
    """Step 3: the chance level c (the largest chance 99th percentile of all matchings) and the stability
    cut c + ``stable_gap``·(1 − c) above it, as thresholds (their ``chance_*`` and ``stable_*`` fields)."""
    chance_cosine = chance_level(chance_summary, "cosine")
    chance_correlation = chance_level(chance_summary, "correlation")
    return thresholds_between(
        0.0, 0.0, chance_cosine, chance_correlation, "stability", stable_gap=cfg.stable_gap
    )


def calibrate_on_seed_nulls(
    matchings: Matchings, stability: Thresholds, cfg: DiffConfig
) -> tuple[Thresholds, Thresholds]:
    """Step 4: (headline, capped) thresholds from the stable features of both seed-null matchings (each
    stage's SAE marked stable against its own seed null); the fallback thresholds of ``cfg`` for both when
    no seed-null matching has a stable matched feature."""
    seed_null_matches = [
        match
        for match in (matchings.pretrained_seed_null, matchings.finetuned_seed_null)
        if match is not None
    ]
    stable = [mark_stability(match, stability, match, None) for match in seed_null_matches]
    pooled = pd.concat(stable, ignore_index=True) if stable else None
    usable = pooled is not None and bool(
        (pooled["stable"] & (pooled["side"] == REFERENCE_SIDE) & (pooled["match"] >= 0)).any()
    )
    chance = (stability.chance_cosine, stability.chance_correlation)  # c, already clipped to ≥ 0
    if not usable:
        fallback = fallback_thresholds(cfg, *chance)
        return fallback, fallback
    shared = (
        *chance,
        cfg.stable_gap,
        cfg.tolerance_cosine,
        cfg.tolerance_correlation,
    )
    headline = calibrate_thresholds(pooled, cfg.null_quantile, None, None, *shared)
    capped = calibrate_thresholds(
        pooled, cfg.null_quantile, cfg.cosine_threshold, cfg.correlation_threshold, *shared
    )
    return headline, capped


def label_cross_stage(
    matchings: Matchings, stability: Thresholds, thresholds: Thresholds, capped: Thresholds
) -> pd.DataFrame:
    """Step 5: the cross-stage table with stability against each stage's seed null, ``label`` under the
    headline thresholds and ``label_capped`` under the capped ones."""
    marked = mark_stability(
        matchings.cross_stage, stability, matchings.pretrained_seed_null, matchings.finetuned_seed_null
    )
    labels = label_features(marked, thresholds)
    labels["label_capped"] = label_features(marked, capped)["label"]
    return labels


def label_pretrained_seed_null(
    matchings: Matchings, stability: Thresholds, thresholds: Thresholds
) -> pd.DataFrame | None:
    """Step 6: the pretrained seed-null matching labelled like the diff, both of its sides assessed against
    each other: the rates where nothing changed but the seed (``baseline_*``)."""
    seed_null_match = matchings.pretrained_seed_null
    if seed_null_match is None:
        return None
    marked = mark_stability(seed_null_match, stability, seed_null_match, swap_sides(seed_null_match))
    return label_features(marked, thresholds)


def summarize(
    labels: pd.DataFrame,
    seed_null_labels: pd.DataFrame | None,
    thresholds: Thresholds,
    capped: Thresholds,
    chance_summary: dict[str, Any],
    saes: StageSAEs,
    cfg: DiffConfig,
) -> dict[str, Any]:
    """Step 7: the verdict and the summary; a stage without its own seed null counts its live features as
    stable only so that they get a label (``stability_assessed_<stage>`` is false)."""
    assessed = {
        REFERENCE_SIDE: saes.pretrained_seed_null is not None,
        COMPARED_SIDE: saes.finetuned_seed_null is not None,
    }
    verdict = diff_verdict(labels, cfg, assessed)
    summary = diff_summary(labels, seed_null_labels, thresholds, chance=chance_summary, verdict=verdict)
    summary |= {
        f"capped_threshold_{key}": json_safe(getattr(capped, key)) for key in ("cosine", "correlation")
    }
    summary["headline"] = "uncapped"
    summary |= {f"stability_assessed_{stage}": value for stage, value in assessed.items()}
    return summary
