"""Sparse autoencoders: recovery of known atoms, sparsity, streaming, files, resume, normalisation."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from layershift.data.shards import ShardReader, ShardWriter, holdout_rows
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.evaluate import evaluate_sae
from layershift.dictionaries.sae.files import load_sae, save_sae
from layershift.dictionaries.sae.model import SAE, CenteredAffine, TopKSAE
from layershift.dictionaries.sae.train import lr_factor, train_sae, train_sae_on_shards

D_IN, N_ATOMS, N_ROWS = 24, 16, 4096


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def atoms_and_rows() -> tuple[np.ndarray, np.ndarray]:
    """16 unit atoms in d=24; each row a non-negative combination of ~3 of them."""
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(N_ATOMS, D_IN))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    active = rng.random((N_ROWS, N_ATOMS)) < 3 / N_ATOMS
    coefficients = active * rng.uniform(0.5, 1.5, size=(N_ROWS, N_ATOMS))
    return atoms, (coefficients @ atoms).astype(np.float32)


def shuffled_batches(rows: np.ndarray, batch_size: int = 128):
    """batches(epoch): a fresh permutation per epoch, seeded by the epoch."""

    def batches(epoch: int):
        order = np.random.default_rng(epoch).permutation(len(rows))
        for start in range(0, len(rows), batch_size):
            yield rows[order[start : start + batch_size]]

    return batches


def fast_train(**overrides) -> SAETrainConfig:
    return SAETrainConfig(**{"lr": 3e-3, "epochs": 3, "batch_size": 128, "init_rows": 1024, **overrides})


def write_shards(directory, rows: np.ndarray, rows_per_group: int = 256, sentence_length: int = 8) -> None:
    n = len(rows)
    sentence_ids = np.arange(n) // sentence_length
    positions = np.arange(n) % sentence_length
    with ShardWriter(
        directory,
        D_IN,
        dtype="float32",
        rows_per_group=rows_per_group,
        groups_per_shard=4,
        metadata={"layer": 3},
    ) as writer:
        writer.append(sentence_ids, positions, positions + 100, [f"t{i}" for i in range(n)], rows)


def max_cosine_per_atom(atoms: np.ndarray, sae: SAE) -> np.ndarray:
    decoder = sae.W_dec.detach().cpu().double().numpy()
    decoder /= np.linalg.norm(decoder, axis=1, keepdims=True)
    return (atoms @ decoder.T).max(axis=1)


def weights(sae: SAE) -> dict[str, torch.Tensor]:
    return {name: getattr(sae, name).detach().cpu().clone() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}


def assert_same_weights(a: SAE, b: SAE) -> None:
    for name, tensor in weights(a).items():
        assert torch.equal(tensor, weights(b)[name]), name


@pytest.mark.parametrize(("architecture", "l1"), [("relu", 1e-2), ("topk", 0.0)])
def test_recovers_known_atoms(atoms_and_rows, architecture, l1):
    atoms, rows = atoms_and_rows
    cfg = SAEConfig(d_in=D_IN, d_sae=32, architecture=architecture, k=4, l1_coefficient=l1)
    sae, metrics = train_sae(shuffled_batches(rows), cfg, fast_train(epochs=20), progress=False)
    assert max_cosine_per_atom(atoms, sae).mean() >= 0.9
    assert metrics["loss_curve"]["epoch_loss"][-1] < metrics["loss_curve"]["epoch_loss"][0]
    assert evaluate_sae(sae, [rows])["explained_variance"] > 0.9


def test_untrained_sae_does_not_recover_atoms(atoms_and_rows):
    """Guard against a vacuous recovery test: random unit directions stay far below the bar."""
    atoms, _ = atoms_and_rows
    assert max_cosine_per_atom(atoms, SAE(SAEConfig(d_in=D_IN, d_sae=32), seed=0)).mean() < 0.8


def test_l0_falls_as_l1_coefficient_rises(atoms_and_rows):
    _, rows = atoms_and_rows
    l0 = []
    for l1 in (1e-3, 1e-2, 5e-2):
        sae, _ = train_sae(
            shuffled_batches(rows), SAEConfig(D_IN, 32, l1_coefficient=l1), fast_train(), progress=False
        )
        l0.append(evaluate_sae(sae, [rows])["l0"])
    assert l0[0] > l0[1] > l0[2]


def test_topk_keeps_at_most_k_latents_per_row(atoms_and_rows):
    _, rows = atoms_and_rows
    cfg = SAEConfig(D_IN, 32, architecture="topk", k=3)
    sae, _ = train_sae(shuffled_batches(rows), cfg, fast_train(epochs=1), progress=False)
    assert isinstance(sae, TopKSAE)
    with torch.no_grad():
        active = (sae.encode(torch.from_numpy(rows)) > 0).sum(dim=1)
    assert active.max().item() <= 3
    assert active.float().mean().item() > 2  # the constraint binds: rows use (almost) all k slots


def test_shard_streaming_matches_in_memory_batches(tmp_path, atoms_and_rows):
    _, rows = atoms_and_rows
    rows = rows[:2048]
    write_shards(tmp_path / "shards", rows)
    cfg = SAEConfig(D_IN, 32, l1_coefficient=1e-2)
    train = fast_train(epochs=2, shuffle=False, holdout_fraction=0.25, batch_size=100)
    from_shards, metrics = train_sae_on_shards(tmp_path / "shards", cfg, train, progress=False)

    heldout = np.isin(np.arange(len(rows)), holdout_rows(len(rows), 0.25, train.split_seed))
    assert heldout.sum() == 512
    train_rows = rows[~heldout]
    in_memory, _ = train_sae(
        lambda epoch: (train_rows[i : i + 100] for i in range(0, len(train_rows), 100)),
        cfg,
        train,
        progress=False,
    )
    assert_same_weights(from_shards, in_memory)
    streamed, _ = train_sae_on_shards(
        tmp_path / "shards", cfg, dataclasses.replace(train, memory_cache_mb=0), progress=False
    )
    assert_same_weights(from_shards, streamed)  # rows kept in RAM (the default) change nothing
    assert metrics["n_train_rows"] == len(train_rows) and metrics["n_heldout_rows"] == 512
    assert from_shards.cfg.hook_name == "hidden_states.3" and from_shards.cfg.metadata["layer"] == 3
    expected = evaluate_sae(in_memory, [rows[heldout]])
    assert metrics["mse"] == pytest.approx(expected["mse"], rel=1e-6)


def test_save_load_reproduces_outputs_and_heldout_metrics(tmp_path, atoms_and_rows):
    _, rows = atoms_and_rows
    raw = rows[:2048] * 7.0 + 3.0  # far from unit scale, so normalisation matters
    write_shards(tmp_path / "shards", raw)
    cfg = SAEConfig(
        D_IN, 32, normalize_activations="expected_average_only_in", metadata={"stage": "pretrained"}
    )
    sae, metrics = train_sae_on_shards(
        tmp_path / "shards", cfg, fast_train(epochs=2, eval_batch_size=300), progress=False
    )
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")

    held = holdout_rows(len(raw), fast_train().holdout_fraction, metrics["split_seed"])
    heldout = ShardReader(tmp_path / "shards").subset(held)
    again = evaluate_sae(loaded, heldout.iter_batches(300))
    for key in ("mse", "mse_raw", "explained_variance", "l0", "dead_fraction"):
        assert again[key] == metrics[key], key
    x = torch.from_numpy(raw[:64])
    with torch.no_grad():
        for a, b in zip(sae(x), loaded(x), strict=True):
            assert torch.equal(a, b)

    cfg_json = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    for key in ("d_in", "d_sae", "architecture", "dtype", "normalize_activations", "device", "metadata"):
        assert key in cfg_json, key
    assert cfg_json["apply_b_dec_to_input"] is True and cfg_json["format_version"] == 2
    assert cfg_json["architecture"] == "standard" and cfg_json["normalize_activations"] == "none"  # folded
    assert cfg_json["metadata"]["stage"] == "pretrained" and cfg_json["metadata"]["sae_lens_version"]
    assert cfg_json["layershift"]["normalize_activations"] == "expected_average_only_in"
    assert cfg_json["layershift"]["activation_scale"] != 1.0
    tensors = load_file(tmp_path / "sae" / "sae_weights.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "W_enc": (D_IN, 32),
        "b_enc": (32,),
        "W_dec": (32, D_IN),
        "b_dec": (D_IN,),
    }


def test_load_picks_class_and_rejects_wrong_shapes(tmp_path):
    sae = SAE(SAEConfig(D_IN, 16, architecture="topk", k=2), seed=1)
    save_sae(sae, tmp_path / "sae")
    assert isinstance(load_sae(tmp_path / "sae"), TopKSAE)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 17}))
    with pytest.raises(ValueError, match="do not match"):
        load_sae(tmp_path / "sae")


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, atoms_and_rows):
    _, rows = atoms_and_rows
    rows = rows[:1024]
    cfg = SAEConfig(D_IN, 32, l1_coefficient=1e-2, normalize_activations="center_and_scale")
    batches = shuffled_batches(rows)
    straight, straight_metrics = train_sae(batches, cfg, fast_train(epochs=3, log_every=3), progress=False)

    checkpoints = tmp_path / "ckpt"
    train_sae(batches, cfg, fast_train(epochs=1, log_every=3), checkpoint_dir=checkpoints, progress=False)
    assert [p.name for p in checkpoints.iterdir()] == ["epoch-0001"]
    resumed, metrics = train_sae(
        batches, cfg, fast_train(epochs=3, log_every=3), checkpoint_dir=checkpoints, progress=False
    )

    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 3
    assert_same_weights(straight, resumed)
    assert resumed.cfg.activation_mean == straight.cfg.activation_mean
    assert metrics["loss_curve"] == straight_metrics["loss_curve"]
    assert [p.name for p in checkpoints.iterdir()] == ["epoch-0003"]


def test_checkpoint_of_other_settings_is_ignored_and_replaced(tmp_path, atoms_and_rows, caplog):
    _, rows = atoms_and_rows
    cfg = SAEConfig(D_IN, 16, l1_coefficient=1e-2)
    batches = shuffled_batches(rows[:512])
    checkpoints = tmp_path / "ckpt"
    train_sae(batches, cfg, fast_train(epochs=3), checkpoint_dir=checkpoints, progress=False)
    fresh, _ = train_sae(batches, cfg, fast_train(epochs=2, lr=1e-3), progress=False)
    with caplog.at_level("WARNING"):
        other, metrics = train_sae(
            batches, cfg, fast_train(epochs=2, lr=1e-3), checkpoint_dir=checkpoints, progress=False
        )
    assert "other settings" in caplog.text
    assert metrics["resumed_from_epoch"] == 0
    assert_same_weights(fresh, other)
    assert [p.name for p in checkpoints.iterdir()] == ["epoch-0002"]  # the stale epoch-0003 is gone


def test_training_tokens_sets_the_passes_from_the_layer_rows(tmp_path, atoms_and_rows):
    """A step-based budget: the smaller layer gets more passes, both take about the same number of steps."""
    _, rows = atoms_and_rows
    cfg = SAEConfig(D_IN, 32, l1_coefficient=1e-2)
    train = fast_train(training_tokens=4000, holdout_fraction=0.1, batch_size=100)
    steps = {}
    for n in (2000, 1000):
        write_shards(tmp_path / str(n), rows[:n])
        _, metrics = train_sae_on_shards(tmp_path / str(n), cfg, train, progress=False)
        assert metrics["epochs"] == int(np.ceil(4000 / metrics["n_train_rows"]))
        rows_trained = metrics["epochs"] * metrics["n_train_rows"]  # the budget, rounded up to a whole pass
        assert 4000 <= rows_trained < 4000 + metrics["n_train_rows"]
        steps[n] = metrics["steps"]
    assert metrics["epochs"] == 5  # 900 training rows (1800 rows: 3 passes)
    assert steps[1000] > 0.75 * steps[2000]  # without the budget, half the steps


def test_lr_decays_linearly_to_zero_over_the_last_steps():
    assert [lr_factor(s, 10, 0.5) for s in range(10)] == [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2]
    assert lr_factor(3, None, 0.5) == lr_factor(3, 10, 0.0) == 1.0
    assert lr_factor(9, 10, 1.0) == pytest.approx(0.1)


def test_lr_decay_needs_the_epoch_length_and_resumes_only_the_same_schedule(tmp_path, atoms_and_rows):
    _, rows = atoms_and_rows
    rows = rows[:512]
    cfg = SAEConfig(D_IN, 16, l1_coefficient=1e-2)
    batches = shuffled_batches(rows)
    decaying = fast_train(epochs=2, lr_decay_fraction=0.5)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_sae(batches, cfg, decaying, progress=False)
    straight, _ = train_sae(batches, cfg, decaying, progress=False, steps_per_epoch=4)
    constant, _ = train_sae(batches, cfg, fast_train(epochs=2), progress=False)
    assert not torch.equal(straight.W_dec, constant.W_dec)
    checkpoints = tmp_path / "ckpt"
    train_sae(batches, cfg, decaying, checkpoint_dir=checkpoints, progress=False, steps_per_epoch=4)
    # 3 epochs decay on another schedule than 2: the checkpoint is not resumed
    _, metrics = train_sae(
        batches,
        cfg,
        dataclasses.replace(decaying, epochs=3),
        checkpoint_dir=checkpoints,
        progress=False,
        steps_per_epoch=4,
    )
    assert metrics["resumed_from_epoch"] == 0


@pytest.mark.parametrize("mode", ["expected_average_only_in", "center_and_scale"])
def test_encode_normalises_raw_activations(atoms_and_rows, mode):
    _, rows = atoms_and_rows
    raw = rows * 5.0 + 2.0
    sae, _ = train_sae(
        shuffled_batches(raw),
        SAEConfig(D_IN, 32, normalize_activations=mode),
        fast_train(epochs=2),
        progress=False,
    )
    x = torch.from_numpy(raw[:1024])
    mean = torch.tensor(sae.cfg.activation_mean) if mode == "center_and_scale" else 0.0
    working = (x - mean) * sae.cfg.activation_scale
    assert working.norm(dim=1).mean().item() == pytest.approx(
        D_IN**0.5, rel=0.05
    )  # E‖x‖ ≈ √d_in when working
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), sae.encode_normalized(working), atol=1e-5)
        out = sae(x)
    assert torch.allclose(out.recon, sae.decode(out.features))
    explained = 1 - ((out.recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert explained.item() == pytest.approx(1 - out.fvu.item(), abs=1e-4)  # recon is back in raw units


def test_l1_is_weighted_by_decoder_norms_without_normalisation(atoms_and_rows):
    _, rows = atoms_and_rows
    sae, _ = train_sae(
        shuffled_batches(rows),
        SAEConfig(D_IN, 32),
        fast_train(epochs=1, normalize_decoder=False),
        progress=False,
    )
    norms = sae.W_dec.detach().norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms))
    with torch.no_grad():
        out = sae(torch.from_numpy(rows[:256]))
    assert out.l1.item() == pytest.approx((out.features * norms).sum(dim=1).mean().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.mse.item() + 1e-3 * out.l1.item(), rel=1e-5)


@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_centered_affine_gradients_are_autograds_of_the_plain_expression(x_needs_grad):
    g = torch.Generator().manual_seed(0)
    x, W_enc, b_enc, b_dec = (
        torch.randn(*s, generator=g, dtype=torch.float64) for s in ((9, 5), (5, 7), (7,), (5,))
    )
    x.requires_grad_(x_needs_grad)
    weights = (x, W_enc, b_enc, b_dec)
    for weight in weights[1:]:
        weight.requires_grad_(True)
    upstream = torch.randn(9, 7, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(
        CenteredAffine.apply(*weights), [w for w in weights if w.requires_grad], upstream
    )
    plain = torch.autograd.grad(
        (x - b_dec) @ W_enc + b_enc, [w for w in weights if w.requires_grad], upstream
    )
    assert len(ours) == 3 + x_needs_grad
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(CenteredAffine.apply, weights)


def test_sae_is_seeded_and_copyable():
    cfg = SAEConfig(D_IN, 16)
    assert_same_weights(SAE(cfg, seed=3), SAE(cfg, seed=3))
    assert not torch.equal(SAE(cfg, seed=3).W_dec, SAE(cfg, seed=4).W_dec)
    sae = SAE(cfg, seed=3)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16)) and torch.equal(sae.W_enc, sae.W_dec.T)
    assert_same_weights(copy.deepcopy(sae), sae)


def test_config_validation():
    with pytest.raises(ValueError, match="architecture"):
        SAEConfig(D_IN, architecture="gated")
    with pytest.raises(ValueError, match="k must be"):
        SAEConfig(D_IN, 16, architecture="topk", k=17)
    with pytest.raises(ValueError, match="normalize_activations"):
        SAEConfig(D_IN, normalize_activations="layer_norm")


def test_format_1_files_still_load_and_resave_as_format_2(tmp_path):
    """Files written before SAELens naming (``"architecture": "relu"``, our fields at the top level)."""
    cfg = SAEConfig(D_IN, 16, normalize_activations="center_and_scale", metadata={"stage": "finetuned"})
    sae = SAE(cfg, seed=2)
    sae.set_normalization(0.3, np.linspace(-1.0, 1.0, D_IN))
    old = tmp_path / "old"
    old.mkdir()
    v1 = {**dataclasses.asdict(sae.cfg), "format_version": 1, "device": "cpu", "apply_b_dec_to_input": True}
    (old / "cfg.json").write_text(json.dumps(v1))
    save_file(
        {n: getattr(sae, n).detach().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")},
        old / "sae_weights.safetensors",
    )
    x = torch.randn(20, D_IN) * 4.0
    loaded = load_sae(old)
    assert loaded.cfg.format_version == 1 and loaded.cfg.architecture == "relu"
    assert torch.equal(loaded.encode(x), sae.encode(x))
    save_sae(loaded, tmp_path / "new")
    cfg_json = json.loads((tmp_path / "new" / "cfg.json").read_text())
    assert cfg_json["format_version"] == 2 and cfg_json["architecture"] == "standard"
    assert torch.equal(load_sae(tmp_path / "new").encode(x), sae.encode(x))
    (old / "cfg.json").write_text(json.dumps({**cfg_json, "format_version": 3}))
    with pytest.raises(ValueError, match="newer"):
        load_sae(old)


@pytest.mark.parametrize("n_rows", [5, 12])
def test_explained_variance_of_a_single_held_out_row_is_undefined_not_infinite(tmp_path, n_rows):
    """A layer with 5-14 rows holds out one row (10 %): around its own mean it has no variance, so its
    explained variance is undefined. It was 1 - SSE / tiny: -inf (null in metrics.json only by accident),
    or a finite -1e307 or a perfect 1.0, depending on rounding."""
    rows = np.random.default_rng(0).normal(size=(n_rows, D_IN)).astype(np.float32)
    write_shards(tmp_path / "layer3", rows)
    _, metrics = train_sae_on_shards(
        tmp_path / "layer3", SAEConfig(d_in=D_IN, d_sae=32), fast_train(batch_size=4), progress=False
    )
    assert metrics["n_heldout_rows"] == 1
    assert np.isnan(metrics["explained_variance"])
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=32), seed=0)
    assert np.isnan(evaluate_sae(sae, [rows[:1]])["explained_variance"])
    assert np.isnan(evaluate_sae(sae, [np.repeat(rows[:1], 3, axis=0)])["explained_variance"])  # equal rows
    assert np.isfinite(evaluate_sae(sae, [rows[:2]])["explained_variance"])
