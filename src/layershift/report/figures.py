"""Every figure of the study, drawn with seaborn in one consistent, colour-blind-safe theme: the classification,
SAE and token figures here, the similarity figures in ``similarity_figures``, the feature-diff figures in
``diff_figures``, and :func:`draw`, which a figure rule calls by name. Each ``plot_*`` function takes the
rule's inputs (paths), wildcards and params and returns a Figure; ``plotting.save`` writes the PNG (for the
report) and an SVG beside it, atomically. seaborn's bootstrapped error bars are switched off everywhere: a
number over the fine-tuning replicates gets the Student-t interval of the replicate tables instead, and a
figure with one fine-tuning run says that it has no interval.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from layershift.core.io import read_json, read_table
from layershift.report.diff_figures import plot_diff, plot_diff_tokens, plot_relnorm, plot_verdict_curve
from layershift.report.plotting import plt, save, sns, theme
from layershift.report.similarity_figures import ONE_RUN_TITLE, plot_depth, plot_similarity
from layershift.study.schema import schema_default

ROW_NAMES = {
    "pretrained": "pre-trained + random head",
    "linear_probe": "linear probe (frozen)",
    "finetuned": "fine-tuned",
}


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


def _student_t(level: float):
    """A seaborn ``errorbar`` callable: the Student-t interval at ``level`` of the values of one bar."""
    from layershift.analysis.replicates import mean_interval  # scipy: only for this figure

    def interval(values) -> tuple[float, float]:
        found = mean_interval(values, level)
        return found.lo, found.hi

    return interval


def _runs_title(runs: int) -> str:
    return f"({ONE_RUN_TITLE})" if runs <= 1 else f"(mean over {runs} fine-tuning runs)"


def plot_accuracy(inputs, wildcards, params) -> plt.Figure:
    """The paper's Table 2 as a figure: accuracy before and after fine-tuning, plus the linear probe; each bar
    the mean over the fine-tuning runs with its Student-t interval, each run a dot on it."""
    table = pd.read_csv(inputs[0]).assign(row=lambda t: t["row"].map(ROW_NAMES))
    if "run" not in table:
        table = table.assign(run="finetuned")
    datasets, hue_order = list(dict.fromkeys(table["dataset"])), list(ROW_NAMES.values())
    bars = {"x": "dataset", "y": "accuracy", "hue": "row", "order": datasets, "hue_order": hue_order}
    grid = sns.catplot(
        data=table,
        col="model",
        kind="bar",
        height=3.4,
        aspect=1.1,
        errorbar=_student_t(params.get("interval") or schema_default("replicates", "interval")),
        capsize=0.1,
        alpha=0.8,
        **bars,
    )
    grid.map_dataframe(
        sns.stripplot, **bars, dodge=True, palette=dict.fromkeys(hue_order, "black"), size=3, legend=False
    )
    grid.set_axis_labels("dataset", "test accuracy")
    grid.set(ylim=(0, 1))
    runs = int(table.groupby(["model", "dataset"])["run"].nunique().max())
    grid.figure.suptitle(f"Accuracy before and after fine-tuning (test split) {_runs_title(runs)}", y=1.04)
    return grid.figure


def plot_training(inputs, wildcards, params) -> plt.Figure:
    """Fine-tuning curves of every replicate of one model x dataset, a line per run: train / validation loss
    and validation accuracy per epoch. ``inputs``: each run's training_log.csv (the run is its folder)."""
    log = pd.concat(
        [pd.read_csv(path).assign(run=Path(path).parent.name) for path in inputs], ignore_index=True
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.lineplot(
        data=log.melt(["epoch", "run"], ["train_loss", "val_loss"], "split", "loss"),
        x="epoch",
        y="loss",
        hue="run",
        style="split",
        marker="o",
        errorbar=None,
        ax=axes[0],
    )
    sns.lineplot(data=log, x="epoch", y="val_accuracy", hue="run", marker="o", errorbar=None, ax=axes[1])
    axes[0].set(title="loss", ylabel="cross-entropy")
    axes[1].set(title="validation accuracy", ylabel="accuracy", ylim=(0, 1))
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    runs = log["run"].nunique()
    fig.suptitle(f"Fine-tuning {wildcards['model']} on {wildcards['dataset']} {_runs_title(runs)}")
    fig.tight_layout()
    return fig


def _loss_curve(path: str, index: int) -> pd.DataFrame:
    """One SAE's training loss per epoch, with its run, kind (the run's own SAE or a seed null: it lies under
    ``sae_null/``) and a unique id."""
    metrics = read_json(path)
    curve = metrics.get("loss_curve", {})
    epochs = curve.get("epoch_loss", curve) if isinstance(curve, dict) else curve
    kind = "seed null" if "/sae_null/" in Path(path).as_posix() else "run's SAE"
    return pd.DataFrame(
        {
            "epoch": np.arange(1, len(epochs) + 1),
            "loss": epochs,
            "run": metrics.get("run") or metrics["stage"],
            "SAE": kind,
            "unit": f"{index}: seed {metrics['seed']}",
            "layer": metrics["layer"],
        }
    )


def plot_sae_loss(inputs, wildcards, params) -> plt.Figure:
    """Training loss per epoch of every SAE of one model x dataset: a panel per layer, a line per SAE, its
    colour the run (pretrained or a fine-tuning replicate), solid for the run's own SAE, dashed for its seed
    nulls."""
    curves = pd.concat([_loss_curve(path, index) for index, path in enumerate(inputs)], ignore_index=True)
    runs = sorted(curves["run"].unique(), key=lambda run: (run != "pretrained", run))
    grid = sns.relplot(
        data=curves,
        x="epoch",
        y="loss",
        hue="run",
        hue_order=runs,
        style="SAE",
        style_order=["run's SAE", "seed null"],
        units="unit",
        estimator=None,
        col="layer",
        kind="line",
        marker="o",
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
