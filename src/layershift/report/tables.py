"""Study-wide tables built from per-job artifacts: the paper's Table 2 and Table 1, generated."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from layershift.core.io import atomic_path, read_json, read_metadata, read_table, write_parquet
from layershift.report.intervals import with_interval_cells

ROWS = ("pretrained", "linear_probe", "finetuned")


def accuracy_table(classification_paths: list[str], out_csv: str | Path | None = None) -> pd.DataFrame:
    """Table 2: accuracy and macro-F1 of each evaluation row per model x dataset x run (fine-tuning replicate)."""
    records = []
    for path in classification_paths:
        report = read_json(path)
        for row in ROWS:
            records.append(
                {
                    "model": report["model"],
                    "dataset": report["dataset"],
                    "run": report.get("run"),
                    "row": row,
                    "accuracy": report[row]["accuracy"],
                    "macro_f1": report[row]["macro_f1"],
                    "n_test": report.get("n_test"),
                }
            )
    table = pd.DataFrame(records)
    if out_csv:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
    return table


def sae_quality(metric_paths: list[str]) -> pd.DataFrame:
    """Held-out quality of each SAE (from its metrics.json), one row per model x dataset x stage x run x layer
    (a metrics.json without a run names its stage's one run)."""
    keys = ["model", "dataset", "stage", "run", "layer", "mse", "explained_variance", "l0", "dead_fraction"]
    rows = []
    for path in metric_paths:
        metrics = read_json(path)
        rows.append(
            {key: metrics.get(key) for key in keys} | {"run": metrics.get("run") or metrics.get("stage")}
        )
    return pd.DataFrame(rows).sort_values(keys[:5], ignore_index=True)


def concat_parquet(paths: list[str], out: str | Path | None = None) -> pd.DataFrame:
    """The tables at ``paths`` stacked (and written to ``out``, when given)."""
    table = pd.concat([read_table(p) for p in paths], ignore_index=True)
    if out is not None:
        write_parquet(table, out)
    return table


def _top_token_list(tokens: pd.DataFrame, feature: int, n: int = 5) -> list[str]:
    rows = tokens[tokens["feature"] == feature].sort_values("activation", ascending=False)
    return list(dict.fromkeys(rows["token"]))[:n]


def describe(row: dict) -> str:
    """One line built only from the numbers in ``row``: sparsity, where activation lands, what tokens."""
    firing = row["firing_rate"]
    density = "dense" if firing > 0.3 else "selective" if firing > 0.02 else "very sparse"
    shares = {k.removeprefix("share_"): v for k, v in row.items() if k.startswith("share_") and pd.notna(v)}
    focus = max(shares, key=shares.get) if shares else "word"
    structural = shares.get("special", 0.0) + shares.get("punctuation", 0.0)
    kind = "structural tokens ([CLS]/[SEP]/punctuation)" if structural > 0.5 else "content words"
    return (
        f"{density} (fires on {firing:.0%} of tokens); {structural:.0%} of activation on special tokens/punctuation, "
        f"mostly {kind} (largest share: {focus}); top tokens: {', '.join(row['top_tokens']) or '-'}"
    )


def feature_summary(feature_paths: list[str], diff_paths: list[str] = ()) -> pd.DataFrame:
    """Table 1, generated: per model x dataset x layer x stage, the top features and what they respond to."""
    records = []
    for path in feature_paths:
        meta = read_metadata(path)
        stats = read_table(path)
        tokens = read_table(str(path).replace(".parquet", ".top_tokens.parquet"))
        top = stats.dropna(subset=[c for c in stats.columns if c.startswith("share_")][:1] or ["rank"])
        top = top.nsmallest(len(tokens["feature"].unique()) or 3, "rank")
        share_cols = [c for c in stats.columns if c.startswith("share_")]
        row = {
            "model": meta["model"],
            "dataset": meta["dataset"],
            "layer": meta["layer"],
            "stage": meta["stage"],
            "top_features": top["feature"].astype(int).tolist(),
            "firing_rate": float(top["firing_rate"].mean()),
            "variance_share": float(top["variance"].sum() / max(stats["variance"].sum(), 1e-30)),
            "alive_fraction": float((stats["firing_rate"] > 0).mean()),
            **{c: float(top[c].mean()) for c in share_cols},
            "top_tokens": [t for f in top["feature"] for t in _top_token_list(tokens, int(f), 3)][:8],
        }
        # no top feature fired on this layer's tokens (every latent dead): nothing to describe; describe()
        # would print "fires on nan% of tokens ... mostly content words" from an empty selection
        row["description"] = (
            describe(row)
            if len(top)
            else f"no top feature fires on this layer's tokens ({row['alive_fraction']:.0%} of the latents ever do)"
        )
        records.append(row)
    table = pd.DataFrame(records).sort_values(["model", "dataset", "layer", "stage"], ignore_index=True)
    if diff_paths:
        table = table.merge(diff_columns(diff_paths), on=["model", "dataset", "layer"], how="left")
    return table


def diff_columns(diff_summary_paths: list[str]) -> pd.DataFrame:
    """Per model x dataset x layer x comparison: the diff summary's numbers (retained/changed/lost/new, their
    95 % intervals ``*_lo`` / ``*_hi``, the seed null's, ``conclusive_share``), the verdict with its reason, and
    which runs it compared (``reference``, ``compared``, ``comparison``)."""
    records = []
    for path in diff_summary_paths:
        summary = read_json(path)
        flat = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        strings = ("reference", "compared", "comparison", "verdict", "verdict_reason")
        flat |= {k: summary[k] for k in strings if k in summary}  # strings, kept
        records.append(
            {"model": summary["model"], "dataset": summary["dataset"], "layer": summary["layer"], **flat}
        )
    return pd.DataFrame(records)


def fold_intervals(diff: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The diff table as a reader sees it: each fraction with ``<key>_lo`` / ``<key>_hi`` columns written
    ``0.62 [0.55, 0.69]`` in its own column (the ``_lo`` / ``_hi`` columns dropped), and ``conclusive_share``
    right after ``verdict``. Other columns as they are."""
    # an inconclusive layer has no interval (its point alone) and a missing point reads "-"
    folded = with_interval_cells(diff, digits=digits, missing="-")
    if "verdict" in folded and "conclusive_share" in folded:
        columns = [column for column in folded if column != "conclusive_share"]
        columns.insert(columns.index("verdict") + 1, "conclusive_share")
        folded = folded[columns]
    return folded


def summary_markdown(table: pd.DataFrame) -> str:
    """Table 1 as Markdown: layer x dataset rows, pretrained and fine-tuned descriptions side by side."""
    lines = ["| model | layer | dataset | pre-trained | fine-tuned |", "|---|---|---|---|---|"]
    for (model, layer, dataset), group in table.groupby(["model", "layer", "dataset"], sort=True):
        text = {row["stage"]: row["description"] for _, row in group.iterrows()}
        lines.append(
            f"| {model} | {layer} | {dataset} | {text.get('pretrained', '-')} | {text.get('finetuned', '-')} |"
        )
    return "\n".join(lines) + "\n"


def write_feature_summary(feature_paths, diff_paths, out_parquet, out_markdown) -> pd.DataFrame:
    table = feature_summary(feature_paths, diff_paths)
    write_parquet(table, out_parquet)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(summary_markdown(table))
    return table
