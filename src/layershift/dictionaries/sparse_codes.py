"""SAE training passes that touch only the active latents, for batches whose codes are sparse.

With dense autograd one training step of an SAE (``d_in`` d, ``d_sae`` m, a batch of n rows) does five
``n·d·m`` matmuls: the encoder ``(x - b_dec) @ W_enc``, the decoder ``f @ W_dec``, and in the backward pass
``f``'s gradient ``∂x̂ @ W_decᵀ``, ``W_dec``'s ``fᵀ @ ∂x̂`` and ``W_enc``'s ``(x - b_dec)ᵀ @ ∂pre``. A trained
SAE's codes are sparse (L0 a few percent of m), and then only the encoder needs every entry. Here the decoder
and both weight gradients are sums over the ``nnz`` active (row, latent) pairs, done by ``embedding_bag``
(gather, scale and sum in one pass, no ``[nnz, d]`` temporaries), and ``f``'s gradient is needed at the
active pairs only: ``torch.sparse.sampled_addmm`` computes just those ``nnz`` dot products (0.07 instead of
0.53 ms for the dense matmul it replaces at L0 12 of 512, batch 128, d 384, 1 thread). One dense matmul is
left of five: the encoder's, which decides which latents are active.

Same function and gradients as the dense path, different summation order (rounding-level differences).
:func:`training_terms` takes this path only where it is faster: on CPU, in float32, when at most
:data:`MAX_DENSITY` of the batch's codes are active (measured crossover, d 384, m 512, batch 128, 1 thread,
median of 5 interleaved rounds of 60 steps: sparse 2.9 vs dense 5.2 ms a step at 2 % active, 4.1 vs 5.6 ms
at 12.5 %, 5.7 vs 4.8 ms at 25 %, 8.4 vs 5.3 ms at 50 %; ``bench/bench_sae_paths.py`` times the trainer both
ways). Any other batch goes through the dense :meth:`SAE.training_terms`; the trainer (``SAESteps``) tries
this path only after a batch whose codes were sparse, so dense phases of training compute the encoder once a
step. :func:`codes_are_sparse` is the one rule both use.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

MAX_DENSITY = 1 / 8  # largest share of active codes that takes the sparse path (crossover: 1/8 to 1/4)


class TrainingTerms(NamedTuple):
    """What a training step needs of a batch (the scalar fields of :class:`~layershift.dictionaries.sae.model.SAEOutput`)."""

    loss: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor
    l0: torch.Tensor


def codes_are_sparse(n_active: float, n_codes: float, max_density: float | None = None) -> bool:
    """Whether at most ``max_density`` (default :data:`MAX_DENSITY`) of ``n_codes`` codes are active."""
    return n_active <= (MAX_DENSITY if max_density is None else max_density) * n_codes


def bag_offsets(counts: torch.Tensor) -> torch.Tensor:
    """Start of each bag in a flat list from the bags' sizes ``[bags]`` (``embedding_bag``'s ``offsets``)."""
    offsets = torch.zeros_like(counts)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    return offsets


class SparseCodePass(torch.autograd.Function):
    """``(x, W_enc, b_enc, W_dec, b_dec; centered, pre, active) -> (x̂ [n, d], values [nnz])``, sparse backward.

    ``x`` is ``[n, d]`` in the SAE's working space. The caller computes, without gradient, ``centered =
    x - b_dec``, ``pre = centered @ W_enc + b_enc`` ``[n, m]`` and ``active``: the flat row-major indices
    into ``pre`` of the latents the activation keeps (ReLU: ``pre > 0``; TopK: the selected ones).
    ``values = pre.flatten()[active]`` are the nonzero codes and ``x̂ = Σ values · W_dec[latent] + b_dec``
    per row. Gradients flow to ``x`` (if it asks), ``W_enc``, ``b_enc``, ``W_dec`` and ``b_dec``;
    ``centered``, ``pre`` and ``active`` get none.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, centered, pre, active):
        n, m = pre.shape
        rows, cols = active // m, active % m  # [nnz] each, row-major
        values = pre.view(-1).index_select(0, active)  # [nnz]
        row_offsets = bag_offsets(torch.bincount(rows, minlength=n))
        recon = F.embedding_bag(cols, W_dec, row_offsets, mode="sum", per_sample_weights=values)  # [n, d]
        recon += b_dec
        ctx.save_for_backward(centered, W_enc, W_dec, values, rows, cols, active, row_offsets)
        return recon, values

    @staticmethod
    def backward(ctx, grad_recon, grad_values):
        centered, W_enc, W_dec, values, rows, cols, active, row_offsets = ctx.saved_tensors
        n, m = len(centered), W_enc.shape[1]
        # the codes' gradient at the active pairs: [n, d] @ [d, m] computed at the nnz places only
        grad_codes = grad_values + sampled_products(grad_recon, W_dec, row_offsets, cols)  # [nnz]
        by_latent = torch.argsort(cols, stable=True)  # latent-major order of the active pairs
        latent_rows = rows.index_select(0, by_latent)
        latent_offsets = bag_offsets(torch.bincount(cols, minlength=m))

        def per_latent(source: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            # [m, d]: row j = Σ over active pairs (r, j) of weights · source[r]
            return F.embedding_bag(
                latent_rows, source, latent_offsets, mode="sum", per_sample_weights=weights[by_latent]
            )

        grad_W_dec = per_latent(grad_recon, values)  # [m, d]
        grad_W_enc = per_latent(centered, grad_codes).T.contiguous()  # [m, d] -> [d, m]
        grad_b_enc = grad_codes.new_zeros(m).index_add_(0, cols, grad_codes)  # [m]
        grad_b_dec = grad_recon.sum(0) - W_enc @ grad_b_enc  # decoder bias, minus the encoder's centring
        grad_x = None
        if ctx.needs_input_grad[0]:
            dense = grad_codes.new_zeros(n * m).index_copy_(0, active, grad_codes)
            grad_x = dense.view(n, m) @ W_enc.T  # [n, m] @ [m, d]
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None, None


def sampled_products(
    left: torch.Tensor, right: torch.Tensor, row_offsets: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``(left @ right.T)[r, c]`` for the ``nnz`` (row, column) pairs given row-major, ``[nnz]``.

    ``left`` is ``[n, d]``, ``right`` ``[m, d]``; the pairs are a CSR pattern: ``row_offsets`` ``[n]`` (where each
    row's pairs start) and ``cols`` ``[nnz]`` (sorted within each row, as ``nonzero`` of a row-major mask gives).
    """
    nnz = cols.new_full((1,), len(cols))
    crow = torch.cat([row_offsets, nnz])  # [n + 1]
    with warnings.catch_warnings():  # torch flags its CSR layout as beta on first use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            crow, cols, left.new_zeros(len(cols)), size=(len(left), len(right)), check_invariants=False
        )
        return torch.sparse.sampled_addmm(pattern, left, right.T, beta=0.0).values()


def takes_sparse_path(sae, precision: str) -> bool:
    """Whether this SAE may train on the sparse path at all: CPU, float32 weights, no autocast."""
    return sae.W_enc.device.type == "cpu" and sae.W_enc.dtype == torch.float32 and precision == "float32"


def training_terms(sae, x: torch.Tensor, max_density: float | None = None) -> TrainingTerms | None:
    """Loss, MSE, L1 and L0 of a raw batch ``[n, d_in]`` on the sparse path, or None when its codes are too
    dense for it to pay (the caller then runs :meth:`SAE.training_terms`). Same values as ``sae(x)`` up to rounding."""
    x = sae.normalize(x.to(sae.W_enc.dtype))  # [n, d_in], working space
    n = len(x)
    with torch.no_grad():
        centered = x - sae.b_dec
        pre = torch.addmm(sae.b_enc, centered, sae.W_enc)  # [n, d_in] @ [d_in, d_sae] -> [n, d_sae]
        active = sae.active_latents(pre).view(-1).nonzero().squeeze(1)  # [nnz] flat row-major indices
    if not codes_are_sparse(active.numel(), pre.numel(), max_density):
        return None
    recon, values = SparseCodePass.apply(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, centered, pre, active)
    mse = F.mse_loss(recon, x)
    if sae.decoder_is_unit_norm:
        l1 = values.sum() / n
    else:  # Σᵢ fᵢ‖W_dec,ᵢ‖ over the active latents only
        l1 = (values * sae.W_dec.norm(dim=1).index_select(0, active % pre.shape[1])).sum() / n
    loss, _ = sae.loss_terms(mse, l1)
    return TrainingTerms(loss, mse, l1, torch.tensor(active.numel() / n, dtype=torch.float32))
