"""How much of each classifier's decision the features of one diff label carry: the diff's labels (per
comparison of the pretrained run with a fine-tuned one) joined to the causal effects each feature has on its own
run's classifier, and the contrast of one label (new, lost) with the retained features of the same side.

A feature's weight in the decision is its largest |attribution_logit| over the classes (gradient x activation of
each class logit, summed over the test split): defined for every live feature, unlike the exact ablation, which
is measured only for the top-attributed and the random control features. The contrast is in units of the side's
mean over all its live features, and its control relabels the same stable features at random (same group sizes):
a difference the random labels reach as often says nothing about the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from layershift.core.io import read_metadata, read_table

REFERENCE_SIDE = "pretrained"
COMPARISON_KEYS = ["model", "dataset", "layer", "compared"]
RELABELLINGS = 200  # random relabellings of the stable features per comparison: the control's null
NULL_QUANTILE = 0.95  # the relabelling null's quantile a difference must exceed


def read_diff_labels(paths: list[str]) -> pd.DataFrame:
    """The per-feature diff tables at ``paths``, each with its comparison's model, dataset, layer, reference and
    compared run (from the table's metadata) as columns."""
    frames = []
    for path in paths:
        meta = read_metadata(path)
        table = read_table(path)
        keys = {key: meta[key] for key in ("model", "dataset", "layer", "reference", "compared")}
        frames.append(table.assign(**keys))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def decision_weight(effects: pd.DataFrame) -> pd.Series:
    """Each feature's largest |attribution_logit_{c}| over the classes."""
    columns = [column for column in effects.columns if column.startswith("attribution_logit_")]
    return effects[columns].abs().max(axis=1)


def labelled_effects(diff_labels: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison, side and feature: its diff label, whether it is stable, its decision weight on
    its side's run's classifier (NaN: not live on the test split), its exact ablation loss change (NaN: not
    ablated) and whether it is a random control feature. The pretrained side's run is the comparison's
    reference, the fine-tuned side's the compared run."""
    if diff_labels.empty or effects.empty:
        return pd.DataFrame()
    labels = diff_labels.assign(
        run=np.where(diff_labels["side"] == REFERENCE_SIDE, diff_labels["reference"], diff_labels["compared"])
    )
    weights = effects.assign(weight=decision_weight(effects))
    columns = [
        "model",
        "dataset",
        "run",
        "layer",
        "feature",
        "weight",
        "ablation_loss_delta",
        "random_control",
    ]
    joined = labels.merge(weights[columns], on=["model", "dataset", "run", "layer", "feature"], how="left")
    keep = [*COMPARISON_KEYS, "side", "feature", "label", "stable", *columns[5:]]
    return joined[keep].assign(random_control=joined["random_control"].fillna(False).astype(bool))


def _relabelled_quantile(pool: np.ndarray, n_label: int, scale: float, rng: np.random.Generator) -> float:
    """The ``NULL_QUANTILE`` of the label-minus-baseline difference when ``n_label`` of the ``pool`` weights are
    called the label at random and the rest the baseline."""
    differences = []
    for _ in range(RELABELLINGS):
        order = rng.permutation(len(pool))
        differences.append((pool[order[:n_label]].mean() - pool[order[n_label:]].mean()) / scale)
    return float(np.quantile(differences, NULL_QUANTILE))


def _contrast(rows: pd.DataFrame, label: str, baseline: str, rng: np.random.Generator) -> dict:
    """One comparison's contrast of ``label`` with ``baseline`` among the side's stable live features."""
    live = rows[rows["weight"].notna()]
    scale = float(live["weight"].mean()) if len(live) else float("nan")
    stable = live[live["stable"].astype(bool)]
    chosen = stable.loc[stable["label"] == label, "weight"].to_numpy()
    base = stable.loc[stable["label"] == baseline, "weight"].to_numpy()
    measured = rows[(rows["label"] == label) & rows["stable"].astype(bool) & ~rows["random_control"]]
    measured = measured["ablation_loss_delta"].dropna().abs()
    random_ablation = rows.loc[rows["random_control"], "ablation_loss_delta"].dropna().abs()
    record = {
        "n_label": len(chosen),
        "n_baseline": len(base),
        "mean_label": float(chosen.mean()) / scale if len(chosen) else float("nan"),
        "mean_baseline": float(base.mean()) / scale if len(base) else float("nan"),
        "ablation_label_median": float(measured.median()) if len(measured) else float("nan"),
        "n_ablation_label": len(measured),
        "ablation_random_median": float(random_ablation.median()) if len(random_ablation) else float("nan"),
    }
    record["difference"] = record["mean_label"] - record["mean_baseline"]
    defined = len(chosen) and len(base) and scale > 0
    pool = np.concatenate([chosen, base])
    record["null_hi"] = _relabelled_quantile(pool, len(chosen), scale, rng) if defined else float("nan")
    return record


def role_contrasts(
    labelled: pd.DataFrame, side: str, label: str, baseline: str = "retained", seed: int = 0
) -> pd.DataFrame:
    """Per comparison (model, dataset, layer, compared run): the ``label`` and ``baseline`` features' mean
    decision weight among ``side``'s stable live features (in units of the side's live mean), their
    ``difference``, the relabelling null's ``null_hi``, and the ablation medians (the label's ablated features
    and the random control features, |loss change|)."""
    if labelled.empty:
        return pd.DataFrame()
    rng = np.random.default_rng(seed)
    rows = []
    for key, group in labelled[labelled["side"] == side].groupby(COMPARISON_KEYS, sort=True):
        record = dict(zip(COMPARISON_KEYS, key, strict=True)) | {"side": side, "label": label}
        rows.append(record | _contrast(group, label, baseline, rng))
    return pd.DataFrame(rows)


def feature_roles(diff_paths: list[str], effects_path: str | Path | None) -> pd.DataFrame:
    """:func:`labelled_effects` of the pretrained-vs-fine-tuned diffs at ``diff_paths`` and the study's
    feature-effects table (empty where either is missing)."""
    if not diff_paths or effects_path is None or not Path(effects_path).exists():
        return pd.DataFrame()
    labels = read_diff_labels(diff_paths)
    labels = labels[labels["reference"] == REFERENCE_SIDE]  # a between-runs diff has no pretrained side
    return labelled_effects(labels, read_table(effects_path))
