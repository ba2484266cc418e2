"""The crosscoder module (Lindsey et al. 2024, with the controls of Minder et al. 2025).

One dictionary of latents reads both models' activations at a layer and writes them back through one decoder
per model::

    W_enc [2, d, d_latent]   b_enc [d_latent]   W_dec [d_latent, 2, d]   b_dec [2, d]
    f  = act(Σ_m x_m @ W_enc[m] + b_enc)            # [n, 2, d] -> [n, d_latent]
    x̂_m = f @ W_dec[:, m] + b_dec[m]                # [n, d_latent] -> [n, d] per model m (0 = A, 1 = B)

Model index 0 is the pretrained model (A), 1 the fine-tuned one (B); their rows are the same tokens.

* **Common scale.** Each model's activations are multiplied by a scalar so that E‖x_m‖ = √d (estimated on the
  first rows, stored in ``cfg.json`` as ``input_scale_a/b``), so neither model dominates the loss and decoder
  norms are comparable across models. Everything below lives in this scaled space.
* **Sparsity.** ``l1``: loss = Σ‖x - x̂‖² + λ Σ_i f_i (‖d_a,i‖ + ‖d_b,i‖) (per-model norms summed, which is what
  makes exclusive latents possible, and also what causes Complete Shrinkage and Latent Decoupling).
  ``batchtopk`` (Bussmann et al. 2024): the ``k·batch`` largest scores ``f_i (‖d_a,i‖ + ‖d_b,i‖)`` of the whole
  batch survive; at inference a latent is on when its score exceeds a threshold estimated during training
  (the mean over the last epoch's batches of the smallest kept score). Dead latents (inactive for
  ``dead_after_tokens`` tokens) get the AuxK loss of Gao et al. 2024: the top-``aux_k`` dead pre-activations
  per token model the residual, weighted by ``aux_coefficient``.
* **Designated shared latents** (Anthropic 2025 update): latents ``0 .. n_shared-1`` have one decoder vector
  for both models and a reduced sparsity cost (``shared_sparsity_scale``: the L1 weight is multiplied by it,
  the BatchTopK score divided by it), so shared structure does not have to be paid for by exclusive latents.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from layershift.dictionaries.crosscoder.config import DEFAULT_DECODER_NORM, TRAINED_FIELDS, CrosscoderConfig
from layershift.dictionaries.weights import DTYPES


def input_scale(rows: np.ndarray) -> float:
    """The scalar that makes the mean row norm √d (float32-exact, so JSON round trips bit for bit)."""
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    return float(np.float32(math.sqrt(rows.shape[1]) / max(float(norms.mean()), np.finfo(np.float64).tiny)))


class CrosscoderOutput(NamedTuple):
    """One forward pass on scaled inputs (scalars are 0-d tensors; ``loss`` carries the gradient)."""

    loss: torch.Tensor  # reconstruction + λ·sparsity (l1) or reconstruction + α·aux (batchtopk)
    reconstruction: torch.Tensor  # Σ over models and dims of the squared error, mean over rows
    sparsity: torch.Tensor  # mean over rows of Σ_i f_i·w_i(‖d_a,i‖+‖d_b,i‖) (w: shared-latent scale)
    aux: torch.Tensor  # AuxK loss (0 when nothing is dead or for l1)
    l0: torch.Tensor  # mean active latents per row
    fvu: torch.Tensor  # [2] fraction of variance unexplained per model in this batch
    features: torch.Tensor  # [n, d_latent] latent activations
    recon: torch.Tensor  # [n, 2, d] reconstruction (scaled space)
    min_kept_score: torch.Tensor  # batchtopk: smallest surviving score this batch (NaN for l1)


class Crosscoder(torch.nn.Module):
    """A two-model crosscoder; ``W_dec`` is assembled from the tied (shared) and the free decoder rows."""

    def __init__(self, cfg: CrosscoderConfig, seed: int = 0, init_decoder_norm: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        if init_decoder_norm is None:
            init_decoder_norm = DEFAULT_DECODER_NORM[cfg.architecture]
        d, n_latent, n_shared = cfg.d_in, cfg.d_latent, cfg.n_shared
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(n_latent, 2, d, generator=generator, dtype=torch.float64)
        directions[:n_shared, 1] = directions[:n_shared, 0]
        directions = directions / directions.norm(dim=-1, keepdim=True) * init_decoder_norm
        self.W_dec_tied = torch.nn.Parameter(directions[:n_shared, 0].to(dtype).contiguous())  # [n_shared, d]
        self.W_dec_free = torch.nn.Parameter(directions[n_shared:].to(dtype).contiguous())  # [rest, 2, d]
        self.W_enc = torch.nn.Parameter(directions.permute(1, 2, 0).to(dtype).contiguous())  # [2, d, latent]
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latent, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(2, d, dtype=dtype))
        weight = torch.ones(n_latent, dtype=dtype)
        weight[:n_shared] = cfg.shared_sparsity_scale
        self.register_buffer("sparsity_weight", weight, persistent=False)  # [d_latent]

    # --- weights -----------------------------------------------------------------------------------------
    @property
    def W_dec(self) -> torch.Tensor:
        """``[d_latent, 2, d]``: tied rows (the same vector for both models) followed by the free rows."""
        tied = self.W_dec_tied[:, None, :].expand(-1, 2, -1)
        return torch.cat([tied, self.W_dec_free], dim=0)

    def decoder_norms(self) -> torch.Tensor:
        """``[d_latent, 2]``: ‖d_a,i‖ and ‖d_b,i‖."""
        return self.W_dec.norm(dim=-1)

    def input_scales(self) -> torch.Tensor:
        return torch.tensor([self.cfg.input_scale_a, self.cfg.input_scale_b], dtype=self.W_enc.dtype)

    # --- what training derives from data ------------------------------------------------------------------
    def initialize_from_data(self, head: list[tuple[np.ndarray, np.ndarray]], n_rows: int) -> None:
        """Set the per-model input scales (cfg) and ``b_dec`` (the scaled data mean) from the first ``n_rows``
        rows of the paired training stream (``head``: its first batches)."""
        if not head:
            raise ValueError("the paired training stream yielded no rows")
        x_a = np.concatenate([a for a, _ in head])[:n_rows]
        x_b = np.concatenate([b for _, b in head])[:n_rows]
        self.cfg.input_scale_a, self.cfg.input_scale_b = input_scale(x_a), input_scale(x_b)
        with torch.no_grad():
            self.b_dec.copy_(self.scale_inputs(x_a, x_b).mean(dim=0))

    def restore_trained_settings(self, saved_cfg: CrosscoderConfig) -> None:
        """Take a checkpoint's input scales and threshold."""
        for name in TRAINED_FIELDS:
            setattr(self.cfg, name, getattr(saved_cfg, name))

    # --- the model ---------------------------------------------------------------------------------------
    def scale_inputs(self, x_a: torch.Tensor | np.ndarray, x_b: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw ``[n, d]`` activations of both models -> scaled, stacked ``[n, 2, d]``."""
        device, dtype = self.W_enc.device, self.W_enc.dtype
        x = torch.stack([torch.as_tensor(x_a), torch.as_tensor(x_b)], dim=1).to(device, dtype)
        return x * self.input_scales().to(device)[None, :, None]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled ``[n, 2, d]`` -> ``[n, d_latent]``."""
        return torch.addmm(self.b_enc, x.flatten(1), self.W_enc.flatten(0, 1))  # [n, 2d] @ [2d, d_latent]

    def selection_scores(self, f: torch.Tensor, norm_sum: torch.Tensor | None = None) -> torch.Tensor:
        """BatchTopK scores ``f_i (‖d_a,i‖+‖d_b,i‖) / w_i`` (shared latents are cheaper to switch on)."""
        norm_sum = self.decoder_norms().sum(dim=1) if norm_sum is None else norm_sum  # [d_latent]
        return f * (norm_sum / self.sparsity_weight)

    def activate(
        self, pre: torch.Tensor, batch_topk: bool, norm_sum: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activations -> (latents ``[n, d_latent]``, smallest kept score or NaN)."""
        f = F.relu(pre)
        nan = torch.full((), math.nan, device=pre.device)
        if self.cfg.architecture == "l1":
            return f, nan
        scores = self.selection_scores(f, norm_sum)
        if not batch_topk and self.cfg.threshold is not None:
            return f * (scores > self.cfg.threshold), nan
        n_keep = min(self.cfg.k * len(f), f.numel())
        values, indices = scores.flatten().topk(n_keep, sorted=False)  # [n·d_latent] -> [k·n]
        keep = torch.zeros(f.numel(), dtype=torch.bool, device=f.device)
        keep[indices[values > 0]] = True
        positive = values[values > 0]
        min_kept = positive.min().detach() if len(positive) else nan
        return f * keep.view_as(f), min_kept

    def encode_scaled(self, x: torch.Tensor, batch_topk: bool = False) -> torch.Tensor:
        """Scaled ``[n, 2, d]`` -> latents ``[n, d_latent]`` (threshold at inference unless ``batch_topk``)."""
        return self.activate(self.pre_activations(x), batch_topk)[0]

    def decode_scaled(self, f: torch.Tensor, W_dec: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``[n, d_latent]`` -> scaled reconstruction ``[n, 2, d]``."""
        W_dec = self.W_dec if W_dec is None else W_dec
        return (f @ W_dec.flatten(1)).view(len(f), 2, -1) + self.b_dec  # [n, d_latent] @ [d_latent, 2d]

    def encode(self, x_a: torch.Tensor | np.ndarray, x_b: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw activations of both models (same tokens) -> latents ``[n, d_latent]``."""
        return self.encode_scaled(self.scale_inputs(x_a, x_b))

    def reconstruct(
        self, x_a: torch.Tensor | np.ndarray, x_b: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw activations -> raw-unit reconstructions ``(x̂_a, x̂_b)``."""
        recon = self.decode_scaled(self.encode(x_a, x_b)) / self.input_scales().to(self.W_enc.device)[:, None]
        return recon[:, 0], recon[:, 1]

    def forward(
        self,
        x: torch.Tensor,
        dead: torch.Tensor | None = None,
        aux_k: int = 0,
        aux_coefficient: float = 0.0,
        l1_coefficient: float | None = None,
    ) -> CrosscoderOutput:
        """Training forward pass on scaled ``[n, 2, d]``; ``dead`` ``[d_latent]`` marks latents for AuxK."""
        W_dec = self.W_dec  # [d_latent, 2, d]
        norm_sum = W_dec.norm(dim=-1).sum(dim=1)  # [d_latent]: ‖d_a,i‖ + ‖d_b,i‖
        pre = self.pre_activations(x)  # [n, 2, d] -> [n, d_latent]
        f, min_kept = self.activate(pre, batch_topk=True, norm_sum=norm_sum.detach())
        recon = self.decode_scaled(f, W_dec)  # [n, d_latent] -> [n, 2, d]
        error = x - recon
        reconstruction = error.pow(2).sum(dim=(1, 2)).mean()
        sparsity = (f @ (norm_sum * self.sparsity_weight)).mean()  # [n, d_latent] @ [d_latent] -> [n]
        aux = torch.zeros((), device=x.device, dtype=x.dtype)
        if self.cfg.architecture == "l1":
            lam = self.cfg.l1_coefficient if l1_coefficient is None else l1_coefficient
            loss = reconstruction + lam * sparsity
        else:
            if dead is not None and aux_k > 0 and bool(dead.any()):
                aux = self.auxk_loss(pre, error.detach(), dead, aux_k, W_dec)
            loss = reconstruction + aux_coefficient * aux
        with torch.no_grad():
            l0 = (f > 0).sum(dim=1, dtype=torch.float32).mean()
            total = (x - x.mean(dim=0)).pow(2).sum(dim=(0, 2)).clamp_min(torch.finfo(x.dtype).tiny)
            fvu = error.pow(2).sum(dim=(0, 2)) / total  # [2]
        return CrosscoderOutput(loss, reconstruction, sparsity, aux, l0, fvu, f, recon, min_kept)

    def auxk_loss(
        self,
        pre: torch.Tensor,
        error: torch.Tensor,
        dead: torch.Tensor,
        aux_k: int,
        W_dec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gao et al. 2024: the top-``aux_k`` dead latents per row model the residual ``error [n, 2, d]``."""
        k = min(aux_k, int(dead.sum()))
        dead_pre = torch.where(dead, F.relu(pre), torch.zeros_like(pre))  # only dead latents compete
        values, indices = dead_pre.topk(k, dim=1)  # [n, d_latent] -> [n, k]
        f_aux = torch.zeros_like(pre).scatter(1, indices, values)
        W_dec = self.W_dec if W_dec is None else W_dec
        error_hat = (f_aux @ W_dec.flatten(1)).view_as(error)  # no bias: it models a residual
        scale = (
            (error - error.mean(dim=0)).pow(2).sum(dim=(1, 2)).mean().clamp_min(torch.finfo(pre.dtype).tiny)
        )
        return (error_hat - error).pow(2).sum(dim=(1, 2)).mean() / scale
