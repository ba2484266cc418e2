"""The feature-diff figures: retained / changed / lost / new per layer with their intervals, the crosscoder's
relative decoder norms, the lost and new features' top tokens, and the verdict curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from layershift.core.io import read_json, read_metadata, read_table
from layershift.report.plotting import plt, sns

LABEL_ORDER = ["retained", "changed", "lost", "new"]


DIFF_SIDES = {  # bar offset, the three segments (bottom to top) and the null's retained key
    "pretrained": (-0.18, ["retained", "changed", "lost"], "baseline_retained_fraction"),
    "fine-tuned": (
        0.18,
        ["retained_finetuned", "changed_finetuned", "new"],
        "baseline_retained_finetuned_fraction",
    ),
}


TICK_NOTES = {"conclusive": "", "borderline": "\n(borderl.)"}  # any other verdict: "\n(inconcl.)"


def _diff_panel(ax: plt.Axes, part: pd.DataFrame, colors: dict) -> None:
    """One dataset's layers: both sides' stacked bars, their 95 % intervals and the seed null's retained level."""
    x = np.arange(len(part))
    verdicts = part["verdict"] if "verdict" in part else pd.Series("conclusive", index=part.index)
    shown = (verdicts == "conclusive").to_numpy()  # a borderline or inconclusive layer: only its tick mark
    for offset, segments, null_key in DIFF_SIDES.values():
        bottom = np.zeros(len(part))
        for segment in segments:
            height = part.get(f"{segment}_fraction", pd.Series(np.nan, index=part.index)).to_numpy(float)
            height = np.where(shown, height, np.nan)
            colour = colors[segment.removesuffix("_finetuned")]
            ax.bar(x + offset, height, 0.34, bottom=bottom, color=colour, edgecolor="white", linewidth=0.5)
            bottom += np.nan_to_num(height)
        _interval_marks(ax, part, x + offset, segments, shown)
        if null_key in part:
            null = np.where(shown, part[null_key].to_numpy(float), np.nan)
            ax.scatter(x + offset, null, marker="_", s=250, color="black", zorder=3)
    notes = [TICK_NOTES.get(verdict, "\n(inconcl.)") for verdict in verdicts]
    ax.set_xticks(x, [f"{layer}{note}" for layer, note in zip(part["layer"], notes, strict=True)])


def _interval_marks(ax: plt.Axes, part: pd.DataFrame, positions, segments: list[str], shown) -> None:
    """95 % intervals at a stacked bar's inner edges: the top of its first segment (retained) and the bottom
    of its last (lost / new, at 1 minus that fraction: the three sum to 1); none without intervals."""
    first, last = f"{segments[0]}_fraction", f"{segments[-1]}_fraction"
    if f"{first}_lo" not in part or f"{last}_lo" not in part:
        return
    value = {key: part[key].to_numpy(float) for key in part if key.startswith((first, last))}
    edges = [(value[first], value[f"{first}_lo"], value[f"{first}_hi"])]
    edges.append((1 - value[last], 1 - value[f"{last}_hi"], 1 - value[f"{last}_lo"]))
    for shift, (edge, low, high) in zip((-0.07, 0.07), edges, strict=True):  # apart, should they overlap
        drawn = shown & np.isfinite(edge) & np.isfinite(low) & np.isfinite(high)
        spread = [edge[drawn] - low[drawn], high[drawn] - edge[drawn]]
        ax.errorbar(positions[drawn] + shift, edge[drawn], spread, fmt="none", ecolor="black", capsize=2)


def plot_diff(inputs, wildcards, params) -> plt.Figure:
    """Per dataset and layer, two stacked bars: the pretrained SAE's features (retained / changed / lost)
    and the fine-tuned SAE's (retained / changed / new), each with 95 % intervals and the seed null's
    retained level; conclusive layers only."""
    summaries = pd.DataFrame([read_json(path) for path in inputs]).sort_values(["dataset", "layer"])
    datasets = sorted(summaries["dataset"].unique())
    colors = dict(zip(LABEL_ORDER, sns.color_palette("colorblind", 4), strict=True))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.8 * len(datasets), 3.6), sharey=True, squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        _diff_panel(ax, summaries[summaries["dataset"] == dataset].reset_index(drop=True), colors)
        ax.set(title=dataset, xlabel="layer", ylim=(0, 1.02))
    axes[0][0].set_ylabel("fraction of stable features")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in LABEL_ORDER]
    handles.append(plt.Line2D([], [], color="black", marker="_", markersize=14, linestyle=""))
    fig.legend(
        handles,
        [*LABEL_ORDER, "seed null: retained"],
        loc="upper center",
        ncol=5,
        bbox_to_anchor=(0.5, 1.06),
        fontsize=8,
    )
    fig.suptitle(
        f"{wildcards['model']}: what fine-tuning does to SAE features\n"
        "per layer: left bar = pretrained SAE's features, right bar = fine-tuned SAE's features",
        y=1.2,
    )
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
