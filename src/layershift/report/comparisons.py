"""Which rows of a per-comparison table a reader's check reads.

A similarity or diff table stacks one block of rows per comparison of two runs (``reference``, ``compared``,
``comparison``: pretrained vs a fine-tuning replicate, or two replicates). The checks written for one
pretrained-vs-fine-tuned pair read the *primary* comparison: the pretrained run against the first replicate
the table lists (the study config's first seed: the tables list comparisons in config order). A table written
before replicates has no comparison columns: it is one pretrained-vs-fine-tuned comparison.
"""

from __future__ import annotations

import pandas as pd

from layershift.study.targets import PRETRAINED_RUN, PRETRAINED_VS_FINETUNED, STAGES

COMPARISON_COLUMNS = ("reference", "compared", "comparison")
KEYS = ["model", "dataset"]


def with_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``reference`` / ``compared`` / ``comparison`` columns; a table without them is one
    pretrained-vs-fine-tuned comparison (``pretrained`` vs ``finetuned``)."""
    if table.empty or "comparison" in table:
        return table
    return table.assign(reference=PRETRAINED_RUN, compared=STAGES[1], comparison=PRETRAINED_VS_FINETUNED)


def primary_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each model x dataset's primary comparison: pretrained vs the first replicate listed."""
    if table.empty or "comparison" not in table:
        return table
    pre = table[table["comparison"] == PRETRAINED_VS_FINETUNED]
    if pre.empty:
        return pre
    first = pre.groupby(KEYS, sort=False)["compared"].transform("first")
    return pre[pre["compared"] == first]
