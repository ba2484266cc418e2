"""The SAEs read through the classifiers, on hand-made tables with planted answers: the fidelity table over
runs beside its untrained control, the findings that need that control and an interval, and the feature pages
(stable features of the primary pair only, compact, one self-contained report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layershift.core.io import write_parquet
from layershift.report.feature_roles import feature_roles
from layershift.report.fidelity_findings import control_finding, role_finding
from layershift.report.fidelity_tables import fidelity_cells, fidelity_over_runs

CLASSES = ["gloom", "cheer"]
LAYERS = (1, 2)
# per side: how many stable features of each label, then the unstable (pretrained) or dead (fine-tuned) ones
PRETRAINED_LABELS = ["retained"] * 8 + ["changed"] * 2 + ["lost"] * 6 + ["unstable"] * 2
FINETUNED_LABELS = ["retained"] * 8 + ["changed"] * 2 + ["new"] * 6 + ["dead"] * 2
PLANTED_TOKEN = "dreary"  # the token every lost feature fires on in its contexts


def finetuned_runs(count: int) -> list[str]:
    return [f"finetuned-s{seed}" for seed in range(3, 3 + count)]


def fidelity_table(runs: int, trained: float, untrained: float, noise: float = 0.01) -> pd.DataFrame:
    """SAE fidelity rows of the pretrained run and ``runs`` fine-tuned ones, layers 1 and 2: the trained SAE
    recovers ``trained`` of the loss, its untrained control ``untrained`` (each run shifted by ``noise``)."""
    rows = []
    for index, run in enumerate(["pretrained", *finetuned_runs(runs)]):
        stage = "pretrained" if run == "pretrained" else "finetuned"
        shift = noise * (index % 3 - 1)
        for layer in LAYERS:
            for sae, recovered in (("trained", trained + shift), ("untrained", untrained - shift)):
                rows.append(
                    {
                        "model": "m",
                        "dataset": "d",
                        "stage": stage,
                        "run": run,
                        "layer": layer,
                        "sae": sae,
                        "loss_recovered_mean": recovered,
                        "loss_recovered_zero": recovered + 0.05,
                        "kl_clean_spliced": 0.1 * (1 - recovered),
                        "accuracy_clean": 0.9,
                        "accuracy_spliced": 0.9 - 0.2 * (1 - recovered),
                    }
                )
    return pd.DataFrame(rows)


def test_fidelity_over_runs_gives_the_fine_tuned_interval_and_names_each_classifier():
    summary = fidelity_over_runs(fidelity_table(3, trained=0.9, untrained=0.0))
    pre = summary[(summary["stage"] == "pretrained") & (summary["layer"] == 1)].iloc[0]
    fine = summary[(summary["stage"] == "finetuned") & (summary["layer"] == 1)].iloc[0]
    assert pre["n_runs"] == 1 and np.isnan(pre["loss_recovered_mean_lo"])  # one run: no interval
    assert "linear probe" in pre["classifier"] and "fine-tuned model" in fine["classifier"]
    assert fine["n_runs"] == 3 and fine["loss_recovered_mean_mean"] == pytest.approx(0.9)
    assert fine["loss_recovered_mean_lo"] < 0.9 < fine["loss_recovered_mean_hi"]
    assert fine["control_gap_mean"] == pytest.approx(0.9)
    cells = fidelity_cells(summary)
    row = cells[(cells["stage"] == "finetuned") & (cells["layer"] == 1)].iloc[0]
    assert row["classifier"] == "fine-tuned model" and row["loss recovered (mean abl.)"].startswith("0.900 [")
    assert row["untrained control (mean abl.)"].startswith("0.000 [")
    assert cells.loc[cells["stage"] == "pretrained", "accuracy spliced"].iloc[0] == "0.878"


def test_the_sae_keeps_what_the_classifier_uses_only_beyond_its_control():
    kept = control_finding(fidelity_table(3, trained=0.9, untrained=0.0))
    assert (
        kept.holds is True and "Clearly more than the control" in kept.sentence and "2 of 2" in kept.sentence
    )
    # an SAE that recovers no more than an untrained one: the interval of the gap straddles 0
    useless = control_finding(fidelity_table(3, trained=0.05, untrained=0.05, noise=0.05))
    assert useless.holds is False and "Not clearly more: m / d / layer 1 finetuned" in useless.sentence
    one_run = control_finding(fidelity_table(1, trained=0.9, untrained=0.0))
    assert one_run.holds is None and "Not stated for 4 cells with one run" in one_run.sentence


def diff_rows(layer: int, compared: str) -> tuple[pd.DataFrame, dict]:
    """One comparison's per-feature diff of ``layer``: both sides' labels, partners and seed-null matches."""
    rows = []
    for side, labels in (("pretrained", PRETRAINED_LABELS), ("finetuned", FINETUNED_LABELS)):
        for feature, label in enumerate(labels):
            matched = label in ("retained", "changed")
            rows.append(
                {
                    "side": side,
                    "feature": feature,
                    "live": label != "dead",
                    "firing_rate": 0.1,
                    "match": feature if matched else -1,
                    "cosine": 0.9 if label == "retained" else (0.5 if matched else np.nan),
                    "activation_correlation": 0.8 if matched else np.nan,
                    "label": label,
                    "stable": label not in ("unstable", "dead"),
                    "null_match": feature,
                    "null_cosine": 0.95,
                    "null_correlation": 0.9,
                    "top_tokens": [PLANTED_TOKEN, "the"] if label == "lost" else ["word", "the"],
                }
            )
    meta = {"model": "m", "dataset": "d", "layer": layer, "reference": "pretrained", "compared": compared}
    return pd.DataFrame(rows), meta


def effect_rows(
    run: str, layer: int, labels: list[str], heavy: str, weight: float, seed: int
) -> pd.DataFrame:
    """A run's feature effects at ``layer``: the ``heavy`` label's features weigh ``weight`` times the others
    in the decision (|attribution to a class logit|), with noise; the first two ``heavy`` features are ablated
    as the top, the first two others as the random control."""
    rng = np.random.default_rng(seed)
    live = [feature for feature, label in enumerate(labels) if label != "dead"]
    scale = np.array([weight if labels[feature] == heavy else 1.0 for feature in live])
    logits = scale[:, None] * rng.uniform(0.5, 1.5, size=(len(live), 2)) * rng.choice([-1, 1], (len(live), 2))
    top = [feature for feature in live if labels[feature] == heavy][:2]
    control = [feature for feature in live if labels[feature] != heavy][:2]
    ablated = [feature in top or feature in control for feature in live]
    stage = "pretrained" if run == "pretrained" else "finetuned"
    return pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "stage": stage,
            "run": run,
            "layer": layer,
            "feature": live,
            "firing_rate": 0.05,
            "mean_activation": 0.3,
            "attribution_loss": -0.01 * scale,
            "attribution_logit_0": logits[:, 0],
            "attribution_logit_1": logits[:, 1],
            "attribution_rank": np.arange(1, len(live) + 1),
            "ablated": ablated,
            "random_control": [feature in control for feature in live],
            "ablation_loss_delta": [0.02 * s if a else np.nan for s, a in zip(scale, ablated, strict=True)],
            "ablation_logit_delta_0": [0.1 if a else np.nan for a in ablated],
            "ablation_logit_delta_1": [-0.1 if a else np.nan for a in ablated],
        }
    )


def profile_rows(run: str, layer: int, labels: list[str]) -> pd.DataFrame:
    """A run's feature profiles at ``layer``: lost features fire on the planted token in texts of class 0."""
    rows = []
    for feature, label in enumerate(labels):
        if label == "dead":
            continue
        token = PLANTED_TOKEN if label == "lost" else f"word{feature}"
        context = {"tokens": ["the", "film", "was", token, "."], "activations": [0.0, 0.1, 0.2, 2.0, 0.0]}
        rows.append(
            {
                "layer": layer,
                "feature": feature,
                "firing_rate": 0.05,
                "mean_activation_class_0": 0.4 if label == "lost" else 0.1,
                "mean_activation_class_1": 0.05 if label == "lost" else 0.2,
                "contexts": [
                    context | {"label": 0, "activation": 2.0},
                    context | {"label": 1, "activation": 1.0},
                ],
            }
        )
    return pd.DataFrame(rows)


def planted_study(root: Path, runs: int, new_weight: float, lost_weight: float) -> dict:
    """Hand-made artifacts of one model x dataset with two SAE layers and ``runs`` fine-tuning runs, written
    under ``root``: per comparison diffs, the feature-effects table, the primary pair's profiles and the card.
    Returns the report rule's inputs for them (and ``config``)."""
    fidelity_dir = root / "results/fidelity/m/d"
    fidelity_dir.mkdir(parents=True)
    diff_paths, effects = [], []
    for index, run in enumerate(finetuned_runs(runs)):
        effects += [
            effect_rows(run, layer, FINETUNED_LABELS, "new", new_weight, index + layer) for layer in LAYERS
        ]
        for layer in LAYERS:
            table, meta = diff_rows(layer, run)
            path = root / f"results/diff/m/d/pretrained_vs_{run}/layer{layer}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_parquet(table, path, meta)
            diff_paths.append(str(path))
    effects += [
        effect_rows("pretrained", layer, PRETRAINED_LABELS, "lost", lost_weight, 50 + layer)
        for layer in LAYERS
    ]
    effects_path = root / "results/tables/feature_effects.parquet"
    effects_path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(effects, ignore_index=True).to_parquet(effects_path)
    profiles = []
    for run, labels in (("pretrained", PRETRAINED_LABELS), (finetuned_runs(1)[0], FINETUNED_LABELS)):
        path = fidelity_dir / f"{run}.profiles.parquet"
        pd.concat([profile_rows(run, layer, labels) for layer in LAYERS], ignore_index=True).to_parquet(path)
        profiles.append(str(path))
    config = {"seed": 3, "replicates": {"seeds": list(range(3, 3 + runs))}}
    return {
        "diff_labels": diff_paths,
        "feature_effects": [str(effects_path)],
        "profiles": profiles,
        "config": config,
    }


def verdicts(runs: int, layer_verdicts: dict[int, str | None]) -> pd.DataFrame:
    """The diff summary table: one row per comparison and layer with its verdict (None: no verdict)."""
    return pd.DataFrame(
        [
            {"model": "m", "dataset": "d", "layer": layer, "reference": "pretrained", "compared": run}
            | {"comparison": "pretrained_vs_finetuned", "verdict": verdict}
            for run in finetuned_runs(runs)
            for layer, verdict in layer_verdicts.items()
        ]
    )


def test_new_features_carry_more_of_the_decision_only_beyond_random_relabelling(tmp_path):
    planted = planted_study(tmp_path / "heavy", runs=3, new_weight=4.0, lost_weight=1.0)
    roles = feature_roles(planted["diff_labels"], planted["feature_effects"][0])
    new = role_finding(roles, "finetuned", "new")
    assert new.holds is True and "Clearly more in 2 of 2 layers" in new.sentence
    assert "random relabelling up to" in new.sentence and "Exact ablation where measured" in new.sentence
    lost = role_finding(roles, "pretrained", "lost")  # the pretrained probe weighs lost features as any other
    assert lost.holds is False and "Clearly more in 0 of 2 layers" in lost.sentence
    one_run = planted_study(tmp_path / "one", runs=1, new_weight=4.0, lost_weight=4.0)
    roles = feature_roles(one_run["diff_labels"], one_run["feature_effects"][0])
    stated = role_finding(roles, "pretrained", "lost")
    assert stated.holds is None and stated.sentence.endswith("Not stated: one fine-tuning run, no interval.")


def pages_of(page: str) -> dict:
    """The feature pages' JSON a report embeds."""
    embedded = re.search(r'<script type="application/json" id="fp-data">(.*?)</script>', page, re.S)
    assert embedded, "no feature pages in the report"
    return json.loads(embedded[1].replace("<\\/", "</"))


def test_feature_pages_hold_the_stable_features_of_layers_with_a_verdict(tmp_path):
    from layershift.report.feature_pages import feature_pages_data, read_profiles

    planted = planted_study(tmp_path, runs=2, new_weight=4.0, lost_weight=1.0)
    effects = pd.read_parquet(planted["feature_effects"][0])
    data = feature_pages_data(
        planted["diff_labels"],
        verdicts(2, {1: None, 2: "conclusive"}),  # layer 1's diff has no verdict: no pages
        effects,
        read_profiles(planted["profiles"]),
        {"d": CLASSES},
        ("pretrained", "finetuned-s3"),
    )
    assert [group["layer"] for group in data["groups"]] == [2]
    assert data["groups"][0]["classes"] == CLASSES and data["groups"][0]["verdict"] == "conclusive"
    pages = [dict(zip(data["fields"], page, strict=True)) for page in data["pages"]]
    assert len(pages) == 2 * 16  # the stable features of both sides; the unstable and dead ones have none
    assert {page["label"] for page in pages} == {"retained", "changed", "lost", "new"}
    lost = [page for page in pages if page["label"] == "lost"]
    assert len(lost) == 6 and all(page["side"] == 0 and page["match"] == -1 for page in lost)
    tokens, levels, label, activation = lost[0]["contexts"][0]
    assert levels == "00190" and (label, activation) == (0, 2.0)  # tenths of the page's top activation
    assert data["strings"][tokens[levels.index("9")]] == PLANTED_TOKEN
    assert lost[0]["class_means"] == [0.4, 0.05] and lost[0]["top_class"] == 0
    assert len(data["strings"]) == len(set(data["strings"]))  # each token string stored once
    retained = next(page for page in pages if page["label"] == "retained" and page["side"] == 1)
    assert retained["match"] == retained["feature"] and retained["cosine"] == 0.9
    assert retained["null_cosine"] == 0.95 and retained["attribution_logits"] is not None
    ablated = [page for page in pages if page["ablation_loss"] is not None]
    assert ablated and all(page["ablation_logits"] == [0.1, -0.1] for page in ablated)
    assert data["groups"][0]["n_live"] == [18, 16] and data["groups"][0]["random_ablation"] == [0.02, 0.02]


def planted_report(root: Path, runs: int = 1) -> Path:
    """A full report built from the report test's small study plus the planted diffs, effects, profiles and
    fidelity of model ``m``; ``root`` must be the working directory. Returns the HTML file."""
    from layershift.report.html import build_report
    from tests.unit.test_report import fake_results, report_inputs

    results = fake_results(root)
    config, inputs = report_inputs(results)
    planted = planted_study(root, runs=runs, new_weight=4.0, lost_weight=1.0)
    card = json.loads((results / "card.json").read_text())
    (results / "card.json").write_text(json.dumps(card | {"label_names": CLASSES}))
    diff = pd.read_parquet(results / "tables/diff_summary.parquet")
    planted_diff = pd.DataFrame(
        [
            {"model": "m", "dataset": "d", "layer": layer, "retained_fraction": 0.6, "lost_fraction": 0.3}
            for layer in LAYERS
        ]
    ).assign(baseline_lost_fraction=0.04, verdict=["conclusive", "borderline"], conclusive_share=[1.0, 0.5])
    pd.concat([diff, planted_diff], ignore_index=True).to_parquet(results / "tables/diff_summary.parquet")
    fidelity = results / "tables/sae_fidelity.parquet"
    fidelity_table(runs, trained=0.9, untrained=0.0).to_parquet(fidelity)
    config |= planted.pop("config")
    inputs |= planted | {"fidelity": [str(fidelity)]}
    build_report(root / "index.html", config, "config.yaml", inputs)
    return root / "index.html"


def test_report_embeds_the_feature_pages_once_and_states_their_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = planted_report(tmp_path).read_text()
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert (
        headings.index("Faithfulness: each SAE spliced into its run&#39;s classifier")
        == headings.index("Sparse autoencoders") + 1
    )
    assert (
        headings[-1] == "Feature pages of the primary pair" or "Feature pages of the primary pair" in headings
    )
    fidelity = page.split('id="fidelity"', 1)[1].split("</section>", 1)[0]
    assert "linear probe on the frozen pretrained encoder" in fidelity and "<td>linear probe</td>" in fidelity
    data = pages_of(page)
    assert len(data["pages"]) == 2 * 2 * 16  # two layers with a verdict (one borderline), both sides
    assert page.count('id="fp-data"') == 1 and page.count("<script") == 2  # the data and the script, once
    assert "<link" not in page and not re.search(r'src="(?!data:)', page)  # nothing fetched
    embedded = re.search(r'id="fp-data">(.*?)</script>', page, re.S)[1]
    per_page = len(embedded.encode()) / len(data["pages"])
    assert per_page < 400, per_page  # two contexts of five tokens, two classes: compact
    assert f"{len(data['pages'])} feature pages in 2 layers" in page and "bytes per page" in page
    findings = page.split('id="findings"', 1)[1].split("</section>", 1)[0]
    assert "The SAEs keep what the classifier uses" in findings
    assert "Not stated for 4 cells with one run" in findings  # one fine-tuning run: no interval anywhere


def test_results_page_and_summary_show_the_fidelity_over_runs(tmp_path, capsys):
    from layershift.cli import main
    from layershift.report.results_page import results_page
    from tests.unit.test_report import fake_results

    results = fake_results(tmp_path)
    fidelity_table(3, trained=0.9, untrained=0.0).to_parquet(results / "tables/sae_fidelity.parquet")
    planted_study(tmp_path, runs=3, new_weight=4.0, lost_weight=1.0)
    page = results_page(results, command="layershift summary --markdown results")
    assert "## SAE fidelity: each SAE spliced into its run's classifier" in page
    row = next(line for line in page.splitlines() if line.startswith("| m ") and "| finetuned " in line)
    assert "fine-tuned model" in row and "0.900 [" in row and re.search(r"\|\s+3 \|", row)
    assert "✓ Loss recovered by the SAE spliced into its run's classifier" in page
    assert "✓ New features of the fine-tuned SAE" in page and "✗ Lost features of the pretrained SAE" in page
    assert main(["summary", "--results", str(results)]) == 0
    assert "SAE fidelity" in capsys.readouterr().out
