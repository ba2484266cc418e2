"""SAE settings sweep: a setting that recovers a planted dictionary is reproducible across seeds, an
under-trained one (decoders still at their random initialisation) is not, and both are scored on one table.
The study-settings row reads the study's own SAEs when given them, with the same numbers as training them."""

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.analysis import sweep as sweep_module
from layershift.analysis.sweep import setting_label, sweep
from layershift.core.io import write_json
from layershift.data.shards import ShardWriter
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.files import save_sae
from layershift.dictionaries.sae.train import train_sae_on_shards
from layershift.study.schema import from_section
from tests.support.vectors import incoherent_atoms

torch.set_num_threads(1)
D, N_ATOMS, N_ROWS = 24, 16, 4096


@pytest.fixture(scope="module")
def planted_shards(tmp_path_factory):
    rng = np.random.default_rng(0)
    atoms = incoherent_atoms(rng, N_ATOMS, D)
    active = rng.random((N_ROWS, N_ATOMS)) < 3 / N_ATOMS  # ~3 atoms per row
    rows = (active * rng.uniform(0.5, 1.5, (N_ROWS, N_ATOMS))) @ atoms  # [rows, d]
    directory = tmp_path_factory.mktemp("sweep") / "layer2"
    with ShardWriter(directory, D, dtype="float32", rows_per_group=512, metadata={"layer": 2}) as writer:
        ids = np.arange(N_ROWS)
        writer.append(ids // 10, ids % 10, ids % 50, [f"t{i}" for i in ids % 50], rows.astype(np.float32))
    return directory


BASE = {"architecture": "relu", "d_sae": N_ATOMS, "l1_coefficient": 1e-2, "lr": 3e-3, "epochs": 20}
BASE |= {"batch_size": 128, "holdout_fraction": 0.1}


def test_trained_setting_is_reproducible_and_untrained_is_not(planted_shards):
    grid = [{}, {"epochs": 1, "lr": 1e-6}]
    table = sweep(planted_shards, BASE, grid, seeds=(1, 2), split_seed=0)
    assert list(table["setting"]) == ["study settings", "epochs=1 lr=1e-06"]
    trained, untrained = table.iloc[0], table.iloc[1]
    assert trained["median_matched_cosine"] > 0.9 and trained["share_above_chance"] > 0.9
    assert trained["reproducible"] and trained["explained_variance"] > 0.6
    # decoders still at their seeded random initialisation: matched like two random dictionaries
    assert not untrained["reproducible"]
    assert untrained["median_matched_cosine"] < trained["chance_cosine_p99"] + 0.15
    assert set(table["n_train_rows"]) == {N_ROWS - round(0.1 * N_ROWS)}


def test_sweep_needs_two_seeds(planted_shards):
    with pytest.raises(ValueError, match="two seeds"):
        sweep(planted_shards, BASE, [{}], seeds=(1,), split_seed=0)


def test_setting_labels_are_stable():
    assert setting_label({"lr": 0.001, "d_sae": 64}) == "d_sae=64 lr=0.001"
    assert setting_label({}) == "study settings"


def save_study_sae(shard_dir, section: dict, seed: int, directory) -> None:
    """An SAE saved the way the workflow's train_sae saves a study SAE: weights, cfg.json, metrics.json."""
    cfg = from_section(SAEConfig, section, d_in=D)
    train = from_section(SAETrainConfig, section, seed=seed, split_seed=0)
    sae, metrics = train_sae_on_shards(shard_dir, cfg, train, progress=False)
    save_sae(sae, directory)
    write_json({"seed": seed, **metrics}, directory / "metrics.json")


@pytest.fixture(scope="module")
def study_saes(planted_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("study_saes")
    saes = {seed: root / f"seed{seed}" for seed in (1, 2)}
    for seed, directory in saes.items():
        save_study_sae(planted_shards, BASE, seed, directory)
    return saes


def test_study_settings_row_reads_the_study_saes_and_equals_training_them(
    planted_shards, study_saes, monkeypatch
):
    trained = sweep(planted_shards, BASE, [{}], seeds=(1, 2), split_seed=0)
    calls, train_setting = [], sweep_module.train_setting
    monkeypatch.setattr(sweep_module, "train_setting", lambda *a: calls.append(a[1]) or train_setting(*a))
    grid = [
        {},
        {"lr": BASE["lr"]},
        {"epochs": 1},
    ]  # a point restating the study's value is the study's setting
    read = sweep(planted_shards, BASE, grid, seeds=(1, 2), split_seed=0, study_saes=study_saes)
    assert [section["epochs"] for section in calls] == [1, 1]  # only the one point that is not the study's
    timing = ["cpu_seconds_per_sae"]
    for row in (0, 1):
        expected = trained.drop(columns=timing).iloc[0]
        expected["setting"], expected["settings"] = read["setting"][row], read["settings"][row]
        pd.testing.assert_series_equal(read.drop(columns=timing).iloc[row], expected, check_names=False)
    assert (read[timing[0]] > 0).all()  # the study SAEs' own CPU time, recorded by train_sae_on_shards


def test_study_saes_of_other_settings_or_seeds_are_refused(planted_shards, study_saes):
    swapped = {1: study_saes[2], 2: study_saes[1]}
    with pytest.raises(
        ValueError, match=r"seed2: not an SAE of these settings and seed 1 \(differs in \['seed'\]\)"
    ):
        sweep(planted_shards, BASE, [{}], seeds=(1, 2), split_seed=0, study_saes=swapped)
    other = {**BASE, "l1_coefficient": 2e-2}
    with pytest.raises(ValueError, match=r"differs in \['l1_coefficient'\]"):
        sweep(planted_shards, other, [{}], seeds=(1, 2), split_seed=0, study_saes=study_saes)


def test_a_layer_too_small_for_explained_variance_gives_an_undefined_row_not_a_crash(tmp_path):
    """12 rows hold out one: its explained variance is undefined, NaN in memory and null in the study SAE's
    metrics.json. The row reads that as undefined, not faithful (min(None, x) used to raise TypeError)."""
    directory = tmp_path / "layer2"
    rows = np.random.default_rng(0).normal(size=(12, D)).astype(np.float32)
    with ShardWriter(directory, D, dtype="float32", rows_per_group=8, metadata={"layer": 2}) as writer:
        ids = np.arange(12)
        writer.append(ids // 4, ids % 4, ids, [f"t{i}" for i in ids], rows)
    base = BASE | {"epochs": 1, "batch_size": 4}
    saes = {seed: tmp_path / f"seed{seed}" for seed in (1, 2)}
    for seed, sae_dir in saes.items():
        save_study_sae(directory, base, seed, sae_dir)
    table = sweep(directory, base, [{}, {"d_sae": 8}], seeds=(1, 2), split_seed=0, study_saes=saes)
    assert table["explained_variance"].isna().all() and not table["faithful"].any()
