"""Stability and labels of every feature of a match table, and the label fractions.

**Stability.** Each stage has a *seed null*: a second SAE on the same activations, another seed (pretrained
SAE s0 / its seed null s1; fine-tuned SAE s1 / its seed null s0, so each seed-null pair differs from the
cross-stage pair only in data). A live feature is *stable* when its seed null reproduces it at
≥ c + ``stable_gap``·(1 − c) in cosine and in correlation, c being the chance level (:func:`mark_stability`);
only stable features get a change label, and all fractions are over stable features.

Every feature then gets a label (:func:`label_features`):

``retained``  stable; matched, cosine ≥ τ_cos and correlation ≥ τ_corr;
``changed``   stable; matched, below one of those, yet both still ≥ the "same feature" floors;
``lost``      a stable reference (pretrained) feature whose match falls below a floor (or has no live match);
``new``       the same for a stable compared (fine-tuned) feature;
``unstable``  live, but its own seed null does not reproduce it clearly above chance: reported as a share;
``dead``      never (or too rarely) active; excluded from matching and from every fraction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE
from layershift.analysis.diff.thresholds import Thresholds

LABELS = ("retained", "changed", "lost", "new", "unstable", "dead")


def mark_stability(
    match_df: pd.DataFrame,
    thresholds: Thresholds,
    reference_seed_null: pd.DataFrame | None = None,
    compared_seed_null: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A copy of ``match_df`` with ``null_match``, ``null_cosine``, ``null_correlation`` and ``stable``.

    ``reference_seed_null`` / ``compared_seed_null`` are match tables of the reference / compared SAE (as
    their reference side) against its own seed null. A live feature is stable when its seed-null partner
    reproduces it clearly above chance: matched cosine ≥ ``thresholds.stable_cosine`` and correlation ≥
    ``thresholds.stable_correlation``. A side without a seed null is not assessed: its live features count
    as stable (and :func:`~layershift.analysis.diff.verdict.diff_verdict` calls the diff inconclusive).
    """
    df = match_df.copy()
    df["null_match"] = np.int64(-1)
    df["null_cosine"] = np.nan
    df["null_correlation"] = np.nan
    df["stable"] = df["live"].to_numpy(bool)
    for side, seed_null in ((REFERENCE_SIDE, reference_seed_null), (COMPARED_SIDE, compared_seed_null)):
        if seed_null is None:
            continue
        own = seed_null[seed_null["side"] == REFERENCE_SIDE].set_index("feature")
        mask = (df["side"] == side).to_numpy()
        features = df.loc[mask, "feature"].to_numpy()
        seed_null_cosine = own["cosine"].reindex(features).to_numpy(np.float64)
        seed_null_correlation = own["activation_correlation"].reindex(features).to_numpy(np.float64)
        df.loc[mask, "null_match"] = own["match"].reindex(features).fillna(-1).to_numpy(np.int64)
        df.loc[mask, "null_cosine"] = seed_null_cosine
        df.loc[mask, "null_correlation"] = seed_null_correlation
        with np.errstate(invalid="ignore"):  # NaN (no partner, constant feature) compares False: unstable
            stable = (seed_null_cosine >= thresholds.stable_cosine) & (
                seed_null_correlation >= thresholds.stable_correlation
            )
        df.loc[mask, "stable"] = df.loc[mask, "live"].to_numpy(bool) & stable
    return df


def label_features(match_df: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """A copy of ``match_df`` with a ``label`` column (one of :data:`LABELS`), rules in the module docstring.

    Without a ``stable`` column (:func:`mark_stability`) every live feature is labelled as if stable.
    """
    df = match_df.copy()
    cos = df["cosine"].to_numpy(dtype=np.float64)
    corr = df["activation_correlation"].to_numpy(dtype=np.float64)  # NaN compares False: never "same"
    matched = df["match"].to_numpy() >= 0
    with np.errstate(invalid="ignore"):
        retained = matched & (cos >= thresholds.cosine) & (corr >= thresholds.correlation)
        same = matched & (cos >= thresholds.floor_cosine) & (corr >= thresholds.floor_correlation)
    gone = np.where(df["side"].to_numpy() == REFERENCE_SIDE, "lost", "new")
    label = np.where(retained, "retained", np.where(same, "changed", gone))
    live = df["live"].to_numpy(dtype=bool)
    stable = df["stable"].to_numpy(dtype=bool) if "stable" in df else live
    df["label"] = np.where(live, np.where(stable, label, "unstable"), "dead")
    return df


def label_fractions(labels_df: pd.DataFrame, column: str = "label") -> dict[str, float | int | None]:
    """Counts per side and label fractions among the *stable* live features.

    ``retained``/``changed``/``lost`` fractions are of the stable reference (pretrained) features; ``new`` of
    the stable compared (fine-tuned) ones; ``*_finetuned`` gives retained/changed as fractions of the stable
    compared features. ``*_activity_fraction`` weights each feature by its firing rate: the share of stable
    feature activity (rather than of dictionary entries) with that label. ``stable_fraction_<side>`` /
    ``unstable_fraction_<side>`` are shares of the live features. ``None`` where nothing is counted.
    """
    out: dict[str, float | int | None] = {}
    for side, suffix in ((REFERENCE_SIDE, ""), (COMPARED_SIDE, "_finetuned")):
        rows = labels_df[labels_df["side"] == side]
        labels = rows[column]
        live = rows[labels != "dead"]
        stable = live[live[column] != "unstable"]
        out[f"n_live_{side}"] = len(live)
        out[f"n_dead_{side}"] = int((labels == "dead").sum())
        out[f"n_stable_{side}"] = len(stable)
        out[f"n_unstable_{side}"] = len(live) - len(stable)
        out[f"stable_fraction_{side}"] = len(stable) / len(live) if len(live) else None
        out[f"unstable_fraction_{side}"] = (len(live) - len(stable)) / len(live) if len(live) else None
        gone = "lost" if side == REFERENCE_SIDE else "new"
        activity = stable["firing_rate"].to_numpy(dtype=np.float64)
        for label in ("retained", "changed", gone):
            key = label + (suffix if label != gone else "")
            is_label = (stable[column] == label).to_numpy()
            out[f"{key}_fraction"] = float(is_label.mean()) if len(stable) else None
            out[f"{key}_activity_fraction"] = (
                float(activity[is_label].sum() / activity.sum()) if activity.sum() > 0 else None
            )
    return out
