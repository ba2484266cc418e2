"""Feature-level model diff: matching, correlation, calibration, labels, on planted ground truth."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from layershift import diff, shards
from layershift.sae import SAEConfig, TrainConfig, train_sae
from layershift.shards import ShardWriter
from tests.helpers import incoherent_atoms, unit

torch.set_num_threads(1)


# --- planted ground truth: unit() and incoherent_atoms() from tests/helpers.py -------------------------


@dataclass
class Planted:
    dict_a: np.ndarray  # [atoms_a, d] pretrained dictionary
    dict_b: np.ndarray  # [atoms_b, d] fine-tuned dictionary
    codes_a: np.ndarray  # [tokens, atoms_a]
    codes_b: np.ndarray  # [tokens, atoms_b]
    x_a: np.ndarray  # [tokens, d] pretrained activations
    x_b: np.ndarray  # [tokens, d] fine-tuned activations (same tokens)
    x_same: np.ndarray  # [tokens, d] no-change control: A's dictionary and codes, independent noise
    labels_a: list[str]  # planted label per A atom
    labels_b: list[str]  # planted label per B atom


def planted_stages(
    seed=0,
    d=32,
    n_tokens=4000,
    n_retained=16,
    n_changed=4,
    n_lost=10,
    n_new=10,
    p=0.08,
    noise=0.02,
    rotation=0.6,
) -> Planted:
    """Two stages sharing retained atoms, rotating ``changed`` ones (cosine ``rotation``), dropping ``lost``
    ones and adding ``new`` ones; a token's code over the shared atoms is the same in both stages."""
    rng = np.random.default_rng(seed)
    n_shared = n_retained + n_changed
    atoms = incoherent_atoms(rng, n_shared + n_lost + n_new, d)
    before = atoms[n_retained:n_shared]
    perp = unit(rng.normal(size=before.shape))
    perp = unit(perp - (perp * before).sum(1, keepdims=True) * before)
    after = unit(rotation * before + np.sqrt(1 - rotation**2) * perp)
    dict_a = atoms[: n_shared + n_lost]
    dict_b = np.concatenate([atoms[:n_retained], after, atoms[n_shared + n_lost :]])

    def codes(n: int) -> np.ndarray:
        return (rng.random((n_tokens, n)) < p) * rng.uniform(0.5, 1.5, (n_tokens, n))

    shared = codes(n_shared)
    codes_a = np.concatenate([shared, codes(n_lost)], axis=1)
    codes_b = np.concatenate([shared, codes(n_new)], axis=1)

    def noisy(x: np.ndarray) -> np.ndarray:
        return (x + noise * rng.normal(size=x.shape)).astype(np.float32)

    return Planted(
        dict_a,
        dict_b,
        codes_a,
        codes_b,
        noisy(codes_a @ dict_a),
        noisy(codes_b @ dict_b),
        noisy(codes_a @ dict_a),
        ["retained"] * n_retained + ["changed"] * n_changed + ["lost"] * n_lost,
        ["retained"] * n_retained + ["changed"] * n_changed + ["new"] * n_new,
    )


def precision_recall(predicted: pd.Series, truth: pd.Series, label: str) -> tuple[float, float]:
    hit = ((predicted == label) & (truth == label)).sum()
    return hit / max((predicted == label).sum(), 1), hit / max((truth == label).sum(), 1)


# --- matching primitives ----------------------------------------------------------------------------------
def test_optimal_matching_equals_brute_force_on_4x4():
    rng = np.random.default_rng(3)
    for _ in range(20):
        similarity = rng.uniform(-1, 1, (4, 4))
        rows, cols = diff.optimal_matching(similarity)
        best = max(itertools.permutations(range(4)), key=lambda perm: similarity[range(4), perm].sum())
        assert np.array_equal(rows, np.arange(4))
        assert np.array_equal(cols, np.array(best))


def test_decoder_cosine_matrix_normalises_rows():
    a = np.array([[2.0, 0.0], [0.0, 3.0]])
    b = np.array([[1.0, 1.0], [0.0, -5.0], [4.0, 0.0]])
    expected = np.array([[1 / np.sqrt(2), 0.0, 1.0], [1 / np.sqrt(2), -1.0, 0.0]])
    np.testing.assert_allclose(diff.decoder_cosine_matrix(a, b), expected, atol=1e-12)


def test_paired_activation_correlation_streams_like_numpy():
    rng = np.random.default_rng(0)
    sae_a = make_random_sae(d_in=8, d_sae=6, seed=1)
    sae_b = make_random_sae(d_in=8, d_sae=5, seed=2)
    x_a = rng.normal(size=(500, 8)).astype(np.float32)
    x_b = (x_a + 0.5 * rng.normal(size=x_a.shape)).astype(np.float32)
    pairs = np.array([[0, 0], [1, 3], [5, 4], [2, 2]])
    batches = [(x_a[i : i + 64], x_b[i : i + 64]) for i in range(0, 500, 64)]
    streamed = diff.paired_activation_correlation(sae_a, sae_b, batches, pairs)
    acts_a, acts_b = diff.encode_numpy(sae_a, x_a), diff.encode_numpy(sae_b, x_b)
    expected = [np.corrcoef(acts_a[:, i], acts_b[:, j])[0, 1] for i, j in pairs]
    np.testing.assert_allclose(streamed, expected, atol=1e-9)
    np.testing.assert_allclose(diff.activation_correlation(acts_a, acts_b, pairs), expected, atol=1e-9)


def make_random_sae(d_in: int, d_sae: int, seed: int):
    from layershift.sae import SAE

    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae), seed=seed)
    with torch.no_grad():
        sae.b_enc.fill_(0.3)  # most latents fire on some rows of standard-normal data
    return sae


# --- labels from the true dictionaries ----------------------------------------------------------------------
def test_true_dictionaries_recover_planted_labels():
    planted = planted_stages(seed=0)
    cfg = diff.DiffConfig()
    match = diff.match_dictionaries(planted.dict_a, planted.dict_b, planted.codes_a, planted.codes_b, cfg)
    labels = diff.label_features(match, diff.fallback_thresholds(cfg))
    truth = pd.Series(planted.labels_a + planted.labels_b)
    for label in ("retained", "changed", "lost", "new"):
        precision, recall = precision_recall(labels["label"], truth, label)
        assert precision >= 0.9 and recall >= 0.9, (label, precision, recall)
    assert set(labels.columns) >= set(diff.MATCH_COLUMNS) | {"label"}


def test_label_rules_on_a_constructed_table():
    t = diff.Thresholds(cosine=0.8, correlation=0.6, floor_cosine=0.4, floor_correlation=0.3)
    table = pd.DataFrame(
        {
            "side": ["pretrained"] * 5 + ["finetuned"] * 2,
            "feature": [0, 1, 2, 3, 4, 0, 1],
            "live": [True, True, True, True, False, True, True],
            "firing_rate": [0.1, 0.1, 0.1, 0.1, 0.0, 0.1, 0.1],
            "match": [0, 1, 2, -1, -1, 0, 1],
            "cosine": [0.9, 0.5, 0.9, np.nan, np.nan, 0.9, 0.5],
            "activation_correlation": [0.7, 0.9, 0.1, np.nan, np.nan, 0.7, 0.2],
        }
    )
    labels = diff.label_features(table, t)["label"].tolist()
    assert labels == ["retained", "changed", "lost", "lost", "dead", "retained", "new"]


def test_calibration_uses_activity_weighted_null_quantiles():
    n = 100
    rng = np.random.default_rng(0)
    null = pd.DataFrame(
        {
            "side": "pretrained",
            "feature": np.arange(n + 20),
            "live": True,
            # 100 frequent, well reproduced features and 20 rare, seed-unstable ones (cosine 0.1)
            "firing_rate": np.r_[np.full(n, 0.1), np.full(20, 1e-4)],
            "match": np.arange(n + 20),
            "cosine": np.r_[np.linspace(0.9, 1.0, n), np.full(20, 0.1)],
            "activation_correlation": np.r_[np.linspace(0.8, 1.0, n), np.full(20, 0.0)],
            "decoy_cosine": rng.normal(0.0, 0.05, n + 20),
            "decoy_correlation": rng.normal(0.02, 0.01, n + 20),
        }
    )
    t = diff.calibrate_thresholds(null, quantile=0.1, retained_cosine=None, retained_correlation=None)
    assert t.cosine == pytest.approx(0.909, abs=0.002)  # the rare unstable features do not set the level
    assert t.correlation == pytest.approx(0.818, abs=0.003)
    assert t.floor_cosine == pytest.approx((t.chance_cosine + t.cosine) / 2)
    assert abs(t.chance_correlation - 0.02) < 0.01
    capped = diff.calibrate_thresholds(null, quantile=0.1, retained_cosine=0.7, retained_correlation=0.5)
    assert (capped.cosine, capped.correlation) == (0.7, 0.5)
    assert capped.null_cosine == pytest.approx(t.cosine)
    with pytest.raises(ValueError):
        diff.calibrate_thresholds(null, quantile=0.7)


# --- trained SAEs -----------------------------------------------------------------------------------------
def train_topk_sae(x: np.ndarray, seed: int):
    cfg = SAEConfig(d_in=x.shape[1], d_sae=48, architecture="topk", k=4)
    train = TrainConfig(lr=3e-3, epochs=20, batch_size=128, seed=seed, holdout_fraction=0.0, init_rows=1000)

    def batches(epoch: int):
        order = np.random.default_rng(1000 * seed + epoch).permutation(len(x))
        return (x[order[i : i + 128]] for i in range(0, len(x), 128))

    return train_sae(batches, cfg, train, progress=False)[0]


@pytest.fixture(scope="module")
def trained():
    planted = planted_stages(seed=0)
    return {
        "planted": planted,
        "a": train_topk_sae(planted.x_a, seed=0),
        "a_null": train_topk_sae(planted.x_a, seed=1),
        "b": train_topk_sae(planted.x_b, seed=2),
        "b_same": train_topk_sae(planted.x_same, seed=2),
    }


def paired(x_a: np.ndarray, x_b: np.ndarray, batch: int = 1000):
    return lambda: ((x_a[i : i + batch], x_b[i : i + batch]) for i in range(0, len(x_a), batch))


def atom_truth(sae, dictionary: np.ndarray, labels: list[str], x: np.ndarray) -> list[str | None]:
    """The planted label of the atom each SAE feature recovered (cosine ≥ 0.9; the most active such feature
    per atom, so rare duplicates do not count), else None."""
    cosine = diff.decoder_cosine_matrix(diff.decoder_rows(sae), dictionary)
    firing = (diff.encode_numpy(sae, x) > 0).mean(axis=0)
    best = cosine.argmax(axis=1)
    truth: list[str | None] = [None] * len(best)
    for atom in range(len(dictionary)):
        candidates = np.flatnonzero((best == atom) & (cosine[:, atom] >= 0.9))
        if len(candidates):
            truth[candidates[firing[candidates].argmax()]] = labels[atom]
    return truth


def test_calibrated_sae_diff_recovers_planted_labels(trained):
    planted = trained["planted"]
    labels, summary = diff.diff_saes(
        trained["a"],
        trained["b"],
        paired(planted.x_a, planted.x_b),
        diff.DiffConfig(),
        null_sae=trained["a_null"],
    )
    truth = pd.Series(
        atom_truth(trained["a"], planted.dict_a, planted.labels_a, planted.x_a)
        + atom_truth(trained["b"], planted.dict_b, planted.labels_b, planted.x_b)
    )
    recovered = truth.notna()
    assert recovered[labels["side"] == "pretrained"].sum() >= 0.9 * len(planted.labels_a)
    for label in ("retained", "lost", "new"):
        precision, recall = precision_recall(labels["label"][recovered], truth[recovered], label)
        assert precision >= 0.9 and recall >= 0.9, (label, precision, recall)
    changed = precision_recall(labels["label"][recovered], truth[recovered], "changed")
    assert min(changed) >= 0.75, changed
    assert summary["threshold_source"].startswith("seed-null")
    assert summary["lost_activity_fraction"] > summary["baseline_lost_activity_fraction"] + 0.1
    assert summary["new_activity_fraction"] > summary["baseline_new_activity_fraction"] + 0.1


def test_no_change_control_stays_at_seed_baseline(trained):
    planted = trained["planted"]
    labels, summary = diff.diff_saes(
        trained["a"],
        trained["b_same"],
        paired(planted.x_a, planted.x_same),
        diff.DiffConfig(),
        null_sae=trained["a_null"],
    )
    for key in ("lost", "new"):
        assert summary[f"{key}_fraction"] <= summary[f"baseline_{key}_fraction"] + 0.05, summary
        assert summary[f"{key}_activity_fraction"] <= summary[f"baseline_{key}_activity_fraction"] + 0.02
    assert summary["changed_activity_fraction"] <= 0.05
    assert summary["retained_activity_fraction"] >= 0.95
    assert not (labels["label"] == "dead").all()


# --- paired shards ----------------------------------------------------------------------------------------
def write_layer(directory, acts: np.ndarray, positions: np.ndarray) -> None:
    with ShardWriter(directory, d_model=acts.shape[1], dtype="float32", rows_per_group=16) as writer:
        n = len(acts)
        writer.append(np.zeros(n, np.int32), positions, np.zeros(n, np.int32), ["t"] * n, acts)


def test_paired_shard_batches_keep_rows_paired(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    positions = np.arange(50, dtype=np.int32)
    write_layer(tmp_path / "a", x, positions)
    write_layer(tmp_path / "b", 2 * x, positions)
    reader_a, reader_b = shards.open_paired(tmp_path / "a", tmp_path / "b")
    for x_a, x_b in shards.zip_paired(reader_a, reader_b, batch_size=8, shuffle=True, seed=5):
        np.testing.assert_array_equal(2 * x_a, x_b)
    assert sum(len(a) for a, _ in shards.paired_batches(tmp_path / "a", tmp_path / "b", 8)()) == 50
    write_layer(tmp_path / "c", x, positions[::-1].copy())
    with pytest.raises(ValueError, match="different tokens"):
        shards.open_paired(tmp_path / "a", tmp_path / "c")
