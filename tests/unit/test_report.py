"""The report's findings are computed from the tables: checked on constructed numbers with known answers."""

from __future__ import annotations

import pandas as pd

from layershift.report.html import findings


def study_tables(retained_deep_last: float):
    """Two models (2 and 4 layers), one dataset; similarity falls with depth, the deep model falls further."""
    accuracy = pd.DataFrame(
        [
            {"model": m, "dataset": "d", "row": row, "accuracy": acc}
            for m in ("small", "big")
            for row, acc in (("pretrained", 0.5), ("linear_probe", 0.8), ("finetuned", 0.9))
        ]
    )
    similarity = pd.DataFrame(
        [
            {"model": "small", "dataset": "d", "layer": layer, "cosine_of_means": c, "cka_sentences": c}
            for layer, c in enumerate([1.0, 0.95, 0.8])
        ]
        + [
            {"model": "big", "dataset": "d", "layer": layer, "cosine_of_means": c, "cka_sentences": c}
            for layer, c in enumerate([1.0, 0.9, 0.7, 0.5, 0.2])
        ]
    )
    sae = pd.DataFrame({"explained_variance": [0.8, 0.9], "l0": [10.0, 20.0], "dead_fraction": [0.0, 0.1]})
    diff = pd.DataFrame(
        [
            {"model": "small", "dataset": "d", "layer": 1, "retained_fraction": 0.8, "lost_fraction": 0.05},
            {"model": "small", "dataset": "d", "layer": 2, "retained_fraction": 0.7, "lost_fraction": 0.05},
            {"model": "big", "dataset": "d", "layer": 1, "retained_fraction": 0.8, "lost_fraction": 0.05},
            {
                "model": "big",
                "dataset": "d",
                "layer": 4,
                "retained_fraction": retained_deep_last,
                "lost_fraction": 0.5,
            },
        ]
    ).assign(baseline_lost_fraction=0.04)
    return accuracy, similarity, sae, diff


def test_findings_state_the_measured_numbers_per_model():
    text = "\n".join(findings(*study_tables(retained_deep_last=0.2)))
    assert "in 2 of 2 model x dataset pairs (mean +40.0 points" in text
    assert "Smaller models stay more similar at their last layer: yes" in text
    assert "big layer 1: 0.80, layer 4: 0.20; small layer 1: 0.80, layer 2: 0.70" in text
    assert "largest +0.460 (big / d / layer 4)" in text


def test_findings_follow_the_numbers_not_a_script():
    rising = findings(*study_tables(retained_deep_last=0.9))
    retained = next(line for line in rising if line.startswith("Retained SAE features"))
    assert "in 1 of 2 model x dataset pairs" in retained  # the big model's retained fraction now rises


def test_findings_state_no_change_for_inconclusive_layers():
    accuracy, similarity, sae, diff = study_tables(retained_deep_last=0.2)
    diff["verdict"] = ["conclusive", "conclusive", "conclusive", "inconclusive"]
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "Feature diff inconclusive for 1 of 4" in text
    assert "layer 4" not in text.split("Retained SAE features")[1]  # the inconclusive cell states nothing
    diff["verdict"] = "inconclusive"
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "Retained SAE features" not in text and "Lost features beyond" not in text


def test_figure_module_loads_seaborn_without_scipy_and_leaves_scipy_importable():
    """Figure jobs start a fresh process each: layershift.report.figures keeps scipy (half their import time) out."""
    import subprocess
    import sys

    code = (
        "import sys, layershift.report.figures as p; assert 'scipy' not in sys.modules, 'scipy loaded';"
        "import scipy.stats; p.plot_depth  # scipy is importable afterwards"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_feature_summary_of_a_layer_whose_latents_are_all_dead_says_so(tmp_path):
    """Every latent dead (e.g. too few rows for the L1 penalty): no top feature fired, so there is nothing
    to describe. The row said "very sparse (fires on nan% of tokens) ... mostly content words"."""
    import numpy as np
    import torch

    from layershift.analysis.features import feature_statistics, top_activating_tokens
    from layershift.core.io import write_parquet
    from layershift.data.shards import ShardWriter
    from layershift.dictionaries.sae import SAE, SAEConfig
    from layershift.models.probes import token_kind_shares
    from layershift.report.tables import feature_summary

    n, d = 40, 8
    shard_dir = tmp_path / "tokens" / "layer1"
    with ShardWriter(shard_dir, d_model=d, dtype="float32", rows_per_group=16, metadata={"layer": 1}) as w:
        ids = np.arange(n, dtype=np.int32)
        x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
        w.append(ids // 5, ids % 5, ids, [f"t{i}" for i in range(n)], x)
    sae = SAE(SAEConfig(d_in=d, d_sae=16), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-1e3)  # no latent ever fires
    stats = feature_statistics(sae, shard_dir)
    top = stats.nsmallest(3, "rank")["feature"].tolist()
    meta = {"model": "m", "dataset": "d", "stage": "pretrained", "layer": 1}
    shares = token_kind_shares(sae, shard_dir, top)
    write_parquet(stats.merge(shares, on="feature", how="left"), tmp_path / "layer1.parquet", meta)
    write_parquet(top_activating_tokens(sae, shard_dir, top, 3), tmp_path / "layer1.top_tokens.parquet", meta)
    row = feature_summary([str(tmp_path / "layer1.parquet")]).iloc[0]
    assert row["alive_fraction"] == 0.0 and row["top_features"] == []
    assert "nan" not in row["description"] and "content words" not in row["description"]
    assert row["description"].startswith("no top feature fires")


def test_findings_say_where_explained_variance_is_undefined():
    """A layer with one held-out row has no explained variance (null in metrics.json): the finding counts
    it instead of printing "nan" or silently taking the range over the others."""
    accuracy, similarity, sae, diff = study_tables(retained_deep_last=0.2)
    sae["explained_variance"] = [0.8, None]
    line = next(t for t in findings(accuracy, similarity, sae, diff) if t.startswith("SAE quality"))
    assert "0.800-0.800" in line and "1 of 2 SAEs without one" in line
    sae["explained_variance"] = [None, None]
    line = next(t for t in findings(accuracy, similarity, sae, diff) if t.startswith("SAE quality"))
    assert "nan" not in line and "explained variance undefined" in line


def test_findings_state_no_trend_for_an_undefined_measure():
    accuracy, similarity, sae, diff = study_tables(retained_deep_last=0.2)
    similarity["cka_sentences"] = float("nan")  # one sentence per dataset
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "cka_sentences: undefined in every cell" in text and "nan" not in text
