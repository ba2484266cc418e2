"""The SAE module: two architectures over one set of weights (SAELens names and shapes)::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]

* ``relu`` (the paper, §3.2.3): ``f = ReLU((x - b_dec) @ W_enc + b_enc)``, ``x̂ = f @ W_dec + b_dec``,
  loss = MSE + λ·Σᵢ fᵢ‖W_dec,ᵢ‖. MSE is the mean over batch *and* input dimensions (``nn.MSELoss``, the scale
  behind the paper's "loss on the order of 1e-4"); the L1 term is summed over latents and averaged over the
  batch. With ``normalize_decoder`` every decoder row is put back on the unit sphere after each step, so the
  decoder-norm weight is 1; without it the L1 is weighted by the row norms (Anthropic's April 2024 update) so the
  SAE cannot dodge the penalty by shrinking ``f`` and growing ``W_dec``.
* ``topk`` (Gao et al. 2024): keep the ``k`` largest pre-activations per row (ReLU after), loss = MSE.

Inputs may be normalised (``SAEConfig.normalize_activations``): the statistics are estimated from the start of
the training stream (:meth:`SAE.initialize_from_data`) and stored in ``cfg.json``; :meth:`SAE.encode` takes
*raw* activations and normalises them, :meth:`SAE.decode` returns reconstructions in raw units. Losses and
``mse`` are measured in the normalised ("working") space the SAE is trained in.
"""

from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from layershift.dictionaries import sparse_codes
from layershift.dictionaries.sae.config import SAEConfig, architecture_fields
from layershift.dictionaries.weights import DTYPES


def activation_statistics(rows: np.ndarray, mode: str) -> tuple[np.ndarray, float, np.ndarray | None]:
    """From ``[n, d_in]`` raw rows: (mean of the normalised rows -> b_dec init, scale, mean to subtract).

    ``expected_average_only_in`` scales so that E‖x‖ = √d_in (SAELens / Anthropic); ``center_and_scale``
    first subtracts the mean, then scales so that E‖x - μ‖ = √d_in. One scalar scale keeps directions intact.
    """
    rows = rows.astype(np.float64)
    mean = rows.mean(axis=0)  # [d_in]
    if mode == "none":
        return mean, 1.0, None
    centered = mode == "center_and_scale"
    norms = np.linalg.norm(rows - mean if centered else rows, axis=1)
    scale = math.sqrt(rows.shape[1]) / max(float(norms.mean()), np.finfo(np.float64).tiny)
    if centered:
        return np.zeros_like(mean), scale, mean
    return mean * scale, scale, None


class SAEOutput(NamedTuple):
    """Everything one forward pass measures (scalars are 0-d tensors; ``loss`` carries the gradient)."""

    loss: torch.Tensor  # mse + λ·l1 (relu) or mse + aux (topk): what training minimises
    mse: torch.Tensor  # mean squared error per element, in the normalised working space
    l1: torch.Tensor  # mean over rows of Σᵢ fᵢ·‖W_dec,ᵢ‖ (decoder-norm weighted L1)
    l0: torch.Tensor  # mean number of active latents per row
    fvu: torch.Tensor  # fraction of variance unexplained in this batch (1 - explained variance)
    recon: torch.Tensor  # [n, d_in] reconstruction in raw input units
    features: torch.Tensor  # [n, d_sae] latent activations
    aux: torch.Tensor  # auxiliary loss term (0: no AuxK implemented)


class CenteredAffine(torch.autograd.Function):
    """``(x - b_dec) @ W_enc + b_enc`` with a backward pass that does only the work training needs.

    Autograd on that expression computes ``x - b_dec``'s gradient, a full ``[n, d_sae] @ [d_sae, d_in]`` matmul,
    just to sum it into ``b_dec``; rewritten as ``x @ W_enc + (b_enc - b_dec @ W_enc)`` it instead adds an
    outer product and a second ``[d_in, d_sae]`` gradient into ``W_enc`` every step (3–7 % of an SAE's
    training time at d_in 384, d_sae 512, batch 128, interleaved A/B). Here ``W_enc`` gets one matmul of the
    centred input, ``b_dec`` a matrix-vector product, and ``x`` a gradient only when it asks for one.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, W_enc, b_enc, b_dec):
        centered = x - b_dec  # [n, d_in]
        ctx.save_for_backward(centered, W_enc)
        return torch.addmm(b_enc, centered, W_enc)  # [n, d_in] @ [d_in, d_sae] -> [n, d_sae]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        centered, W_enc = ctx.saved_tensors
        grad = grad.to(centered.dtype)  # a CPU autocast forward hands back a lower-precision gradient
        grad_b_enc = grad.sum(0)  # [n, d_sae] -> [d_sae]
        grad_x = grad @ W_enc.T if ctx.needs_input_grad[0] else None  # [n, d_sae] @ [d_sae, d_in]
        grad_W_enc = centered.T @ grad if ctx.needs_input_grad[1] else None  # [d_in, n] @ [n, d_sae]
        grad_b_dec = -(W_enc @ grad_b_enc) if ctx.needs_input_grad[3] else None  # [d_in, d_sae] @ [d_sae]
        return grad_x, grad_W_enc, grad_b_enc, grad_b_dec


class SAE(torch.nn.Module):
    """Standard ReLU SAE; ``SAE(cfg)`` returns the subclass that ``cfg.architecture`` names."""

    # True only inside train_sae while it keeps decoder rows on the unit sphere: the L1 is then a plain sum
    # (same value up to rounding, no gradient through the row norms).
    decoder_is_unit_norm = False

    def __new__(cls, cfg: SAEConfig | None = None, *args: Any, **kwargs: Any) -> SAE:
        if cls is SAE and cfg is not None:
            cls = SAE_CLASSES[cfg.architecture]
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = copy.deepcopy(cfg)  # training writes normalisation statistics into it
        dtype = DTYPES[cfg.dtype]
        generator = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator, dtype=torch.float64)
        W_dec /= W_dec.norm(dim=1, keepdim=True)  # unit-norm decoder rows
        self.W_dec = torch.nn.Parameter(W_dec.to(dtype))  # [d_sae, d_in]
        # tied init: W_enc [d_in, d_sae] = W_dec.T
        self.W_enc = torch.nn.Parameter(self.W_dec.detach().T.clone().contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        # Normalisation statistics live in cfg.json, not the weights file, so SAELens sees exactly four tensors.
        self.register_buffer("activation_scale", torch.tensor(1.0, dtype=dtype), persistent=False)
        self.register_buffer("activation_mean", torch.zeros(cfg.d_in, dtype=dtype), persistent=False)
        self._load_normalization_from_cfg()

    # --- input normalisation -------------------------------------------------------------------------------
    def _load_normalization_from_cfg(self) -> None:
        with torch.no_grad():
            self.activation_scale.fill_(self.cfg.activation_scale)
            if self.cfg.activation_mean is not None:
                mean = torch.tensor(self.cfg.activation_mean, dtype=torch.float64)
                if mean.shape != (self.cfg.d_in,):
                    raise ValueError(
                        f"activation_mean has shape {tuple(mean.shape)}, expected ({self.cfg.d_in},)"
                    )
                self.activation_mean.copy_(mean)
            else:
                self.activation_mean.zero_()

    def set_normalization(self, scale: float, mean: np.ndarray | None) -> None:
        """Record input statistics in the config (→ cfg.json) and the buffers that apply them."""
        self.cfg.activation_scale = float(np.float32(scale))  # float32-exact, so JSON round trips bit for bit
        self.cfg.activation_mean = None if mean is None else [float(v) for v in np.asarray(mean, np.float32)]
        self._load_normalization_from_cfg()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations -> the SAE's working space (identity for ``normalize_activations="none"``)."""
        mode = self.cfg.normalize_activations
        if mode == "none":
            return x
        if mode == "center_and_scale":
            x = x - self.activation_mean
        return x * self.activation_scale

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Working space -> raw activation units (inverse of :meth:`normalize`)."""
        mode = self.cfg.normalize_activations
        if mode == "none":
            return x
        x = x / self.activation_scale
        return x + self.activation_mean if mode == "center_and_scale" else x

    def initialize_from_data(self, head: list[np.ndarray], n_rows: int) -> None:
        """Set normalisation statistics and ``b_dec`` (the working-space data mean) from the first ``n_rows``
        rows of the training stream (``head``: its first batches, ``[b, d_in]`` each)."""
        rows = np.concatenate(head)[:n_rows] if head else np.zeros((0, self.cfg.d_in), np.float32)
        if not len(rows):
            raise ValueError("the training stream yielded no rows")
        b_dec, scale, mean = activation_statistics(rows, self.cfg.normalize_activations)
        self.set_normalization(scale, mean)
        with torch.no_grad():
            self.b_dec.copy_(torch.from_numpy(b_dec))

    def restore_trained_settings(self, saved_cfg: SAEConfig) -> None:
        """Take the normalisation statistics of a checkpoint's SAE (same architecture required)."""
        if architecture_fields(saved_cfg) != architecture_fields(self.cfg):
            raise ValueError("checkpoint SAE config differs from the requested one")
        self.set_normalization(saved_cfg.activation_scale, saved_cfg.activation_mean)

    # --- the model ----------------------------------------------------------------------------------------
    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations -> latents (ReLU)."""
        return F.relu(pre)

    def active_latents(self, pre: torch.Tensor) -> torch.Tensor:
        """Which latents :meth:`activate` leaves nonzero, as a bool mask like ``pre``."""
        return pre > 0

    def encode_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Working-space inputs ``[n, d_in]`` -> latents ``[n, d_sae]``: ``activate((x - b_dec) @ W_enc + b_enc)``
        (:class:`CenteredAffine`: one matmul per pass for ``W_enc``, none for ``x`` unless it needs a gradient)."""
        return self.activate(CenteredAffine.apply(x, self.W_enc, self.b_enc, self.b_dec))

    def decode_normalized(self, f: torch.Tensor) -> torch.Tensor:
        """Latents ``[n, d_sae]`` -> working-space reconstruction ``[n, d_in]``."""
        return torch.addmm(self.b_dec, f, self.W_dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations ``[n, d_in]`` -> latents ``[n, d_sae]`` (normalises, subtracts ``b_dec``)."""
        return self.encode_normalized(self.normalize(x.to(self.W_enc.dtype)))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Latents ``[n, d_sae]`` -> reconstruction ``[n, d_in]`` in raw activation units."""
        return self.denormalize(self.decode_normalized(f))

    def sparsity_loss(self, f: torch.Tensor) -> torch.Tensor:
        """Mean over rows of Σᵢ fᵢ‖W_dec,ᵢ‖ (f ≥ 0, so this is the decoder-norm weighted L1)."""
        if self.decoder_is_unit_norm:
            return f.sum() / len(f)
        return (f @ self.W_dec.norm(dim=1)).mean()  # [n, d_sae] @ [d_sae] -> [n]

    def loss_terms(self, mse: torch.Tensor, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, aux) from the reconstruction and sparsity terms."""
        return mse + self.cfg.l1_coefficient * l1, torch.zeros((), device=mse.device)

    def _dense_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Working-space batch, latents, reconstruction, mse, l1, loss, aux of a raw batch ``[n, d_in]``."""
        x = self.normalize(x.to(self.W_enc.dtype))
        f = self.encode_normalized(x)  # [n, d_in] -> [n, d_sae]
        recon = self.decode_normalized(f)  # [n, d_sae] -> [n, d_in]
        mse = F.mse_loss(recon, x)
        l1 = self.sparsity_loss(f)
        loss, aux = self.loss_terms(mse, l1)
        return x, f, recon, mse, l1, loss, aux

    @staticmethod
    def _l0(f: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (f > 0).sum(dim=-1, dtype=torch.float32).mean()  # mean active latents per row

    def forward(self, x: torch.Tensor) -> SAEOutput:
        """Encode, decode and measure a raw batch ``[n, d_in]``."""
        x, f, recon, mse, l1, loss, aux = self._dense_pass(x)
        with torch.no_grad():
            total = (x - x.mean(dim=0)).pow(2).sum().clamp_min(torch.finfo(x.dtype).tiny)
            fvu = mse.detach() * x.numel() / total
        return SAEOutput(loss, mse, l1, self._l0(f), fvu, self.denormalize(recon), f, aux)

    def training_terms(self, x: torch.Tensor) -> sparse_codes.TrainingTerms:
        """The dense path's loss, mse, l1 and l0 of a raw batch: :meth:`forward`'s values, bit for bit, without
        what only reports need (the batch's FVU, the reconstruction in raw units: ~10 % of a step at d_in 384,
        d_sae 1024, batch 256)."""
        _, f, _, mse, l1, loss, _ = self._dense_pass(x)
        return sparse_codes.TrainingTerms(loss, mse, l1, self._l0(f))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Put every decoder row back on the unit sphere, in place."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Make decoder rows unit norm without changing the function (scales encoder columns instead)."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-12)  # [d_sae]
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms)
        self.b_enc.mul_(norms)


class TopKSAE(SAE):
    """TopK SAE (Gao et al. 2024): the ``k`` largest pre-activations per row survive, then ReLU."""

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)  # [n, d_sae] -> [n, k]
        return torch.zeros_like(pre).scatter_(-1, indices, F.relu(values))  # [n, k] -> [n, d_sae]

    def active_latents(self, pre: torch.Tensor) -> torch.Tensor:
        return self.activate(pre) > 0

    def loss_terms(self, mse: torch.Tensor, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux = torch.zeros((), device=mse.device)
        return mse + aux, aux


SAE_CLASSES: dict[str, type[SAE]] = {"relu": SAE, "topk": TopKSAE}
