"""The fine-tuning replicates as a reader sees them: each number a mean over the runs with its interval
(``0.912 [0.890, 0.934]``), beside it the band of the same number between two fine-tuning runs
(``0.951 (0.930–0.970)``: mean (min–max)), and the per-run values.

The replicate tables are the study's own (``results/tables/*_replicates.parquet``, at its configured interval)
where they exist, else aggregated here from the per-run tables at the schema's default interval. With one
fine-tuning run a cell is the point value alone and the note says so plainly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from layershift.core.io import read_table
from layershift.report.comparisons import with_comparisons
from layershift.report.intervals import interval_cell
from layershift.study.schema import schema_default
from layershift.study.targets import SIMILARITY_MEASURES

ROWS = ("pretrained", "linear_probe", "finetuned")
DIFF_SHOWN = ("retained_fraction", "changed_fraction", "lost_fraction", "new_fraction")
DIFF_FLAGS = {
    "lost_beyond_between_runs": "lost beyond between runs",
    "new_beyond_between_runs": "new beyond between runs",
    "retained_below_between_runs": "retained below between runs",
}
ONE_RUN = "one fine-tuning run: no interval"
INTERVAL_NOTE = (
    "mean [low, high] = the mean over the n fine-tuning runs and its Student-t interval "
    "(`replicates.interval` coverage)"
)
BAND_NOTE = "between runs = mean (min–max) of the same number between two fine-tuning runs"


def level() -> float:
    """Coverage of the intervals aggregated here: the schema's ``replicates.interval``."""
    return schema_default("replicates", "interval")


def band_cell(mean: float, low: float, high: float, digits: int = 3, missing: str = "-") -> str:
    """``0.951 (0.930–0.970)``: a between-run band's mean and range; the mean alone for one pair."""
    if pd.isna(mean):
        return missing
    if pd.isna(low) or pd.isna(high) or low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def values_cell(values, digits: int = 3) -> str:
    """The per-run values in run order, ``0.91, 0.93, 0.92``."""
    values = [] if values is None else list(values)
    return ", ".join(f"{value:.{digits}f}" for value in values) or "-"


def one_run(counts) -> bool:
    """Whether every group has at most one fine-tuning run (no interval anywhere)."""
    counts = pd.Series(counts, dtype=float).dropna()
    return bool(len(counts)) and bool((counts <= 1).all())


def note_for(counts, *parts: str) -> str:
    """The note above a replicate table: ``parts`` joined, or :data:`ONE_RUN` where there is one run."""
    if one_run(counts):
        return f"({ONE_RUN}; each value is that run's)"
    return f"({'; '.join(parts)})"


def accuracy_replicates(accuracy: pd.DataFrame, stored: Path | None = None) -> pd.DataFrame:
    """Accuracy and macro-F1 per model x dataset x evaluation row over the runs: the stored table, else
    aggregated from ``accuracy`` (a table without ``run`` is one run)."""
    if stored is not None and Path(stored).exists():
        return read_table(stored)
    from layershift.analysis.replicates import accuracy_over_replicates

    runs = accuracy if "run" in accuracy else accuracy.assign(run="finetuned")
    absent = {column: float("nan") for column in ("macro_f1", "n_test") if column not in runs}
    return accuracy_over_replicates(runs.assign(**absent), level())


def similarity_replicates(similarity: pd.DataFrame, stored: Path | None = None) -> pd.DataFrame:
    """Per layer and measure the pre-vs-ft mean over replicates beside the between-run band: the stored table,
    else aggregated from the per-comparison ``similarity`` table."""
    if stored is not None and Path(stored).exists():
        return read_table(stored)
    from layershift.analysis.replicates import similarity_over_replicates

    table = with_comparisons(similarity)
    if "relative_depth" not in table:
        table = table.assign(relative_depth=float("nan"))
    return similarity_over_replicates(table, SIMILARITY_MEASURES, level())


def diff_replicates(diff: pd.DataFrame, stored: Path | None = None) -> pd.DataFrame:
    """Per layer the feature diff's fractions over replicates beside the between-run band: the stored table,
    else aggregated from the per-comparison ``diff`` table (empty without a diff)."""
    if stored is not None and Path(stored).exists():
        return read_table(stored)
    if diff.empty:
        return pd.DataFrame()
    from layershift.analysis.replicates import diff_over_replicates

    return diff_over_replicates(with_comparisons(diff), level())


def accuracy_cells(replicates: pd.DataFrame, metric: str = "accuracy", digits: int = 3) -> pd.DataFrame:
    """One row per model x dataset: the runs (n) and per evaluation row ``mean [lo, hi]``."""
    records = {}
    for _, row in replicates.iterrows():
        record = records.setdefault((row["model"], row["dataset"]), {"n": 0})
        record["n"] = max(record["n"], int(row["n_replicates"]))
        cell = interval_cell(row[f"{metric}_mean"], row[f"{metric}_lo"], row[f"{metric}_hi"], digits, "-")
        record[row["row"]] = cell
    frame = pd.DataFrame(
        [{"model": model, "dataset": dataset, **cells} for (model, dataset), cells in records.items()]
    )
    return frame.reindex(columns=["model", "dataset", "n", *ROWS]).fillna("-")


def accuracy_per_run(accuracy: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The per-run values: one row per model x dataset x run, a column per evaluation row."""
    if "run" not in accuracy:
        return pd.DataFrame()
    wide = accuracy.pivot_table(index=["model", "dataset", "run"], columns="row", values=metric)
    return wide.reset_index().reindex(columns=["model", "dataset", "run", *ROWS])


def similarity_cells(replicates: pd.DataFrame, measures, digits: int = 3) -> pd.DataFrame:
    """One row per model x dataset x layer x measure: n runs, pre vs fine-tuned ``mean [lo, hi]``, the
    between-run band, the pretrained split half (where the table has one), the verdict and the per-run
    values."""
    rows = replicates[replicates["measure"].isin(list(measures))]
    frame = rows[["model", "dataset", "layer", "measure"]].copy()
    frame["n"] = rows["n_replicates"]
    frame["pre vs fine-tuned"] = [
        interval_cell(mean, low, high, digits, "-")
        for mean, low, high in zip(
            rows["pre_vs_ft_mean"], rows["pre_vs_ft_lo"], rows["pre_vs_ft_hi"], strict=True
        )
    ]
    frame["between runs"] = [
        band_cell(mean, low, high, digits)
        for mean, low, high in zip(
            rows["between_runs_mean"], rows["between_runs_min"], rows["between_runs_max"], strict=True
        )
    ]
    if "pretrained_split_half" in rows and rows["pretrained_split_half"].notna().any():
        frame["pretrained split half"] = rows["pretrained_split_half"].map(
            lambda value: "-" if pd.isna(value) else f"{value:.{digits}f}"
        )
    frame["verdict"] = rows["verdict"]
    frame["per run"] = [values_cell(values, digits) for values in rows["pre_vs_ft_values"]]
    return frame.reset_index(drop=True)


def _verdicts_cell(verdicts) -> str:
    """``2 of 3 conclusive`` over the replicates' diff verdicts."""
    verdicts = [] if verdicts is None else list(verdicts)
    return f"{verdicts.count('conclusive')} of {len(verdicts)} conclusive" if verdicts else "-"


def _flag_cell(flag) -> str:
    return "-" if pd.isna(flag) else ("yes" if flag else "no")


def diff_cells(replicates: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """One row per model x dataset x layer: n runs, the replicates' verdicts, per fraction the pre-vs-ft
    ``mean [lo, hi]`` and the between-run band, and whether lost / new lie above and retained below that band
    (``-``: no interval or no between-run pair)."""
    frame = replicates[["model", "dataset", "layer"]].copy()
    frame["n"] = replicates["n_replicates"]
    if "verdicts" in replicates:
        frame["verdicts"] = replicates["verdicts"].map(_verdicts_cell)
    for fraction in DIFF_SHOWN:
        if f"{fraction}_mean" not in replicates:
            continue
        name = fraction.removesuffix("_fraction")
        frame[name] = [
            interval_cell(row[f"{fraction}_mean"], row[f"{fraction}_lo"], row[f"{fraction}_hi"], digits, "-")
            for _, row in replicates.iterrows()
        ]
        frame[f"{name}, between runs"] = [
            band_cell(
                row[f"{fraction}_between_mean"],
                row[f"{fraction}_between_min"],
                row[f"{fraction}_between_max"],
                digits,
            )
            for _, row in replicates.iterrows()
        ]
    for flag, heading in DIFF_FLAGS.items():
        if flag in replicates:
            frame[heading] = replicates[flag].map(_flag_cell)
    return frame.reset_index(drop=True)
