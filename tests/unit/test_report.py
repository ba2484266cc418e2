"""The report's findings are computed from the tables: checked on constructed numbers with known answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from layershift.report.findings import StudyTables, check_claims


def findings(accuracy, similarity, sae, diff) -> list[str]:
    """The sentence of every claim with something to say on these tables, in the order a reader meets them."""
    return [
        finding.sentence for finding in check_claims(StudyTables(accuracy, similarity, sae, diff)).values()
    ]


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
    sae = pd.DataFrame(
        {"dataset": "d", "explained_variance": [0.8, 0.9], "l0": [10.0, 20.0], "dead_fraction": [0.0, 0.1]}
    )
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


def test_findings_say_whether_each_claim_holds():
    checked = check_claims(StudyTables(*study_tables(retained_deep_last=0.2)))
    holds = {statement: finding.holds for statement, finding in checked.items()}
    assert holds == {
        "Fine-tuning lifts test accuracy over the random head": True,
        "cosine_of_means starts near 1 and falls with depth": True,
        "cka_sentences starts near 1 and falls with depth": True,
        "Smaller models stay more similar at their last layer": True,
        "Every SAE explains at least 0.6 of its layer's variance": True,
        "Retained SAE features fall with depth": True,
        "Fine-tuning loses features beyond the seed null": True,
    }  # no content-token column, no verdicts: those claims have nothing to say


def test_findings_follow_the_numbers_not_a_script():
    rising = check_claims(StudyTables(*study_tables(retained_deep_last=0.9)))
    retained = rising["Retained SAE features fall with depth"]
    assert (
        "in 1 of 2 model x dataset pairs" in retained.sentence
    )  # the big model's retained fraction now rises
    assert retained.holds is False  # one of two pairs is not more than half


def test_findings_state_no_change_for_inconclusive_layers():
    accuracy, similarity, sae, diff = study_tables(retained_deep_last=0.2)
    diff["verdict"] = ["conclusive", "conclusive", "conclusive", "inconclusive"]
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "Feature diff inconclusive for 1 of 4" in text
    assert "layer 4" not in text.split("Retained SAE features")[1]  # the inconclusive cell states nothing
    diff["verdict"] = "inconclusive"
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "Retained SAE features" not in text and "Lost features beyond" not in text
    diff["verdict"] = ["conclusive", "conclusive", "borderline", "inconclusive"]
    checked = check_claims(StudyTables(accuracy, similarity, sae, diff))
    counted = checked["The feature diff is conclusive in every layer"].sentence
    assert (
        "inconclusive for 1 of 4 model x dataset x layer cells" in counted and "and 1 borderline" in counted
    )
    retained = checked["Retained SAE features fall with depth"].sentence
    assert (
        "big" not in retained and "small layer 1: 0.80, layer 2: 0.70" in retained
    )  # big's: on or under the bar
    assert "big" not in checked["Fine-tuning loses features beyond the seed null"].sentence
    diff["verdict"] = ["conclusive", "conclusive", "conclusive", "borderline"]
    counted = check_claims(StudyTables(accuracy, similarity, sae, diff))[
        "The feature diff is conclusive in every layer"
    ]
    assert not counted.holds and counted.sentence.startswith("Feature diff borderline for 1 of 4")
    diff["verdict"] = "conclusive"
    checked = check_claims(StudyTables(accuracy, similarity, sae, diff))
    conclusive = checked["The feature diff is conclusive in every layer"]
    assert conclusive.holds and "conclusive in all 4" in conclusive.sentence


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
    from layershift.dictionaries.sae.config import SAEConfig
    from layershift.dictionaries.sae.model import SAE
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


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (header and separator rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def fake_results(root: Path) -> Path:
    """A finished study's result artifacts, small: tables/, two SAEs' metrics.json, a sweep, Table 1."""
    import json

    accuracy, similarity, _, diff = study_tables(retained_deep_last=0.2)
    accuracy["accuracy"] += [0.0, 0.0, 0.0, 0.01, 0.02, 0.03]  # the big model's rows differ from the small's
    accuracy["macro_f1"] = accuracy["accuracy"] - 0.1
    tables = root / "results/tables"
    tables.mkdir(parents=True)
    accuracy.to_csv(tables / "accuracy.csv", index=False)
    similarity.assign(cka_tokens=0.5, mean_sentence_cosine=0.4).to_parquet(tables / "similarity.parquet")
    diff.assign(
        verdict=["conclusive", "conclusive", "conclusive", "inconclusive"],
        conclusive_share=[1.0, 0.99, 0.97, 0.0],
        retained_fraction_lo=[0.75, 0.62, 0.7, None],  # an inconclusive layer has no interval
        retained_fraction_hi=[0.85, 0.78, 0.9, None],
    ).to_parquet(tables / "diff_summary.parquet")
    for stage, explained in (("pretrained", 0.81), ("finetuned", 0.79)):
        metrics = root / f"results/sae/small/d/{stage}/layer1/metrics.json"
        metrics.parent.mkdir(parents=True)
        row = {"model": "small", "dataset": "d", "stage": stage, "layer": 1, "mse": 0.02}
        metrics.write_text(
            json.dumps(row | {"explained_variance": explained, "l0": 9.5, "dead_fraction": 0.0})
        )
    sweep = root / "results/sae_sweep/small/d/pretrained/layer1.parquet"
    sweep.parent.mkdir(parents=True)
    pd.DataFrame(
        [{"setting": "study", "explained_variance": 0.81, "l0": 9.5, "reproducible": True}]
    ).to_parquet(sweep)
    summary = [
        {"model": "small", "dataset": "d", "layer": 1, "stage": stage, "description": f"{stage} words"}
        for stage in ("pretrained", "finetuned")
    ]
    pd.DataFrame(summary).to_parquet(tables / "feature_summary.parquet")
    return root / "results"


def test_results_page_states_every_table_from_the_artifacts(tmp_path):
    from layershift.report.results_page import results_page

    page = results_page(fake_results(tmp_path), command="layershift summary --markdown results")
    assert page.startswith("# layershift results")
    assert "with `layershift summary --markdown results`" in page.split("## Findings")[0]
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Findings" and headings[1] == "## Accuracy on the test split", headings
    rows = markdown_rows(page)
    assert ["big", "d", "0.510", "0.820", "0.930"] in rows  # accuracy: random head, linear probe, fine-tuned
    assert ["big", "d", "0.410", "0.720", "0.830"] in rows  # its macro-F1
    assert ["small", "d", "finetuned", "1", "0.020", "0.790", "9.500", "0.000"] in rows  # SAE quality
    assert ["study", "0.810", "9.500", "True"] in rows  # the sweep's setting
    diff_row = next(row for row in rows if row[:4] == ["big", "d", "4", "inconclusive"])
    assert diff_row[4:7] == ["0.00", "0.20", "0.50"], (
        diff_row
    )  # share of resamples meeting the bar, fractions
    diff_row = next(row for row in rows if row[:4] == ["small", "d", "2", "conclusive"])
    assert diff_row[4:7] == ["0.99", "0.70 [0.62, 0.78]", "0.05"], diff_row  # the fraction with its interval
    assert "retained_fraction_lo" not in page  # folded into the fraction's cell
    assert ["small", "1", "d", "pretrained words", "finetuned words"] in rows  # Table 1
    findings_rows = {row[0]: row[1:] for row in rows if len(row) == 2}  # one group: finding | real
    assert ["finding", "real"] in rows  # without a config every dataset is real: no synthetic column
    assert findings_rows["The feature diff is conclusive in every layer"][0].startswith(
        "✗ Feature diff inconclusive for 1 of 4"
    )  # the findings, as the HTML report states them
    assert "✓ SAE quality: explained variance 0.790-0.810" in page
    assert "no study config given: every dataset counts as real text" in page


def test_html_report_opens_with_the_findings_and_lists_settings_one_per_row(tmp_path, monkeypatch):
    """The report is one file: findings first, then the settings as a section.key / value table (not the
    printed dicts), every figure embedded."""
    import json
    import re

    import matplotlib.pyplot as plt

    from layershift.report.html import build_report

    monkeypatch.chdir(tmp_path)
    results = fake_results(tmp_path)
    figure = results / "figures/accuracy.png"
    figure.parent.mkdir(parents=True)
    plt.imsave(figure, [[0.0, 1.0]])
    card = {"dataset": "d", "source": "d.csv", "rows_read": 10, "rows_kept": 9, "label_names": ["a", "b"]}
    card |= {
        "dropped": {"empty": 1},
        "counts": {s: {"a": 2, "b": 1} for s in ("train", "validation", "test")},
    }
    (results / "card.json").write_text(json.dumps(card))
    pointer = {"model": "small", "source": "path:m", "num_hidden_layers": 2, "hidden_size": 8}
    (results / "pretrained.json").write_text(json.dumps(pointer))
    config = {
        "seed": 3,
        "models": {"small": {"source": "path:m", "sae_layers": [1]}},
        "datasets": {"d": {"source": "d.csv"}},
        "finetune": {"batch_size": 16, "lr": 0.001},
        "data": {"split": {"train": 0.8, "validation": 0.1, "test": 0.1}},
        "sae_sweep": {"grid": [{}, {"d_sae": 256}]},
    }
    inputs = {
        "cards": [str(results / "card.json")],
        "models": [str(results / "pretrained.json")],
        "accuracy": [str(results / "tables/accuracy.csv")],
        "similarity": [str(results / "tables/similarity.parquet")],
        "sae_metrics": sorted(str(p) for p in results.glob("sae/**/metrics.json")),
        "feature_summary": [str(results / "tables/feature_summary.parquet")],
        "diff_table": [str(results / "tables/diff_summary.parquet")],
        "figures": ["results/figures/accuracy.png"],
    }
    build_report(tmp_path / "index.html", config, "config.yaml", inputs)
    page = (tmp_path / "index.html").read_text()
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings[0].startswith("Findings") and headings[1] == "The study", headings
    assert page.index("Fine-tuning lifts test accuracy") < page.index("<h3>Settings</h3>")
    findings_table = page.split('class="dataframe findings"', 1)[1].split("</table>", 1)[0]
    header = re.findall(r"<th>([^<]*)</th>", findings_table)
    assert header == ["finding", "real"], header  # a config without `synthetic`: every dataset real text
    cells = re.findall(r"<tr>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*</tr>", page)
    for setting, value in [
        ("seed", "3"),
        ("finetune.batch_size", "16"),
        ("finetune.lr", "0.001"),
        ("data.split.validation", "0.1"),
        ("sae_sweep.grid", '[{}, {"d_sae": 256}]'),
    ]:
        assert (setting, value) in cells, (setting, cells)
    assert not any(setting.startswith(("models", "datasets")) for setting, _ in cells)  # tables of their own
    assert "{'batch_size'" not in page and "{&#39;batch_size&#39;" not in page
    diff_table = page.split('id="diff"', 1)[1]
    assert "<td>0.70 [0.62, 0.78]</td>" in diff_table and "retained_fraction_hi" not in diff_table
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<link" not in page and "<script" not in page  # nothing to fetch: one self-contained file


def test_diff_figure_draws_intervals_for_conclusive_layers_only(tmp_path):
    """Conclusive layers get bars with their 95 % intervals; borderline and inconclusive ones a tick note."""
    import json

    from layershift.report.diff_figures import _diff_panel
    from layershift.report.figures import draw

    base = {"model": "m", "dataset": "d", "retained_fraction": 0.6, "changed_fraction": 0.1}
    base |= {"lost_fraction": 0.3, "retained_finetuned_fraction": 0.5, "changed_finetuned_fraction": 0.1}
    base |= {"new_fraction": 0.4, "baseline_retained_fraction": 0.9}
    intervals = {"retained_fraction_lo": 0.55, "retained_fraction_hi": 0.66, "lost_fraction_lo": 0.25}
    intervals |= {"lost_fraction_hi": 0.35, "new_fraction_lo": 0.3, "new_fraction_hi": 0.5}
    intervals |= {"retained_finetuned_fraction_lo": 0.45, "retained_finetuned_fraction_hi": 0.56}
    summaries = [
        base | intervals | {"layer": 1, "verdict": "conclusive"},
        base | intervals | {"layer": 2, "verdict": "borderline"},
        base | dict.fromkeys(intervals) | {"layer": 3, "verdict": "inconclusive"},
    ]
    paths = []
    for summary in summaries:
        paths.append(tmp_path / f"layer{summary['layer']}.json")
        paths[-1].write_text(json.dumps(summary))
    draw("fig_diff", [str(path) for path in paths], {"model": "m"}, {}, str(tmp_path / "diff.png"), dpi=40)
    assert (tmp_path / "diff.png").stat().st_size > 0
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots()
    colors = dict(
        zip(["retained", "changed", "lost", "new"], sns.color_palette("colorblind", 4), strict=True)
    )
    _diff_panel(ax, pd.DataFrame(summaries), colors)
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["1", "2\n(borderl.)", "3\n(inconcl.)"]
    from matplotlib.container import ErrorbarContainer

    error_bars = [bars for bars in ax.containers if isinstance(bars, ErrorbarContainer)]
    assert len(error_bars) == 4  # 2 edges (retained top, lost / new bottom) x 2 sides
    assert all(len(bars.lines[2][0].get_segments()) == 1 for bars in error_bars)  # layer 1's only
    low, high = error_bars[1].lines[2][0].get_segments()[0][:, 1]  # the pretrained lost edge: 1 - lost
    assert (low, high) == pytest.approx((0.65, 0.75))
    plt.close(fig)


def test_results_page_shows_the_verdict_curve_per_layer_and_fraction(tmp_path):
    from layershift.report.results_page import results_page

    results = fake_results(tmp_path)
    curve_dir = results / "verdict_curve/small/d"
    curve_dir.mkdir(parents=True)
    for layer, shares in ((1, (0.31, 0.52)), (2, (0.44, 0.61))):
        pd.DataFrame(
            {
                "fraction": [0.5, 1.0],
                "rows": [600, 1200],
                "tokens": [14000, 28000],
                "passes": [21.4, 10.7],
                "stable_fraction_pretrained": list(shares),
                "stable_fraction_finetuned": list(shares),
                "conclusive_share": [0.0, 0.71],
                "verdict": ["inconclusive", "borderline"],
            }
        ).to_parquet(curve_dir / f"layer{layer}.parquet")
    page = results_page(results, command="layershift summary --markdown results")
    assert "## How much text a verdict needs: small/d" in page
    rows = markdown_rows(page)
    assert ["2", "1.000", "1200", "28000", "10.700", "0.610", "0.610", "0.710", "borderline"] in rows
    assert ["1", "0.500", "600", "14000", "21.400", "0.310", "0.310", "0.000", "inconclusive"] in rows


def test_no_depth_trend_is_stated_from_one_conclusive_layer_per_pair():
    from layershift.report.findings import retained_finding

    diff = pd.DataFrame(
        {
            "model": ["m", "m", "m"],
            "dataset": ["d", "d", "e"],
            "layer": [1, 2, 2],
            "verdict": ["inconclusive", "conclusive", "conclusive"],
            "retained_fraction": [0.9, 0.6, 0.5],
        }
    )
    assert retained_finding(diff) is None  # each pair has one conclusive layer: no trend to state
    diff.loc[0, "verdict"] = "conclusive"
    finding = retained_finding(diff)
    assert finding.holds is True and "in 1 of 1 model x dataset pairs with two or more" in finding.sentence
