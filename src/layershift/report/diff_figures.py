"""The feature-diff figures: retained / changed / lost / new per layer over the fine-tuning replicates beside
the between-run baseline, the crosscoder's relative decoder norms, the lost and new features' top tokens, and
the verdict curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from layershift.core.io import read_json, read_metadata, read_table
from layershift.report.comparisons import with_comparisons
from layershift.report.plotting import plt, sns
from layershift.study.schema import schema_default
from layershift.study.targets import PRETRAINED_VS_FINETUNED

LABEL_ORDER = ["retained", "changed", "lost", "new"]


FRACTION_COLOURS = dict(zip(LABEL_ORDER, sns.color_palette("colorblind", 4), strict=True))
BETWEEN_STYLE = {"facecolor": "0.88", "hatch": "///", "edgecolor": "0.45", "linewidth": 0.5}
ONE_RUN_TITLE = "one fine-tuning run, no interval"


def _tick_labels(part: pd.DataFrame) -> list[str]:
    """Each layer, with ``(k/n concl.)`` under a layer whose diff is not conclusive in every replicate."""
    labels = []
    for _, row in part.iterrows():
        verdicts = list(row["verdicts"]) if "verdicts" in part and row["verdicts"] is not None else []
        conclusive = verdicts.count("conclusive")
        note = "" if conclusive == len(verdicts) else f"\n({conclusive}/{len(verdicts)} concl.)"
        labels.append(f"{int(row['layer'])}{note}")
    return labels


def _error_bars(ax: plt.Axes, positions, centre, low, high) -> None:
    """Error bars from ``low`` to ``high`` around ``centre`` where all three are finite."""
    drawn = np.isfinite(centre) & np.isfinite(low) & np.isfinite(high)
    spread = np.clip([centre[drawn] - low[drawn], high[drawn] - centre[drawn]], 0, None)  # rounding
    ax.errorbar(positions[drawn], centre[drawn], spread, fmt="none", ecolor="black", capsize=2, lw=0.8)


def _fraction_panel(ax: plt.Axes, part: pd.DataFrame, label: str) -> None:
    """One dataset's layers for one fraction: the pre-vs-ft mean over runs with its interval (coloured) and
    the between-run mean with its min–max range (grey, hatched); bars only where every replicate's diff is
    conclusive; on the retained panel, the seed null's retained level as a black tick."""
    x = np.arange(len(part))
    fraction = f"{label}_fraction"
    shown = (part["conclusive_replicates"] == 1).to_numpy() if "conclusive_replicates" in part else True

    def values(column: str) -> np.ndarray:
        found = part[column].to_numpy(float) if column in part else np.full(len(part), np.nan)
        return np.where(shown, found, np.nan)

    mean, between = values(f"{fraction}_mean"), values(f"{fraction}_between_mean")
    ax.bar(x - 0.2, mean, 0.38, color=FRACTION_COLOURS[label])
    _error_bars(ax, x - 0.2, mean, values(f"{fraction}_lo"), values(f"{fraction}_hi"))
    ax.bar(x + 0.2, between, 0.38, **BETWEEN_STYLE)
    _error_bars(ax, x + 0.2, between, values(f"{fraction}_between_min"), values(f"{fraction}_between_max"))
    if label == "retained" and "seed_null_retained" in part:
        ax.scatter(x - 0.2, values("seed_null_retained"), marker="_", s=200, color="black", zorder=3)
    ax.set_xticks(x, _tick_labels(part))


def diff_replicates_of(summaries: pd.DataFrame, level: float) -> pd.DataFrame:
    """The diff summaries of every comparison aggregated over the replicates, with the seed null's retained
    fraction (mean over the pre-vs-ft replicates) as ``seed_null_retained``."""
    from layershift.analysis.replicates import diff_over_replicates  # scipy: only for this figure

    summaries = with_comparisons(summaries)
    table = diff_over_replicates(summaries, level)
    if "baseline_retained_fraction" in summaries:
        pre = summaries[summaries["comparison"] == PRETRAINED_VS_FINETUNED]
        null = pre.groupby(["model", "dataset", "layer"], as_index=False)["baseline_retained_fraction"].mean()
        table = table.merge(
            null.rename(columns={"baseline_retained_fraction": "seed_null_retained"}), how="left"
        )
    return table


def _diff_legend(fig: plt.Figure) -> None:
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="0.45"),
        plt.Rectangle((0, 0), 1, 1, **BETWEEN_STYLE),
        plt.Line2D([], [], color="black", marker="_", markersize=14, linestyle=""),
    ]
    labels = [
        "pretrained vs fine-tuned: mean, interval over runs",
        "between two fine-tuning runs: mean, min–max",
        "seed null: retained",
    ]
    fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.0), fontsize=8)


def plot_diff(inputs, wildcards, params) -> plt.Figure:
    """Per dataset (row) and fraction (column: retained / changed / lost / new of the stable features), per
    layer the pretrained-vs-fine-tuned fraction as the mean over the replicates with its Student-t interval,
    beside it the same fraction between two fine-tuning runs; layers conclusive in every replicate only.
    ``inputs``: the diff summary of every comparison of one model."""
    level = params.get("interval") or schema_default("replicates", "interval")
    table = diff_replicates_of(pd.DataFrame([read_json(path) for path in inputs]), level)
    table = table.sort_values(["dataset", "layer"])
    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(
        len(datasets), len(LABEL_ORDER), figsize=(12, 2.9 * len(datasets)), sharey=True, squeeze=False
    )
    for row, dataset in enumerate(datasets):
        part = table[table["dataset"] == dataset].reset_index(drop=True)
        for ax, label in zip(axes[row], LABEL_ORDER, strict=True):
            _fraction_panel(ax, part, label)
            ax.set(title=f"{dataset}: {label}", xlabel="layer", ylim=(0, 1.02))
        axes[row][0].set_ylabel("fraction of stable features")
    _diff_legend(fig)
    runs = int(table["n_replicates"].max()) if len(table) else 0
    what = f"({ONE_RUN_TITLE})" if runs <= 1 else f"(mean over {runs} fine-tuning runs)"
    fig.suptitle(f"{wildcards['model']}: what fine-tuning does to SAE features {what}", y=1.06)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def plot_relnorm(inputs, wildcards, params) -> plt.Figure:
    """Crosscoder relative decoder norms per layer, after latent-scaling filtering."""
    frames = []
    for path in inputs:
        table = read_table(path)
        layer = int(Path(path).parent.name.removeprefix("layer"))
        frames.append(table.assign(layer=layer))
    table = pd.concat(frames, ignore_index=True)
    if "flagged" in table:
        table["latent"] = np.where(
            table["flagged"].fillna(False), "exclusivity explained by shrinkage", "kept"
        )
    else:
        table["latent"] = "kept"
    grid = sns.displot(
        data=table,
        x="relative_norm",
        col="layer",
        hue="latent",
        bins=40,
        binrange=(0, 1),
        height=2.8,
        aspect=1.2,
        multiple="stack",
    )
    grid.set(xlim=(0, 1), xticks=[0, 0.25, 0.5, 0.75, 1])
    grid.set_axis_labels("relative decoder norm", "latents")
    grid.set_titles("layer {col_name}")
    grid.figure.suptitle(
        f"Crosscoder latents: {wildcards['model']} / {wildcards['dataset']} (0 = pretrained-only, 1 = fine-tuned-only)",
        y=1.05,
    )
    return grid.figure


def plot_diff_tokens(inputs, wildcards, params) -> plt.Figure:
    """Top tokens of the largest 'lost' and 'new' features per layer, as a readable text panel."""
    lines = []
    for path in inputs:
        table = read_table(path)
        layer = int(Path(path).stem.removeprefix("layer"))
        for label in ("lost", "new"):
            part = table[table["label"] == label]
            if part.empty:
                lines.append(f"layer {layer} {label}: none")
                continue
            order = "firing_rate" if "firing_rate" in part else part.columns[0]
            for _, row in part.sort_values(order, ascending=False).head(3).iterrows():
                tokens = row.get("top_tokens")
                tokens = ", ".join(list(tokens)[:8]) if tokens is not None and len(tokens) else "-"
                lines.append(f"layer {layer} {label} feature {int(row['feature'])}: {tokens}")
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(lines) + 0.8))
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    ax.set_title(f"Largest lost / new features: {wildcards['model']} / {wildcards['dataset']}")
    return fig


def plot_verdict_curve(inputs, wildcards, params) -> plt.Figure:
    """How much text a verdict needs: each stage's share of stable live features against the token rows the
    SAEs saw, a line per layer, the verdict's share bar dashed, conclusive points ringed in black."""
    tables = [read_table(path).assign(layer=str(read_metadata(path)["layer"])) for path in inputs]
    curve = pd.concat(tables, ignore_index=True)
    layers = sorted(curve["layer"].unique(), key=int)
    bar = read_metadata(inputs[0])["min_stable_share"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (stage, shown) in zip(
        axes, (("pretrained", "pretrained"), ("finetuned", "fine-tuned")), strict=True
    ):
        data = curve.assign(share=curve[f"stable_fraction_{stage}"])
        sns.lineplot(
            data=data, x="tokens", y="share", hue="layer", hue_order=layers, marker="o", errorbar=None, ax=ax
        )
        conclusive = data[data["verdict"] == "conclusive"]
        ax.scatter(
            conclusive["tokens"], conclusive["share"], s=120, facecolors="none", edgecolors="black", zorder=3
        )
        ax.axhline(bar, color="0.3", linestyle="--", linewidth=1)
        ax.set(xscale="log", ylim=(0, 1.02), xlabel="token rows the SAEs saw", title=f"{shown} SAEs")
        for axis_ticks in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):  # 20,000, not 2×10⁴
            axis_ticks(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes[0].set_ylabel("share of live features stable")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    handles += [
        plt.Line2D([], [], color="0.3", linestyle="--"),
        plt.Line2D(
            [], [], marker="o", markersize=10, markerfacecolor="none", markeredgecolor="black", linestyle=""
        ),
    ]
    labels = [f"layer {label}" for label in labels] + [f"verdict bar ({bar:g})", "conclusive"]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle(f"How much text a verdict needs: {wildcards['model']} / {wildcards['dataset']}")
    fig.tight_layout()
    return fig
