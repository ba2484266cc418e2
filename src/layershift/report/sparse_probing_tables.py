"""How concentrated the task is in a few SAE features, per layer and stage: the dense probe on the layer's
hidden states beside probes on its k most label-predictive SAE latents, as test accuracy over the runs."""

from __future__ import annotations

import pandas as pd

from layershift.analysis.replicates import mean_interval
from layershift.report.intervals import interval_cell

KEYS = ["model", "dataset", "layer", "stage"]
NOTE = (
    "test accuracy of a logistic probe on the layer's mean-pooled hidden states (dense) and on its k most "
    "label-predictive SAE latents (ranked on the train split by their ANOVA F statistic), mean [low, high] over "
    "the runs (the pretrained stage is one run); a k-sparse probe near the dense one means the task sits in "
    "that few features"
)


def probe_label(row: pd.Series) -> str:
    return "dense" if row["probe"] == "dense" else f"k={int(row['k'])}"


def sparse_probing_cells(table: pd.DataFrame, level: float = 0.95, digits: int = 3) -> pd.DataFrame:
    """One row per model x dataset x layer x stage, one column per probe (dense, k=1, k=2, ...)."""
    if table.empty:
        return pd.DataFrame()
    table = table.assign(probe_label=table.apply(probe_label, axis=1))
    order = ["dense"] + sorted(set(table["probe_label"]) - {"dense"}, key=lambda label: int(label[2:]))
    rows = []
    for keys, group in table.groupby(KEYS, sort=True):
        row = dict(zip(KEYS, keys, strict=True)) | {"n": int(group["run"].nunique())}
        for label in order:
            accuracy = group.loc[group["probe_label"] == label, "accuracy"].to_numpy(float)
            interval = mean_interval(accuracy, level)
            row[label] = interval_cell(interval.mean, interval.lo, interval.hi, digits, "-")
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["stage"] = pd.Categorical(frame["stage"], ["pretrained", "finetuned"], ordered=True)
    return frame.sort_values(KEYS, ignore_index=True).assign(stage=lambda f: f["stage"].astype(str))
