"""The similarity figures over the fine-tuning replicates: per layer of one model, and against relative depth
across models. Each line is the pretrained-vs-fine-tuned mean over the runs with its Student-t interval as a
filled band; around it the between-run band (min–max of the measure between two fine-tuning runs) hatched in
the line's colour, and the pretrained split-half value (two halves of the pretrained model's sentences) as a
diamond where the table has one. With one fine-tuning run the figure draws the single line and its title
says so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.patches import Patch

from layershift.analysis.similarity import MEASURES
from layershift.core.io import read_table
from layershift.report.comparisons import with_comparisons
from layershift.report.plotting import hue_colours, plt, sns
from layershift.study.schema import schema_default
from layershift.study.targets import SPLIT_HALF

SPLIT_HALF_NAME = Path(SPLIT_HALF).name
ONE_RUN_TITLE = "one fine-tuning run, no interval"


def replicate_table(similarity: pd.DataFrame, measure: str, level: float, split_half=None) -> pd.DataFrame:
    """The per-comparison ``similarity`` rows of ``measure`` aggregated over the replicates (the study's
    similarity-over-replicates columns); ``split_half``: the pretrained split-half tables, or None."""
    from layershift.analysis.replicates import similarity_over_replicates  # scipy: only when aggregating

    table = with_comparisons(similarity)
    if "relative_depth" not in table:
        table = table.assign(relative_depth=float("nan"))
    halves = pd.concat(split_half, ignore_index=True) if split_half else None
    return similarity_over_replicates(table, [measure], level, halves)


def _bands(ax, table: pd.DataFrame, x: str, hue: str, colours: dict) -> None:
    """Per ``hue`` x dataset line: the interval over runs, the between-run band and the split-half marker."""
    for (level, _dataset), line in table.groupby([hue, "dataset"], sort=False):
        line, colour = line.sort_values(x), colours[level]
        ax.fill_between(line[x], line["pre_vs_ft_lo"], line["pre_vs_ft_hi"], color=colour, alpha=0.25, lw=0)
        ax.fill_between(
            line[x],
            line["between_runs_min"],
            line["between_runs_max"],
            facecolor="none",
            edgecolor=colour,
            hatch="///",
            alpha=0.6,
            lw=0,
        )
        if "pretrained_split_half" in line:
            ax.scatter(
                line[x],
                line["pretrained_split_half"],
                marker="D",
                s=18,
                color=colour,
                edgecolor="black",
                zorder=3,
            )


BAND_LEGEND = [
    (Patch(facecolor="0.5", alpha=0.25), "pre vs fine-tuned: interval over runs"),
    (Patch(facecolor="none", edgecolor="0.4", hatch="///"), "between two fine-tuning runs: min–max"),
    (
        plt.Line2D([], [], marker="D", color="0.5", markeredgecolor="black", linestyle=""),
        "pretrained split half",
    ),
]


def replicate_lines(table: pd.DataFrame, x: str, hue: str, title: str, **line_style) -> tuple:
    """One line per ``hue`` x dataset of ``pre_vs_ft_mean`` against ``x`` with its bands (above); the title
    says when there is one fine-tuning run. Returns (figure, axes)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    colours = hue_colours(list(dict.fromkeys(table[hue])))
    lines = {"hue": hue, "hue_order": list(colours), "palette": colours, "style": "dataset", "markers": True}
    sns.lineplot(data=table, x=x, y="pre_vs_ft_mean", errorbar=None, ax=ax, **lines, **line_style)
    handles, labels = ax.get_legend_handles_labels()
    if table["n_replicates"].max() > 1:
        _bands(ax, table, x, hue, colours)
        handles += [handle for handle, _ in BAND_LEGEND]
        labels += [label for _, label in BAND_LEGEND]
        runs = int(table["n_replicates"].max())
        title += f"\nmean over {runs} fine-tuning runs"
    else:
        title += f"\n({ONE_RUN_TITLE})"
    ax.legend(handles, labels, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.set_title(title)
    return fig, ax


def _level(params: dict) -> float:
    return params.get("interval") or schema_default("replicates", "interval")


def plot_similarity(inputs, wildcards, params) -> plt.Figure:
    """Figures 1-2: a similarity measure per layer for one model, a line per dataset, over the replicates.

    ``inputs``: that model's per-comparison similarity tables (any tables holding its rows); split-half tables
    among them (``pretrained_split_half.parquet``) add the split-half markers."""
    measure, model = wildcards["measure"], wildcards["model"]
    split_half = [read_table(path) for path in inputs if Path(path).name == SPLIT_HALF_NAME]
    tables = [read_table(path) for path in inputs if Path(path).name != SPLIT_HALF_NAME]
    similarity = pd.concat(tables, ignore_index=True)
    table = replicate_table(similarity[similarity["model"] == model], measure, _level(params), split_half)
    fig, ax = replicate_lines(table, "layer", "dataset", f"{model}: pretrained vs fine-tuned", dashes=False)
    ax.set(xlabel="layer (0 = embeddings)", ylabel=MEASURES[measure])
    ax.set_xticks(sorted(table["layer"].unique()))
    return fig


def plot_depth(inputs, wildcards, params) -> plt.Figure:
    """Similarity vs relative depth across model sizes, over the replicates: do smaller models stay more
    similar? ``inputs[0]``: the similarity-over-replicates table (a per-comparison table is aggregated)."""
    measure = wildcards["measure"]
    table = read_table(inputs[0])
    if "measure" not in table:
        table = replicate_table(table, measure, _level(params))
    table = table[table["measure"] == measure]
    fig, ax = replicate_lines(table, "relative_depth", "model", "Similarity across model sizes")
    ax.set(xlabel="relative depth (layer / number of layers)", ylabel=MEASURES[measure])
    return fig
