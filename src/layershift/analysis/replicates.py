"""Aggregation over fine-tuning replicates: R fine-tuning runs (one per seed) of each model x dataset.

Runs are named ``pretrained`` and ``finetuned-s{seed}``. A per-run table row names its two runs in
``reference`` and ``compared`` and their kind in ``comparison``: ``pretrained_vs_finetuned`` (the pretrained
model against one fine-tuned run) or ``between_runs`` (two different fine-tuned runs: how far fine-tuning
with another seed moves the result, the run-to-run noise baseline).

Each pre-vs-ft quantity gets the mean over replicates with a Student-t interval (:func:`mean_interval`), and
beside it the band (min, mean, max) of the same quantity between fine-tuning runs. A layer counts as changed
by fine-tuning when the pre-vs-ft interval lies wholly beyond that band (:data:`BETWEEN_RUN_TEST`). The
"two samples of the pretrained model" baseline, :func:`split_half_similarity`, compares the mean sentence
vectors of two seeded random halves of the pretrained model's sentences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import stats

from layershift.analysis.similarity import _vectors, cosine

PRETRAINED_VS_FINETUNED = "pretrained_vs_finetuned"
BETWEEN_RUNS = "between_runs"
CHANGED = "changed"
WITHIN_RUN_TO_RUN = "within run-to-run"
NO_BASELINE = "no between-run baseline"
BETWEEN_RUN_TEST = (
    "A layer is 'changed' by fine-tuning on a measure (higher = more alike) when the upper end of the "
    "Student-t interval of the pretrained-vs-fine-tuned value over the R fine-tuning replicates lies below "
    "the lowest value between two fine-tuning runs: the pretrained model is less alike to every fine-tuned "
    "run, at the interval's level, than any two fine-tuning runs are to each other. Otherwise 'within "
    "run-to-run'; with fewer than 2 replicates or no pair of fine-tuning runs, 'no between-run baseline'."
)
# Two values closer than this count as equal in the between-run comparisons (float rounding of measures
# computed from the same vectors along different paths), so identical models never read as changed.
ROUNDING_TOLERANCE = 1e-9
DIFF_FRACTIONS = (
    "retained_fraction",
    "changed_fraction",
    "lost_fraction",
    "new_fraction",
    "stable_fraction_pretrained",
    "stable_fraction_finetuned",
)
GROUP_KEYS = ["model", "dataset", "layer"]
FINETUNED_RUN = re.compile(r"finetuned-s(\d+)")


@dataclass(frozen=True)
class MeanInterval:
    """Mean of ``n`` replicate values with the ends ``lo``, ``hi`` of its Student-t interval (NaN: none)."""

    mean: float
    lo: float
    hi: float
    n: int


def mean_interval(values, level: float = 0.95) -> MeanInterval:
    """Mean over replicates and its Student-t interval at ``level``, NaN values dropped.

    The interval is ``mean +- t_{(1 + level) / 2, n - 1} * sd / sqrt(n)`` (``sd`` with ``n - 1``). With fewer
    than two values there is no spread to estimate, so no interval: ``lo = hi = NaN``. With zero spread the
    interval is the mean itself. No values: every field NaN, ``n = 0``."""
    finite = np.asarray(values, dtype=float)
    finite = finite[~np.isnan(finite)]
    n = len(finite)
    if n == 0:
        return MeanInterval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(finite.mean())
    if n < 2:
        return MeanInterval(mean, float("nan"), float("nan"), n)
    half_width = stats.t.ppf((1 + level) / 2, n - 1) * finite.std(ddof=1) / np.sqrt(n)
    return MeanInterval(mean, float(mean - half_width), float(mean + half_width), n)


def run_order(run: str) -> tuple:
    """Sort key of a run name: ``pretrained`` first, then fine-tuned runs by seed, then any other by name."""
    if run == "pretrained":
        return (0, 0, run)
    matched = FINETUNED_RUN.fullmatch(run)
    return (1, int(matched.group(1)), run) if matched else (2, 0, run)


def _in_run_order(rows: pd.DataFrame, columns: Sequence[str] = ("reference", "compared")) -> pd.DataFrame:
    """``rows`` sorted by the run names in ``columns``, each in :func:`run_order`."""
    keys = [
        tuple(run_order(run) for run in runs)
        for runs in zip(*(rows[column] for column in columns), strict=True)
    ]
    return rows.iloc[sorted(range(len(rows)), key=keys.__getitem__)]


def _split_comparisons(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pre-vs-ft rows and the between-run rows of one group, each in run order."""
    kind = rows["comparison"]
    return _in_run_order(rows[kind == PRETRAINED_VS_FINETUNED]), _in_run_order(rows[kind == BETWEEN_RUNS])


def _finite(values) -> list[float]:
    return [float(value) for value in values if not pd.isna(value)]


def _band(values: list[float]) -> tuple[float, float, float]:
    """Mean, min and max of the between-run values (NaN for none)."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def similarity_verdict(interval: MeanInterval, between_values: list[float]) -> str:
    """:data:`BETWEEN_RUN_TEST` for one layer and measure."""
    if interval.n < 2 or not between_values:
        return NO_BASELINE
    return CHANGED if interval.hi < min(between_values) - ROUNDING_TOLERANCE else WITHIN_RUN_TO_RUN


def _measure_row(pre: pd.DataFrame, between: pd.DataFrame, measure: str, level: float) -> dict:
    """The replicate summary and verdict of one measure in one (model, dataset, layer) group."""
    pre_values = _finite(pre[measure])
    between_values = _finite(between[measure])
    interval = mean_interval(pre_values, level)
    between_mean, between_min, between_max = _band(between_values)
    return {
        "measure": measure,
        "n_replicates": interval.n,
        "pre_vs_ft_mean": interval.mean,
        "pre_vs_ft_lo": interval.lo,
        "pre_vs_ft_hi": interval.hi,
        "pre_vs_ft_values": pre_values,
        "n_between_pairs": len(between_values),
        "between_runs_mean": between_mean,
        "between_runs_min": between_min,
        "between_runs_max": between_max,
        "between_runs_values": between_values,
        "verdict": similarity_verdict(interval, between_values),
    }


_SIMILARITY_COLUMNS = [
    "n_replicates",
    "pre_vs_ft_mean",
    "pre_vs_ft_lo",
    "pre_vs_ft_hi",
    "pre_vs_ft_values",
    "n_between_pairs",
    "between_runs_mean",
    "between_runs_min",
    "between_runs_max",
    "between_runs_values",
    "verdict",
]


def similarity_over_replicates(
    similarity: pd.DataFrame,
    measures: Sequence[str],
    level: float = 0.95,
    split_half: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (model, dataset, layer, measure): the pre-vs-ft measure over replicates and the test against
    the run-to-run band.

    ``similarity`` has one row per (model, dataset, reference, compared, layer) with ``comparison``,
    ``relative_depth`` and a column per measure (higher = more alike); a measure column that is absent is
    skipped, NaN values are left out. Columns: ``relative_depth``, ``n_replicates``, ``pre_vs_ft_mean`` /
    ``_lo`` / ``_hi`` (Student-t interval at ``level``), ``pre_vs_ft_values`` (in compared-run order),
    ``n_between_pairs``, ``between_runs_mean`` / ``_min`` / ``_max`` / ``_values``, with ``split_half`` (model,
    dataset, layer and a column per measure it covers) ``pretrained_split_half`` (NaN where it has no value),
    and ``verdict`` by :data:`BETWEEN_RUN_TEST`: the pre-vs-ft interval's upper end below the lowest
    between-run value is "changed", otherwise "within run-to-run"; fewer than 2 replicates or no between-run
    pair is "no between-run baseline"."""
    present = [measure for measure in measures if measure in similarity.columns]
    rows = []
    for (model, dataset, layer), group in similarity.groupby(GROUP_KEYS, sort=True):
        pre, between = _split_comparisons(group)
        keys = {"model": model, "dataset": dataset, "layer": layer}
        keys["relative_depth"] = group["relative_depth"].iloc[0]
        rows += [keys | _measure_row(pre, between, measure, level) for measure in present]
    table = pd.DataFrame(rows, columns=[*GROUP_KEYS, "relative_depth", "measure", *_SIMILARITY_COLUMNS])
    if split_half is not None:
        table.insert(len(table.columns) - 1, "pretrained_split_half", _split_half_values(table, split_half))
    return table


def _split_half_values(table: pd.DataFrame, split_half: pd.DataFrame) -> np.ndarray:
    """Per row of ``table``, the split-half value of its measure at its (model, dataset, layer); NaN if none."""
    measures = [column for column in split_half.columns if column not in GROUP_KEYS]
    long = split_half.melt(id_vars=GROUP_KEYS, value_vars=measures, var_name="measure", value_name="value")
    merged = table[[*GROUP_KEYS, "measure"]].merge(long, on=[*GROUP_KEYS, "measure"], how="left")
    return merged["value"].to_numpy(dtype=float)


def _beyond(above: float, below: float) -> object:
    """``above > below`` beyond rounding; NA when either is NaN (no interval, or no between-run pair)."""
    if np.isnan(above) or np.isnan(below):
        return pd.NA
    return bool(above > below + ROUNDING_TOLERANCE)


def _fraction_columns(pre: pd.DataFrame, between: pd.DataFrame, fraction: str, level: float) -> dict:
    """``{fraction}_mean/_lo/_hi/_values`` over replicates and ``{fraction}_between_mean/_min/_max``."""
    pre_values = _finite(pre[fraction]) if fraction in pre.columns else []
    between_values = _finite(between[fraction]) if fraction in between.columns else []
    interval = mean_interval(pre_values, level)
    between_mean, between_min, between_max = _band(between_values)
    return {
        f"{fraction}_mean": interval.mean,
        f"{fraction}_lo": interval.lo,
        f"{fraction}_hi": interval.hi,
        f"{fraction}_values": pre_values,
        f"{fraction}_between_mean": between_mean,
        f"{fraction}_between_min": between_min,
        f"{fraction}_between_max": between_max,
    }


def _diff_flags(row: dict) -> dict:
    """Whether lost / new lie above, and retained below, the between-run band (NA without a baseline)."""
    return {
        "lost_beyond_between_runs": _beyond(row["lost_fraction_lo"], row["lost_fraction_between_max"]),
        "new_beyond_between_runs": _beyond(row["new_fraction_lo"], row["new_fraction_between_max"]),
        "retained_below_between_runs": _beyond(
            row["retained_fraction_between_min"], row["retained_fraction_hi"]
        ),
    }


def diff_over_replicates(diff: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (model, dataset, layer): the feature diff's fractions over replicates against the run-to-run
    band.

    ``diff`` has rows per (model, dataset, layer, reference, compared, comparison) with the fractions of
    :data:`DIFF_FRACTIONS` (NaN or absent ones are left out) and the diff's ``verdict``. Columns:
    ``n_replicates`` (pre-vs-ft rows), ``n_between_pairs``, per fraction ``{f}_mean`` / ``_lo`` / ``_hi``
    (Student-t interval at ``level``), ``{f}_values`` (compared-run order) and ``{f}_between_mean`` /
    ``_min`` / ``_max``; ``conclusive_replicates`` (share of pre-vs-ft verdicts that are "conclusive") and
    ``verdicts``; ``lost_beyond_between_runs`` / ``new_beyond_between_runs`` (the interval's lower end above
    the between-run maximum) and ``retained_below_between_runs`` (its upper end below the between-run
    minimum), NA without an interval (fewer than 2 replicates) or without a between-run pair."""
    rows = []
    for (model, dataset, layer), group in diff.groupby(GROUP_KEYS, sort=True):
        pre, between = _split_comparisons(group)
        verdicts = [str(verdict) for verdict in pre["verdict"]] if "verdict" in pre.columns else []
        row = {"model": model, "dataset": dataset, "layer": layer}
        row |= {"n_replicates": len(pre), "n_between_pairs": len(between)}
        for fraction in DIFF_FRACTIONS:
            row |= _fraction_columns(pre, between, fraction, level)
        row["conclusive_replicates"] = (
            verdicts.count("conclusive") / len(verdicts) if verdicts else float("nan")
        )
        row["verdicts"] = verdicts
        rows.append(row | _diff_flags(row))
    table = pd.DataFrame(rows)
    for flag in ("lost_beyond_between_runs", "new_beyond_between_runs", "retained_below_between_runs"):
        if flag in table.columns:
            table[flag] = table[flag].astype("boolean")
    return table


ACCURACY_METRICS = ("accuracy", "macro_f1")


def accuracy_over_replicates(accuracy: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (model, dataset, row): test accuracy and macro-F1 over the runs with Student-t intervals.

    ``accuracy`` has columns model, dataset, run, row (pretrained / linear_probe / finetuned), accuracy,
    macro_f1 and n_test. Columns: ``n_replicates`` (runs with the row), ``{metric}_mean`` / ``_lo`` / ``_hi``
    at ``level`` and ``{metric}_values`` (in run order) for accuracy and macro_f1, and ``n_test`` (the largest
    over the runs: every run scores the same test split)."""
    rows = []
    for (model, dataset, kind), group in accuracy.groupby(["model", "dataset", "row"], sort=False):
        group = _in_run_order(group, ["run"])
        row = {"model": model, "dataset": dataset, "row": kind, "n_replicates": len(group)}
        for metric in ACCURACY_METRICS:
            values = _finite(group[metric])
            interval = mean_interval(values, level)
            row |= {
                f"{metric}_mean": interval.mean,
                f"{metric}_lo": interval.lo,
                f"{metric}_hi": interval.hi,
                f"{metric}_values": values,
            }
        row["n_test"] = group["n_test"].max()
        rows.append(row)
    return pd.DataFrame(rows)


def split_halves(n_sentences: int, seed: int) -> np.ndarray:
    """``[n_sentences]`` bool: True for the sentences of the first half, a seeded random ``n // 2`` of them."""
    first = np.zeros(n_sentences, dtype=bool)
    first[np.random.default_rng(seed).permutation(n_sentences)[: n_sentences // 2]] = True
    return first


def split_half_similarity(sentences_path: str | Path, seed: int) -> pd.DataFrame:
    """The "two samples of the pretrained model" baseline: per layer, the cosine between the mean sentence
    vector of a seeded random half of the sentences (:func:`split_halves`, by row of ``sentences.parquet``)
    and that of the other half.

    It shows how far the cosine of sentence means moves when only the sample of sentences changes. Read row
    group by row group, so one group's vectors are in memory at a time. Columns: layer,
    cosine_of_sentence_means (NaN with fewer than two sentences)."""
    sentences = pq.ParquetFile(sentences_path)
    layers = [name for name in sentences.schema_arrow.names if name.startswith("layer_")]
    first_half = split_halves(sentences.metadata.num_rows, seed)
    sums = {name: np.zeros((2, sentences.schema_arrow.field(name).type.list_size)) for name in layers}
    start = 0
    for group in range(sentences.num_row_groups):
        table = sentences.read_row_group(group, columns=layers)
        in_first = first_half[start : start + table.num_rows]  # [rows of the group]
        for name in layers:
            vectors = _vectors(table, name)  # [rows, d]
            sums[name][0] += vectors[in_first].sum(0)
            sums[name][1] += vectors[~in_first].sum(0)
        start += table.num_rows
    halves_filled = 0 < first_half.sum() < len(first_half)
    return pd.DataFrame(
        {
            "layer": [int(name.split("_")[1]) for name in layers],
            "cosine_of_sentence_means": [  # cosine of sums: the same as of means (scale does not matter)
                cosine(*sums[name]) if halves_filled else float("nan") for name in layers
            ],
        }
    )
