"""Every figure of the study, drawn with seaborn in one consistent, colour-blind-safe theme.

Each ``plot_*`` function takes the rule's inputs (paths), wildcards and params and returns a Figure;
``save`` writes the PNG (for the report) and an SVG beside it, atomically. Every plotted value is a single
number (no replicates), so seaborn's bootstrapped error bars are switched off: they would draw nothing and
cost most of a figure's time. The similarity figures draw the interval the similarity table carries (its
sentence bootstrap) as a band instead.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


@contextlib.contextmanager
def _scipy_hidden():
    """Make ``import scipy`` fail inside the block, unless scipy is already loaded.

    seaborn imports scipy.stats only for its KDE (and scipy.cluster for clustermap) and falls back to its own
    copy when scipy is missing; no figure here uses either. Importing seaborn without scipy halves the start-up
    of a figure job, most of which is imports (1.3 of 2.7 CPU-s here; 80 figure jobs in the default study).
    Afterwards ``import scipy`` works as usual in this process.
    """
    hide = "scipy" not in sys.modules
    if hide:
        sys.modules["scipy"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hide and sys.modules.get("scipy", 0) is None:
            del sys.modules["scipy"]


with _scipy_hidden():
    import seaborn as sns  # noqa: E402

from layershift.analysis.similarity import MEASURES  # noqa: E402
from layershift.core.io import atomic_path, read_json, read_metadata, read_table  # noqa: E402
from layershift.report.intervals import interval_bands  # noqa: E402

ROW_NAMES = {
    "pretrained": "pre-trained + random head",
    "linear_probe": "linear probe (frozen)",
    "finetuned": "fine-tuned",
}
LABEL_ORDER = ["retained", "changed", "lost", "new"]


def theme(palette: str = "colorblind") -> None:
    sns.set_theme(style="whitegrid", context="notebook", palette=palette, font_scale=0.9)


def save(fig: plt.Figure, png_path: str | Path, dpi: int = 120) -> None:
    """Write ``png_path`` and the ``.svg`` beside it; never leaves a partial image under either name."""
    png_path = Path(png_path)
    for path, fmt in ((png_path, "png"), (png_path.with_suffix(".svg"), "svg")):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def plot_classification(inputs, wildcards, params) -> plt.Figure:
    """The paper's Figure 6 (per-class precision / recall / F1 of the fine-tuned model) beside its confusion
    matrix (rows = true label, columns = predicted), both on the test split."""
    report = read_json(inputs[0])
    finetuned, labels = report["finetuned"], report["label_names"]
    per_class = pd.DataFrame(finetuned["per_class"]).T[["precision", "recall", "f1"]].astype(float)
    side = 1.6 + 0.5 * len(labels)
    # both panels carry the class names as tick labels: room for them (about 0.07 in per character at this
    # font size) comes on top of each panel's own width, or long names squeeze the per-class heatmap flat
    names = 0.07 * max((len(str(name)) for name in labels), default=0)
    widths = [4.6 + names, side + 1.2 + names]
    fig, (ax_report, ax_confusion) = plt.subplots(
        1, 2, figsize=(sum(widths), side + names), gridspec_kw={"width_ratios": widths}
    )
    sns.heatmap(
        per_class,
        annot=True,
        fmt=".2f",
        vmin=0,
        vmax=1,
        cmap="viridis",
        cbar_kws={"label": "score"},
        ax=ax_report,
    )
    ax_report.set(title="per-class report", xlabel="metric", ylabel="class")
    sns.heatmap(
        np.asarray(finetuned["confusion_matrix"]),
        annot=True,
        fmt="d",
        cmap="Blues",
        xticklabels=labels,
        yticklabels=labels,
        cbar_kws={"label": "test sentences"},
        ax=ax_confusion,
    )
    ax_confusion.set(title="confusion matrix", xlabel="predicted label", ylabel="true label")
    fig.suptitle(
        f"{wildcards['model']} fine-tuned on {wildcards['dataset']}: test accuracy {finetuned['accuracy']:.1%}"
    )
    fig.tight_layout()
    return fig


def plot_accuracy(inputs, wildcards, params) -> plt.Figure:
    """The paper's Table 2 as a figure: accuracy before and after fine-tuning, plus the linear probe."""
    table = pd.read_csv(inputs[0]).assign(row=lambda t: t["row"].map(ROW_NAMES))
    grid = sns.catplot(
        data=table,
        x="dataset",
        y="accuracy",
        hue="row",
        col="model",
        kind="bar",
        height=3.4,
        aspect=1.1,
        hue_order=list(ROW_NAMES.values()),
        errorbar=None,
    )
    grid.set_axis_labels("dataset", "test accuracy")
    grid.set(ylim=(0, 1))
    grid.figure.suptitle("Accuracy before and after fine-tuning (test split)", y=1.04)
    return grid.figure


def plot_training(inputs, wildcards, params) -> plt.Figure:
    log = pd.read_csv(inputs[0])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    sns.lineplot(
        data=log.melt("epoch", ["train_loss", "val_loss"], "split", "loss"),
        x="epoch",
        y="loss",
        hue="split",
        marker="o",
        errorbar=None,
        ax=axes[0],
    )
    sns.lineplot(data=log, x="epoch", y="val_accuracy", marker="o", errorbar=None, ax=axes[1])
    axes[0].set(title="loss", ylabel="cross-entropy")
    axes[1].set(title="validation accuracy", ylabel="accuracy", ylim=(0, 1))
    fig.suptitle(f"Fine-tuning {wildcards['model']} on {wildcards['dataset']}")
    return fig


def _hue_colours(levels: list) -> dict:
    """The colour seaborn gives each categorical hue level: the current palette, husl beyond its length."""
    palette = None if len(levels) <= len(sns.color_palette()) else "husl"
    return dict(zip(levels, sns.color_palette(palette, len(levels)), strict=True))


def _similarity_lines(table: pd.DataFrame, x: str, measure: str, hue: str, **line_style):
    """One line per ``hue`` x dataset of a similarity ``measure`` against ``x``, its interval as a band where
    the table has one; returns (figure, axes)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    colours = _hue_colours(list(dict.fromkeys(table[hue])))
    lines = {"hue": hue, "hue_order": list(colours), "palette": colours, "style": "dataset", "markers": True}
    sns.lineplot(data=table, x=x, y=measure, errorbar=None, ax=ax, **lines, **line_style)
    interval_bands(ax, table, x, measure, hue, colours)
    ax.set_ylabel(MEASURES[measure])
    return fig, ax


def plot_similarity(inputs, wildcards, params) -> plt.Figure:
    """Figures 1-2: a similarity measure per layer, one line per dataset, for one model.

    ``inputs`` are that model's per-dataset similarity tables (or any tables holding its rows), in order."""
    table = pd.concat([read_table(path) for path in inputs], ignore_index=True)
    table = table[table["model"] == wildcards["model"]]
    fig, ax = _similarity_lines(table, "layer", wildcards["measure"], hue="dataset", dashes=False)
    ax.set(title=f"{wildcards['model']}: pretrained vs fine-tuned", xlabel="layer (0 = embeddings)")
    ax.set_xticks(sorted(table["layer"].unique()))
    return fig


def plot_depth(inputs, wildcards, params) -> plt.Figure:
    """Similarity vs relative depth across model sizes: do smaller models stay more similar?"""
    table = read_table(inputs[0])
    fig, ax = _similarity_lines(table, "relative_depth", wildcards["measure"], hue="model")
    ax.set(title="Similarity across model sizes", xlabel="relative depth (layer / number of layers)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def plot_sae_loss(inputs, wildcards, params) -> plt.Figure:
    """Training loss per epoch of every SAE of one model x dataset: a panel per layer, a line per SAE
    (both stages, plus the seed-null SAEs)."""
    frames = []
    for path in inputs:
        metrics = read_json(path)
        curve = metrics.get("loss_curve", {})
        epochs = curve.get("epoch_loss", curve) if isinstance(curve, dict) else curve
        frames.append(
            pd.DataFrame(
                {
                    "epoch": np.arange(1, len(epochs) + 1),
                    "loss": epochs,
                    "sae": f"{metrics['stage']} (seed {metrics['seed']})",
                    "layer": metrics["layer"],
                }
            )
        )
    grid = sns.relplot(
        data=pd.concat(frames),
        x="epoch",
        y="loss",
        hue="sae",
        col="layer",
        kind="line",
        marker="o",
        errorbar=None,
        height=3.0,
        aspect=1.1,
        facet_kws={"sharey": False},
    )
    grid.set_axis_labels("epoch", "train loss (MSE + sparsity)")
    grid.set_titles("layer {col_name}")
    grid.figure.suptitle(f"SAE training: {wildcards['model']} / {wildcards['dataset']}", y=1.04)
    return grid.figure


def plot_sae_sweep(inputs, wildcards, params) -> plt.Figure:
    """The settings frontier of one layer: seed reproducibility (median matched decoder cosine of two seeds)
    against held-out explained variance, a point per setting sized by L0, with the acceptance lines
    (median 0.7, EV 0.6) and the random-matching 99th percentile."""
    from layershift.study.acceptance import MIN_EXPLAINED_VARIANCE

    frame = read_table(inputs[0])
    frame = frame.assign(**{"L0 (active latents)": frame["l0"].round(1)})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sns.scatterplot(
        data=frame,
        x="explained_variance",
        y="median_matched_cosine",
        hue="setting",
        size="L0 (active latents)",
        sizes=(40, 260),
        legend="brief",
        ax=ax,
    )
    ax.axhline(0.7, color="0.3", linestyle="--", linewidth=1, label="reproducible (median 0.7)")
    ax.axvline(MIN_EXPLAINED_VARIANCE, color="0.3", linestyle=":", linewidth=1, label="faithful (EV 0.6)")
    ax.axhline(frame["chance_cosine_p99"].max(), color="tab:red", linewidth=1, label="random matching p99")
    ax.set(
        xlabel="held-out explained variance (worse seed)",
        ylabel="median matched decoder cosine, seed vs seed",
        ylim=(0, 1.02),
        title=f"SAE settings: {wildcards['model']} / {wildcards['dataset']} / {wildcards['stage']} layer {wildcards['layer']}",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return fig


def plot_tokens(inputs, wildcards, params) -> plt.Figure:
    """Figures 3-5: token-level activations of each stage's top features on the probe sentences."""
    probes = read_table(inputs[0])
    sentences = sorted(probes["sentence"].unique())
    stages = ["pretrained", "finetuned"]
    width = max(6.0, 0.45 * probes.groupby("sentence")["position"].max().max() + 2)
    fig, axes = plt.subplots(len(sentences), 2, figsize=(2 * width, 2.3 * len(sentences)), squeeze=False)
    for i, sentence in enumerate(sentences):
        for j, stage in enumerate(stages):
            ax = axes[i, j]
            part = probes[(probes["sentence"] == sentence) & (probes["stage"] == stage)]
            part = part.assign(
                feature=lambda t: "#" + t["feature_rank"].astype(str) + " f" + t["feature"].astype(str)
            )
            features = part.sort_values("feature_rank")["feature"].unique().tolist()
            sns.barplot(
                data=part,
                x="position",
                y="activation",
                hue="feature",
                hue_order=features,
                errorbar=None,
                ax=ax,
            )
            tokens = part.drop_duplicates("position").sort_values("position")["token"].tolist()
            ax.set_xticks(range(len(tokens)))
            ax.set_xticklabels(tokens, rotation=60, ha="right", fontsize=7)
            text = part["text"].iloc[0] if len(part) else ""
            ax.set(xlabel="", ylabel="activation", title=f"{stage}: {textwrap.shorten(str(text), 60)}")
            if i == 0:  # a column shares its stage's features and colours: one legend, above the bars
                ax.set_ylim(top=ax.get_ylim()[1] * 1.5)
                ax.legend(fontsize=6, title="top features", title_fontsize=6, loc="upper right", ncol=3)
            elif ax.get_legend() is not None:
                ax.get_legend().remove()
    fig.suptitle(
        f"{wildcards['model']} / {wildcards['dataset']} / layer {wildcards['layer']}: top-variance SAE features per token",
        y=1.0,
    )
    fig.tight_layout()
    return fig


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
            axis_ticks(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
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


FIGURES = {
    "fig_classification": plot_classification,
    "fig_accuracy": plot_accuracy,
    "fig_training": plot_training,
    "fig_similarity": plot_similarity,
    "fig_depth": plot_depth,
    "fig_sae_loss": plot_sae_loss,
    "fig_tokens": plot_tokens,
    "fig_diff": plot_diff,
    "fig_relnorm": plot_relnorm,
    "fig_diff_tokens": plot_diff_tokens,
    "fig_sae_sweep": plot_sae_sweep,
    "fig_verdict_curve": plot_verdict_curve,
}


def draw(
    rule: str,
    inputs,
    wildcards: dict,
    params: dict,
    out_png: str,
    dpi: int = 120,
    palette: str = "colorblind",
) -> None:
    """Draw the figure named by ``rule`` and save it as PNG + SVG."""
    theme(palette)
    save(FIGURES[rule](list(inputs), wildcards, params), out_png, dpi)
