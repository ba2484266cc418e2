"""A number's interval as a reader sees it in a table cell, ``0.840 [0.812, 0.871]``: the similarity table's
sentence bootstrap, the diff's feature resamples, a mean over fine-tuning runs. Tables written without an
interval (no ``{measure}_lo`` / ``{measure}_hi`` columns) print their points alone.
"""

from __future__ import annotations

import pandas as pd


def interval_columns(table: pd.DataFrame, measure: str) -> tuple[str, str] | None:
    """``({measure}_lo, {measure}_hi)`` where ``table`` has both, else None."""
    low, high = f"{measure}_lo", f"{measure}_hi"
    return (low, high) if low in table and high in table else None


def interval_cell(point: float, low: float, high: float, digits: int = 3, missing: str = "nan") -> str:
    """``0.840 [0.812, 0.871]``; the point alone where the interval is undefined, ``missing`` for no point."""
    if pd.isna(point):
        return missing
    if pd.isna(low) or pd.isna(high):
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def with_interval_cells(
    table: pd.DataFrame, measures=None, digits: int = 3, missing: str = "nan"
) -> pd.DataFrame:
    """``table`` with each of ``measures`` (None: every column) that has an interval written as
    :func:`interval_cell` text and its ``_lo`` / ``_hi`` columns dropped; other columns as they are."""
    table = table.copy()
    for measure in list(table.columns) if measures is None else measures:
        columns = interval_columns(table, measure) if measure in table else None
        if columns is None:
            continue
        low, high = columns
        table[measure] = [
            interval_cell(point, lo, hi, digits, missing)
            for point, lo, hi in zip(table[measure], table[low], table[high], strict=True)
        ]
        table = table.drop(columns=[low, high])
    return table
