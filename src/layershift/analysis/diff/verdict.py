"""Whether a layer's diff is conclusive, and the JSON summary it is reported as.

A layer's diff is ``conclusive`` only with a seed null for both stages and enough stable features on both
sides; otherwise ``inconclusive`` with the reason, and no finding should state retained / lost change for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from layershift.analysis.diff.labels import label_fractions
from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE
from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.diff.thresholds import Thresholds


def diff_verdict(
    fractions: dict[str, Any], cfg: DiffConfig, assessed: dict[str, bool] | None = None
) -> tuple[str, str]:
    """("conclusive" | "inconclusive", reason) for one layer's diff, from
    :func:`~layershift.analysis.diff.labels.label_fractions`; ``assessed`` says per stage whether it had a
    seed null.

    The diff is conclusive only when, on *both* sides, stability was assessed against a seed null of that
    stage, at least ``cfg.min_stable_features`` features are stable and they make up at least
    ``cfg.min_stable_share`` of the live features. Why: (1) without a seed null for a stage, SAE instability
    on that side reads as change; (2) a fraction over n stable features has a standard error up to 0.5/√n,
    so n ≥ 25 keeps it ≤ 0.1, below the effects the study reports; (3) when most live features are
    unstable the stable ones are a selected minority (the frequent, easy features) and their labels say
    nothing about the layer: the SAEs, not fine-tuning, are what the numbers would describe. Random
    (untrained) SAEs have no stable features and land here, as does a near-chance or tiny-data layer.
    """
    reasons = []
    for stage in (REFERENCE_SIDE, COMPARED_SIDE):
        if assessed is not None and not assessed.get(stage, False):
            reasons.append(f"no seed null for the {stage} stage: its features' stability is unknown")
            continue
        n_stable, share = fractions.get(f"n_stable_{stage}", 0), fractions.get(f"stable_fraction_{stage}")
        if n_stable < cfg.min_stable_features:
            reasons.append(f"{n_stable} stable {stage} features (< {cfg.min_stable_features})")
        elif share is None or share < cfg.min_stable_share:
            n_live = fractions.get(f"n_live_{stage}", 0)
            reasons.append(
                f"{n_stable} of {n_live} live {stage} features stable ({share or 0.0:.1%} < "
                f"{cfg.min_stable_share:.0%})"
            )
    if reasons:
        return "inconclusive", "; ".join(reasons)
    return "conclusive", (
        f"≥ {cfg.min_stable_features} stable features and ≥ {cfg.min_stable_share:g} of live features "
        "stable on both sides"
    )


def diff_summary(
    labels_df: pd.DataFrame,
    seed_null_labels: pd.DataFrame | None = None,
    thresholds: Thresholds | None = None,
    *,
    chance: dict[str, Any] | None = None,
    verdict: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Label fractions over stable features and, side by side, the same on a seed-null matching
    (``baseline_*``: the rates the same thresholds give where nothing changed but the seed).

    ``seed_null_labels`` must be :func:`~layershift.analysis.diff.labels.label_features` of the pretrained
    SAE's match table against its seed null *with the same thresholds and stability*; with ``stable_gap`` =
    0.5 its lost fraction is 0 by construction (stable means reproduced above the floor), so the seed null's
    instability shows as ``unstable_fraction_*``. When ``labels_df`` has a ``label_capped`` column its
    fractions appear as ``capped_*``. ``chance`` (``chance_cosine_p50`` ... ) and ``verdict`` are copied in.
    JSON-safe: no NaN (``None`` instead).
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
        summary["verdict"], summary["verdict_reason"] = verdict
    return {key: json_safe(value) for key, value in summary.items()}


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: NaN / inf floats become ``None``, numpy scalars Python ones."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
