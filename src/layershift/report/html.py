"""One self-contained HTML page of the study: tables, every figure embedded, and computed findings."""

from __future__ import annotations

import base64
import datetime as dt
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, select_autoescape

from layershift.core.io import atomic_path, read_json, read_table

SECTIONS = [
    ("study", "The study"),
    ("classification", "Fine-tuning: Table 2 rebuilt"),
    ("similarity", "Layer-wise similarity"),
    ("sae", "Sparse autoencoders"),
    ("features", "Features and probe sentences"),
    ("diff", "Feature diff: retained, changed, lost, new"),
    ("findings", "Findings: the paper's claims checked"),
]

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>layershift report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.3em 0}
figure{margin:0 0 1.2em}figcaption{font-size:.85em;color:#555}nav a{margin-right:1em}.muted{color:#666;font-size:.85em}
</style></head><body>
<h1>layershift: how fine-tuning changes a transformer, layer by layer</h1>
<p class="muted">Generated {{ generated }} from the artifacts under results/. Config: {{ config_file }}.</p>
<nav>{% for id, title in sections %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>
{% for id, title in sections %}<section id="{{ id }}"><h2>{{ title }}</h2>
{% for block in blocks[id] %}{% if block.kind == "html" %}{{ block.html | safe }}
{% elif block.kind == "figure" %}<figure><img alt="{{ block.caption }}" src="data:image/png;base64,{{ block.data }}"><figcaption>{{ block.caption }}</figcaption></figure>
{% elif block.kind == "list" %}<ul>{% for item in block["items"] %}<li>{{ item }}</li>{% endfor %}</ul>
{% else %}<p>{{ block.text }}</p>{% endif %}{% endfor %}</section>
{% endfor %}</body></html>
"""


def html(text: str) -> dict:
    return {"kind": "html", "html": text}


def para(text: str) -> dict:
    return {"kind": "text", "text": text}


def table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> dict:
    return html(frame.to_html(index=False, float_format=floatfmt.format, border=0, na_rep="-"))


def figure(path: str | Path, caption: str) -> dict:
    return {"kind": "figure", "data": base64.b64encode(Path(path).read_bytes()).decode(), "caption": caption}


def _figures(paths: list[str], family: str) -> list[dict]:
    return [
        figure(p, Path(p).relative_to("results/figures").as_posix())
        for p in sorted(paths)
        if f"/figures/{family}/" in p or p.endswith(f"/{family}.png")
    ]


def study_blocks(
    config: dict, config_file: str, cards: list[str], models: list[str], benchmarks: list[str]
) -> list[dict]:
    import torch
    import transformers

    blocks = [para(f"Seed {config['seed']}. Fine-tuning: {config['finetune']}. SAEs: {config['sae']}.")]
    model_rows = [
        {
            "model": read_json(p)["model"],
            "source": read_json(p)["source"],
            "layers": read_json(p)["num_hidden_layers"],
            "hidden size": read_json(p)["hidden_size"],
            "SAE layers": str(config["models"][read_json(p)["model"]]["sae_layers"]),
        }
        for p in models
    ]
    blocks += [html("<h3>Models</h3>"), table(pd.DataFrame(model_rows))]
    card_rows = []
    for path in cards:
        card = read_json(path)
        card_rows.append(
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
    blocks += [html("<h3>Datasets</h3>"), table(pd.DataFrame(card_rows))]
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {platform.system()}",
        "cuda": torch.cuda.is_available(),
    }
    blocks += [html("<h3>Environment</h3>"), table(pd.DataFrame([env]))]
    if benchmarks:
        times = wall_times(benchmarks)
        blocks += [html("<h3>Wall time per rule</h3>"), table(times, "{:.1f}")]
    return blocks


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


def sae_quality(metric_paths: list[str]) -> pd.DataFrame:
    keys = ["model", "dataset", "stage", "layer", "mse", "explained_variance", "l0", "dead_fraction"]
    rows = [{k: read_json(p).get(k) for k in keys} for p in metric_paths]
    return pd.DataFrame(rows).sort_values(keys[:4], ignore_index=True)


def _trend(values: np.ndarray) -> float:
    """Spearman correlation of values with their order (negative = falls with depth)."""
    if len(values) < 3:
        return float(np.sign(values[-1] - values[0])) if len(values) == 2 else 0.0
    ranks = pd.Series(values).rank().to_numpy()
    return float(np.corrcoef(np.arange(len(values)), ranks)[0, 1])


def _first_block_drop(group: pd.DataFrame, measure: str) -> float:
    """Similarity after the first block minus similarity at the last layer."""
    ordered = group.sort_values("layer")[measure]
    return float(ordered.iloc[min(1, len(ordered) - 1)] - ordered.iloc[-1])


def findings(
    accuracy: pd.DataFrame, similarity: pd.DataFrame, sae: pd.DataFrame, diff: pd.DataFrame
) -> list[str]:
    """The paper's claims, each checked against this study's numbers (nothing here is hard-coded)."""
    out = []
    pivot = accuracy.pivot_table(index=["model", "dataset"], columns="row", values="accuracy")
    gain = (pivot["finetuned"] - pivot["pretrained"]) * 100
    probe_gap = (pivot["finetuned"] - pivot["linear_probe"]) * 100
    out.append(
        f"Fine-tuning lifts test accuracy over the pretrained encoder with a random head in {int((gain > 0).sum())} of {len(gain)} "
        f"model x dataset pairs (mean +{gain.mean():.1f} points, range {gain.min():+.1f} to {gain.max():+.1f}); over a linear probe on frozen "
        f"features by {probe_gap.mean():+.1f} points on average."
    )
    for measure in ("cosine_of_means", "cka_sentences"):
        if similarity[measure].isna().all():  # e.g. CKA of one sentence: no claim either way
            out.append(
                f"{measure}: undefined in every cell (fewer than two rows to compare), no trend stated."
            )
            continue
        first = similarity[similarity["layer"] == 1][measure]
        trends = similarity.groupby(["model", "dataset"])[measure].apply(lambda s: _trend(s.to_numpy()))
        drop = similarity.groupby(["model", "dataset"]).apply(
            lambda g, m=measure: _first_block_drop(g, m), include_groups=False
        )
        out.append(
            f"{measure}: about {first.mean():.3f} after the first block (paper: ~1.0 early); falls with depth in "
            f"{int((trends < 0).sum())} of {len(trends)} model x dataset pairs (mean drop first to last block {drop.mean():.3f}) - "
            f"{'yes' if (trends < 0).mean() > 0.5 else 'no'}, the paper's shape {'holds' if (trends < 0).mean() > 0.5 else 'does not hold'} here."
        )
    out.extend(content_token_findings(similarity))
    last = similarity.loc[similarity.groupby(["model", "dataset"])["layer"].idxmax()]
    by_model = last.groupby("model")["cosine_of_means"].mean()
    depth = similarity.groupby("model")["layer"].max()
    if len(by_model) > 1:
        shallow, deep = depth.idxmin(), depth.idxmax()
        verdict = "yes" if by_model[shallow] > by_model[deep] else "no"
        out.append(
            f"Smaller models stay more similar at their last layer: {verdict} ({shallow}, {depth[shallow]} layers: {by_model[shallow]:.3f} "
            f"vs {deep}, {depth[deep]} layers: {by_model[deep]:.3f}, cosine of means)."
        )
    if not sae.empty:
        ev = pd.to_numeric(sae["explained_variance"], errors="coerce")  # null in metrics.json: undefined
        defined = ev.dropna()
        spread = (
            f"explained variance {defined.min():.3f}-{defined.max():.3f} (median {defined.median():.3f})"
            if len(defined)
            else "explained variance undefined"
        )
        if ev.isna().any():
            spread += (
                f" ({int(ev.isna().sum())} of {len(ev)} SAEs without one: fewer than two evaluation rows)"
            )
        out.append(
            f"SAE quality: {spread}, mean L0 {sae['l0'].mean():.1f}, dead fraction up to {sae['dead_fraction'].max():.2f}."
        )
    if not diff.empty and "verdict" in diff:  # issue #17: no change is stated for an inconclusive layer
        inconclusive = diff[diff["verdict"] != "conclusive"]
        if len(inconclusive):
            out.append(
                f"Feature diff inconclusive for {len(inconclusive)} of {len(diff)} model x dataset x layer cells "
                "(too few SAE features reproduced by their seed nulls above chance); no retained / lost change "
                "is stated for them."
            )
        diff = diff[diff["verdict"] == "conclusive"]
    if not diff.empty and "retained_fraction" in diff:
        trend = diff.groupby(["model", "dataset"]).apply(
            lambda g: _trend(g.sort_values("layer")["retained_fraction"].to_numpy()), include_groups=False
        )
        retained = diff.groupby(["model", "layer"])["retained_fraction"].mean()  # over datasets
        per_model = "; ".join(
            f"{model} " + ", ".join(f"layer {int(layer)}: {v:.2f}" for layer, v in retained[model].items())
            for model in retained.index.unique("model")
        )
        out.append(
            f"Retained SAE features fall with depth (the paper's hypothesis) in {int((trend < 0).sum())} of {len(trend)} model x dataset pairs; "
            f"mean retained fraction over datasets per layer: {per_model}."
        )
        if "baseline_lost_fraction" in diff:
            excess = diff["lost_fraction"] - diff["baseline_lost_fraction"]
            worst = diff.loc[excess.idxmax()]
            out.append(
                f"Lost features beyond the seed null (lost minus the null's lost fraction): mean {excess.mean():+.3f}, "
                f"largest {excess.max():+.3f} ({worst['model']} / {worst['dataset']} / layer {int(worst['layer'])}); "
                "positive = change beyond what retraining with another seed produces."
            )
    return out


def content_token_findings(similarity: pd.DataFrame, tolerance: float = 0.1) -> list[str]:
    """Where the paper's cosine of means (all tokens) and the same over content tokens disagree: by more
    than ``tolerance`` at some layer, or in which dataset ends least similar at each model's last layer."""
    if "cosine_of_content_means" not in similarity or similarity["cosine_of_content_means"].isna().all():
        return []
    gap = similarity["cosine_of_content_means"] - similarity["cosine_of_means"]
    shares = similarity.groupby("dataset")["special_share"].mean()
    share_text = ", ".join(f"{d} {v:.1%}" for d, v in shares.items())
    out = []
    if gap.abs().max() > tolerance:
        worst = similarity.loc[gap.abs().idxmax()]
        out.append(
            f"The cosine of means over all tokens and over content tokens only (special tokens excluded; their share, "
            f"mean over models: {share_text}) disagree by more than {tolerance} in {int((gap.abs() > tolerance).sum())} of {len(gap)} "
            f"model x dataset x layer cells; most at {worst['model']} / {worst['dataset']} / layer {int(worst['layer'])}: "
            f"{worst['cosine_of_means']:.3f} with the specials, {worst['cosine_of_content_means']:.3f} without."
        )
    else:
        out.append(
            f"The cosine of means over all tokens and over content tokens only agree within {tolerance} everywhere "
            f"(largest gap {gap.abs().max():.3f}; special-token share, mean over models: {share_text})."
        )
    last = similarity.loc[similarity.groupby(["model", "dataset"])["layer"].idxmax()]
    for model, group in last.groupby("model"):
        if len(group) < 2:
            continue
        steepest_all = group.loc[group["cosine_of_means"].idxmin(), "dataset"]
        steepest_content = group.loc[group["cosine_of_content_means"].idxmin(), "dataset"]
        if steepest_all != steepest_content:
            out.append(
                f"{model}: the least similar dataset at the last layer is {steepest_all} over all tokens but "
                f"{steepest_content} over content tokens: part of that ranking is the special tokens' share."
            )
    return out


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


def build_report(out_html: str | Path, config: dict, config_file: str, inputs: dict) -> None:
    """Render the report from the artifact paths in ``inputs`` (grouped by kind) to ``out_html``."""
    accuracy = pd.read_csv(inputs["accuracy"][0])
    similarity = read_table(inputs["similarity"][0])
    sae = sae_quality(inputs["sae_metrics"])
    diff = read_table(inputs["diff_table"][0]) if inputs.get("diff_table") else pd.DataFrame()
    summary = read_table(inputs["feature_summary"][0])
    figs = [str(p) for p in inputs["figures"] if str(p).endswith(".png")]
    acc_wide = accuracy.pivot_table(
        index=["model", "dataset"], columns="row", values=["accuracy", "macro_f1"]
    ).reset_index()
    acc_wide.columns = [" ".join(c).strip() for c in acc_wide.columns]
    blocks = {
        "study": study_blocks(
            config, config_file, inputs["cards"], inputs["models"], inputs.get("benchmarks", [])
        ),
        "classification": [
            table(acc_wide),
            *_figures(figs, "accuracy"),
            *_figures(figs, "classification"),
            *_figures(figs, "training"),
        ],
        "similarity": [
            table(similarity.drop(columns=["n_tokens", "n_sentences", "n_token_sample"], errors="ignore")),
            *_figures(figs, "similarity"),
            *_figures(figs, "depth"),
        ],
        "sae": [table(sae), *_figures(figs, "sae_loss"), *sweep_blocks(inputs.get("sae_sweep", []), figs)],
        "features": [
            table(summary[["model", "dataset", "layer", "stage", "description"]]),
            *_figures(figs, "tokens"),
        ],
        "diff": [
            table(diff) if not diff.empty else para("no diff"),
            *_figures(figs, "diff"),
            *_figures(figs, "relnorm"),
            *_figures(figs, "diff_tokens"),
        ],
        "findings": [{"kind": "list", "items": findings(accuracy, similarity, sae, diff)}],
    }
    page = (
        Environment(autoescape=select_autoescape())
        .from_string(TEMPLATE)
        .render(
            sections=SECTIONS,
            blocks=blocks,
            config_file=config_file,
            generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        )
    )
    with atomic_path(out_html, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
