"""What the findings read and return: the study's tables (:class:`StudyTables`) and one checked claim
(:class:`Finding`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Finding:
    """One claim checked on one set of tables: ``holds`` (None: not stated, e.g. the measure is undefined)
    and the sentence with the numbers behind it."""

    holds: bool | None
    sentence: str


@dataclass(frozen=True)
class StudyTables:
    """The tables the claims are checked on: accuracy (long, one row per run and evaluation row), similarity
    per comparison and layer, SAE quality per SAE, the diff summary per comparison and layer (empty where the
    study has none), and the replicate tables: similarity per layer and measure and the diff per layer over
    the fine-tuning runs beside the between-run band (empty where not given); then the SAE fidelity per run,
    layer and SAE (trained / untrained control) and each feature's diff label beside its causal effect per
    pretrained-vs-fine-tuned comparison (``layershift.report.feature_roles``; empty where not given)."""

    accuracy: pd.DataFrame
    similarity: pd.DataFrame
    sae: pd.DataFrame
    diff: pd.DataFrame
    similarity_replicates: pd.DataFrame = field(default_factory=pd.DataFrame)
    diff_replicates: pd.DataFrame = field(default_factory=pd.DataFrame)
    fidelity: pd.DataFrame = field(default_factory=pd.DataFrame)
    feature_roles: pd.DataFrame = field(default_factory=pd.DataFrame)

    def tables(self) -> tuple[pd.DataFrame, ...]:
        return (
            self.accuracy,
            self.similarity,
            self.sae,
            self.diff,
            self.similarity_replicates,
            self.diff_replicates,
            self.fidelity,
            self.feature_roles,
        )

    def datasets(self) -> list[str]:
        """Every dataset any of the tables has a row of, sorted."""
        names: set[str] = set()
        for table in self.tables():
            if "dataset" in table:
                names |= set(table["dataset"].dropna())
        return sorted(names)

    def of_datasets(self, names: Iterable[str]) -> StudyTables:
        """The rows of these datasets only (a table without a dataset column, e.g. an empty diff, as it is)."""
        keep = set(names)

        def rows(table: pd.DataFrame) -> pd.DataFrame:
            return table[table["dataset"].isin(keep)] if "dataset" in table else table

        return StudyTables(*(rows(table) for table in self.tables()))
