"""Whether a layer's diff is conclusive, with its uncertainty, and the JSON summary it is reported as.

A layer's diff is judged on a bar (enough stable features on both sides) and on feature resamples of it
(:mod:`~layershift.analysis.diff.bootstrap`): ``conclusive`` when the bar is met in ≥ 95 % of them,
``inconclusive`` when in ≤ 5 % (or without a seed null for a stage), else ``borderline``: the layer sits on
the bar. Only a conclusive layer supports a finding of retained / lost change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from layershift.analysis.diff.bootstrap import bar_met, fraction_intervals, interval_keys, resample_layer
from layershift.analysis.diff.labels import label_fractions
from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE
from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.diff.thresholds import Thresholds

CONCLUSIVE_SHARE = 0.95  # bar met in at least this share of resamples: one-sided 95 % that the layer meets it
INCONCLUSIVE_SHARE = 0.05  # bar met in at most this share: one-sided 95 % that the layer misses it
STAGES = (REFERENCE_SIDE, COMPARED_SIDE)


@dataclass(frozen=True)
class Verdict:
    """A layer's verdict: ``outcome`` (conclusive | borderline | inconclusive), why, the share of feature
    resamples that met the bar (None: not resampled, a stage had no seed null) and, for a conclusive or
    borderline layer, the 95 % intervals of its fractions (``<key>_lo`` / ``<key>_hi``)."""

    outcome: str
    reason: str
    conclusive_share: float | None = None
    resamples: int | None = None
    intervals: dict[str, float | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The summary's verdict keys; every interval key is present (None where not computed)."""
        return {
            "verdict": self.outcome,
            "verdict_reason": self.reason,
            "conclusive_share": self.conclusive_share,
            "verdict_resamples": self.resamples,
            **{key: self.intervals.get(key) for key in interval_keys()},
        }


def diff_verdict(
    labels_df: pd.DataFrame, cfg: DiffConfig, assessed: dict[str, bool] | None = None
) -> Verdict:
    """The verdict of one layer's labelled match table
    (:func:`~layershift.analysis.diff.labels.label_features`); ``assessed`` says per stage whether it had a
    seed null.

    **The bar.** On *both* sides, stability was assessed against a seed null of that stage, at least
    ``cfg.min_stable_features`` features are stable and they make up at least ``cfg.min_stable_share`` of the
    live features. Why: (1) without a seed null for a stage, SAE instability on that side reads as change
    (such a layer is inconclusive, not resampled); (2) a fraction over n stable features has a standard error
    up to 0.5/√n, so n ≥ 25 keeps it ≤ 0.1, below the effects the study reports; (3) when most live features
    are unstable the stable ones are a selected minority (the frequent, easy features) and their labels say
    nothing about the layer: the SAEs, not fine-tuning, are what the numbers would describe. Random
    (untrained) SAEs have no stable features and miss it, as does a near-chance or tiny-data layer.

    **Its uncertainty.** The stable count and share are themselves estimates: the live features are one draw
    of those the SAE could have learned, and a rounding-level change in training redraws a few of them. So the
    bar is judged on ``cfg.verdict_resamples`` feature resamples of the layer, and ``conclusive_share`` is the
    share that meet it. ≥ 95 %: the bar is met at one-sided 95 % confidence (the resampled share's 5th
    percentile clears it), ``conclusive``; ≤ 5 %: it is missed at one-sided 95 % confidence,
    ``inconclusive``; in between, ``borderline``: the data cannot say on which side of the bar the layer is,
    and no finding is stated for it. 95 % is the conventional one-sided level (about 1.645 standard errors of
    the share, √(p(1−p)/n) ≤ 0.5/√n: 0.022 or some 11 features at n = 500 live features), fixed and not
    fitted to any corpus. A layer exactly on the bar is borderline and stays so under a change of a few
    features; such a change may still cross one edge of the borderline band (conclusive ↔ borderline), never
    turn conclusive into inconclusive (it would have to cross the whole band, about 3.3 standard errors).
    The resamples are seeded (``cfg.seed``): the same labels always give the same verdict.
    """
    fractions = label_fractions(labels_df)
    unassessed = [stage for stage in STAGES if assessed is not None and not assessed.get(stage, False)]
    if unassessed:
        return unassessed_verdict(fractions, cfg, unassessed)
    stages = resample_layer(labels_df, cfg.verdict_resamples, cfg.seed)
    share = float(bar_met(stages, cfg.min_stable_features, cfg.min_stable_share).mean())
    outcome = outcome_of(share)
    reason = verdict_reason(outcome, share, fractions, cfg)
    intervals = fraction_intervals(stages) if outcome != "inconclusive" else {}
    return Verdict(outcome, reason, share, cfg.verdict_resamples, intervals)


def unassessed_verdict(fractions: dict[str, Any], cfg: DiffConfig, unassessed: list[str]) -> Verdict:
    """Inconclusive, not resampled: which stages have no seed null, and how the others miss the bar."""
    reasons = [
        f"no seed null for the {stage} stage: its features' stability is unknown" for stage in unassessed
    ]
    reasons += bar_failures(fractions, cfg, [stage for stage in STAGES if stage not in unassessed])
    return Verdict("inconclusive", "; ".join(reasons))


def outcome_of(conclusive_share: float) -> str:
    """conclusive (bar met in ≥ 95 % of resamples) | inconclusive (≤ 5 %) | borderline (in between)."""
    if conclusive_share >= CONCLUSIVE_SHARE:
        return "conclusive"
    if conclusive_share <= INCONCLUSIVE_SHARE:
        return "inconclusive"
    return "borderline"


def bar_failures(fractions: dict[str, Any], cfg: DiffConfig, stages: list[str]) -> list[str]:
    """How each of ``stages`` misses the bar on the layer's own features, in counts and percent (none: met)."""
    failures = []
    for stage in stages:
        n_stable, share = fractions.get(f"n_stable_{stage}", 0), fractions.get(f"stable_fraction_{stage}")
        if n_stable < cfg.min_stable_features:
            failures.append(f"{n_stable} stable {stage} features (< {cfg.min_stable_features})")
        elif share is None or share < cfg.min_stable_share:
            n_live = fractions.get(f"n_live_{stage}", 0)
            failures.append(
                f"{n_stable} of {n_live} live {stage} features stable ({share or 0.0:.1%} < "
                f"{cfg.min_stable_share:.0%})"
            )
    return failures


def stable_counts(fractions: dict[str, Any]) -> list[str]:
    """Each stage's stable features of its live ones, in counts and percent."""
    return [
        f"{fractions[f'n_stable_{stage}']} of {fractions[f'n_live_{stage}']} live {stage} features stable "
        f"({fractions[f'stable_fraction_{stage}'] or 0.0:.1%})"
        for stage in STAGES
    ]


def verdict_reason(outcome: str, conclusive_share: float, fractions: dict[str, Any], cfg: DiffConfig) -> str:
    """The reason string: the share of resamples that met the bar, which outcome that gives, and the layer's
    own stable counts (how it misses the bar, for an inconclusive one)."""
    measured = f"bar met in {conclusive_share:.1%} of {cfg.verdict_resamples} feature resamples"
    bar = (
        f"≥ {cfg.min_stable_features} stable features and ≥ {cfg.min_stable_share:g} of live features stable"
    )
    if outcome == "conclusive":
        return f"{measured} (≥ {CONCLUSIVE_SHARE:.0%}): {bar} on both sides"
    if outcome == "inconclusive":
        return f"{measured} (≤ {INCONCLUSIVE_SHARE:.0%}): " + "; ".join(
            bar_failures(fractions, cfg, list(STAGES)) or stable_counts(fractions)
        )
    return (
        f"borderline: {measured} (between {INCONCLUSIVE_SHARE:.0%} and {CONCLUSIVE_SHARE:.0%}), the layer sits "
        f"on the bar ({bar} on both sides): " + "; ".join(stable_counts(fractions))
    )


def diff_summary(
    labels_df: pd.DataFrame,
    seed_null_labels: pd.DataFrame | None = None,
    thresholds: Thresholds | None = None,
    *,
    chance: dict[str, Any] | None = None,
    verdict: Verdict | None = None,
) -> dict[str, Any]:
    """Label fractions over stable features and, side by side, the same on a seed-null matching
    (``baseline_*``: the rates the same thresholds give where nothing changed but the seed).

    ``seed_null_labels`` must be :func:`~layershift.analysis.diff.labels.label_features` of the pretrained
    SAE's match table against its seed null *with the same thresholds and stability*; with ``stable_gap`` =
    0.5 its lost fraction is 0 by construction (stable means reproduced above the floor), so the seed null's
    instability shows as ``unstable_fraction_*``. When ``labels_df`` has a ``label_capped`` column its
    fractions appear as ``capped_*``. ``chance`` (``chance_cosine_p50`` ... ) and ``verdict`` (its outcome,
    reason, ``conclusive_share`` and the fractions' ``*_lo`` / ``*_hi`` intervals) are copied in. JSON-safe:
    no NaN (``None`` instead).
    """
    summary: dict[str, Any] = dict(label_fractions(labels_df))
    if "label_capped" in labels_df:
        capped = label_fractions(labels_df, "label_capped")
        summary |= {
            f"capped_{key}": value
            for key, value in capped.items()
            if not key.startswith(("n_", "stable_", "unstable_"))
        }
    if seed_null_labels is not None:
        summary |= {f"baseline_{key}": value for key, value in label_fractions(seed_null_labels).items()}
    if thresholds is not None:
        summary |= {f"threshold_{key}": value for key, value in thresholds.to_dict().items()}
    summary |= chance or {}
    if verdict is not None:
        summary |= verdict.summary()
    return {key: json_safe(value) for key, value in summary.items()}


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: NaN / inf floats become ``None``, numpy scalars Python ones."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
