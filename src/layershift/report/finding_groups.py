"""The findings side by side on the real and the synthetic corpora: which datasets are synthetic (the config's
``datasets.<name>.synthetic``), every claim checked on each group's datasets apart, and the table a reader sees
(one column per group that has datasets; a claim with nothing to say on any group is left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from layershift.core.errors import ConfigError
from layershift.report.findings import CLAIMS, check_claims
from layershift.report.replicate_findings import between_run_tests
from layershift.report.study_tables import Finding, StudyTables

GROUPS = ("real", "synthetic")
MARKS = {True: "✓", False: "✗", None: "–"}
NOT_STATED = "not stated"
LEGEND = (
    "✓ the claim holds on that group's datasets, ✗ it does not, – not stated there (no such data, or the "
    "measure is undefined)."
)


def synthetic_datasets(config: dict, origin: str = "config") -> set[str]:
    """The datasets a study config marks ``synthetic: true``; one without the key is real text (configs
    written before the key have none)."""
    synthetic = set()
    for name, entry in (config.get("datasets") or {}).items():
        flag = (entry or {}).get("synthetic", False)
        if not isinstance(flag, bool):
            raise ConfigError(f"{origin}: datasets.{name}.synthetic: expected true or false, got {flag!r}")
        if flag:
            synthetic.add(name)
    return synthetic


def dataset_groups(datasets: Iterable[str], synthetic: set[str]) -> dict[str, list[str]]:
    """The datasets of each group, ``real`` before ``synthetic``; a group without datasets is left out."""
    datasets = list(datasets)
    members = {
        "real": [name for name in datasets if name not in synthetic],
        "synthetic": [name for name in datasets if name in synthetic],
    }
    return {group: members[group] for group in GROUPS if members[group]}


@dataclass(frozen=True)
class FindingRow:
    """One claim and what it comes to on each group (None: nothing to say on that group's data)."""

    statement: str
    by_group: dict[str, Finding | None]

    def holds_on(self) -> str:
        """``both``, one group's name, ``neither`` or ``not stated``: the groups on which the claim holds,
        among those where it is stated."""
        stated = {
            group: finding.holds
            for group, finding in self.by_group.items()
            if finding is not None and finding.holds is not None
        }
        holding = [group for group, holds in stated.items() if holds]
        if not stated:
            return NOT_STATED
        if not holding:
            return "neither"
        return "both" if len(holding) == len(GROUPS) else holding[0]


def finding_rows(tables: StudyTables, groups: dict[str, list[str]]) -> list[FindingRow]:
    """Every claim checked on each group's datasets apart; a claim the study cannot test anywhere stays in the
    table as "not stated", so a reader sees which of the paper's claims the data left open."""
    checked = {group: check_claims(tables.of_datasets(names)) for group, names in groups.items()}
    return [
        FindingRow(claim.statement, {group: checked[group].get(claim.statement) for group in groups})
        for claim in CLAIMS
    ]


def cell(finding: Finding | None) -> str:
    """A table cell: the mark (✓ / ✗ / –) and the sentence with the numbers behind it."""
    return MARKS[None] if finding is None else f"{MARKS[finding.holds]} {finding.sentence}"


def findings_frame(rows: list[FindingRow], groups: dict[str, list[str]]) -> pd.DataFrame:
    """One row per claim: the claim, one column per group, and (with two groups) where it holds."""
    side_by_side = len(groups) > 1
    records = [
        {"finding": row.statement, **{group: cell(row.by_group[group]) for group in groups}}
        | ({"holds on": row.holds_on()} if side_by_side else {})
        for row in rows
    ]
    columns = ["finding", *groups, *(["holds on"] if side_by_side else [])]
    return pd.DataFrame(records, columns=columns)


def groups_note(groups: dict[str, list[str]], origin: str | None, unlisted: Iterable[str] = ()) -> str:
    """Which datasets each column covers and where that comes from (``origin``: the study config's path,
    None without one), the marks' legend, and the datasets of the tables that the config does not list
    (counted as real). Markdown: file and key names in backticks."""
    named = "; ".join(f"{group}: {', '.join(names)}" for group, names in groups.items())
    source = (
        f"each dataset's `synthetic` key in `{origin}`; unset = real text"
        if origin is not None
        else "no study config given: every dataset counts as real text"
    )
    note = f"Datasets per column ({source}): {named}."
    unlisted = sorted(unlisted)
    if unlisted:
        note += f" Not in `{origin}`, counted as real: {', '.join(unlisted)}."
    return f"{note} {LEGEND}"


def study_findings(
    tables: StudyTables, synthetic: set[str], origin: str | None, listed: Iterable[str] | None = None
) -> tuple[str, pd.DataFrame]:
    """The findings table of a study and the note that goes above it (the columns' datasets, the marks and
    the between-run tests the change findings apply). ``synthetic``: the datasets the config marks synthetic;
    ``listed``: the datasets the config names (None: every dataset of the tables)."""
    datasets = tables.datasets()
    groups = dataset_groups(datasets, synthetic)
    unlisted = [] if listed is None else [name for name in datasets if name not in set(listed)]
    note = f"{groups_note(groups, origin, unlisted)}\n\n{between_run_tests()}"
    return note, findings_frame(finding_rows(tables, groups), groups)
