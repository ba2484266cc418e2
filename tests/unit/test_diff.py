"""Feature-level model diff: matching, correlation, calibration, labels, on planted ground truth."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.analysis import chance
from layershift.analysis.diff.activations import (
    activation_correlation,
    encode_numpy,
    paired_activation_correlation,
)
from layershift.analysis.diff.labels import label_features, label_fractions, mark_stability
from layershift.analysis.diff.match import MATCH_COLUMNS, match_dictionaries
from layershift.analysis.diff.pipeline import diff_saes
from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.diff.thresholds import (
    Thresholds,
    calibrate_thresholds,
    fallback_thresholds,
    thresholds_between,
)
from layershift.analysis.diff.verdict import diff_verdict
from layershift.data import shards
from layershift.data.shards import ShardWriter
from layershift.dictionaries.decoders import decoder_cosine_matrix, decoder_rows
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.train import train_sae
from tests.support.vectors import incoherent_atoms, unit

torch.set_num_threads(1)


# --- planted ground truth: unit() and incoherent_atoms() of tests/support/vectors.py ----------------


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
    rotation=0.85,
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
        rows, cols = chance.optimal_matching(similarity)
        best = max(itertools.permutations(range(4)), key=lambda perm: similarity[range(4), perm].sum())
        assert np.array_equal(rows, np.arange(4))
        assert np.array_equal(cols, np.array(best))


def test_decoder_cosine_matrix_normalises_rows():
    a = np.array([[2.0, 0.0], [0.0, 3.0]])
    b = np.array([[1.0, 1.0], [0.0, -5.0], [4.0, 0.0]])
    expected = np.array([[1 / np.sqrt(2), 0.0, 1.0], [1 / np.sqrt(2), -1.0, 0.0]])
    np.testing.assert_allclose(decoder_cosine_matrix(a, b), expected, atol=1e-12)


def test_paired_activation_correlation_streams_like_numpy():
    rng = np.random.default_rng(0)
    sae_a = make_random_sae(d_in=8, d_sae=6, seed=1)
    sae_b = make_random_sae(d_in=8, d_sae=5, seed=2)
    x_a = rng.normal(size=(500, 8)).astype(np.float32)
    x_b = (x_a + 0.5 * rng.normal(size=x_a.shape)).astype(np.float32)
    pairs = np.array([[0, 0], [1, 3], [5, 4], [2, 2]])
    batches = [(x_a[i : i + 64], x_b[i : i + 64]) for i in range(0, 500, 64)]
    streamed = paired_activation_correlation(sae_a, sae_b, batches, pairs)
    acts_a, acts_b = encode_numpy(sae_a, x_a), encode_numpy(sae_b, x_b)
    expected = [np.corrcoef(acts_a[:, i], acts_b[:, j])[0, 1] for i, j in pairs]
    np.testing.assert_allclose(streamed, expected, atol=1e-9)
    np.testing.assert_allclose(activation_correlation(acts_a, acts_b, pairs), expected, atol=1e-9)


def make_random_sae(d_in: int, d_sae: int, seed: int):
    from layershift.dictionaries.sae.model import SAE

    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae), seed=seed)
    with torch.no_grad():
        sae.b_enc.fill_(0.3)  # most latents fire on some rows of standard-normal data
    return sae


# --- labels from the true dictionaries ----------------------------------------------------------------------
def test_true_dictionaries_recover_planted_labels():
    planted = planted_stages(seed=0)
    cfg = DiffConfig(cosine_threshold=0.95, correlation_threshold=0.9)  # rotation 0.85: changed, not kept
    match = match_dictionaries(planted.dict_a, planted.dict_b, planted.codes_a, planted.codes_b, cfg)
    chance_p99 = chance.chance_quantiles(chance.random_matching_chance(30, 30, 32))["p99"]
    assert 0.4 < chance_p99 < 0.75  # 30 random atoms in R^32 match this well by chance
    labels = label_features(match, fallback_thresholds(cfg, chance_cosine=chance_p99))
    truth = pd.Series(planted.labels_a + planted.labels_b)
    for label in ("retained", "changed", "lost", "new"):
        precision, recall = precision_recall(labels["label"], truth, label)
        assert precision >= 0.9 and recall >= 0.9, (label, precision, recall)
    assert set(labels.columns) >= set(MATCH_COLUMNS) | {"label"}


def test_label_rules_on_a_constructed_table():
    t = Thresholds(cosine=0.8, correlation=0.6, floor_cosine=0.4, floor_correlation=0.3)
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
    labels = label_features(table, t)["label"].tolist()
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
    t = calibrate_thresholds(null, quantile=0.1, chance_cosine=0.2, chance_correlation=0.1)
    assert t.cosine == pytest.approx(0.909, abs=0.002)  # the rare unstable features do not set the level
    assert t.correlation == pytest.approx(0.818, abs=0.003)
    assert t.floor_cosine == pytest.approx((0.2 + t.cosine) / 2)
    assert (t.stable_cosine, t.stable_correlation) == pytest.approx((0.6, 0.55))
    capped = calibrate_thresholds(
        null, 0.1, retained_cosine=0.7, retained_correlation=0.5, chance_cosine=0.2, chance_correlation=0.1
    )
    # the cap lowers τ, but never below the stability cut: 0.5 < 0.1 + 0.5 * 0.9
    assert (capped.cosine, capped.correlation) == pytest.approx((0.7, 0.55))
    assert capped.null_cosine == pytest.approx(t.cosine) and capped.source.endswith("capped")
    # a stable column restricts calibration to the stable features: the same level without the rare ones
    marked = null.assign(stable=null["cosine"] > 0.5, firing_rate=1.0)
    assert calibrate_thresholds(marked, 0.1).cosine == pytest.approx(0.909, abs=0.002)
    unmarked = calibrate_thresholds(null.assign(firing_rate=1.0), 0.1)  # unweighted: rare ones count
    assert unmarked.null_cosine == pytest.approx(0.1) and unmarked.cosine == unmarked.stable_cosine == 0.5
    with pytest.raises(ValueError):
        calibrate_thresholds(null, quantile=0.7)


@pytest.mark.parametrize("chance", [0.0, 0.2, 0.63, 0.95])
def test_every_threshold_lies_above_chance(chance):
    for cos, corr in ((0.0, 0.0), (0.3, 0.3), (0.99, 0.99)):
        t = thresholds_between(cos, corr, chance, chance / 2, "test")
        for level, c in (("cosine", chance), ("correlation", chance / 2)):
            tau, floor, stable = (
                getattr(t, level),
                getattr(t, f"floor_{level}"),
                getattr(t, f"stable_{level}"),
            )
            assert c < floor <= tau and c < stable <= tau and stable >= floor, (level, t)


def test_unstable_features_are_labelled_and_left_out_of_fractions():
    t = thresholds_between(0.9, 0.8, 0.2, 0.1, "test")
    table = pd.DataFrame(
        {
            "side": ["pretrained"] * 4 + ["finetuned"] * 2,
            "feature": [0, 1, 2, 3, 0, 1],
            "live": [True, True, True, False, True, True],
            "firing_rate": [0.1, 0.1, 0.1, 0.0, 0.1, 0.1],
            "match": [0, 1, -1, -1, 0, 1],
            "cosine": [0.95, 0.95, np.nan, np.nan, 0.95, 0.95],
            "activation_correlation": [0.9, 0.9, np.nan, np.nan, 0.9, 0.9],
        }
    )
    null_a = table.assign(cosine=[0.95, 0.3, 0.9, np.nan, 0.95, 0.3], activation_correlation=0.9)
    null_b = table.assign(side=["finetuned"] * 4 + ["pretrained"] * 2, cosine=[0.9] * 4 + [0.2, 0.99])
    null_b["activation_correlation"] = 0.9
    marked = mark_stability(table, t, null_a, null_b)
    labels = label_features(marked, t)["label"].tolist()
    # A1 reproduces at 0.3 < stable cut 0.6: unstable, although its cross-stage match is perfect; A2 lost
    assert labels == ["retained", "unstable", "lost", "dead", "unstable", "retained"]
    fractions = label_fractions(label_features(marked, t))
    assert fractions["n_stable_pretrained"] == 2 and fractions[
        "unstable_fraction_pretrained"
    ] == pytest.approx(1 / 3)
    assert fractions["retained_fraction"] == 0.5 and fractions["lost_fraction"] == 0.5  # over stable only
    assert fractions["new_fraction"] == 0.0 and fractions["stable_fraction_finetuned"] == 0.5
    labelled = label_features(marked, t)
    # 2 of 3 and 1 of 2 live features stable: on the bar, and a handful of features cannot settle it
    verdict = diff_verdict(labelled, DiffConfig(min_stable_features=1, min_stable_share=0.5))
    assert verdict.outcome == "borderline" and 0.05 < verdict.conclusive_share < 0.95
    verdict = diff_verdict(labelled, DiffConfig(min_stable_features=3))
    assert verdict.outcome == "inconclusive" and "2 stable pretrained features (< 3)" in verdict.reason
    assessed = {"pretrained": True, "finetuned": False}
    verdict = diff_verdict(labelled, DiffConfig(min_stable_features=1), assessed)
    assert verdict.outcome == "inconclusive" and verdict.conclusive_share is None
    assert verdict.reason == "no seed null for the finetuned stage: its features' stability is unknown"


# --- trained SAEs -----------------------------------------------------------------------------------------
def train_topk_sae(x: np.ndarray, seed: int):
    cfg = SAEConfig(d_in=x.shape[1], d_sae=48, architecture="topk", k=4)
    train = SAETrainConfig(
        lr=3e-3, epochs=20, batch_size=128, seed=seed, holdout_fraction=0.0, init_rows=1000
    )

    def batches(epoch: int):
        order = np.random.default_rng(1000 * seed + epoch).permutation(len(x))
        return (x[order[i : i + 128]] for i in range(0, len(x), 128))

    return train_sae(batches, cfg, train, progress=False)[0]


@pytest.fixture(scope="module")
def trained():
    """The study's seed pairing: pretrained SAE s0, its null s1; fine-tuned SAE s1, its null s0."""
    planted = planted_stages(seed=0)
    return {
        "planted": planted,
        "a": train_topk_sae(planted.x_a, seed=0),
        "a_null": train_topk_sae(planted.x_a, seed=1),
        "b": train_topk_sae(planted.x_b, seed=1),
        "b_null": train_topk_sae(planted.x_b, seed=0),
        "b_same": train_topk_sae(planted.x_same, seed=1),
        "b_same_null": train_topk_sae(planted.x_same, seed=0),
    }


CLEARED_BAR = DiffConfig(
    min_stable_features=10, min_stable_share=0.4
)  # what ~30 of ~45 stable features clear


def paired(x_a: np.ndarray, x_b: np.ndarray, batch: int = 1000):
    return lambda: ((x_a[i : i + batch], x_b[i : i + batch]) for i in range(0, len(x_a), batch))


def atom_truth(sae, dictionary: np.ndarray, labels: list[str], x: np.ndarray) -> list[str | None]:
    """The planted label of the atom each SAE feature recovered (cosine ≥ 0.9; the most active such feature
    per atom, so rare duplicates do not count), else None."""
    cosine = decoder_cosine_matrix(decoder_rows(sae), dictionary)
    firing = (encode_numpy(sae, x) > 0).mean(axis=0)
    best = cosine.argmax(axis=1)
    truth: list[str | None] = [None] * len(best)
    for atom in range(len(dictionary)):
        candidates = np.flatnonzero((best == atom) & (cosine[:, atom] >= 0.9))
        if len(candidates):
            truth[candidates[firing[candidates].argmax()]] = labels[atom]
    return truth


def test_calibrated_sae_diff_recovers_planted_labels(trained):
    planted = trained["planted"]
    labels, summary = diff_saes(
        trained["a"],
        trained["b"],
        paired(planted.x_a, planted.x_b),
        DiffConfig(),
        pretrained_seed_null=trained["a_null"],
        finetuned_seed_null=trained["b_null"],
    )
    truth = pd.Series(
        atom_truth(trained["a"], planted.dict_a, planted.labels_a, planted.x_a)
        + atom_truth(trained["b"], planted.dict_b, planted.labels_b, planted.x_b)
    )
    recovered = truth.notna()
    assert recovered[labels["side"] == "pretrained"].sum() >= 0.9 * len(planted.labels_a)
    # the features that recovered a planted atom are the stable ones; the SAE's spare features are not
    stable = labels["label"].isin(["retained", "changed", "lost", "new"])
    assert (stable == recovered).mean() >= 0.95
    for label in ("retained", "changed", "lost", "new"):  # the 10 removed atoms: lost; the 10 added: new
        precision, recall = precision_recall(labels["label"][recovered], truth[recovered], label)
        assert precision >= 0.9 and recall >= 0.9, (label, precision, recall)
    # ~30 stable of ~45 live features per stage sit within sampling noise of the study's bar (25 features,
    # 50 %): not inconclusive, and conclusive against a bar they clear by several standard errors
    assert summary["verdict"] != "inconclusive" and summary["conclusive_share"] > 0.5, summary[
        "verdict_reason"
    ]
    assert diff_verdict(labels, CLEARED_BAR).outcome == "conclusive"
    assert summary["threshold_source"].startswith("seed-null") and summary["headline"] == "uncapped"
    for level in ("cosine", "floor_cosine", "stable_cosine"):
        assert summary[f"threshold_{level}"] > summary["chance_cosine_p99"]
    for level in ("correlation", "floor_correlation", "stable_correlation"):
        assert summary[f"threshold_{level}"] > summary["chance_correlation_p99"]
    assert summary["lost_fraction"] == pytest.approx(10 / 30, abs=0.07)  # over stable features
    # reproducibility as the SAE acceptance bar reads it: 30 planted atoms of ~45 live features reproduced
    assert summary["null_median_cosine_pretrained"] > 0.9
    assert 0.55 <= summary["null_share_above_chance_pretrained"] <= 0.85
    assert summary["lost_activity_fraction"] > summary["baseline_lost_activity_fraction"] + 0.1
    assert summary["baseline_unstable_fraction_pretrained"] is not None
    json.dumps(summary, allow_nan=False)  # standard JSON, no NaN


def test_no_change_control_is_retained(trained):
    planted = trained["planted"]
    labels, summary = diff_saes(
        trained["a"],
        trained["b_same"],
        paired(planted.x_a, planted.x_same),
        DiffConfig(),
        pretrained_seed_null=trained["a_null"],
        finetuned_seed_null=trained["b_same_null"],
    )
    assert summary["verdict"] != "inconclusive" and summary["conclusive_share"] > 0.5, summary[
        "verdict_reason"
    ]
    assert diff_verdict(labels, CLEARED_BAR).outcome == "conclusive"
    assert summary["retained_fraction"] >= 0.9 and summary["retained_finetuned_fraction"] >= 0.9
    assert summary["lost_fraction"] <= 0.05 and summary["new_fraction"] <= 0.05
    assert summary["retained_activity_fraction"] >= 0.95
    # dead and unstable features are reported as shares, never as change
    assert set(labels["label"]) <= {"retained", "changed", "unstable", "dead"}


def test_untrained_saes_are_inconclusive_and_lose_nothing():
    planted = planted_stages(seed=0)
    sae_a, sae_b, null_a, null_b = (make_random_sae(32, 48, seed) for seed in range(4))
    labels, summary = diff_saes(
        sae_a,
        sae_b,
        paired(planted.x_a, planted.x_b),
        DiffConfig(),
        pretrained_seed_null=null_a,
        finetuned_seed_null=null_b,
    )
    assert summary["verdict"] == "inconclusive" and "stable pretrained features" in summary["verdict_reason"]
    assert not labels["label"].isin(["lost", "new", "retained", "changed"]).any()
    assert summary["lost_fraction"] is None and summary["unstable_fraction_pretrained"] == 1.0
    # the chance model sees what matching random dictionaries gives: their own matches sit at that level
    live = labels[(labels["side"] == "pretrained") & labels["live"]]
    assert live["cosine"].median() < summary["chance_cosine_p99"]


def test_tiny_data_is_inconclusive_rather_than_a_confident_label():
    tiny = planted_stages(seed=1, n_tokens=40)
    a, a_null = train_topk_sae(tiny.x_a, seed=0), train_topk_sae(tiny.x_a, seed=1)
    b, b_null = train_topk_sae(tiny.x_b, seed=1), train_topk_sae(tiny.x_b, seed=0)
    labels, summary = diff_saes(
        a,
        b,
        paired(tiny.x_a, tiny.x_b),
        DiffConfig(),
        pretrained_seed_null=a_null,
        finetuned_seed_null=b_null,
    )
    assert summary["verdict"] == "inconclusive"
    assert (labels["label"] == "lost").sum() <= 2


def test_without_a_finetuned_null_the_diff_is_inconclusive(trained):
    planted = trained["planted"]
    labels, summary = diff_saes(
        trained["a"], trained["b"], paired(planted.x_a, planted.x_b), DiffConfig(), trained["a_null"]
    )
    assert summary["verdict"] == "inconclusive"
    assert (
        summary["verdict_reason"]
        == "no seed null for the finetuned stage: its features' stability is unknown"
    )
    assert summary["threshold_source"].startswith("seed-null")  # still calibrated on the pretrained null
    assert summary["stability_assessed_pretrained"] and not summary["stability_assessed_finetuned"]
    _, none = diff_saes(trained["a"], trained["b"], paired(planted.x_a, planted.x_b), DiffConfig())
    assert none["threshold_source"] == "fallback" and none["verdict"] == "inconclusive"
    assert none["threshold_cosine"] > none["chance_cosine_p99"]


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


def test_rows_kept_in_memory_give_the_same_diff_and_are_decoded_once(trained, tmp_path, monkeypatch):
    """The diff streams a layer seven times; with the rows kept each stage's row groups are decoded on the
    first pass only, and every label and summary value is the streamed diff's."""
    planted = trained["planted"]
    positions = np.arange(len(planted.x_a), dtype=np.int32)
    write_layer(tmp_path / "a", planted.x_a.astype(np.float32), positions)
    write_layer(tmp_path / "b", planted.x_b.astype(np.float32), positions)
    decoded = []
    original = shards.ShardReader.read_group

    def counting_read(self, index, columns=None):
        if columns is None or "activation" in columns:
            decoded.append(index)
        return original(self, index, columns)

    n_groups = len(shards.ShardReader(tmp_path / "a").groups)
    monkeypatch.setattr(shards.ShardReader, "read_group", counting_read)
    results, passes = {}, {}
    for budget in (0.0, 1024.0):
        decoded.clear()
        pairs = shards.paired_batches(tmp_path / "a", tmp_path / "b", 64, memory_cache_mb=budget)
        results[budget] = diff_saes(
            trained["a"], trained["b"], pairs, DiffConfig(), trained["a_null"], trained["b_null"]
        )
        passes[budget] = len(decoded) / (2 * n_groups)  # both stages' groups per pass
    assert passes[1024.0] == 1 and passes[0.0] >= 6, passes
    (streamed, s_summary), (kept, k_summary) = results[0.0], results[1024.0]
    pd.testing.assert_frame_equal(streamed, kept)
    assert json.dumps(s_summary, sort_keys=True) == json.dumps(k_summary, sort_keys=True)
