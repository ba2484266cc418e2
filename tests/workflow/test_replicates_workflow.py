"""Fine-tuning replicates end to end on the tiny study: every run has its own artifacts, the tables carry
intervals over runs and the between-run baseline, and the no-step control (learning rate 0: every replicate is
the pretrained encoder) reports no change beyond run-to-run noise."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support.study import build_tiny_study, run_snakemake

pytestmark = pytest.mark.slow

SEEDS = [3, 4, 5]
RUNS = [f"finetuned-s{seed}" for seed in SEEDS]


def replicate_study(workdir: Path, lr: float | None = None) -> Path:
    """The tiny study with three fine-tuning replicates and the between-run baseline (``lr``: its fine-tuning
    learning rate, when given), run end to end; returns its results folder."""
    config_path = build_tiny_study(workdir)
    config = yaml.safe_load(config_path.read_text())
    config["replicates"] = {"seeds": SEEDS, "between_runs": True}
    config["models"]["tiny2"]["sae_layers"] = [2]  # one layer keeps the test short
    if lr is not None:
        config["finetune"]["lr"] = lr
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(workdir, "--cores", "2")
    return workdir / "results"


@pytest.fixture(scope="module")
def replicates_done(tmp_path_factory) -> Path:
    return replicate_study(tmp_path_factory.mktemp("replicates"))


@pytest.fixture(scope="module")
def no_step_done(tmp_path_factory) -> Path:
    return replicate_study(tmp_path_factory.mktemp("no_step"), lr=0.0)


def test_every_replicate_has_its_own_runs_and_the_tables_carry_intervals(replicates_done):
    results = replicates_done
    for run in RUNS:
        assert (results / f"models/tiny2/mood/{run}/model.safetensors").is_file()
        assert (results / f"sae/tiny2/mood/{run}/layer2/sae_weights.safetensors").is_file()
        assert (results / f"sae_null/tiny2/mood/{run}/layer2/null0/sae_weights.safetensors").is_file()
    accuracy = pd.read_csv(results / "tables/accuracy.csv")
    assert sorted(accuracy["run"].unique()) == RUNS
    finetuned = pd.read_parquet(results / "tables/accuracy_replicates.parquet").query("row == 'finetuned'")
    assert (finetuned["n_replicates"] == 3).all()
    assert (finetuned["accuracy_lo"] <= finetuned["accuracy_mean"]).all()
    assert (finetuned["accuracy_mean"] <= finetuned["accuracy_hi"]).all()

    similarity = pd.read_parquet(results / "tables/similarity_replicates.parquet")
    assert set(similarity["n_replicates"]) == {3} and set(similarity["n_between_pairs"]) == {3}
    assert similarity["verdict"].isin({"changed", "within run-to-run"}).all()
    diff = pd.read_parquet(results / "tables/diff_summary.parquet")
    assert sorted(diff["comparison"].value_counts().to_dict().items()) == [
        ("between_runs", 3),
        ("pretrained_vs_finetuned", 3),
    ]
    per_layer = pd.read_parquet(results / "tables/diff_replicates.parquet")
    assert (per_layer["n_replicates"] == 3).all() and (per_layer["n_between_pairs"] == 3).all()


def test_learning_rate_zero_changes_no_layer_and_loses_no_feature(no_step_done):
    """The control: fine-tuning takes no step, so whatever 'change' appears comes from the pipeline itself.
    Every replicate's encoder equals the pretrained one; no layer is changed and nothing is lost or new beyond
    the between-run baseline."""
    results = no_step_done
    similarity = pd.read_parquet(results / "tables/similarity_replicates.parquet")
    assert (similarity["verdict"] == "within run-to-run").all(), similarity
    cosine = similarity.query("measure == 'cosine_of_means'")
    assert all(math.isclose(value, 1.0, abs_tol=1e-6) for value in cosine["pre_vs_ft_mean"])
    per_layer = pd.read_parquet(results / "tables/diff_replicates.parquet")
    for flag in ("lost_beyond_between_runs", "new_beyond_between_runs", "retained_below_between_runs"):
        assert not per_layer[flag].fillna(False).astype(bool).any(), per_layer[flag]
