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
from layershift.report.comparisons import with_comparisons
from layershift.report.feature_roles import feature_roles
from layershift.report.fidelity_tables import FIDELITY_NOTE, fidelity_cells, fidelity_over_runs
from layershift.report.finding_groups import study_findings, synthetic_datasets
from layershift.report.intervals import interval_columns, with_interval_cells
from layershift.report.replicate_tables import (
    BAND_NOTE,
    INTERVAL_NOTE,
    accuracy_cells,
    accuracy_per_run,
    accuracy_replicates,
    diff_cells,
    diff_replicates,
    note_for,
    similarity_cells,
    similarity_replicates,
)
from layershift.report.sparse_probing_tables import NOTE as SPARSE_PROBING_NOTE
from layershift.report.sparse_probing_tables import sparse_probing_cells
from layershift.report.study_tables import StudyTables
from layershift.report.tables import ROWS, fold_intervals, sae_quality, summary_markdown
from layershift.study.schema import load_yaml

REQUIRED_TABLES = ("accuracy.csv", "similarity.parquet")  # what every finished study has
SIMILARITY_KEYS = ["model", "dataset", "layer"]
SUMMARY_MEASURES = ["cosine_of_means", "cka_sentences", "cka_tokens", "mean_sentence_cosine"]
SIMILARITY_COLUMNS = SIMILARITY_KEYS + SUMMARY_MEASURES
PAGE_MEASURES = [*SUMMARY_MEASURES, "cosine_of_content_means"]
PAGE_SIMILARITY_EXTRA = ["cosine_of_content_means", "special_share"]  # on the page, where the table has them
COMPARISON_COLUMNS = ["reference", "compared"]
DIFF_COLUMNS = [
    "model",
    "dataset",
    "layer",
    *COMPARISON_COLUMNS,
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


def read_fidelity(results: Path) -> pd.DataFrame:
    """tables/sae_fidelity.parquet, or an empty table when the study has not judged its SAEs yet."""
    path = results / "tables/sae_fidelity.parquet"
    return read_table(path) if path.exists() else pd.DataFrame()


def read_feature_roles(results: Path) -> pd.DataFrame:
    """Each feature's diff label beside its causal effect, per pretrained-vs-fine-tuned comparison (empty
    without the diffs or the feature-effects table)."""
    diffs = sorted(str(path) for path in results.glob("diff/*/*/pretrained_vs_*/layer*.parquet"))
    return feature_roles(diffs, results / "tables/feature_effects.parquet")


def read_study(results: Path) -> StudyTables:
    """Every table of a finished study the findings read, the replicate tables included (the stored ones,
    else aggregated from the per-comparison tables)."""
    check_finished(results)
    tables = results / "tables"
    similarity, diff = read_similarity(results), read_diff(results)
    return StudyTables(
        read_accuracy(results),
        similarity,
        read_sae_quality(results),
        diff,
        similarity_replicates(similarity, tables / "similarity_replicates.parquet"),
        diff_replicates(diff, tables / "diff_replicates.parquet"),
        read_fidelity(results),
        read_feature_roles(results),
    )


def fidelity_sections(fidelity: pd.DataFrame) -> list[Section]:
    """Each SAE spliced into its run's classifier beside its untrained control, over the runs."""
    if fidelity.empty:
        return []
    note = f"({FIDELITY_NOTE}; {INTERVAL_NOTE})"
    title = "SAE fidelity: each SAE spliced into its run's classifier"
    return [Section(title, fidelity_cells(fidelity_over_runs(fidelity)), note=note)]


def sparse_probing_sections(results: Path) -> list[Section]:
    """Dense against k-sparse SAE-latent probes per layer and stage (none before the faithfulness step)."""
    path = results / "tables/sparse_probing.parquet"
    if not path.exists():
        return []
    cells = sparse_probing_cells(read_table(path))
    title = "Sparse probing: how few SAE features carry the task"
    return [Section(title, cells, note=f"({SPARSE_PROBING_NOTE})")] if not cells.empty else []


def accuracy_by_row(accuracy: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """One row per model x dataset, one column per evaluation row (random head, linear probe, fine-tuned),
    each the mean over the runs."""
    wide = accuracy.pivot_table(index=["model", "dataset"], columns="row", values=value).reset_index()
    return wide[["model", "dataset", *ROWS]]


def accuracy_sections(
    accuracy: pd.DataFrame, replicates: pd.DataFrame, metrics=("accuracy",)
) -> list[Section]:
    """Per metric: ``mean [lo, hi]`` over the n runs per evaluation row; then, with several runs, each run's
    values."""
    titles = {"accuracy": "Accuracy on the test split", "macro_f1": "Macro-F1 on the test split"}
    note = note_for(replicates["n_replicates"], INTERVAL_NOTE)
    sections = [
        Section(titles[metric], accuracy_cells(replicates, metric), note=f"{note} (Table 2 rebuilt)")
        for metric in metrics
        if f"{metric}_mean" in replicates and replicates[f"{metric}_mean"].notna().any()
    ]
    per_run = accuracy_per_run(accuracy)
    if not per_run.empty and per_run.groupby(["model", "dataset"])["run"].nunique().max() > 1:
        sections.append(Section("Accuracy per fine-tuning run", per_run))
    return sections


SIMILARITY_INTERVAL_NOTE = (
    "(value [low, high]: the percentile interval of a bootstrap over the split's sentences, `similarity.interval` "
    "coverage; it measures sentence sampling within one comparison of two runs, not run-to-run variation)"
)
SIMILARITY_VERDICT_NOTE = (
    "verdict: changed = the interval's upper end below every between-run value, else within run-to-run; "
    "no between-run baseline with one run or no pair of runs (the findings state the test); per run = each "
    "replicate's pretrained-vs-fine-tuned value"
)


def similarity_replicate_section(replicates: pd.DataFrame, measures=SUMMARY_MEASURES) -> Section:
    """Per layer and measure: pretrained vs fine-tuned as ``mean [lo, hi]`` over the runs, the between-run band,
    the verdict and the per-run values."""
    order = {measure: i for i, measure in enumerate(measures)}
    rows = replicates[replicates["measure"].isin(order)]
    rows = rows.sort_values(["model", "dataset"], kind="stable")
    rows = rows.assign(order=rows["measure"].map(order)).sort_values(["model", "dataset", "order", "layer"])
    note = note_for(rows["n_replicates"], INTERVAL_NOTE, BAND_NOTE, SIMILARITY_VERDICT_NOTE)
    return Section(
        "Pretrained vs fine-tuned similarity per layer, over the fine-tuning runs",
        similarity_cells(rows, measures),
        note=note,
    )


def similarity_section(similarity: pd.DataFrame, columns=SIMILARITY_COLUMNS) -> Section:
    """The similarity per comparison and layer; a measure with a bootstrap interval reads
    ``0.840 [0.812, 0.871]``."""
    similarity = with_comparisons(similarity)
    keys = [*SIMILARITY_KEYS, *COMPARISON_COLUMNS]
    shown = _present(similarity, [*keys, *(column for column in columns if column not in keys)])
    has_intervals = any(interval_columns(similarity, column) for column in shown)
    return Section(
        "Similarity per layer and comparison of two runs",
        with_interval_cells(similarity, shown)[shown],
        note=SIMILARITY_INTERVAL_NOTE if has_intervals else "",
    )


DIFF_REPLICATES_NOTE = (
    "fractions of the stable features as in the table per comparison below; verdicts = how many replicates' "
    "diffs are conclusive; beyond / below between runs: the interval lies wholly beyond the between-run band "
    "(- : no interval or no pair of runs)"
)


def diff_sections(diff: pd.DataFrame, replicates: pd.DataFrame, columns=DIFF_COLUMNS) -> list[Section]:
    """The diff over the fine-tuning runs beside the between-run band, then the diff of every comparison (the
    per-replicate fractions with their feature-resample intervals)."""
    if diff.empty:
        return []
    folded = fold_intervals(with_comparisons(diff))
    frame = folded[_present(folded, columns)]
    note = note_for(replicates["n_replicates"], INTERVAL_NOTE, BAND_NOTE, DIFF_REPLICATES_NOTE)
    return [
        Section("SAE feature diff per layer, over the fine-tuning runs", diff_cells(replicates), ".2f", note),
        Section("SAE feature diff per layer and comparison", frame, floatfmt=".2f", note=DIFF_NOTE),
    ]


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
    """The short summary: accuracy, similarity per layer over the runs and the diff (where the study has one)."""
    study = read_study(results)
    replicates = accuracy_replicates(study.accuracy, results / "tables/accuracy_replicates.parquet")
    return [
        *accuracy_sections(study.accuracy, replicates),
        similarity_replicate_section(study.similarity_replicates),
        *fidelity_sections(study.fidelity),
        *sparse_probing_sections(results),
        *diff_sections(study.diff, study.diff_replicates),
    ]


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
    study = read_study(results)
    replicates = accuracy_replicates(study.accuracy, results / "tables/accuracy_replicates.parquet")
    sections = [
        *accuracy_sections(study.accuracy, replicates, ("accuracy", "macro_f1")),
        similarity_replicate_section(study.similarity_replicates, PAGE_MEASURES),
        similarity_section(study.similarity, SIMILARITY_COLUMNS + PAGE_SIMILARITY_EXTRA),
        *sae_quality_sections(study.sae),
        *fidelity_sections(study.fidelity),
        *sparse_probing_sections(results),
        *sweep_sections(results),
        *diff_sections(study.diff, study.diff_replicates, DIFF_COLUMNS + PAGE_DIFF_EXTRA),
        *verdict_curve_sections(results),
    ]
    parts = [page_header(command), "## Findings\n"]
    parts.append(findings_markdown(study, config_path))
    for section in sections:
        note = f"{section.note}\n\n" if section.note else ""
        parts.append(f"## {section.title}\n\n{note}{section.markdown()}\n")
    features = feature_summary_markdown(results)
    if features:
        parts.append(f"## What the top SAE features respond to (Table 1, generated)\n\n{features}")
    return "\n".join(parts)
