"""Feature resamples of one layer's diff: the bootstrap behind the verdict's uncertainty and the label
fractions' intervals.

The live features an SAE learns are one draw of the features it could have learned: another seed, or a
rounding-level change in training (another summation order), gives another draw. The bootstrap mimics that
draw: each stage's live features are drawn again with replacement, as many as the stage has, ``resamples``
times (an index matrix [resamples, live features] per stage, both from one generator seeded with the diff's
seed, so the same labels always give the same resamples). Each resample's label counts (one ``bincount``
over the whole matrix) give its stable count, its stable share of the live features and its label fractions
of the stable features, exactly as :func:`~layershift.analysis.diff.labels.label_fractions` computes them
from the layer's own features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE

SIDE_LABELS = {  # per side: each stable label and the summary key of its fraction (of the side's stable features)
    REFERENCE_SIDE: {"retained": "retained_fraction", "changed": "changed_fraction", "lost": "lost_fraction"},
    COMPARED_SIDE: {
        "retained": "retained_finetuned_fraction",
        "changed": "changed_finetuned_fraction",
        "new": "new_fraction",
    },
}
UNSTABLE = "unstable"  # the live features that are not stable: the last column of the counts
DEAD = "dead"  # left out of the resamples, as out of every fraction
INTERVAL_PERCENTILES = (2.5, 97.5)  # a two-sided 95 % percentile interval


@dataclass(frozen=True)
class StageResamples:
    """One stage's resampled live features: ``counts[r, j]`` features of label j in resample r, the labels in
    :data:`SIDE_LABELS` order with ``unstable`` last."""

    side: str
    n_live: int
    counts: np.ndarray  # [resamples, stable labels + 1] int64

    def stable(self) -> np.ndarray:
        """[resamples] stable features per resample."""
        return self.counts[:, :-1].sum(axis=1)

    def stable_share(self) -> np.ndarray:
        """[resamples] stable share of the live features (NaN where the stage has no live feature)."""
        if self.n_live == 0:
            return np.full(len(self.counts), np.nan)
        return self.stable() / self.n_live

    def label_fractions(self) -> dict[str, np.ndarray]:
        """Summary key -> [resamples] that label's fraction of the resample's stable features (NaN: none)."""
        stable = self.stable().astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                key: self.counts[:, column] / stable
                for column, key in enumerate(SIDE_LABELS[self.side].values())
            }


def resample_stage(labels: pd.Series, side: str, resamples: int, rng: np.random.Generator) -> StageResamples:
    """``resamples`` draws with replacement of the side's live features (``labels``: every feature of the
    side, dead ones included, which are left out), as label counts per draw."""
    order = [*SIDE_LABELS[side], UNSTABLE]
    live = labels[labels != DEAD].to_numpy()
    codes = pd.Index(order).get_indexer(live)  # [live] column of each live feature's label
    if (codes < 0).any():
        raise ValueError(f"{side} features with labels outside {order}: {sorted(set(live[codes < 0]))}")
    width, n_live = len(order), len(codes)
    if n_live == 0:
        return StageResamples(side, 0, np.zeros((resamples, width), np.int64))
    picks = rng.integers(0, n_live, size=(resamples, n_live))  # [resamples, live] drawn feature indices
    cells = codes[picks] + width * np.arange(resamples)[:, None]  # [resamples, live] flat (resample, label)
    counts = np.bincount(cells.ravel(), minlength=resamples * width).reshape(resamples, width)
    return StageResamples(side, n_live, counts)


def resample_layer(
    labels_df: pd.DataFrame, resamples: int, seed: int, column: str = "label"
) -> dict[str, StageResamples]:
    """Both stages' resamples (pretrained first) of a labelled match table, from one generator of ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        side: resample_stage(labels_df.loc[labels_df["side"] == side, column], side, resamples, rng)
        for side in (REFERENCE_SIDE, COMPARED_SIDE)
    }


def bar_met(stages: dict[str, StageResamples], min_features: int, min_share: float) -> np.ndarray:
    """[resamples] whether each resample has, on every side, ≥ ``min_features`` stable features making up
    ≥ ``min_share`` of the live ones (the verdict's bar, judged as on the layer's own features)."""
    met = np.ones(len(next(iter(stages.values())).counts), dtype=bool)
    for stage in stages.values():
        with np.errstate(invalid="ignore"):  # no live feature: NaN share, never met
            met &= (stage.stable() >= min_features) & (stage.stable_share() >= min_share)
    return met


def percentile_interval(draws: np.ndarray) -> tuple[float | None, float | None]:
    """The 2.5th and 97.5th percentiles of the defined draws (a resample with no stable feature defines no
    fraction); ``(None, None)`` when none is defined."""
    defined = draws[np.isfinite(draws)]
    if not len(defined):
        return None, None
    low, high = np.percentile(defined, INTERVAL_PERCENTILES)
    return float(low), float(high)


def interval_keys() -> list[str]:
    """Every ``<fraction>_lo`` / ``<fraction>_hi`` key :func:`fraction_intervals` returns, in its order."""
    keys = []
    for side, fractions in SIDE_LABELS.items():
        for key in (f"stable_fraction_{side}", *fractions.values()):
            keys += [f"{key}_lo", f"{key}_hi"]
    return keys


def fraction_intervals(stages: dict[str, StageResamples]) -> dict[str, float | None]:
    """95 % percentile intervals of each side's stable share and label fractions over the resamples, as
    ``<key>_lo`` / ``<key>_hi`` beside the summary's point ``<key>``."""
    intervals: dict[str, float | None] = {}
    for side, stage in stages.items():
        for key, draws in {
            f"stable_fraction_{side}": stage.stable_share(),
            **stage.label_fractions(),
        }.items():
            intervals[f"{key}_lo"], intervals[f"{key}_hi"] = percentile_interval(draws)
    return intervals
