"""One self-contained HTML page of the study: computed findings first, then its settings, tables and every
figure (embedded)."""

from __future__ import annotations

import base64
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, select_autoescape

from layershift.core.io import atomic_path, read_json, read_metadata, read_table
from layershift.report.comparisons import with_comparisons
from layershift.report.faithfulness_section import feature_pages_section, fidelity_html, read_optional
from layershift.report.feature_roles import feature_roles
from layershift.report.finding_groups import study_findings, synthetic_datasets
from layershift.report.intervals import with_interval_cells
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
from layershift.report.tables import fold_intervals, sae_quality
from layershift.study.targets import SIMILARITY_MEASURES

SECTIONS = [
    ("findings", "Findings: the paper's claims checked"),
    ("study", "The study"),
    ("classification", "Fine-tuning: Table 2 rebuilt"),
    ("similarity", "Layer-wise similarity"),
    ("sae", "Sparse autoencoders"),
    ("features", "Features and probe sentences"),
    ("diff", "Feature diff: retained, changed, lost, new"),
]
VERDICT_CURVE_SECTION = ("verdict_curve", "How much text a verdict needs")  # only when the study has one
FIDELITY_SECTION = ("fidelity", "Faithfulness: each SAE spliced into its run's classifier")  # after "sae"
FEATURE_PAGES_SECTION = ("feature_pages", "Feature pages of the primary pair")  # after "diff"
VERDICT_CURVE_COLUMNS = {  # the curve table's column -> its heading in the report
    "layer": "layer",
    "fraction": "share of rows",
    "rows": "text rows",
    "tokens": "token rows",
    "passes": "passes",
    "stable_fraction_pretrained": "stable share, pretrained",
    "stable_fraction_finetuned": "stable share, fine-tuned",
    "n_stable_pretrained": "stable, pretrained",
    "n_stable_finetuned": "stable, fine-tuned",
    "verdict": "verdict",
    "conclusive_share": "share of resamples meeting the bar",
}
SETTINGS_SHOWN_ELSEWHERE = ("models", "datasets")  # their own tables in the study section

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>layershift report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.findings td{text-align:left;vertical-align:top}figure{margin:0 0 1.2em}figcaption{font-size:.85em;color:#555}nav a{margin-right:1em}.muted{color:#666;font-size:.85em}
</style></head><body>
<h1>layershift: how fine-tuning changes a transformer, layer by layer</h1>
<p class="muted">Generated {{ generated }} from the artifacts under results/. Config: {{ config_file }}.</p>
<nav>{% for id, title in sections %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>
{% for id, title in sections %}<section id="{{ id }}"><h2>{{ title }}</h2>
{% for block in blocks[id] %}{% if block.kind == "html" %}{{ block.html | safe }}
{% elif block.kind == "figure" %}<figure><img alt="{{ block.caption }}" src="data:image/png;base64,{{ block.data }}"><figcaption>{{ block.caption }}</figcaption></figure>
{% else %}<p>{{ block.text }}</p>{% endif %}{% endfor %}</section>
{% endfor %}</body></html>
"""


def html(text: str) -> dict:
    return {"kind": "html", "html": text}


def para(text: str) -> dict:
    return {"kind": "text", "text": text}


def table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> dict:
    return html(frame.to_html(index=False, float_format=floatfmt.format, border=0, na_rep="-"))


def findings_blocks(tables: StudyTables, config: dict, config_file: str) -> list[dict]:
    """The findings as a table: each claim checked on the real and on the synthetic datasets apart (one
    column per group the study has), with a note naming the datasets of each column."""
    synthetic = synthetic_datasets(config, config_file)
    note, frame = study_findings(tables, synthetic, config_file, listed=config.get("datasets", {}))
    plain_note = note.replace("`", "")  # the note is Markdown; here its code spans are plain text
    notes = [para(paragraph) for paragraph in plain_note.split("\n\n")]
    return [*notes, html(frame.to_html(index=False, border=0, classes="findings"))]


def figure(path: str | Path, caption: str) -> dict:
    return {"kind": "figure", "data": base64.b64encode(Path(path).read_bytes()).decode(), "caption": caption}


def _figures(paths: list[str], family: str) -> list[dict]:
    return [
        figure(p, Path(p).relative_to("results/figures").as_posix())
        for p in sorted(paths)
        if f"/figures/{family}/" in p or p.endswith(f"/{family}.png")
    ]


def models_table(config: dict, model_paths: list[str]) -> pd.DataFrame:
    """One row per model: where it comes from, its depth and width, and the layers the SAEs read."""
    rows = []
    for path in model_paths:
        pointer = read_json(path)
        rows.append(
            {
                "model": pointer["model"],
                "source": pointer["source"],
                "layers": pointer["num_hidden_layers"],
                "hidden size": pointer["hidden_size"],
                "SAE layers": str(config["models"][pointer["model"]]["sae_layers"]),
            }
        )
    return pd.DataFrame(rows)


def datasets_table(card_paths: list[str]) -> pd.DataFrame:
    """One row per dataset card: its source, rows read and kept, labels, what was dropped and the splits."""
    rows = []
    for path in card_paths:
        card = read_json(path)
        rows.append(
            {
                "dataset": card["dataset"],
                "source": card["source"],
                "rows read": card["rows_read"],
                "rows kept": card["rows_kept"],
                "labels": ", ".join(card["label_names"]),
                "dropped": ", ".join(f"{k}={v}" for k, v in card["dropped"].items() if v) or "-",
                **{f"{s} rows": sum(card["counts"][s].values()) for s in ("train", "validation", "test")},
            }
        )
    return pd.DataFrame(rows)


def environment_table() -> pd.DataFrame:
    """The Python, torch and transformers versions and the machine that rendered the report."""
    import torch
    import transformers

    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {platform.system()}",
        "cuda": torch.cuda.is_available(),
    }
    return pd.DataFrame([environment])


def study_blocks(config: dict, cards: list[str], models: list[str], benchmarks: list[str]) -> list[dict]:
    """The study section: its settings (one row each), models, datasets, environment and wall times."""
    blocks = [html("<h3>Settings</h3>"), table(settings_table(config))]
    blocks += [html("<h3>Models</h3>"), table(models_table(config, models))]
    blocks += [html("<h3>Datasets</h3>"), table(datasets_table(cards))]
    blocks += [html("<h3>Environment</h3>"), table(environment_table())]
    if benchmarks:
        blocks += [html("<h3>Wall time per rule</h3>"), table(wall_times(benchmarks), "{:.1f}")]
    return blocks


def _setting_text(value) -> str:
    """A setting as a reader writes it in the config: scalars as they are, lists and mappings as JSON."""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _flatten(prefix: str, value) -> list[dict]:
    if isinstance(value, dict) and value:
        return [row for key, inner in value.items() for row in _flatten(f"{prefix}.{key}", inner)]
    return [{"setting": prefix, "value": _setting_text(value)}]


def settings_table(config: dict) -> pd.DataFrame:
    """One row per setting of the study, ``section.key`` (nested keys joined by dots) and its value; the
    models and datasets have their own tables."""
    rows = [
        row
        for section, value in config.items()
        if section not in SETTINGS_SHOWN_ELSEWHERE
        for row in _flatten(section, value)
    ]
    return pd.DataFrame(rows, columns=["setting", "value"])


def wall_times(benchmark_paths: list[str]) -> pd.DataFrame:
    """Total and largest wall time per rule from Snakemake benchmark files (results/benchmarks/<rule>/...)."""
    rows = []
    for path in benchmark_paths:
        frame = pd.read_csv(path, sep="\t")
        rule = Path(path).relative_to("results/benchmarks").parts[0]
        rows.append(
            {
                "rule": rule,
                "seconds": float(frame["s"].iloc[-1]),
                "max_rss_mb": float(frame.get("max_rss", pd.Series([np.nan])).iloc[-1]),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return (
        frame.groupby("rule")
        .agg(
            jobs=("seconds", "size"),
            total_s=("seconds", "sum"),
            max_s=("seconds", "max"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )


def sweep_blocks(sweep_tables: list, figs: list[str]) -> list[dict]:
    """The SAE settings sweep: its table (one row per setting) and frontier figure, if the study has one."""
    columns = ["setting", "explained_variance", "l0", "dead_fraction", "median_matched_cosine"]
    columns += ["share_above_chance", "chance_cosine_p99", "cpu_seconds_per_sae", "reproducible", "faithful"]
    blocks = [
        para(
            "SAE settings sweep: each setting trained with two seeds on one layer; reproducible = median "
            "matched decoder cosine ≥ 0.7 and ≥ 80 % of live features above the random-matching 99th "
            "percentile, faithful = held-out explained variance ≥ 0.6."
        )
    ]
    blocks += [table(read_table(path)[columns]) for path in sweep_tables]
    return [*blocks, *_figures(figs, "sae_sweep")] if sweep_tables else []


def verdict_curve_blocks(curve_tables: list[str], figs: list[str]) -> list[dict]:
    """The verdict curve: per layer and share of its token rows, each stage's share of stable live features
    and the verdict (the last share, 1, is the study's own diff), and its figure."""
    frames = [read_table(path).assign(layer=read_metadata(path)["layer"]) for path in curve_tables]
    curve = pd.concat(frames, ignore_index=True)
    curve = curve[[column for column in VERDICT_CURVE_COLUMNS if column in curve]]  # older tables: fewer
    note = para(
        "The diff of each SAE layer recomputed on the first share of the layer's token rows: the four SAEs "
        "of a diff (each stage's and its seed null) trained there with the study's settings and seeds; "
        "with training_tokens set, fewer rows take more passes. A verdict is conclusive only when enough of "
        "both stages' live features are stable (docs/method.md, 'How much text a verdict needs')."
    )
    return [note, table(curve.rename(columns=VERDICT_CURVE_COLUMNS)), *_figures(figs, "verdict_curve")]


def _plain(note: str) -> dict:
    """A table note (Markdown, in parentheses) as a plain paragraph."""
    return para(note.strip("()").replace("`", ""))


def classification_blocks(accuracy: pd.DataFrame, replicates: pd.DataFrame, figs: list[str]) -> list[dict]:
    """Accuracy and macro-F1 per evaluation row as ``mean [lo, hi]`` over the runs, each run's values, and
    the classification figures."""
    blocks = [_plain(note_for(replicates["n_replicates"], INTERVAL_NOTE))]
    for metric, title in (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1")):
        if f"{metric}_mean" in replicates and replicates[f"{metric}_mean"].notna().any():
            blocks += [html(f"<h3>{title} (test split)</h3>"), table(accuracy_cells(replicates, metric))]
    per_run = accuracy_per_run(accuracy)
    if not per_run.empty:
        blocks += [html("<h3>Accuracy per run</h3>"), table(per_run)]
    families = ("accuracy", "classification", "training")
    return blocks + [block for family in families for block in _figures(figs, family)]


def similarity_blocks(similarity: pd.DataFrame, replicates: pd.DataFrame, figs: list[str]) -> list[dict]:
    """Per layer and measure the pre-vs-ft mean over the runs beside the between-run band and the verdict,
    then every comparison's table with its sentence-bootstrap intervals, and the similarity figures."""
    note = note_for(
        replicates["n_replicates"], INTERVAL_NOTE, BAND_NOTE, "verdict: the findings' between-run test"
    )
    per_comparison = with_comparisons(similarity).drop(
        columns=["n_tokens", "n_sentences", "n_token_sample"], errors="ignore"
    )
    return [
        html("<h3>Pretrained vs fine-tuned, over the fine-tuning runs</h3>"),
        _plain(note),
        table(similarity_cells(replicates, SIMILARITY_MEASURES)),
        html("<h3>Per comparison of two runs (sentence-bootstrap intervals)</h3>"),
        table(with_interval_cells(per_comparison, missing="-")),
        *_figures(figs, "similarity"),
        *_figures(figs, "depth"),
    ]


def diff_blocks(diff: pd.DataFrame, replicates: pd.DataFrame, figs: list[str]) -> list[dict]:
    """The diff's fractions over the runs beside the between-run band, every comparison's diff, and the diff
    figures."""
    if diff.empty:
        blocks = [para("no diff")]
    else:
        blocks = [
            html("<h3>Over the fine-tuning runs</h3>"),
            _plain(note_for(replicates["n_replicates"], INTERVAL_NOTE, BAND_NOTE)),
            table(diff_cells(replicates)),
            html("<h3>Per comparison of two runs (feature-resample intervals)</h3>"),
            table(fold_intervals(with_comparisons(diff))),
        ]
    families = ("diff", "relnorm", "diff_tokens")
    return blocks + [block for family in families for block in _figures(figs, family)]


def _stored(inputs: dict, key: str) -> str | None:
    """The path of an optional one-file input, None when not given."""
    return inputs[key][0] if inputs.get(key) else None


def _insert_after(sections: list, section_id: str, section: tuple[str, str]) -> None:
    position = [existing for existing, _ in sections].index(section_id)
    sections.insert(position + 1, section)


def _optional_sections(
    sections: list, blocks: dict, inputs: dict, config: dict, study: StudyTables, figs
) -> None:
    """Add the sections a study may lack (fidelity, feature pages, verdict curve) where their inputs are given."""
    if not study.fidelity.empty:
        _insert_after(sections, "sae", FIDELITY_SECTION)
        blocks[FIDELITY_SECTION[0]] = [html(fidelity_html(study.fidelity))]
        sparse = sparse_probing_cells(read_optional(_stored(inputs, "sparse_probing")))
        if not sparse.empty:
            blocks[FIDELITY_SECTION[0]] += [para(f"Sparse probing: {SPARSE_PROBING_NOTE}."), table(sparse)]
    if inputs.get("diff_labels"):
        _insert_after(sections, "diff", FEATURE_PAGES_SECTION)
        effects = read_optional(_stored(inputs, "feature_effects"))
        blocks[FEATURE_PAGES_SECTION[0]] = [html(feature_pages_section(inputs, config, study.diff, effects))]
    if inputs.get("verdict_curve"):
        sections.append(VERDICT_CURVE_SECTION)
        blocks[VERDICT_CURVE_SECTION[0]] = verdict_curve_blocks(inputs["verdict_curve"], figs)


def read_study_tables(inputs: dict) -> StudyTables:
    """The tables the findings read, from the report rule's inputs (the replicate tables aggregated from the
    per-run ones where ``inputs`` names none)."""
    accuracy = pd.read_csv(inputs["accuracy"][0])
    similarity = read_table(inputs["similarity"][0])
    diff = read_table(inputs["diff_table"][0]) if inputs.get("diff_table") else pd.DataFrame()
    return StudyTables(
        accuracy,
        similarity,
        sae_quality(inputs["sae_metrics"]),
        diff,
        similarity_replicates(similarity, _stored(inputs, "similarity_replicates")),
        diff_replicates(diff, _stored(inputs, "diff_replicates")),
        read_optional(_stored(inputs, "fidelity")),
        feature_roles(inputs.get("diff_labels", []), _stored(inputs, "feature_effects")),
    )


def build_report(out_html: str | Path, config: dict, config_file: str, inputs: dict) -> None:
    """Render the report from the artifact paths in ``inputs`` (grouped by kind) to ``out_html``; the replicate
    tables are aggregated from the per-run ones where ``inputs`` names none."""
    study = read_study_tables(inputs)
    summary = read_table(inputs["feature_summary"][0])
    figs = [str(p) for p in inputs["figures"] if str(p).endswith(".png")]
    blocks = {
        "findings": findings_blocks(study, config, config_file),
        "study": study_blocks(config, inputs["cards"], inputs["models"], inputs.get("benchmarks", [])),
        "classification": classification_blocks(
            study.accuracy, accuracy_replicates(study.accuracy, _stored(inputs, "accuracy_replicates")), figs
        ),
        "similarity": similarity_blocks(study.similarity, study.similarity_replicates, figs),
        "sae": [
            table(study.sae),
            *_figures(figs, "sae_loss"),
            *sweep_blocks(inputs.get("sae_sweep", []), figs),
        ],
        "features": [
            table(summary[["model", "dataset", "layer", "stage", "description"]]),
            *_figures(figs, "tokens"),
        ],
        "diff": diff_blocks(study.diff, study.diff_replicates, figs),
    }
    sections = list(SECTIONS)
    _optional_sections(sections, blocks, inputs, config, study, figs)
    page = (
        Environment(autoescape=select_autoescape())
        .from_string(TEMPLATE)
        .render(
            sections=sections,
            blocks=blocks,
            config_file=config_file,
            generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        )
    )
    with atomic_path(out_html, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
