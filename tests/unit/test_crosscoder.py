"""Crosscoders for model diffing: planted new/lost atoms, latent scaling flags, files, checkpoints."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from layershift.analysis.crosscoder_latents import LatentTableConfig, crosscoder_sae_agreement, latent_table
from layershift.analysis.diff.match import match_dictionaries
from layershift.analysis.diff.settings import DiffConfig
from layershift.dictionaries.crosscoder.config import CrosscoderConfig, CrosscoderTrainConfig
from layershift.dictionaries.crosscoder.evaluate import evaluate_crosscoder
from layershift.dictionaries.crosscoder.files import load_crosscoder, save_crosscoder
from layershift.dictionaries.crosscoder.model import Crosscoder
from layershift.dictionaries.crosscoder.train import train_crosscoder, train_crosscoder_on_shards
from layershift.dictionaries.decoders import decoder_cosine_matrix
from layershift.dictionaries.weights import WEIGHT_NAMES
from tests.support.vectors import incoherent_atoms, unit

torch.set_num_threads(1)


# --- planted ground truth: unit() and incoherent_atoms() of tests/support/vectors.py ----------------


def planted_stages(seed=0, d=32, n_tokens=4000, n_retained=16, n_changed=4, n_lost=10, n_new=10, p=0.08):
    """Dictionaries A (retained + changed + lost atoms) and B (retained + rotated changed + new atoms) with
    the same code over the shared atoms per token; returns (dict_a, dict_b, x_a, x_b, labels_a, labels_b)."""
    rng = np.random.default_rng(seed)
    n_shared = n_retained + n_changed
    atoms = incoherent_atoms(rng, n_shared + n_lost + n_new, d)
    before = atoms[n_retained:n_shared]
    perp = unit(rng.normal(size=before.shape))
    after = unit(0.6 * before + 0.8 * unit(perp - (perp * before).sum(1, keepdims=True) * before))
    dict_a = atoms[: n_shared + n_lost]
    dict_b = np.concatenate([atoms[:n_retained], after, atoms[n_shared + n_lost :]])

    def codes(n: int) -> np.ndarray:
        return (rng.random((n_tokens, n)) < p) * rng.uniform(0.5, 1.5, (n_tokens, n))

    shared = codes(n_shared)
    x_a = np.concatenate([shared, codes(n_lost)], axis=1) @ dict_a
    x_b = np.concatenate([shared, codes(n_new)], axis=1) @ dict_b
    x_a, x_b = (x + 0.02 * rng.normal(size=x.shape) for x in (x_a, x_b))
    labels_a = ["retained"] * n_retained + ["changed"] * n_changed + ["lost"] * n_lost
    labels_b = ["retained"] * n_retained + ["changed"] * n_changed + ["new"] * n_new
    return dict_a, dict_b, x_a.astype(np.float32), x_b.astype(np.float32), labels_a, labels_b


def shuffled_pairs(x_a: np.ndarray, x_b: np.ndarray, batch: int):
    def batches(epoch: int):
        order = np.random.default_rng(epoch).permutation(len(x_a))
        return ((x_a[order[i : i + batch]], x_b[order[i : i + batch]]) for i in range(0, len(x_a), batch))

    return batches


def in_order(x_a: np.ndarray, x_b: np.ndarray, batch: int = 1000):
    return [(x_a[i : i + batch], x_b[i : i + batch]) for i in range(0, len(x_a), batch)]


@pytest.fixture(scope="module")
def batchtopk():
    dict_a, dict_b, x_a, x_b, labels_a, labels_b = planted_stages(seed=0)
    cfg = CrosscoderConfig(d_in=32, d_latent=64, architecture="batchtopk", k=4, n_shared=0)
    train = CrosscoderTrainConfig(lr=5e-3, epochs=20, seed=0, dead_after_tokens=2000, init_rows=1000)
    crosscoder, metrics = train_crosscoder(shuffled_pairs(x_a, x_b, 64), cfg, train, progress=False)
    table = latent_table(crosscoder, in_order(x_a, x_b))
    return {
        "crosscoder": crosscoder, "metrics": metrics, "table": table, "dict_a": dict_a, "dict_b": dict_b,
        "x_a": x_a, "x_b": x_b, "labels_a": labels_a, "labels_b": labels_b,
    }  # fmt: skip


def exclusive_precision_recall(table, W_dec, model, dictionary, atoms, cls, min_cos=0.9):
    """Recall: planted atoms with an unflagged ``cls`` latent (decoder cosine ≥ ``min_cos``); precision: such
    latents that are one of the planted atoms."""
    live = table[table["class"] != "dead"]
    chosen = live[(live["class"] == cls) & ~live["flagged"]]["latent"].to_numpy()
    cosine = decoder_cosine_matrix(W_dec[chosen, model], dictionary[atoms])  # [latents, atoms]
    recall = (cosine >= min_cos).any(axis=0).mean() if len(chosen) else 0.0
    precision = (cosine >= min_cos).any(axis=1).mean() if len(chosen) else 0.0
    return precision, recall


# --- BatchTopK on planted atoms ---------------------------------------------------------------------------
def test_batchtopk_crosscoder_finds_planted_new_and_lost_atoms(batchtopk):
    t = batchtopk
    W_dec = t["crosscoder"].W_dec.detach().double().numpy()
    new = [i for i, label in enumerate(t["labels_b"]) if label == "new"]
    lost = [i for i, label in enumerate(t["labels_a"]) if label == "lost"]
    for model, dictionary, atoms, cls in (
        (1, t["dict_b"], new, "finetuned-only"),
        (0, t["dict_a"], lost, "pretrained-only"),
    ):
        precision, recall = exclusive_precision_recall(t["table"], W_dec, model, dictionary, atoms, cls)
        assert precision >= 0.9 and recall >= 0.9, (cls, precision, recall)
    # retained atoms sit on shared latents (relative norm between the cut-offs)
    retained = [i for i, label in enumerate(t["labels_a"]) if label == "retained"]
    live = t["table"][t["table"]["class"] != "dead"]
    cosine = decoder_cosine_matrix(W_dec[live["latent"].to_numpy(), 0], t["dict_a"][retained])
    best = live["class"].to_numpy()[cosine.argmax(axis=0)]
    assert (best == "shared").mean() >= 0.9
    # exclusive latents that survive latent scaling show no presence in the other model
    kept = live[live["class"].isin(["finetuned-only", "pretrained-only"]) & ~live["flagged"]]
    assert (kept["nu_error"].abs() < 0.1).all()


def test_batchtopk_metrics_and_inference_threshold(batchtopk):
    metrics = batchtopk["metrics"]
    assert metrics["explained_variance_a"] > 0.95 and metrics["explained_variance_b"] > 0.95
    assert metrics["threshold"] is not None and metrics["threshold"] > 0
    assert 0.7 * 4 <= metrics["l0"] <= 1.3 * 4  # the threshold reproduces the batch-level sparsity
    curve = metrics["loss_curve"]["epoch_loss"]
    assert len(curve) == 20 and curve[-1] < 0.1 * curve[0]
    assert metrics["evaluation_split"] == "train"


def test_crosscoder_agrees_with_the_sae_diff_on_true_dictionaries(batchtopk):
    t = batchtopk
    dict_a, dict_b = t["dict_a"], t["dict_b"]
    rng = np.random.default_rng(1)
    acts_a = rng.random((500, len(dict_a)))  # only live/dead status matters for the agreement
    acts_b = rng.random((500, len(dict_b)))
    match = match_dictionaries(dict_a, dict_b, acts_a, acts_b, DiffConfig())
    labels = match.assign(label=t["labels_a"] + t["labels_b"])  # the planted labels stand in for the SAE diff
    agreement = crosscoder_sae_agreement(t["table"], labels, t["crosscoder"], dict_a, dict_b)
    assert agreement["finetuned_only_to_new"] >= 0.9
    assert agreement["new_to_finetuned_only"] >= 0.9
    assert agreement["pretrained_only_to_lost"] >= 0.9
    assert agreement["lost_to_pretrained_only"] >= 0.9


# --- latent scaling on a constructed crosscoder ----------------------------------------------------------
def constructed_crosscoder() -> tuple[Crosscoder, np.ndarray, np.ndarray]:
    """Five hand-set latents over orthonormal atoms e0..e3 (codes ≥ 0, so each latent's f is its code):

    0: reads e0 from B, d_b = e0, d_a = 0 — but A holds e0 too: exclusivity is pure shrinkage;
    1: reads e1 from B, d_b = e1 — e1 exists only in B: genuinely fine-tuned-only;
    2/3: e2 (in both models) split into an A-only latent (d_a = e2) and a B-only one (d_b = e2): decoupling;
    4: reads e3 from A, writes it to both: shared.
    """
    d = 8
    rng = np.random.default_rng(0)
    codes = (rng.random((3000, 4)) < 0.3) * rng.uniform(0.5, 1.5, (3000, 4))
    e = np.eye(d)
    x_a = codes[:, [0]] * e[0] + codes[:, [2]] * e[2] + codes[:, [3]] * e[3]
    x_b = x_a + codes[:, [1]] * e[1]
    crosscoder = Crosscoder(CrosscoderConfig(d_in=d, d_latent=5, architecture="l1", n_shared=0))
    W_enc = torch.zeros(2, d, 5, dtype=torch.float64)
    W_dec = torch.zeros(5, 2, d, dtype=torch.float64)
    for latent, (model_in, atom, writes) in enumerate(
        [(1, 0, [1]), (1, 1, [1]), (0, 2, [0]), (1, 2, [1]), (0, 3, [0, 1])]
    ):
        W_enc[model_in, atom, latent] = 1.0
        for model_out in writes:
            W_dec[latent, model_out, atom] = 1.0
    with torch.no_grad():
        crosscoder.W_enc.copy_(W_enc)
        crosscoder.W_dec_free.copy_(W_dec)
        crosscoder.b_enc.zero_()
        crosscoder.b_dec.zero_()
    return crosscoder, x_a.astype(np.float32), x_b.astype(np.float32)


def test_latent_scaling_flags_shrinkage_and_decoupling_but_not_real_exclusivity():
    crosscoder, x_a, x_b = constructed_crosscoder()
    table = latent_table(crosscoder, in_order(x_a, x_b)).set_index("latent")
    assert table["class"].tolist() == [
        "finetuned-only", "finetuned-only", "pretrained-only", "finetuned-only", "shared"
    ]  # fmt: skip
    # 0: the pretrained model still carries e0, in its reconstruction error -> Complete Shrinkage
    assert table.loc[0, "nu_error"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc[0, "shrinkage"] and not table.loc[0, "decoupling"]
    # 1: nothing of e1 in the pretrained model -> a robust fine-tuned-only latent
    assert table.loc[1, "nu_error"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc[1, "nu_reconstruction"] == pytest.approx(0.0, abs=1e-6)
    assert not table.loc[1, "flagged"]
    # 2, 3: each half of the split concept is rebuilt by the other half in the other model -> Decoupling
    for latent in (2, 3):
        assert table.loc[latent, "nu_reconstruction"] == pytest.approx(1.0, abs=1e-6)
        assert table.loc[latent, "decoupling"] and not table.loc[latent, "shrinkage"]
    assert not table.loc[4, "flagged"] and np.isnan(table.loc[4, "nu_error"])
    assert table["firing_rate"].between(0.25, 0.35).all()


def test_relative_norm_classes_follow_the_config_cutoffs():
    crosscoder, x_a, x_b = constructed_crosscoder()
    with torch.no_grad():
        crosscoder.W_dec_free[1, 0, 1] = 0.2  # latent 1 now has r = 1 / 1.2 ≈ 0.83
    strict = latent_table(crosscoder, in_order(x_a, x_b))
    loose = latent_table(crosscoder, in_order(x_a, x_b), LatentTableConfig(finetuned_only_above=0.8))
    assert strict.loc[1, "class"] == "shared" and loose.loc[1, "class"] == "finetuned-only"
    assert strict.loc[1, "relative_norm"] == pytest.approx(1 / 1.2)


# --- files, shared latents, checkpoints, AuxK ------------------------------------------------------------
def tiny_pairs(seed: int = 0, n: int = 512, d: int = 8):
    rng = np.random.default_rng(seed)
    x_a = rng.normal(size=(n, d)).astype(np.float32) * 3.0
    x_b = (x_a + rng.normal(size=(n, d))).astype(np.float32)
    return x_a, x_b


def test_save_load_round_trip(tmp_path):
    x_a, x_b = tiny_pairs()
    cfg = CrosscoderConfig(d_in=8, d_latent=16, k=3, n_shared=2, metadata={"layer": 3})
    train = CrosscoderTrainConfig(lr=1e-2, epochs=2, dead_after_tokens=256, init_rows=256)
    crosscoder, _ = train_crosscoder(shuffled_pairs(x_a, x_b, 64), cfg, train, progress=False)
    save_crosscoder(crosscoder, tmp_path / "crosscoder")
    assert sorted(p.name for p in (tmp_path / "crosscoder").iterdir()) == [
        "cfg.json",
        "crosscoder_weights.safetensors",
    ]
    loaded = load_crosscoder(tmp_path / "crosscoder")
    assert (
        loaded.cfg == crosscoder.cfg and loaded.cfg.threshold is not None and loaded.cfg.input_scale_a != 1.0
    )
    for name in WEIGHT_NAMES:
        assert torch.equal(getattr(loaded, name), getattr(crosscoder, name)), name
    assert tuple(loaded.W_enc.shape) == (2, 8, 16) and tuple(loaded.W_dec.shape) == (16, 2, 8)
    assert torch.equal(loaded.encode(x_a, x_b), crosscoder.encode(x_a, x_b))
    # the designated shared latents kept one decoder for both models through training and the round trip
    assert torch.equal(loaded.W_dec[:2, 0], loaded.W_dec[:2, 1])
    table = latent_table(loaded, in_order(x_a, x_b, 128))
    assert (table["class"].iloc[:2].isin(["tied", "dead"])).all()


def test_load_rejects_mismatched_shapes(tmp_path):
    crosscoder = Crosscoder(CrosscoderConfig(d_in=4, d_latent=6, k=2, n_shared=0))
    save_crosscoder(crosscoder, tmp_path)
    cfg = CrosscoderConfig.from_dict({**crosscoder.cfg.to_dict(), "d_latent": 7})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(ValueError, match="do not match"):
        load_crosscoder(tmp_path)


def test_resumed_training_equals_uninterrupted(tmp_path):
    x_a, x_b = tiny_pairs(1)
    cfg = CrosscoderConfig(d_in=8, d_latent=16, architecture="l1", l1_coefficient=0.5, n_shared=0)
    train = CrosscoderTrainConfig(lr=1e-2, epochs=3, l1_warmup_steps=5, init_rows=256)
    batches = shuffled_pairs(x_a, x_b, 64)
    straight, metrics = train_crosscoder(batches, cfg, train, progress=False)
    first, _ = train_crosscoder(
        batches, cfg, dataclasses.replace(train, epochs=2), checkpoint_dir=tmp_path, progress=False
    )
    resumed, resumed_metrics = train_crosscoder(batches, cfg, train, checkpoint_dir=tmp_path, progress=False)
    assert resumed_metrics["resumed_from_epoch"] == 2
    for name in WEIGHT_NAMES:
        assert torch.equal(getattr(resumed, name), getattr(straight, name)), name
    assert resumed_metrics["loss_curve"] == metrics["loss_curve"]
    assert metrics["loss_curve"]["epoch_loss"][-1] < metrics["loss_curve"]["epoch_loss"][0]
    assert len(list(tmp_path.glob("epoch-*"))) == 1  # older checkpoints are dropped


def test_auxk_loss_only_when_latents_are_dead():
    x_a, x_b = tiny_pairs(2, n=64)
    crosscoder = Crosscoder(CrosscoderConfig(d_in=8, d_latent=16, k=2, n_shared=0), init_decoder_norm=1.0)
    x = crosscoder.scale_inputs(x_a, x_b)
    alive = crosscoder(x, dead=torch.zeros(16, dtype=torch.bool), aux_k=4, aux_coefficient=1.0)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[8:] = True
    revived = crosscoder(x, dead=dead, aux_k=4, aux_coefficient=1.0)
    assert alive.aux.item() == 0.0 and revived.aux.item() > 0.0
    revived.aux.backward()
    grad = crosscoder.W_enc.grad.abs().sum(dim=(0, 1))  # [d_latent]
    assert (grad[:8] == 0).all() and (grad[8:] > 0).any()  # AuxK trains only the dead latents


def test_config_validation():
    with pytest.raises(ValueError):
        CrosscoderConfig(d_in=4, d_latent=8, architecture="topk")
    with pytest.raises(ValueError):
        CrosscoderConfig(d_in=4, d_latent=8, n_shared=8)


def test_train_on_paired_shards_holds_out_rows(tmp_path):
    from layershift.data.shards import ShardWriter

    x_a, x_b = tiny_pairs(3, n=320)
    for name, x in (("a", x_a), ("b", x_b)):
        meta = {"model": "m", "dataset": "d", "stage": name, "layer": 3}
        with ShardWriter(tmp_path / name, d_model=8, dtype="float32", rows_per_group=32, metadata=meta) as w:
            rows = np.arange(len(x), dtype=np.int32)
            w.append(np.zeros_like(rows), rows, np.zeros_like(rows), ["t"] * len(x), x)
    cfg = CrosscoderConfig(d_in=8, d_latent=16, k=2, n_shared=0)
    train = CrosscoderTrainConfig(lr=1e-2, epochs=2, batch_size=32, holdout_fraction=0.2, init_rows=64)
    crosscoder, metrics = train_crosscoder_on_shards(
        tmp_path / "a", tmp_path / "b", cfg, train, progress=False
    )
    assert metrics["evaluation_split"] == "heldout" and metrics["split_seed"] == train.split_seed
    assert metrics["n_train_rows"] == 256 and metrics["n_heldout_rows"] == 64
    assert crosscoder.cfg.hook_name == "hidden_states.3" and crosscoder.cfg.metadata["dataset"] == "d"
    assert "stage" not in crosscoder.cfg.metadata


def test_explained_variance_of_one_evaluation_row_is_undefined():
    """One row has no variance around its mean: NaN (null in metrics.json), not -inf or -6e307."""
    x_a, x_b = tiny_pairs(3, n=2)
    crosscoder = Crosscoder(CrosscoderConfig(d_in=8, d_latent=16, k=2, n_shared=0), seed=0)
    one = evaluate_crosscoder(crosscoder, [(x_a[:1], x_b[:1])])
    assert np.isnan(one["explained_variance_a"]) and np.isnan(one["explained_variance_b"])
    two = evaluate_crosscoder(crosscoder, [(x_a, x_b)])
    assert np.isfinite(two["explained_variance_a"]) and np.isfinite(two["explained_variance_b"])
