"""One run's SAEs judged by its classifier, with the controls in the same table: on a saved tiny classifier and
its encoder's linear probe, an SAE that reconstructs exactly recovers the whole loss while the untrained control
of the same shape does not, and every live feature gets an effect, the random control features included, and a
profile; every layer gets its dense and sparse probes."""

from __future__ import annotations

import numpy as np
import pytest

from layershift.analysis.faithfulness import FaithfulnessSettings, run_faithfulness
from layershift.dictionaries.sae.files import save_sae
from tests.unit.test_fidelity import (
    HIDDEN,
    exact_sae,
    labelled_split,
    orthonormal_basis,
    save_tiny_classifier,
)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A tiny encoder, a classifier made from it, an exact SAE of each of its two layers, train and test splits."""
    root = save_tiny_classifier(tmp_path_factory.mktemp("faithfulness"))
    for layer in (1, 2):
        save_sae(exact_sae(orthonormal_basis(HIDDEN, seed=layer)), root / f"sae{layer}")
    split = labelled_split(48)
    return root, split.iloc[:32], split.iloc[32:]


@pytest.mark.parametrize("stage", ["pretrained", "finetuned"])
def test_a_runs_saes_are_judged_beside_their_controls(saved_run, stage):
    root, train, test = saved_run
    model_dir = root / ("encoder" if stage == "pretrained" else "classifier")
    settings = FaithfulnessSettings(
        max_length=16, batch_size=8, top_k=3, random_features=2, sparse_k=(1, 3), contexts=2, seed=0
    )
    sae_dirs = [(1, root / "sae1"), (2, root / "sae2")]
    fidelity, effects, profiles, probing = run_faithfulness(
        stage, model_dir, train, test, 2, sae_dirs, settings
    )

    assert sorted(zip(fidelity["layer"], fidelity["sae"], strict=True)) == [
        (1, "trained"),
        (1, "untrained"),
        (2, "trained"),
        (2, "untrained"),
    ]
    trained = fidelity[fidelity["sae"] == "trained"]
    assert np.allclose(trained["loss_recovered_mean"], 1.0, atol=1e-3)
    assert (trained["max_logit_diff_error_term"] < 1e-4).all()
    untrained = fidelity[fidelity["sae"] == "untrained"]
    assert (trained["kl_clean_spliced"].abs() < 1e-12).all()  # exact: the clean label distributions
    assert (untrained["kl_clean_spliced"] > 1e-9).all()  # the control moves them (a random head: slightly)
    for layer in (1, 2):
        rows = effects[effects["layer"] == layer]
        assert rows["random_control"].sum() == 2 and (rows.loc[rows["random_control"], "ablated"]).all()
        assert rows.loc[rows["ablated"], "ablation_loss_delta"].notna().all()
        assert (rows["ablated"] & ~rows["random_control"]).sum() == 3
    assert_profiles_and_probes(effects, profiles, probing, n_train=len(train), n_test=len(test))


def assert_profiles_and_probes(effects, profiles, probing, n_train: int, n_test: int):
    """Every live feature of the effects table has a profile with its top test sentences; each layer has a
    dense probe and one sparse probe per k, on that many latents."""
    live = effects[["layer", "feature"]].sort_values(["layer", "feature"]).to_numpy()
    assert np.array_equal(profiles[["layer", "feature"]].sort_values(["layer", "feature"]).to_numpy(), live)
    assert np.allclose(
        profiles.sort_values(["layer", "feature"])["firing_rate"],
        effects.sort_values(["layer", "feature"])["firing_rate"],
    )
    assert profiles["contexts"].map(len).between(1, 2).all()
    assert {"mean_activation_class_0", "mean_activation_class_1"} <= set(profiles.columns)
    for layer in (1, 2):
        rows = probing[probing["layer"] == layer]
        assert rows["probe"].tolist() == ["dense", "sparse", "sparse"]
        assert rows["latents"].map(len).tolist() == [0, 1, 3]
        assert rows["accuracy"].between(0, 1).all() and rows["macro_f1"].between(0, 1).all()
    assert (probing["n_train"] == n_train).all() and (probing["n_test"] == n_test).all()
