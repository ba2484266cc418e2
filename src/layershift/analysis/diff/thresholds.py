"""The cut-offs the labels apply: calibrated on the seed nulls, never below chance.

A *seed null* is an SAE trained on the same stage's activations with another seed; its match table against
that stage's SAE says how well features reproduce from seed to seed. *Chance* is what random matching alone
gives (:mod:`layershift.analysis.chance`). τ = the ``q``-quantile of the seed-to-seed matched cosine /
correlation (weighted by firing rate, over stable features) minus a tolerance, never below the stability cut;
floors = halfway from chance to τ (:func:`thresholds_between`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from layershift.analysis.diff.match import REFERENCE_SIDE
from layershift.analysis.diff.settings import DiffConfig


@dataclass(frozen=True)
class Thresholds:
    """The cut-offs :func:`~layershift.analysis.diff.labels.label_features` applies, and where they came
    from (see :func:`thresholds_between`). The field names are the summary's ``threshold_*`` keys."""

    cosine: float  # retained: matched decoder cosine ≥ this ...
    correlation: float  # ... and matched activation correlation ≥ this
    floor_cosine: float  # changed: below a retained cut-off but cosine ≥ this ...
    floor_correlation: float  # ... and correlation ≥ this; otherwise lost / new
    chance_cosine: float = 0.0  # 99th percentile of matched cosine between random dictionaries (chance.py)
    chance_correlation: float = 0.0  # likewise for the matched activation correlation
    stable_cosine: float = 0.0  # a feature is stable when its seed null reproduces it at ≥ this ...
    stable_correlation: float = 0.0  # ... and ≥ this
    null_cosine: float = math.nan  # the seed nulls' q-quantile matched cosine (NaN: no seed null given)
    null_correlation: float = math.nan  # the seed nulls' q-quantile matched correlation (NaN: none)
    source: str = "fallback"  # "fallback" or "seed-null q=<q> n=<stable matched seed-null features>[ capped]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fallback_thresholds(
    cfg: DiffConfig, chance_cosine: float = 0.0, chance_correlation: float = 0.0
) -> Thresholds:
    """The fixed thresholds of ``cfg``, raised above the chance levels if need be, for when no seed null
    exists: uncalibrated."""
    return thresholds_between(
        cfg.cosine_threshold,
        cfg.correlation_threshold,
        chance_cosine,
        chance_correlation,
        "fallback",
        stable_gap=cfg.stable_gap,
    )


def calibrate_thresholds(
    seed_null_match_df: pd.DataFrame,
    quantile: float = 0.1,
    retained_cosine: float | None = None,
    retained_correlation: float | None = None,
    chance_cosine: float = 0.0,
    chance_correlation: float = 0.0,
    stable_gap: float = 0.5,
    tolerance_cosine: float = 0.0,
    tolerance_correlation: float = 0.0,
) -> Thresholds:
    """Thresholds from seed-null match tables (a stage's SAE against its seed null), over their live matched
    *stable* features (a ``stable`` column, when present, selects them; see
    :func:`~layershift.analysis.diff.labels.mark_stability`).

    ``seed_null_match_df`` may hold several seed-null matchings concatenated (the pretrained and the
    fine-tuned one): only their reference-side rows (each stage's SAE) are used. All quantiles are weighted
    by firing rate, so they describe the features that carry the activity.

    * Seed noise = the ``quantile`` of the matched cosine / correlation (a fraction ``1 - q`` of stable
      seed-to-seed matches are at least this good); τ = seed noise − ``tolerance_*`` (a relative effect
      size), never below the stability cut.
    * ``retained_*``: an optional effect-size cap, τ = min(seed noise, cap), still never below the
      stability cut. It lowers τ only, so with reproducible SAEs (seed noise 0.95) it calls a 0.72 match
      retained; the diff reports capped labels beside the headline, which has no cap.
    * Chance = ``chance_*``, the 99th percentile of what random matching produces
      (:mod:`layershift.analysis.chance`); floors = halfway from chance to τ (:func:`thresholds_between`).
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    rows = seed_null_match_df[seed_null_match_df["side"] == REFERENCE_SIDE]
    keep = rows["live"].to_numpy(bool) & (rows["match"].to_numpy() >= 0)
    if "stable" in rows:
        keep &= rows["stable"].to_numpy(bool)
    matched = rows[keep]
    if matched.empty:
        raise ValueError("the seed-null match table has no live matched stable features to calibrate on")
    weight = matched["firing_rate"]
    seed_noise_cosine = weighted_quantile(matched["cosine"], weight, quantile)
    seed_noise_correlation = weighted_quantile(matched["activation_correlation"], weight, quantile)
    tau_cosine = seed_noise_cosine - tolerance_cosine
    tau_correlation = seed_noise_correlation - tolerance_correlation
    return thresholds_between(
        cosine=tau_cosine if retained_cosine is None else min(tau_cosine, retained_cosine),
        correlation=(
            tau_correlation if retained_correlation is None else min(tau_correlation, retained_correlation)
        ),
        chance_cosine=chance_cosine,
        chance_correlation=chance_correlation,
        source=f"seed-null q={quantile} n={len(matched)}" + ("" if retained_cosine is None else " capped"),
        null_cosine=seed_noise_cosine,
        null_correlation=seed_noise_correlation,
        stable_gap=stable_gap,
    )


def thresholds_between(
    cosine: float,
    correlation: float,
    chance_cosine: float,
    chance_correlation: float,
    source: str,
    null_cosine: float = math.nan,
    null_correlation: float = math.nan,
    stable_gap: float = 0.5,
) -> Thresholds:
    """Thresholds that lie above chance by construction.

    ``chance_*`` is the chance 99th percentile c (clipped to ≥ 0). The stability cut is
    s = c + ``stable_gap`` · (1 − c); τ = max(``cosine``, s); floor = (c + τ) / 2. So c < floor ≤ τ and
    c < s ≤ τ whenever c < 1; with ``stable_gap`` = 0.5, s ≥ floor too (a stable feature is never lost
    against its own seed null). ``null_*`` are the seed nulls' noise levels, recorded as they are.
    """
    if not 0.0 < stable_gap < 1.0:
        raise ValueError(f"stable_gap must be in (0, 1), got {stable_gap}")
    chance_cos, chance_corr = max(float(chance_cosine), 0.0), max(float(chance_correlation), 0.0)
    stable_cos = chance_cos + stable_gap * (1 - chance_cos)
    stable_corr = chance_corr + stable_gap * (1 - chance_corr)
    tau_cos, tau_corr = max(float(cosine), stable_cos), max(float(correlation), stable_corr)
    return Thresholds(
        cosine=tau_cos,
        correlation=tau_corr,
        floor_cosine=(chance_cos + tau_cos) / 2,
        floor_correlation=(chance_corr + tau_corr) / 2,
        chance_cosine=chance_cos,
        chance_correlation=chance_corr,
        stable_cosine=stable_cos,
        stable_correlation=stable_corr,
        null_cosine=null_cosine,
        null_correlation=null_correlation,
        source=source,
    )


def weighted_quantile(values: pd.Series, weights: pd.Series, q: float, default: float | None = None) -> float:
    """The ``q``-quantile of the finite ``values`` under ``weights`` (inverted weighted CDF, no interpolation)."""
    value = np.asarray(values, dtype=np.float64)
    weight = np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(value) & (weight > 0)
    if not keep.any():
        if default is None:
            raise ValueError(f"no finite {getattr(values, 'name', 'values')} to take a quantile of")
        return default
    order = np.argsort(value[keep], kind="stable")
    value, cdf = value[keep][order], np.cumsum(weight[keep][order])
    return float(value[np.searchsorted(cdf, q * cdf[-1], side="left").clip(max=len(value) - 1)])
