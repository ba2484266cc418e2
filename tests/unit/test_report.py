"""The report's findings are computed from the tables: checked on constructed numbers with known answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from layershift.report.findings import check_claims
from layershift.report.study_tables import StudyTables


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
    assert [
        "big",
        "d",
        "1",
        "0.510",
        "0.820",
        "0.930",
    ] in rows  # accuracy: random head, linear probe, fine-tuned
    assert ["big", "d", "1", "0.410", "0.720", "0.830"] in rows  # its macro-F1 (one run each)
    assert [
        "small",
        "d",
        "finetuned",
        "finetuned",
        "1",
        "0.020",
        "0.790",
        "9.500",
        "0.000",
    ] in rows  # SAE quality
    assert ["study", "0.810", "9.500", "True"] in rows  # the sweep's setting
    diff_row = next(row for row in rows if row[:3] + row[5:6] == ["big", "d", "4", "inconclusive"])
    assert diff_row[3:5] == ["pretrained", "finetuned"]  # a table without runs: one comparison
    assert diff_row[6:9] == ["0.00", "0.20", "0.50"], (
        diff_row
    )  # share of resamples meeting the bar, fractions
    diff_row = next(row for row in rows if row[:3] + row[5:6] == ["small", "d", "2", "conclusive"])
    assert diff_row[6:9] == ["0.99", "0.70 [0.62, 0.78]", "0.05"], diff_row  # the fraction with its interval
    assert "retained_fraction_lo" not in page  # folded into the fraction's cell
    assert ["small", "1", "d", "pretrained words", "finetuned words"] in rows  # Table 1
    findings_rows = {row[0]: row[1:] for row in rows if len(row) == 2}  # one group: finding | real
    assert ["finding", "real"] in rows  # without a config every dataset is real: no synthetic column
    assert findings_rows["The feature diff is conclusive in every layer"][0].startswith(
        "✗ Feature diff inconclusive for 1 of 4"
    )  # the findings, as the HTML report states them
    assert "✓ SAE quality: explained variance 0.790-0.810" in page
    assert "no study config given: every dataset counts as real text" in page


def report_inputs(results: Path) -> tuple[dict, dict]:
    """A study config and the report rule's inputs for the tables under ``results``: a dataset card, a model
    pointer and one figure beside them."""
    import json

    import matplotlib.pyplot as plt

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
    return config, inputs


def test_html_report_opens_with_the_findings_and_lists_settings_one_per_row(tmp_path, monkeypatch):
    """The report is one file: findings first, then the settings as a section.key / value table (not the
    printed dicts), every figure embedded."""
    import re

    from layershift.report.html import build_report

    monkeypatch.chdir(tmp_path)
    results = fake_results(tmp_path)
    config, inputs = report_inputs(results)
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


# --- fine-tuning replicates: intervals over runs beside the between-run baseline --------------------------

RUNS = ("finetuned-s1", "finetuned-s2", "finetuned-s3")


def run_pairs(runs) -> list[tuple[str, str, str]]:
    """(reference, compared, comparison) of every comparison: pretrained vs each run, then each pair of runs."""
    pairs = [("pretrained", run, "pretrained_vs_finetuned") for run in runs]
    return pairs + [(a, b, "between_runs") for i, a in enumerate(runs) for b in runs[i + 1 :]]


def replicate_similarity(runs, pre_last: float, between_last: float) -> pd.DataFrame:
    """Per comparison, three layers of one model x dataset; cosine_of_means at the last layer is ``pre_last``
    (+- 0.01 over the replicates) pretrained vs fine-tuned and ``between_last`` (+- 0.01) between runs."""
    rows = []
    for index, (reference, compared, comparison) in enumerate(run_pairs(runs)):
        last = (pre_last if comparison == "pretrained_vs_finetuned" else between_last) + 0.01 * (
            index % 3 - 1
        )
        for layer, value in enumerate([1.0, 0.97, last]):
            rows.append(
                {"model": "m", "dataset": "d", "reference": reference, "compared": compared}
                | {"comparison": comparison, "layer": layer, "relative_depth": layer / 2}
                | {
                    "cosine_of_means": value,
                    "cka_sentences": value,
                    "cka_tokens": 0.5,
                    "mean_sentence_cosine": 0.4,
                }
            )
    return pd.DataFrame(rows)


def replicate_diff(runs, lost_pre: float, lost_between: float) -> pd.DataFrame:
    """Per comparison the diff summary of layers 1 and 2 (conclusive); the lost fraction at layer 2 is
    ``lost_pre`` pretrained vs fine-tuned and ``lost_between`` between runs (each +- 0.01)."""
    rows = []
    for index, (reference, compared, comparison) in enumerate(run_pairs(runs)):
        lost = (lost_pre if comparison == "pretrained_vs_finetuned" else lost_between) + 0.01 * (
            index % 3 - 1
        )
        for layer, lost_fraction in ((1, 0.05), (2, lost)):
            rows.append(
                {"model": "m", "dataset": "d", "layer": layer, "reference": reference, "compared": compared}
                | {"comparison": comparison, "verdict": "conclusive", "conclusive_share": 1.0}
                | {"retained_fraction": 0.9 - lost_fraction, "changed_fraction": 0.1}
                | {"lost_fraction": lost_fraction, "new_fraction": lost_fraction / 2}
                | {"stable_fraction_pretrained": 0.8, "stable_fraction_finetuned": 0.8}
                | {"baseline_retained_fraction": 0.95, "baseline_lost_fraction": 0.03}
            )
    return pd.DataFrame(rows)


def replicate_accuracy(runs) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": "m", "dataset": "d", "run": run, "row": row, "n_test": 100}
            | {"accuracy": value + 0.01 * index, "macro_f1": value - 0.1 + 0.01 * index}
            for index, run in enumerate(runs)
            for row, value in (("pretrained", 0.5), ("linear_probe", 0.8), ("finetuned", 0.9))
        ]
    )


def replicate_results(root: Path, runs, between_last: float = 0.95, lost_between: float = 0.05) -> Path:
    """results/tables/ of one model x dataset with ``runs`` fine-tuning replicates; no stored replicate
    tables (the report aggregates them)."""
    tables = root / "results/tables"
    tables.mkdir(parents=True)
    replicate_accuracy(runs).to_csv(tables / "accuracy.csv", index=False)
    replicate_similarity(runs, 0.6, between_last).to_parquet(tables / "similarity.parquet")
    replicate_diff(runs, 0.4, lost_between).to_parquet(tables / "diff_summary.parquet")
    return root / "results"


SIMILARITY_CHANGE = "Fine-tuning changes cosine_of_means beyond the run-to-run baseline at the last layer"
FEATURE_CHANGE = "Fine-tuning loses SAE features beyond the run-to-run baseline at the last layer"


def replicate_study(runs, between_last: float, lost_between: float) -> StudyTables:
    from layershift.report.replicate_tables import diff_replicates, similarity_replicates

    similarity = replicate_similarity(runs, 0.6, between_last)
    diff = replicate_diff(runs, 0.4, lost_between)
    return StudyTables(
        replicate_accuracy(runs),
        similarity,
        pd.DataFrame(),
        diff,
        similarity_replicates(similarity),
        diff_replicates(diff),
    )


def test_a_change_is_stated_only_beyond_the_between_run_band():
    """Pretrained vs fine-tuned ends at 0.60 +- 0.01 and loses 0.40 of the features at the last layer: beyond a
    between-run band at 0.95 / 0.05, but not beyond a planted band (0.60 / 0.40) that swallows it."""
    narrow = check_claims(replicate_study(RUNS, between_last=0.95, lost_between=0.05))
    similarity, features = narrow[SIMILARITY_CHANGE], narrow[FEATURE_CHANGE]
    assert (
        similarity.holds is True
        and "in 1 of 3 model x dataset x layer cells (m / d: layer 2)" in similarity.sentence
    )
    assert "0.600 [0.575, 0.625] over 3 runs, between runs 0.940-0.960" in similarity.sentence
    assert (
        features.holds is True
        and "Lost SAE features beyond the between-run baseline in 1 of 2" in features.sentence
    )
    swallowed = check_claims(replicate_study(RUNS, between_last=0.6, lost_between=0.4))
    similarity, features = swallowed[SIMILARITY_CHANGE], swallowed[FEATURE_CHANGE]
    assert (
        similarity.holds is False and "in 0 of 3 model x dataset x layer cells (none)" in similarity.sentence
    )
    assert features.holds is False and "in 0 of 2 layers" in features.sentence


def test_one_run_states_no_change_beyond_a_baseline_it_does_not_have():
    checked = check_claims(replicate_study(RUNS[:1], between_last=0.95, lost_between=0.05))
    for claim in (SIMILARITY_CHANGE, FEATURE_CHANGE):
        assert checked[claim].holds is None and "no between-run baseline" in checked[claim].sentence


def test_single_run_findings_read_the_primary_comparison():
    """The seed-null and trend checks read pretrained vs the first replicate, never a between-run diff."""
    checked = check_claims(replicate_study(RUNS, between_last=0.95, lost_between=0.05))
    lost = checked["Fine-tuning loses features beyond the seed null"].sentence
    assert "largest +0.360 (m / d / layer 2)" in lost  # finetuned-s1's 0.39 minus the null's 0.03
    assert (
        "Feature diff conclusive in all 2"
        in checked["The feature diff is conclusive in every layer"].sentence
    )


def test_findings_note_states_the_between_run_test_once(tmp_path):
    from layershift.report.results_page import results_page

    page = results_page(replicate_results(tmp_path, RUNS), command="layershift summary --markdown")
    findings = page.split("## Findings")[1].split("\n## ")[0]
    assert findings.count("Between-run test (similarity)") == 1 and page.count("Between-run test") == 2


def summary_of(tmp_path: Path, runs, capsys) -> list[list[str]]:
    from layershift.cli import main

    assert main(["summary", str(replicate_results(tmp_path, runs))]) == 0
    return capsys.readouterr().out


def test_summary_of_three_runs_prints_intervals_and_the_between_run_band(tmp_path, capsys):
    text = summary_of(tmp_path, RUNS, capsys)
    rows = markdown_rows(text)
    assert ["m", "d", "3", "0.510 [0.485, 0.535]", "0.810 [0.785, 0.835]", "0.910 [0.885, 0.935]"] in rows
    assert ["m", "d", "finetuned-s2", "0.510", "0.810", "0.910"] in rows  # each run's values
    similarity = next(row for row in rows if row[2:4] == ["2", "cosine_of_means"])
    assert similarity[4:] == [
        "3",
        "0.600 [0.575, 0.625]",
        "0.950 (0.940–0.960)",
        "changed",
        "0.590, 0.600, 0.610",
    ]
    diff = next(row for row in rows if row[:4] == ["m", "d", "2", "3"])
    assert diff[4] == "3 of 3 conclusive" and diff[9:11] == ["0.40 [0.38, 0.42]", "0.05 (0.04–0.06)"], diff
    assert diff[-3:] == ["yes", "yes", "yes"]  # lost, new beyond and retained below the between-run band
    per_comparison = next(row for row in rows if row[2:5] == ["2", "pretrained", "finetuned-s3"])
    assert "0.41" in per_comparison  # the per-replicate fractions: the third run's lost fraction
    assert "Student-t" in text and "one fine-tuning run" not in text


def test_summary_of_one_run_prints_point_values_and_says_so(tmp_path, capsys):
    text = summary_of(tmp_path, RUNS[:1], capsys)
    rows = markdown_rows(text)
    assert ["m", "d", "1", "0.500", "0.800", "0.900"] in rows
    similarity = next(row for row in rows if row[2:4] == ["2", "cosine_of_means"])
    assert similarity[4:] == ["1", "0.590", "-", "no between-run baseline", "0.590"]
    assert text.count("one fine-tuning run: no interval") == 3  # accuracy, similarity, diff
    assert "Accuracy per fine-tuning run" not in text
    assert "[" not in text.split("**SAE feature diff per layer and comparison**")[0]


def json_files(tmp_path: Path, rows: pd.DataFrame, stem: str) -> list[str]:
    """Each row of ``rows`` as its own JSON file (a diff summary, a metrics.json)."""
    import json

    paths = []
    for index, row in enumerate(rows.to_dict("records")):
        paths.append(str(tmp_path / f"{stem}{index}.json"))
        Path(paths[-1]).write_text(json.dumps(row))
    return paths


def error_segments(ax) -> list:
    """The (low, high) of every error bar drawn on ``ax``."""
    from matplotlib.container import ErrorbarContainer

    bars = [container for container in ax.containers if isinstance(container, ErrorbarContainer)]
    return [tuple(segment[:, 1]) for bars_of in bars for segment in bars_of.lines[2][0].get_segments()]


def test_diff_figure_draws_replicate_intervals_beside_the_between_run_band(tmp_path):
    """Per fraction and layer: the mean over runs with its interval and the between-run range beside it; a
    layer not conclusive in every replicate gets no bars, only a tick note."""
    from layershift.report.figures import draw
    from layershift.report.plotting import theme

    diff = replicate_diff(RUNS, lost_pre=0.4, lost_between=0.05)
    borderline = (
        (diff["layer"] == 1) & (diff["reference"] == "pretrained") & (diff["compared"] == "finetuned-s2")
    )
    diff.loc[borderline, "verdict"] = "borderline"
    from layershift.report.diff_figures import plot_diff

    theme()
    figure = plot_diff(json_files(tmp_path, diff, "diff"), {"model": "m"}, {})
    lost = figure.axes[2]
    assert lost.get_title() == "d: lost" and "mean over 3 fine-tuning runs" in figure._suptitle.get_text()
    assert [tick.get_text() for tick in lost.get_xticklabels()] == ["1\n(2/3 concl.)", "2"]
    (pre_low, pre_high), (between_low, between_high) = error_segments(lost)  # layer 2's only
    assert (pre_low, pre_high) == pytest.approx((0.4 - 0.0248, 0.4 + 0.0248), abs=1e-3)
    assert (between_low, between_high) == pytest.approx((0.04, 0.06))
    one_run = diff[diff["compared"] == "finetuned-s1"].assign(verdict="conclusive")
    figure = plot_diff(json_files(tmp_path, one_run, "one"), {"model": "m"}, {})
    assert (
        error_segments(figure.axes[2]) == []
        and "one fine-tuning run, no interval" in figure._suptitle.get_text()
    )
    draw(
        "fig_diff", json_files(tmp_path, diff, "diff"), {"model": "m"}, {}, str(tmp_path / "diff.png"), dpi=40
    )
    assert (tmp_path / "diff.png").stat().st_size > 0


def split_half_table() -> pd.DataFrame:
    return pd.DataFrame(
        {"model": "m", "dataset": "d", "layer": [0, 1, 2], "cosine_of_means": [1.0, 0.99, 0.98]}
    )


def bands_of(ax) -> list:
    from matplotlib.collections import PolyCollection

    return [collection for collection in ax.collections if isinstance(collection, PolyCollection)]


def test_similarity_figures_draw_the_interval_over_runs_and_the_between_run_band(tmp_path):
    from layershift.analysis.replicates import similarity_over_replicates
    from layershift.report.plotting import theme
    from layershift.report.similarity_figures import plot_depth, plot_similarity

    theme()
    wildcards = {"model": "m", "measure": "cosine_of_means"}
    comparisons, split_half = tmp_path / "m.parquet", tmp_path / "pretrained_split_half.parquet"
    replicate_similarity(RUNS, 0.6, 0.95).to_parquet(comparisons)
    split_half_table().to_parquet(split_half)
    figure = plot_similarity([str(comparisons), str(split_half)], wildcards, {})
    ax = figure.axes[0]
    assert len(bands_of(ax)) == 2 and [band.get_hatch() for band in bands_of(ax)] == [None, "///"]
    markers = [c for c in ax.collections if c not in bands_of(ax)]
    assert markers[0].get_offsets()[:, 1].tolist() == [1.0, 0.99, 0.98]  # the split half
    assert "mean over 3 fine-tuning runs" in ax.get_title()
    replicate_similarity(RUNS[:1], 0.6, 0.95).to_parquet(comparisons)
    ax = plot_similarity([str(comparisons)], wildcards, {}).axes[0]
    drawn = [line for line in ax.lines if len(line.get_xdata())]  # legend entries hold no data
    assert bands_of(ax) == [] and len(drawn) == 1 and "one fine-tuning run, no interval" in ax.get_title()
    table = similarity_over_replicates(replicate_similarity(RUNS, 0.6, 0.95), ["cosine_of_means"])
    table.to_parquet(tmp_path / "replicates.parquet")
    ax = plot_depth([str(tmp_path / "replicates.parquet")], wildcards, {}).axes[0]
    assert len(bands_of(ax)) == 2 and ax.lines[0].get_ydata().tolist() == pytest.approx([1.0, 0.97, 0.6])


def test_accuracy_and_training_figures_show_every_run(tmp_path):
    from layershift.report.figures import plot_accuracy, plot_training
    from layershift.report.plotting import theme

    theme()
    replicate_accuracy(RUNS).to_csv(tmp_path / "accuracy.csv", index=False)
    figure = plot_accuracy([str(tmp_path / "accuracy.csv")], {}, {})
    ax = figure.axes[0]
    import numpy as np

    intervals = [(np.nanmin(line.get_ydata()), np.nanmax(line.get_ydata())) for line in ax.lines]
    assert len(intervals) == 3  # an error bar (with caps) per bar
    assert intervals[2] == pytest.approx((0.885, 0.935), abs=1e-3)  # the fine-tuned bar's
    assert sum(len(c.get_offsets()) for c in ax.collections) == 9  # each run's dot on each of 3 bars
    logs = []
    for index, run in enumerate(RUNS):
        logs.append(tmp_path / run / "training_log.csv")
        logs[-1].parent.mkdir()
        log = {
            "epoch": [1, 2],
            "train_loss": [0.7, 0.5],
            "val_loss": [0.6, 0.5],
            "val_accuracy": [0.7, 0.8 + index / 100],
        }
        pd.DataFrame(log).to_csv(logs[-1], index=False)
    figure = plot_training([str(path) for path in logs], {"model": "m", "dataset": "d"}, {})
    labels = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    drawn = [line for line in figure.axes[1].lines if len(line.get_xdata())]  # legend entries hold no data
    assert labels == list(RUNS) and len(drawn) == 3


def test_sae_loss_figure_draws_every_run_and_seed_null(tmp_path):
    from layershift.report.figures import plot_sae_loss
    from layershift.report.plotting import theme

    theme()
    paths = []
    for run, stage in (
        ("pretrained", "pretrained"),
        ("finetuned-s1", "finetuned"),
        ("finetuned-s2", "finetuned"),
    ):
        for folder, seed in (("sae", 1), ("sae_null", 2)):
            path = tmp_path / folder / run / "metrics.json"
            path.parent.mkdir(parents=True)
            metrics = {"stage": stage, "run": run, "seed": seed, "layer": 1, "loss_curve": [1.0, 0.5, 0.4]}
            path.write_text(pd.Series(metrics).to_json())
            paths.append(str(path))
    figure = plot_sae_loss(paths, {"model": "m", "dataset": "d"}, {})
    lines = [line for line in figure.axes[0].lines if len(line.get_xdata()) == 3]
    assert len(lines) == 6  # one per SAE: three runs, each its own and a seed null
    assert {line.get_linestyle() for line in lines} == {"-", "--"}
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert {"pretrained", "finetuned-s1", "finetuned-s2", "seed null"} <= set(legend)


def test_html_report_reads_the_stored_replicate_tables(tmp_path, monkeypatch):
    """The report's tables read the study's replicate tables where the rule passes them: here written at a
    90 % interval, so the cells are theirs and not the 95 % ones aggregated without them."""
    import json

    from layershift.analysis.replicates import (
        accuracy_over_replicates,
        diff_over_replicates,
        similarity_over_replicates,
    )
    from layershift.report.html import build_report

    monkeypatch.chdir(tmp_path)
    results = replicate_results(tmp_path, RUNS)
    tables = results / "tables"
    stored = {
        "accuracy_replicates": accuracy_over_replicates(replicate_accuracy(RUNS), 0.9),
        "similarity_replicates": similarity_over_replicates(
            replicate_similarity(RUNS, 0.6, 0.95), ["cosine_of_means"], 0.9
        ),
        "diff_replicates": diff_over_replicates(replicate_diff(RUNS, 0.4, 0.05), 0.9),
    }
    metrics = results / "sae/m/d/finetuned-s1/layer1/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(
        json.dumps({"model": "m", "dataset": "d", "stage": "finetuned", "run": "finetuned-s1"})
    )
    pd.DataFrame(
        [{"model": "m", "dataset": "d", "layer": 1, "stage": "pretrained", "description": "-"}]
    ).to_parquet(tables / "feature_summary.parquet")
    config, inputs = report_inputs(results)
    for name, table in stored.items():
        table.to_parquet(tables / f"{name}.parquet")
        inputs[name] = [str(tables / f"{name}.parquet")]
    build_report(tmp_path / "index.html", config, "config.yaml", inputs)
    page = (tmp_path / "index.html").read_text()
    classification = page.split('id="classification"', 1)[1].split("</section>", 1)[0]
    assert "<td>0.910 [0.893, 0.927]</td>" in classification  # t(0.95, 2) = 2.92: the stored 90 % interval
    assert "<td>finetuned-s3</td>" in classification  # each run's values
    similarity = page.split('id="similarity"', 1)[1].split("</section>", 1)[0]
    assert "<td>0.600 [0.583, 0.617]</td>" in similarity and "<td>0.950 (0.940–0.960)</td>" in similarity
    assert "<td>changed</td>" in similarity and "<td>finetuned-s2</td>" in similarity  # and every comparison
    diff = page.split('id="diff"', 1)[1].split("</section>", 1)[0]
    assert "<td>0.40 [0.38, 0.42]</td>" in diff and "<td>0.05 (0.04–0.06)</td>" in diff
    assert page.count("Between-run test (similarity)") == 1
