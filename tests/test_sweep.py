"""SAE settings sweep: a setting that recovers a planted dictionary is reproducible across seeds, an
under-trained one (decoders still at their random initialisation) is not, and both are scored on one table."""

import numpy as np
import pytest
import torch

from layershift.shards import ShardWriter
from layershift.sweep import setting_label, sweep
from tests.helpers import incoherent_atoms

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
