"""The report's sections that read the SAEs through the classifiers: the fidelity table (each SAE spliced into its
run's classifier beside its untrained control) and the feature pages of the primary pair (one self-contained
block: the pages' JSON, embedded once, and the script that renders them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from layershift.core.io import read_table
from layershift.report.feature_page_script import feature_pages_html
from layershift.report.feature_pages import feature_pages_data, label_names, pages_json, read_profiles
from layershift.report.fidelity_tables import FIDELITY_NOTE, fidelity_cells, fidelity_over_runs
from layershift.study.targets import primary_runs

FEATURE_PAGES_NOTE = (
    "Every stable feature (reproduced by its stage's seed null above chance) of each layer of the primary pair "
    "whose diff has a verdict: its label and partner, its seed-null match, its top-activating test contexts "
    "(each token shaded by its activation, the firing one outlined), its mean activation per class and its "
    "causal effect on its run's classifier. A borderline or inconclusive verdict supports no finding about its "
    "layer's labels."
)


def read_optional(path: str | Path | None) -> pd.DataFrame:
    """The table at ``path``, or an empty one where there is none."""
    return read_table(path) if path is not None and Path(path).exists() else pd.DataFrame()


def fidelity_html(fidelity: pd.DataFrame) -> str:
    """The fidelity section's body: the note that names each stage's classifier and the table over the runs."""
    cells = fidelity_cells(fidelity_over_runs(fidelity))
    return f"<p>{FIDELITY_NOTE}.</p>" + cells.to_html(index=False, border=0, na_rep="-")


def size_note(data: dict, embedded: str) -> str:
    """How many pages the report embeds and what they cost in bytes, in all and per page."""
    count = len(data["pages"])
    size = len(embedded.encode("utf-8"))
    per_page = f", {size / count:.0f} bytes per page" if count else ""
    return (
        f"{count} feature pages in {len(data['groups'])} layers; their data is embedded once as JSON "
        f"({size / 1024:.1f} kB{per_page}) and each page is drawn only when opened."
    )


def feature_pages_section(inputs: dict, config: dict, diff_table: pd.DataFrame, effects: pd.DataFrame) -> str:
    """The feature pages' section body from the report rule's inputs: the primary pair's diff tables
    (``diff_labels``), the feature-effects table, the primary pair's profiles and the dataset cards."""
    data = feature_pages_data(
        inputs.get("diff_labels", []),
        diff_table,
        effects,
        read_profiles(inputs.get("profiles", [])),
        label_names(inputs.get("cards", [])),
        tuple(primary_runs(config)),
    )
    embedded = pages_json(data)
    notes = f"<p>{FEATURE_PAGES_NOTE}</p><p class='muted'>{size_note(data, embedded)}</p>"
    return notes + feature_pages_html(embedded)
