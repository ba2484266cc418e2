"""A finished study's numbers as Markdown, read only from its result artifacts (``results/tables/`` and the
per-job metrics beside them): the short summary `layershift summary` prints and the full results page
`layershift summary --markdown` writes (e.g. docs/results.md).

Both outputs are built from the same sections (a heading, an optional note and a table), so a number reads
the same in each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from layershift.core.errors import ArtifactError, LayershiftError
from layershift.core.io import read_table, reading
from layershift.report.finding_groups import study_findings, synthetic_datasets
from layershift.report.findings import StudyTables
from layershift.report.intervals import interval_columns, with_interval_cells
from layershift.report.tables import ROWS, fold_intervals, sae_quality, summary_markdown
from layershift.study.schema import load_yaml

REQUIRED_TABLES = ("accuracy.csv", "similarity.parquet")  # what every finished study has
SIMILARITY_COLUMNS = ["model", "dataset", "layer", "cosine_of_means", "cka_sentences", "cka_tokens"]
SIMILARITY_COLUMNS += ["mean_sentence_cosine"]
PAGE_SIMILARITY_EXTRA = ["cosine_of_content_means", "special_share"]  # on the page, where the table has them
DIFF_COLUMNS = [
    "model",
    "dataset",
    "layer",
    "verdict",
    "conclusive_share",
    "stable_fraction_pretrained",
    "stable_fraction_finetuned",
]
DIFF_COLUMNS += ["retained_fraction", "changed_fraction", "lost_fraction", "new_fraction"]
PAGE_DIFF_EXTRA = ["baseline_retained_fraction", "baseline_lost_fraction"]  # the seed null's, on the page
SWEEP_COLUMNS = ["setting", "explained_variance", "l0", "dead_fraction", "median_matched_cosine"]
SWEEP_COLUMNS += ["share_above_chance", "chance_cosine_p99", "reproducible", "faithful"]
DIFF_NOTE = (
    "(fractions of the *stable* features: those their stage's seed null reproduces above chance; "
    "`stable_fraction_*` = share of live features; `0.62 [0.55, 0.69]` = the fraction and its 95 % interval "
    "over feature resamples; `conclusive_share` = share of those resamples that meet the verdict's bar: "
    "conclusive at ≥ 0.95, inconclusive at ≤ 0.05, borderline between; a borderline or inconclusive layer's "
    "fractions support no finding)"
)


@dataclass
class Section:
    """One table of the results: ``title`` (bold in the summary, a heading on the page), a note after it."""

    title: str
    table: pd.DataFrame
    floatfmt: str = ".3f"
    note: str = ""

    def markdown(self) -> str:
        return self.table.to_markdown(index=False, floatfmt=self.floatfmt)


def _require(table: pd.DataFrame, path: Path, columns) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArtifactError(
            f"{path}: no column {', '.join(missing)} (not a table of this layershift version?); delete it and "
            "rerun the job that writes it (snakemake --cores N)"
        )


def _present(table: pd.DataFrame, columns) -> list[str]:
    return [column for column in columns if column in table]


def check_finished(results: Path) -> None:
    """A one-line error unless ``results`` holds the tables every finished study has."""
    missing = [name for name in REQUIRED_TABLES if not (results / "tables" / name).is_file()]
    if missing:
        raise LayershiftError(
            f"{results}/tables: no {', '.join(missing)}; run the study first (snakemake --cores N), or point "
            "--results at a finished study's results directory"
        )


def read_accuracy(results: Path) -> pd.DataFrame:
    """tables/accuracy.csv, checked for its columns and its three evaluation rows."""
    path = results / "tables/accuracy.csv"
    with reading(path):  # a damaged CSV: one line naming it, as for the Parquet tables
        accuracy = pd.read_csv(path)
    _require(accuracy, path, ("model", "dataset", "row", "accuracy"))
    absent = [row for row in ROWS if row not in set(accuracy["row"])]
    if absent:
        raise ArtifactError(
            f"{path}: no {', '.join(absent)} rows; delete it and rerun the job that writes it "
            "(snakemake --cores N)"
        )
    return accuracy


def read_similarity(results: Path) -> pd.DataFrame:
    path = results / "tables/similarity.parquet"
    similarity = read_table(path)
    _require(similarity, path, SIMILARITY_COLUMNS)
    return similarity


def read_diff(results: Path) -> pd.DataFrame:
    """tables/diff_summary.parquet, or an empty table when the study has no diff yet."""
    path = results / "tables/diff_summary.parquet"
    return read_table(path) if path.exists() else pd.DataFrame()


def read_sae_quality(results: Path) -> pd.DataFrame:
    """Held-out quality of every study SAE (the seed nulls aside) from its metrics.json."""
    paths = sorted(str(path) for path in results.glob("sae/*/*/*/layer*/metrics.json"))
    return sae_quality(paths) if paths else pd.DataFrame()


def accuracy_by_row(accuracy: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """One row per model x dataset, one column per evaluation row (random head, linear probe, fine-tuned)."""
    wide = accuracy.pivot_table(index=["model", "dataset"], columns="row", values=value).reset_index()
    return wide[["model", "dataset", *ROWS]]


def accuracy_section(accuracy: pd.DataFrame) -> Section:
    return Section("Accuracy on the test split", accuracy_by_row(accuracy), note="(Table 2 rebuilt)")


def macro_f1_sections(accuracy: pd.DataFrame) -> list[Section]:
    if "macro_f1" not in accuracy:
        return []
    return [Section("Macro-F1 on the test split", accuracy_by_row(accuracy, "macro_f1"))]


SIMILARITY_INTERVAL_NOTE = (
    "(value [low, high]: the percentile interval of a bootstrap over the split's sentences, `similarity.interval` "
    "coverage; it measures sentence sampling within one fine-tuning run, not run-to-run variation)"
)


def similarity_section(similarity: pd.DataFrame, columns=SIMILARITY_COLUMNS) -> Section:
    """The similarity per layer; a measure with a bootstrap interval reads ``0.840 [0.812, 0.871]``."""
    shown = _present(similarity, columns)
    has_intervals = any(interval_columns(similarity, column) for column in shown)
    return Section(
        "Pretrained vs fine-tuned similarity per layer",
        with_interval_cells(similarity, shown)[shown],
        note=SIMILARITY_INTERVAL_NOTE if has_intervals else "",
    )


def diff_sections(diff: pd.DataFrame, columns=DIFF_COLUMNS) -> list[Section]:
    if diff.empty:
        return []
    folded = fold_intervals(diff)
    frame = folded[_present(folded, columns)]
    return [Section("SAE feature diff per layer", frame, floatfmt=".2f", note=DIFF_NOTE)]


def sae_quality_sections(sae: pd.DataFrame) -> list[Section]:
    if sae.empty:
        return []
    note = "(held-out rows; L0 = mean active latents per token)"
    return [Section("SAE quality per layer and stage", sae, note=note)]


def sweep_sections(results: Path) -> list[Section]:
    """The SAE settings sweep's table (one row per setting), if the study ran one."""
    sections = []
    for path in sorted(results.glob("sae_sweep/*/*/*/layer*.parquet")):
        sweep = read_table(path)
        where = path.relative_to(results / "sae_sweep").with_suffix("").as_posix()
        note = (
            "(two seeds per setting; reproducible = median matched decoder cosine ≥ 0.7, faithful = EV ≥ 0.6)"
        )
        sections.append(
            Section(f"SAE settings sweep: {where}", sweep[_present(sweep, SWEEP_COLUMNS)], note=note)
        )
    return sections


CURVE_COLUMNS = (
    "layer",
    "fraction",
    "rows",
    "tokens",
    "passes",
    "stable_fraction_pretrained",
    "stable_fraction_finetuned",
    "conclusive_share",
    "verdict",
)


def verdict_curve_sections(results: Path) -> list[Section]:
    """The verdict curve (the diff on a fraction of each layer's token rows), one section per model x dataset
    the study ran it on: how much text a verdict needs."""
    sections = []
    for pair in sorted({path.parent for path in results.glob("verdict_curve/*/*/layer*.parquet")}):
        tables = [
            read_table(path).assign(layer=int(path.stem.removeprefix("layer")))
            for path in sorted(pair.glob("layer*.parquet"))
        ]
        curve = pd.concat(tables, ignore_index=True).sort_values(["layer", "fraction"])
        note = (
            "(the diff on the first fraction of each layer's token rows, its SAEs trained with the study's settings; "
            "fraction 1 is the study's own diff; the verdict needs the stable share's bar met in ≥ 95 % of "
            "feature resamples, docs/method.md)"
        )
        where = pair.relative_to(results / "verdict_curve").as_posix()
        sections.append(
            Section(
                f"How much text a verdict needs: {where}", curve[_present(curve, CURVE_COLUMNS)], note=note
            )
        )
    return sections


def summary_sections(results: Path) -> list[Section]:
    """The short summary: accuracy, similarity per layer and the diff (where the study has one)."""
    check_finished(results)
    accuracy = read_accuracy(results)
    similarity = read_similarity(results)
    return [accuracy_section(accuracy), similarity_section(similarity), *diff_sections(read_diff(results))]


def summary_markdown_text(results: Path) -> str:
    """The short summary as bold titles and Markdown tables (what the README shows)."""
    blocks = [
        f"**{s.title}**{' ' + s.note if s.note else ''}\n\n{s.markdown()}\n"
        for s in summary_sections(results)
    ]
    return "\n".join(blocks)


def feature_summary_markdown(results: Path) -> str:
    """Table 1, generated (what each layer's top features respond to), or nothing before the features step."""
    path = results / "tables/feature_summary.parquet"
    return summary_markdown(read_table(path)) if path.exists() else ""


def page_header(command: str) -> str:
    return (
        "# layershift results\n\n"
        "<!-- Generated file: do not edit. Its layout lives in src/layershift/report/results_page.py. -->\n\n"
        f"Every number on this page is read from a finished study's artifacts (`results/tables/` and the "
        f"per-SAE metrics). Regenerate it after a run (`snakemake --cores N`) with `{command}`.\n"
    )


def findings_markdown(tables: StudyTables, config_path: Path | None) -> str:
    """The findings as a Markdown table: each claim on the real and on the synthetic datasets apart, which
    datasets are synthetic read from the study config at ``config_path`` (None: none found, all real)."""
    if config_path is None:
        synthetic, origin, listed = set(), None, None
    else:
        config, origin = load_yaml(config_path), str(config_path)
        synthetic, listed = synthetic_datasets(config, origin), config.get("datasets") or {}
    note, frame = study_findings(tables, synthetic, origin, listed)
    cells = frame.map(lambda text: str(text).replace("|", "\\|"))  # a pipe would end the Markdown cell
    return f"{note}\n\n{cells.to_markdown(index=False)}\n"


def results_page(results: Path, command: str, config_path: Path | None = None) -> str:
    """The full results page: findings, then every table of the study; ``command`` is what regenerates it,
    ``config_path`` the study config that says which datasets are synthetic (None: every dataset is real)."""
    check_finished(results)
    accuracy, similarity = read_accuracy(results), read_similarity(results)
    sae, diff = read_sae_quality(results), read_diff(results)
    sections = [
        accuracy_section(accuracy),
        *macro_f1_sections(accuracy),
        similarity_section(similarity, SIMILARITY_COLUMNS + PAGE_SIMILARITY_EXTRA),
        *sae_quality_sections(sae),
        *sweep_sections(results),
        *diff_sections(diff, DIFF_COLUMNS + PAGE_DIFF_EXTRA),
        *verdict_curve_sections(results),
    ]
    parts = [page_header(command), "## Findings\n"]
    parts.append(findings_markdown(StudyTables(accuracy, similarity, sae, diff), config_path))
    for section in sections:
        note = f"{section.note}\n\n" if section.note else ""
        parts.append(f"## {section.title}\n\n{note}{section.markdown()}\n")
    features = feature_summary_markdown(results)
    if features:
        parts.append(f"## What the top SAE features respond to (Table 1, generated)\n\n{features}")
    return "\n".join(parts)
