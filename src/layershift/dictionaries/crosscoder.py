"""Sparse crosscoders for model diffing (Lindsey et al. 2024), with the controls of Minder et al. 2025.

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
* **Relative decoder norm** r_i = ‖d_b,i‖ / (‖d_a,i‖ + ‖d_b,i‖): ``pretrained-only`` below ``pretrained_only_below``,
  ``finetuned-only`` above ``finetuned_only_above``, ``shared`` between, ``tied`` for designated shared latents,
  ``dead`` for latents that never fire.
* **Latent Scaling** (Minder et al. 2025). For an exclusive latent j with own-model decoder u = d_own,j, fit
  the closed-form least-squares scale β = Σ_t f_j ⟨u, y_t⟩ / (‖u‖² Σ_t f_j²) of f_j·u against, per model m,
  the error with j removed (ε = x_m − x̂_m + f_j d_m,j) and the bias-free reconstruction (r = x̂_m − b_dec,m).
  ν^ε = β^ε_other / β^ε_own large: the other model still holds the direction in its *error*, so its decoder
  was shrunk away (Complete Shrinkage); ν^r = β^r_other / β^r_own large: other latents reconstruct it in the
  other model (Latent Decoupling). Either flags the latent: its exclusivity is a sparsity artefact, not data.

On disk: ``cfg.json`` + ``crosscoder_weights.safetensors`` (``W_enc [2, d, d_latent]``, ``b_enc``,
``W_dec [d_latent, 2, d]``, ``b_dec [2, d]``), each written atomically, with ``format_version``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from layershift.analysis.chance import decoder_cosine_matrix
from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE, decoder_rows
from layershift.core import training
from layershift.core.io import read_json, read_safetensors, write_json, write_safetensors
from layershift.data.shards import keep_pair_in_memory, open_paired, shard_provenance, zip_paired
from layershift.study.schema import from_section

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "crosscoder_weights.safetensors"
FORMAT_VERSION = 1
ARCHITECTURES = ("batchtopk", "l1")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
# Initial per-model decoder row norm: unit rows as in TopK/BatchTopK SAEs; 0.08 for L1 (Kissane et al. 2024).
DEFAULT_DECODER_NORM = {"batchtopk": 1.0, "l1": 0.08}
# Training fields that must agree between a checkpoint and the run that resumes it (epochs may grow).
RESUME_FIELDS = (
    "lr",
    "batch_size",
    "seed",
    "split_seed",
    "holdout_fraction",
    "init_decoder_norm",
    "l1_warmup_steps",
    "aux_k",
    "aux_coefficient",
)

PairedBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (x_a [b, d], x_b [b, d]) raw, same tokens


@dataclass
class CrosscoderConfig:
    """What a crosscoder is: shapes, sparsity, shared latents, input scales, threshold (→ ``cfg.json``)."""

    d_in: int  # width of each model's activations at the layer (the same for both models)
    d_latent: int = 2048  # latents in the shared dictionary (2× a stage SAE's 1024: room for both models)
    architecture: Literal["batchtopk", "l1"] = "batchtopk"  # BatchTopK (Minder et al.) or L1 (Lindsey et al.)
    k: int = 32  # batchtopk: mean active latents per token (k·batch scores kept per batch)
    l1_coefficient: float = 2.0  # l1: λ on Σ f_i(‖d_a,i‖+‖d_b,i‖) against the summed squared error
    n_shared: int = 0  # designated shared latents (indices 0..n_shared-1) with one decoder for both models
    shared_sparsity_scale: float = 0.1  # their sparsity cost multiplier (L1 weight ×, BatchTopK score ÷)
    input_scale_a: float = 1.0  # multiplier of model A's activations so E‖x_a‖ = √d_in (set by training)
    input_scale_b: float = 1.0  # multiplier of model B's activations so E‖x_b‖ = √d_in (set by training)
    threshold: float | None = None  # batchtopk inference score threshold (set by training; None: top-k)
    hook_name: str = ""  # e.g. "hidden_states.6" (the layer it reads)
    dtype: str = "float32"  # parameter dtype
    metadata: dict = field(default_factory=dict)  # model/dataset/layer/seed provenance
    format_version: int = FORMAT_VERSION  # on-disk format of cfg.json + weights

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.d_in < 1 or self.d_latent < 1:
            raise ValueError(f"d_in and d_latent must be positive, got {self.d_in}, {self.d_latent}")
        if not 0 <= self.n_shared < self.d_latent:
            raise ValueError(f"n_shared must be in [0, d_latent), got {self.n_shared}")
        if self.architecture == "batchtopk" and not 1 <= self.k <= self.d_latent:
            raise ValueError(f"k must be in [1, d_latent={self.d_latent}], got {self.k}")
        if not self.shared_sparsity_scale > 0:
            raise ValueError(f"shared_sparsity_scale must be > 0, got {self.shared_sparsity_scale}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(f"cfg format_version {self.format_version} is newer than this layershift")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrosscoderConfig:
        return from_section(cls, data)


@dataclass
class CrosscoderTrainConfig:
    """How a crosscoder is trained (Adam over streamed paired batches)."""

    lr: float = 5e-5  # Adam learning rate
    epochs: int = 10  # passes over the paired rows
    batch_size: int = 256  # rows per step in shard training (train_crosscoder takes the caller's batches)
    seed: int = 0  # seeds the initialisation
    init_decoder_norm: float | None = None  # initial ‖d_m,i‖ (encoder = W_dec^T); None: DEFAULT_DECODER_NORM
    l1_warmup_steps: int = 0  # l1: λ ramps linearly from 0 over this many steps
    aux_k: int | None = None  # batchtopk AuxK: dead latents per token used on the residual (None: d_in // 2)
    aux_coefficient: float = 1 / 32  # batchtopk AuxK loss weight α (Gao et al. 2024)
    dead_after_tokens: int = 1_000_000  # a latent inactive for this many training tokens counts as dead
    init_rows: int = 16384  # rows at the start of epoch 0 that set the input scales and b_dec
    holdout_fraction: float = 0.1  # shard training: share of rows held out for evaluation
    split_seed: int = 0  # shard training: seeds the held-out rows (the SAEs' split seed: the same rows)
    shuffle: bool = True  # shard training: shuffle row groups and rows (same permutation for both models)
    shuffle_buffer_groups: int = 8  # shard training: row groups mixed together when shuffling
    memory_cache_mb: float = 1024.0  # shard training: both stages' rows kept in RAM when they fit (as SAEs)
    eval_batch_size: int = 4096  # rows per batch when evaluating
    threads: int | None = None  # torch CPU threads (None: leave torch's setting)
    device: str = "auto"  # "auto" = cuda if available else cpu; or any torch device string


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


# --- files ------------------------------------------------------------------------------------------------
def save_crosscoder(cc: Crosscoder, directory: str | os.PathLike) -> None:
    """Write ``crosscoder_weights.safetensors`` then ``cfg.json`` into ``directory``, each atomically."""
    directory = Path(directory)
    tensors = {
        "W_enc": cc.W_enc,  # [2, d, d_latent]
        "b_enc": cc.b_enc,  # [d_latent]
        "W_dec": cc.W_dec,  # [d_latent, 2, d]
        "b_dec": cc.b_dec,  # [2, d]
    }
    write_safetensors(tensors, directory / WEIGHTS_FILENAME, FORMAT_VERSION)
    write_json(cc.cfg.to_dict(), directory / CFG_FILENAME)


def load_crosscoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Crosscoder:
    """Read a crosscoder saved by :func:`save_crosscoder`, checking every shape and the tied decoder rows."""
    directory = Path(directory)
    cc = Crosscoder(CrosscoderConfig.from_dict(read_json(directory / CFG_FILENAME)))
    shapes = {name: tuple(getattr(cc, name).shape) for name in WEIGHT_NAMES}
    state = read_safetensors(directory / WEIGHTS_FILENAME, shapes, DTYPES[cc.cfg.dtype])
    n_shared = cc.cfg.n_shared
    if not torch.equal(state["W_dec"][:n_shared, 0], state["W_dec"][:n_shared, 1]):
        raise ValueError(f"{directory}: the {n_shared} designated shared latents have untied decoders")
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "b_dec"):
            getattr(cc, name).copy_(state[name])
        cc.W_dec_tied.copy_(state["W_dec"][:n_shared, 0])
        cc.W_dec_free.copy_(state["W_dec"][n_shared:])
    return cc.to(device)


# --- training ---------------------------------------------------------------------------------------------
def input_scale(rows: np.ndarray) -> float:
    """The scalar that makes the mean row norm √d (float32-exact, so JSON round trips bit for bit)."""
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    return float(np.float32(math.sqrt(rows.shape[1]) / max(float(norms.mean()), np.finfo(np.float64).tiny)))


def initialize_from_data(cc: Crosscoder, head: list[tuple[np.ndarray, np.ndarray]], n_rows: int) -> None:
    """Set the per-model input scales (cfg) and ``b_dec`` (the scaled data mean) from the first rows."""
    if not head:
        raise ValueError("the paired training stream yielded no rows")
    x_a = np.concatenate([a for a, _ in head])[:n_rows]
    x_b = np.concatenate([b for _, b in head])[:n_rows]
    cc.cfg.input_scale_a, cc.cfg.input_scale_b = input_scale(x_a), input_scale(x_b)
    with torch.no_grad():
        cc.b_dec.copy_(cc.scale_inputs(x_a, x_b).mean(dim=0))


def train_crosscoder(
    paired_batches: Callable[[int], PairedBatches],
    cfg: CrosscoderConfig,
    train: CrosscoderTrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    eval_batches: Callable[[], PairedBatches] | None = None,
) -> tuple[Crosscoder, dict]:
    """Train on ``paired_batches(epoch)`` (raw ``(x_a, x_b)`` float arrays of the same tokens, streamed).

    With ``checkpoint_dir`` weights, Adam state and trainer state are saved after every epoch and training
    resumes from the last complete one. Metrics: ``loss_curve`` (per-epoch means), ``steps``, ``epochs``,
    ``seconds``, and :func:`evaluate_crosscoder` on ``eval_batches()`` (default: ``paired_batches(0)``, then
    ``evaluation_split`` = "train").
    """
    with training.torch_threads(train.threads):
        cc, metrics = _train(paired_batches, cfg, train, checkpoint_dir, progress)
        evaluation = evaluate_crosscoder(cc, eval_batches() if eval_batches else paired_batches(0))
    return cc, metrics | evaluation | {"evaluation_split": "heldout" if eval_batches else "train"}


def train_crosscoder_on_shards(
    dir_a: str | os.PathLike,
    dir_b: str | os.PathLike,
    cfg: CrosscoderConfig,
    train: CrosscoderTrainConfig,
    *,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
) -> tuple[Crosscoder, dict]:
    """Train on two layers' Parquet shards of the same tokens (pretrained ``dir_a``, fine-tuned ``dir_b``).

    Row groups are checked to pair up (:func:`~layershift.data.shards.open_paired`); the rows held out for the
    evaluation metrics are :func:`~layershift.data.shards.holdout_rows` of ``train.split_seed`` (the SAEs' rows
    with the same split seed); epoch ``e`` shuffles with seed ``train.seed + e``, the same permutation for
    both models. Shard metadata (model, dataset, layer) fills ``cfg.metadata``.
    """
    reader_a, reader_b = open_paired(dir_a, dir_b)
    if reader_a.d_model != cfg.d_in or reader_b.d_model != cfg.d_in:
        raise ValueError(
            f"activations have d_model {reader_a.d_model}/{reader_b.d_model}, cfg.d_in={cfg.d_in}"
        )
    train_a, heldout_a = reader_a.split(train.holdout_fraction, train.split_seed)
    train_b, heldout_b = reader_b.split(train.holdout_fraction, train.split_seed)
    eval_a, eval_b = (heldout_a, heldout_b) if heldout_a else (train_a, train_b)
    keep_pair_in_memory(train_a, train_b, train.memory_cache_mb)
    provenance, hook_name = shard_provenance(reader_a, cfg.hook_name, drop=("stage",))
    cfg = dataclasses.replace(cfg, hook_name=hook_name, metadata={**provenance, **cfg.metadata})

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return zip_paired(
            train_a, train_b, train.batch_size, train.shuffle, train.seed + epoch, train.shuffle_buffer_groups
        )

    cc, metrics = train_crosscoder(
        batches,
        cfg,
        train,
        checkpoint_dir,
        progress,
        lambda: zip_paired(eval_a, eval_b, train.eval_batch_size),
    )
    metrics |= training.holdout_metrics(train_a.n_rows, heldout_a, train.split_seed)
    return cc, metrics


EPOCH_CURVES = ("epoch_loss", "epoch_reconstruction", "epoch_sparsity", "epoch_aux", "epoch_l0")


def _train(paired_batches, cfg, train, checkpoint_dir, progress) -> tuple[Crosscoder, dict]:
    device = training.resolve_device(train.device)
    cfg = training.with_train_config(cfg, train)
    cc = Crosscoder(cfg, seed=train.seed, init_decoder_norm=train.init_decoder_norm).to(device)
    optimizer = training.make_adam([p for p in cc.parameters() if p.numel()], train.lr)
    state = {"epoch": 0, "step": 0, "tokens": 0} | {key: [] for key in EPOCH_CURVES}
    steps = CrosscoderSteps(cc, optimizer, train, state, device)
    resumed = training.load_checkpoint(
        checkpoint_dir, optimizer, dataclasses.asdict(train), RESUME_FIELDS, train.epochs
    )
    if resumed:
        path, loaded, extra = resumed
        state.update(loaded)
        steps.idle = extra["idle"].to(device)
        restore_checkpoint_weights(cc, path)
    resumed_from = state["epoch"]

    def checkpoint() -> None:
        training.save_checkpoint(
            checkpoint_dir,
            lambda d: save_crosscoder(cc, d),
            optimizer,
            state,
            dataclasses.asdict(train),
            {"idle": steps.idle},
        )

    start = time.perf_counter()
    training.fit_epochs(
        paired_batches,
        train.epochs,
        state,
        steps,
        init_rows=train.init_rows,
        rows_of=lambda pair: len(pair[0]),
        checkpoint=checkpoint if checkpoint_dir else None,
        progress=progress,
        name="crosscoder epoch",
    )
    metrics = {
        "loss_curve": {key: state[key] for key in EPOCH_CURVES},
        "epochs": state["epoch"],
        "steps": state["step"],
        "resumed_from_epoch": resumed_from,
        "seconds": time.perf_counter() - start,
        "threshold": cc.cfg.threshold,
        "device": str(device),
    }
    return cc, metrics


class CrosscoderSteps:
    """One Adam step per paired batch for :func:`~layershift.core.training.fit_epochs`: epoch means into ``state``,
    the BatchTopK threshold from the mean smallest kept score of each pass, idle-token counters for AuxK."""

    def __init__(self, cc: Crosscoder, optimizer, train: CrosscoderTrainConfig, state: dict, device) -> None:
        self.cc, self.optimizer, self.train, self.state = cc, optimizer, train, state
        self.aux_k = train.aux_k if train.aux_k is not None else max(cc.cfg.d_in // 2, 1)
        # tokens since each latent last fired
        self.idle = torch.zeros(cc.cfg.d_latent, dtype=torch.int64, device=device)

    def initialize(self, head: list[tuple[np.ndarray, np.ndarray]]) -> None:
        initialize_from_data(self.cc, head, self.train.init_rows)

    def start_epoch(self) -> None:
        self.totals = torch.zeros(len(EPOCH_CURVES), dtype=torch.float64, device=self.idle.device)
        self.kept_scores: list[float] = []
        self.steps = 0

    def step(self, pair: tuple[np.ndarray, np.ndarray]) -> None:
        cc, train, state = self.cc, self.train, self.state
        x = cc.scale_inputs(*pair)  # 2 × [b, d] -> [b, 2, d]
        warmup = min(1.0, (state["step"] + 1) / train.l1_warmup_steps) if train.l1_warmup_steps else 1.0
        dead = self.idle >= train.dead_after_tokens
        out = cc(x, dead, self.aux_k, train.aux_coefficient, cc.cfg.l1_coefficient * warmup)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            fired = (out.features > 0).any(dim=0)
            self.idle = torch.where(fired, torch.zeros_like(self.idle), self.idle + len(x))
            self.totals += torch.stack([out.loss, out.reconstruction, out.sparsity, out.aux, out.l0]).double()
        if not math.isnan(out.min_kept_score.item()):
            self.kept_scores.append(out.min_kept_score.item())
        self.steps, state["step"], state["tokens"] = (
            self.steps + 1,
            state["step"] + 1,
            state["tokens"] + len(x),
        )

    def end_epoch(self, rows: int) -> None:
        for key, value in zip(EPOCH_CURVES, (self.totals / self.steps).tolist(), strict=True):
            self.state[key].append(value)
        if self.kept_scores:
            self.cc.cfg.threshold = float(np.mean(self.kept_scores))


def restore_checkpoint_weights(cc: Crosscoder, path: Path) -> None:
    """Copy a checkpoint's weights, input scales and threshold into ``cc``."""
    saved = load_crosscoder(path)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "b_dec", "W_dec_tied", "W_dec_free"):
            getattr(cc, name).copy_(getattr(saved, name))
    for name in ("input_scale_a", "input_scale_b", "threshold"):
        setattr(cc.cfg, name, getattr(saved.cfg, name))


# --- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_crosscoder(cc: Crosscoder, paired_batches: PairedBatches) -> dict[str, Any]:
    """Explained variance per model, MSE, L0 and dead fraction over raw paired batches (inference mode)."""
    device = cc.W_enc.device
    sse = torch.zeros(2, dtype=torch.float64, device=device)
    x_sum = torch.zeros(2, cc.cfg.d_in, dtype=torch.float64, device=device)
    x_sq = torch.zeros(2, dtype=torch.float64, device=device)
    active = 0.0
    fired = torch.zeros(cc.cfg.d_latent, dtype=torch.bool, device=device)
    n = 0
    for x_a, x_b in paired_batches:
        x = cc.scale_inputs(x_a, x_b)  # [b, 2, d]
        f = cc.encode_scaled(x)  # [b, 2, d] -> [b, d_latent]
        sse += (cc.decode_scaled(f) - x).double().pow(2).sum(dim=(0, 2))
        x_sum += x.double().sum(dim=0)
        x_sq += x.double().pow(2).sum(dim=(0, 2))
        active += float((f > 0).sum())
        fired |= (f > 0).any(dim=0)
        n += len(x)
    if n == 0:
        raise ValueError("evaluate_crosscoder got no rows")
    explained = training.explained_variance(sse, x_sq, x_sum, n).tolist()  # NaN: undefined (< 2 rows)
    return {
        "explained_variance_a": explained[0],
        "explained_variance_b": explained[1],
        "mse": float(sse.sum() / (2 * n * cc.cfg.d_in)),
        "l0": active / n,
        "dead_fraction": 1.0 - float(fired.double().mean()),
        "n_rows": n,
    }


# --- latent table: relative norms + latent scaling --------------------------------------------------------
@dataclass
class LatentTableConfig:
    """How latents are classified by relative decoder norm and vetted by latent scaling."""

    pretrained_only_below: float = 0.1  # r = ‖d_b‖/(‖d_a‖+‖d_b‖) below this: pretrained-only
    finetuned_only_above: float = 0.9  # r above this: fine-tuned-only
    # A latent called exclusive is flagged when the other model carries at least this share of its direction
    # (ν = β_other / β_own): in its reconstruction error (Complete Shrinkage), or rebuilt by other latents
    # (Latent Decoupling); 0.5 = the other model holds at least half of what the own model does.
    max_nu_error: float = 0.5  # ν^ε above this flags Complete Shrinkage
    max_nu_reconstruction: float = 0.5  # ν^r above this flags Latent Decoupling
    min_firing_rate: float = 1e-5  # latents firing on a smaller fraction of tokens are "dead"


def relative_norms(cc: Crosscoder) -> np.ndarray:
    """``[d_latent]`` r_i = ‖d_b,i‖ / (‖d_a,i‖ + ‖d_b,i‖) (0.5 where both norms are 0)."""
    norms = cc.decoder_norms().detach().to("cpu", torch.float64).numpy()
    total = norms.sum(axis=1)
    return np.where(total > 0, norms[:, 1] / np.where(total > 0, total, 1.0), 0.5)


def norm_classes(cc: Crosscoder, cfg: LatentTableConfig) -> np.ndarray:
    """Class per latent from its relative norm (designated shared latents: ``tied``); dead not yet known."""
    r = relative_norms(cc)
    classes = np.where(
        r < cfg.pretrained_only_below,
        "pretrained-only",
        np.where(r > cfg.finetuned_only_above, "finetuned-only", "shared"),
    ).astype(object)
    classes[: cc.cfg.n_shared] = "tied"
    return classes


@torch.no_grad()
def latent_scaling_sums(
    cc: Crosscoder, paired_batches: PairedBatches, latents: np.ndarray, own: np.ndarray
) -> dict[str, np.ndarray]:
    """Streamed float64 sums for the β's of ``latents`` (own model index per latent) and firing counts.

    Returns ``n``, ``fired`` ``[d_latent]``, ``ff`` ``[J]`` = Σ f_j², ``error`` / ``reconstruction`` ``[2, J]``
    = Σ f_j ⟨u_j, ε_m⟩ and Σ f_j ⟨u_j, r_m⟩ with u_j the own-model decoder row.
    """
    device = cc.W_enc.device
    idx = torch.as_tensor(latents, dtype=torch.long, device=device)
    W_dec = cc.W_dec  # [d_latent, 2, d]
    U = W_dec[idx, torch.as_tensor(own, dtype=torch.long, device=device)]  # [J, d]
    self_overlap = torch.einsum("jd,jmd->mj", U, W_dec[idx])  # [2, J]: ⟨u_j, d_m,j⟩
    sums = {
        "ff": torch.zeros(len(idx), dtype=torch.float64, device=device),
        "error": torch.zeros(2, len(idx), dtype=torch.float64, device=device),
        "reconstruction": torch.zeros(2, len(idx), dtype=torch.float64, device=device),
        "fired": torch.zeros(cc.cfg.d_latent, dtype=torch.float64, device=device),
    }
    n = 0
    for x_a, x_b in paired_batches:
        x = cc.scale_inputs(x_a, x_b)  # [b, 2, d]
        f = cc.encode_scaled(x)  # [b, d_latent]
        recon = cc.decode_scaled(f)  # [b, 2, d]
        fj = f[:, idx]  # [b, J]
        error_proj = torch.einsum("bmd,jd->mbj", x - recon, U)  # [2, b, J]
        recon_proj = torch.einsum("bmd,jd->mbj", recon - cc.b_dec, U)  # [2, b, J]
        sums["ff"] += fj.double().pow(2).sum(dim=0)
        sums["error"] += (fj * error_proj).double().sum(dim=1) + self_overlap.double() * fj.double().pow(
            2
        ).sum(0)
        sums["reconstruction"] += (fj * recon_proj).double().sum(dim=1)
        sums["fired"] += (f > 0).double().sum(dim=0)
        n += len(x)
    out = {key: value.cpu().numpy() for key, value in sums.items()}
    out["u_norm_sq"] = U.double().pow(2).sum(dim=1).cpu().numpy()
    out["n"] = n
    return out


def latent_table(
    cc: Crosscoder, paired_batches: PairedBatches, cfg: LatentTableConfig | None = None
) -> pd.DataFrame:
    """Per latent: decoder norms, relative norm, class, firing rate, and latent scaling for exclusive latents.

    Columns: ``latent, class, relative_norm, norm_pretrained, norm_finetuned, decoder_cosine, firing_rate,
    beta_error_own, beta_error_other, beta_reconstruction_own, beta_reconstruction_other, nu_error,
    nu_reconstruction, shrinkage, decoupling, flagged`` (β/ν NaN and flags False for non-exclusive latents;
    an exclusive latent whose ν cannot be computed is flagged, since nothing vouches for it).
    """
    cfg = cfg or LatentTableConfig()
    classes = norm_classes(cc, cfg)
    exclusive = np.flatnonzero(np.isin(classes, ["pretrained-only", "finetuned-only"]))
    own = (classes[exclusive] == "finetuned-only").astype(np.int64)  # 0 = pretrained, 1 = fine-tuned
    sums = latent_scaling_sums(cc, paired_batches, exclusive, own)
    n = max(sums["n"], 1)
    firing = sums["fired"] / n
    denom = sums["u_norm_sq"] * sums["ff"]  # [J]
    with np.errstate(invalid="ignore", divide="ignore"):
        beta_error = np.where(denom > 0, sums["error"] / denom, np.nan)  # [2, J]
        beta_recon = np.where(denom > 0, sums["reconstruction"] / denom, np.nan)
    cols = np.arange(len(exclusive))
    be_own, be_other = beta_error[own, cols], beta_error[1 - own, cols]
    br_own, br_other = beta_recon[own, cols], beta_recon[1 - own, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        nu_error = np.where(be_own > 0, be_other / be_own, np.nan)
        nu_recon = np.where(br_own > 0, br_other / br_own, np.nan)
    norms = cc.decoder_norms().detach().to("cpu", torch.float64).numpy()
    W_dec = cc.W_dec.detach().to("cpu", torch.float64).numpy()
    df = pd.DataFrame(
        {
            "latent": np.arange(cc.cfg.d_latent),
            "class": np.where(firing < max(cfg.min_firing_rate, np.finfo(float).tiny), "dead", classes),
            "relative_norm": relative_norms(cc),
            "norm_pretrained": norms[:, 0],
            "norm_finetuned": norms[:, 1],
            "decoder_cosine": _row_cosines(W_dec[:, 0], W_dec[:, 1]),
            "firing_rate": firing,
        }
    )
    for name, values in {
        "beta_error_own": be_own,
        "beta_error_other": be_other,
        "beta_reconstruction_own": br_own,
        "beta_reconstruction_other": br_other,
        "nu_error": nu_error,
        "nu_reconstruction": nu_recon,
    }.items():
        df[name] = np.nan
        df.loc[exclusive, name] = values
    vetted = df["class"].isin(["pretrained-only", "finetuned-only"])
    df["shrinkage"] = vetted & ~(df["nu_error"] <= cfg.max_nu_error)
    df["decoupling"] = vetted & ~(df["nu_reconstruction"] <= cfg.max_nu_reconstruction)
    df["flagged"] = df["shrinkage"] | df["decoupling"]
    return df


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.nan)


# --- agreement with the SAE diff --------------------------------------------------------------------------
def crosscoder_sae_agreement(
    latents_df: pd.DataFrame,
    sae_labels_df: pd.DataFrame,
    cc: Crosscoder,
    sae_a: Any,
    sae_b: Any,
    cosine_threshold: float = 0.7,
    include_flagged: bool = False,
) -> dict[str, Any]:
    """How often crosscoder-exclusive latents and SAE-diff lost/new features name the same directions.

    A fine-tuned-only latent *agrees* when the live B feature closest to its fine-tuned decoder (cosine ≥
    ``cosine_threshold``) is labelled ``new``; a pretrained-only latent when the closest live A feature to its
    pretrained decoder is ``lost``. The reverse rates say how many new/lost SAE features have such a latent.
    Flagged latents (latent scaling) are left out unless ``include_flagged``.
    """
    W_dec = cc.W_dec.detach().to("cpu", torch.float64).numpy()  # [d_latent, 2, d]
    out: dict[str, Any] = {}
    for model, (cls, side, label, sae) in enumerate(
        (("pretrained-only", REFERENCE_SIDE, "lost", sae_a), ("finetuned-only", COMPARED_SIDE, "new", sae_b))
    ):
        chosen = latents_df["class"] == cls
        if not include_flagged:
            chosen &= ~latents_df["flagged"]
        latents = latents_df.loc[chosen, "latent"].to_numpy()
        features = sae_labels_df[(sae_labels_df["side"] == side) & (sae_labels_df["label"] != "dead")]
        feature_idx = features["feature"].to_numpy()
        cosine = decoder_cosine_matrix(W_dec[latents, model], decoder_rows(sae)[feature_idx])  # [L, F]
        feature_is_label = (features["label"] == label).to_numpy()
        if cosine.size:
            best = cosine.argmax(axis=1)
            agree = (cosine.max(axis=1) >= cosine_threshold) & feature_is_label[best]
            covered = ((cosine >= cosine_threshold).any(axis=0)) & feature_is_label
        else:
            agree, covered = np.zeros(len(latents), bool), np.zeros(len(feature_idx), bool)
        key = cls.replace("-", "_")
        out[f"n_{key}_latents"] = len(latents)
        out[f"{key}_to_{label}"] = float(agree.mean()) if len(latents) else math.nan
        out[f"n_{label}_features"] = int(feature_is_label.sum())
        out[f"{label}_to_{key}"] = (
            float(covered.sum() / feature_is_label.sum()) if feature_is_label.any() else math.nan
        )
    out["cosine_threshold"] = cosine_threshold
    return out


def fit_and_save_crosscoder(
    dir_a: str | os.PathLike,
    dir_b: str | os.PathLike,
    cfg: CrosscoderConfig,
    train: CrosscoderTrainConfig,
    out_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
) -> tuple[Crosscoder, pd.DataFrame]:
    """Train a crosscoder on two stages' shards of a layer; write weights, cfg, metrics and the latent table."""
    from layershift.core.io import write_parquet
    from layershift.data.shards import paired_batches

    cc, metrics = train_crosscoder_on_shards(dir_a, dir_b, cfg, train, checkpoint_dir=checkpoint_dir)
    out_dir = Path(out_dir)
    save_crosscoder(cc, out_dir)
    write_json({**cfg.metadata, **metrics}, out_dir / "metrics.json")
    latents = latent_table(cc, paired_batches(dir_a, dir_b, 4096)())
    write_parquet(latents, out_dir / "latents.parquet", cfg.metadata)
    return cc, latents
