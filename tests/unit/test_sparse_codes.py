"""The sparse-code training path computes the dense SAE's loss and gradients, and only takes batches it pays on."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from layershift.core.checkpoints import CHECKPOINT_FILENAME, TENSORS_FILENAME, unflatten_state
from layershift.dictionaries import sparse_codes
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.model import SAE
from layershift.dictionaries.sae.train import train_sae
from layershift.dictionaries.sparse_codes import SparseCodePass, training_terms

D_IN, D_SAE, N = 12, 20, 16
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def sae_with_sparse_codes(architecture: str = "relu", unit_norm: bool = True, normalize: str = "none") -> SAE:
    cfg = SAEConfig(
        D_IN, D_SAE, architecture=architecture, k=3, l1_coefficient=3e-3, normalize_activations=normalize
    )
    sae = SAE(cfg, seed=1)
    with torch.no_grad():
        sae.b_enc.fill_(-0.6)  # about a quarter of the latents fire: sparse, with empty rows and latents
        sae.b_dec.copy_(torch.linspace(-0.1, 0.1, D_IN))  # seeded tests only: no global RNG
        if not unit_norm:
            sae.W_dec.mul_(torch.linspace(0.5, 1.5, D_SAE)[:, None])
    sae.decoder_is_unit_norm = unit_norm
    if normalize != "none":
        sae.set_normalization(0.8, np.full(D_IN, 0.05))
    return sae


def grads(loss: torch.Tensor, sae: SAE) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [getattr(sae, name) for name in PARAMS]))


@pytest.mark.parametrize("architecture", ["relu", "topk"])
@pytest.mark.parametrize("unit_norm", [True, False])
@pytest.mark.parametrize("normalize", ["none", "center_and_scale"])
def test_sparse_path_matches_the_dense_forward_and_its_autograd(architecture, unit_norm, normalize):
    sae = sae_with_sparse_codes(architecture, unit_norm, normalize)
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(0))
    sparse = training_terms(sae, x, max_density=1.0)
    dense = sae(x)
    assert 0 < sparse.l0.item() < D_SAE / 2  # the regime the path is for, not a trivial one
    for name in ("loss", "mse", "l1", "l0"):
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), msg=name)
    for ours, autograds in zip(grads(sparse.loss, sae), grads(dense.loss, sae), strict=True):
        torch.testing.assert_close(ours, autograds, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("architecture", ["relu", "topk"])
def test_the_dense_training_terms_are_forwards_bit_for_bit(architecture):
    """The trainer's dense path skips forward's reporting extras; loss and gradients must not move at all."""
    sae = sae_with_sparse_codes(architecture, unit_norm=False, normalize="center_and_scale")
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(0))
    lean, full = sae.training_terms(x), sae(x)
    for name in ("loss", "mse", "l1", "l0"):
        assert torch.equal(getattr(lean, name), getattr(full, name)), name
    for a, b in zip(grads(lean.loss, sae), grads(full.loss, sae), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_sparse_code_pass_passes_gradcheck(x_needs_grad):
    g = torch.Generator().manual_seed(0)
    x, W_enc, b_enc, W_dec, b_dec = (
        torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 4), (4, 5), (5,), (5, 4), (4,))
    )
    active = (((x - b_dec) @ W_enc + b_enc) > 0).view(-1).nonzero().squeeze(1)
    x.requires_grad_(x_needs_grad)
    for weight in (W_enc, b_enc, W_dec, b_dec):
        weight.requires_grad_(True)

    def both_outputs(x, W_enc, b_enc, W_dec, b_dec):
        # the caller's part, without gradient; the active set stays fixed (ReLU's is locally constant)
        with torch.no_grad():
            centered = x - b_dec
            pre = centered @ W_enc + b_enc
        return SparseCodePass.apply(x, W_enc, b_enc, W_dec, b_dec, centered, pre, active)

    assert torch.autograd.gradcheck(both_outputs, (x, W_enc, b_enc, W_dec, b_dec))


def test_dense_batches_and_non_cpu_float32_runs_keep_the_dense_path():
    sae = sae_with_sparse_codes()
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(0))
    density = training_terms(sae, x, max_density=1.0).l0.item() / D_SAE
    assert training_terms(sae, x, max_density=density * 0.99) is None  # one code over the limit: dense
    assert training_terms(sae, x, max_density=density) is not None
    assert sparse_codes.takes_sparse_path(sae, "float32")
    assert not sparse_codes.takes_sparse_path(sae, "bf16")
    assert not sparse_codes.takes_sparse_path(sae.double(), "float32")


def test_a_batch_with_no_active_code_trains_only_the_decoder_bias():
    sae = sae_with_sparse_codes()
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
    terms = training_terms(sae, torch.randn(N, D_IN))
    assert terms.l0.item() == 0 and terms.l1.item() == 0
    gradients = dict(zip(PARAMS, grads(terms.loss, sae), strict=True))
    assert all(gradients[name].abs().sum() == 0 for name in ("W_enc", "b_enc", "W_dec"))
    assert gradients["b_dec"].abs().sum() > 0


def test_training_on_the_sparse_path_follows_the_dense_one(monkeypatch):
    """Same steps, same batches: the two paths differ by rounding only, so the weights stay close."""
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(8, D_IN))
    rows = ((rng.random((2048, 8)) < 0.25) * rng.uniform(0.5, 1.5, (2048, 8)) @ atoms).astype(np.float32)

    def batches(epoch):
        return (rows[start : start + 64] for start in range(0, len(rows), 64))

    cfg = SAEConfig(D_IN, D_SAE, l1_coefficient=1e-2)
    train = SAETrainConfig(lr=3e-3, epochs=2, batch_size=64, init_rows=512)
    calls = {"sparse": 0}
    real = sparse_codes.training_terms

    def counted(
        sae, x
    ):  # every batch on the sparse path, whatever its density (a short run is not sparse yet)
        terms = real(sae, x, max_density=1.0)
        calls["sparse"] += terms is not None
        return terms

    monkeypatch.setattr(sparse_codes, "training_terms", counted)
    monkeypatch.setattr(sparse_codes, "MAX_DENSITY", 1.0)
    sparse_sae, sparse_metrics = train_sae(batches, cfg, train, progress=False)
    assert calls["sparse"] == sparse_metrics["steps"]
    monkeypatch.setattr(sparse_codes, "takes_sparse_path", lambda *args: False)
    dense_sae, dense_metrics = train_sae(batches, cfg, train, progress=False)
    for name in PARAMS:
        torch.testing.assert_close(getattr(sparse_sae, name), getattr(dense_sae, name), rtol=0, atol=1e-4)
    assert sparse_metrics["loss_curve"]["epoch_l0"] == pytest.approx(
        dense_metrics["loss_curve"]["epoch_l0"], rel=1e-3
    )


def test_dense_phases_compute_the_encoder_once_a_step(monkeypatch):
    """While codes are dense the trainer goes straight to the dense forward; it retries once they thin out."""
    rows = np.random.default_rng(0).normal(size=(512, D_IN)).astype(np.float32)  # no structure: dense codes
    tried = []
    real = sparse_codes.training_terms
    monkeypatch.setattr(
        sparse_codes, "training_terms", lambda sae, x: tried.append(real(sae, x)) or tried[-1]
    )
    cfg = SAEConfig(D_IN, D_SAE, l1_coefficient=0.0)
    _, metrics = train_sae(
        lambda e: iter(np.split(rows, 8)), cfg, SAETrainConfig(epochs=1, init_rows=64), progress=False
    )
    assert metrics["steps"] == 8
    assert tried == [None]  # the first batch tried, found its codes too dense, and no batch after it


def test_a_resumed_run_takes_the_paths_the_uninterrupted_one_took(tmp_path, monkeypatch):
    """Which path a step tries depends on the previous batch, so the checkpoint carries it: resuming after an
    epoch that ended on a dense batch must not try the sparse path first (different rounding)."""
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(1024, D_IN)).astype(np.float32)

    def batches(epoch):
        return (rows[start : start + 64] for start in range(0, len(rows), 64))

    cfg = SAEConfig(D_IN, D_SAE, l1_coefficient=1e-2)
    train = SAETrainConfig(lr=3e-3, epochs=2, batch_size=64, init_rows=256)
    # a bar between the batches' densities: the paths alternate, and the first epoch ends on a dense batch
    monkeypatch.setattr(sparse_codes, "MAX_DENSITY", 0.5)
    monkeypatch.setattr(sparse_codes.training_terms, "__defaults__", (0.5,))
    straight, _ = train_sae(batches, cfg, train, progress=False)
    checkpoints = tmp_path / "ckpt"
    train_sae(batches, cfg, dataclasses.replace(train, epochs=1), checkpoint_dir=checkpoints, progress=False)
    saved = json.loads((checkpoints / "epoch-0001" / CHECKPOINT_FILENAME).read_text())
    progress = unflatten_state(saved["state"], load_file(checkpoints / "epoch-0001" / TENSORS_FILENAME))
    assert progress["progress"]["codes_were_sparse"] is False
    resumed, metrics = train_sae(batches, cfg, train, checkpoint_dir=checkpoints, progress=False)
    assert metrics["resumed_from_epoch"] == 1
    for name in PARAMS:
        assert torch.equal(getattr(resumed, name), getattr(straight, name)), name


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
def test_sampled_products_are_the_dense_products_read_at_the_pairs(density):
    """The codes' gradient is a matmul computed at the active pairs only; rows with no pair included."""
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(9, 7, generator=g), torch.randn(11, 7, generator=g)
    mask = torch.rand(9, 11, generator=g) < density
    mask[3] = False  # an empty row in the middle
    active = mask.view(-1).nonzero().squeeze(1)  # [nnz] row-major, as training_terms forms it
    rows, cols = active // 11, active % 11
    offsets = sparse_codes.bag_offsets(torch.bincount(rows, minlength=9))
    ours = sparse_codes.sampled_products(left, right, offsets, cols)
    torch.testing.assert_close(ours, (left @ right.T).view(-1)[active])
