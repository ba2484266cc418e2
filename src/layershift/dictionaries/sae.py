"""Sparse autoencoders (SAEs) on token activations: model, streamed training, evaluation, SAELens-style files.

Two architectures share one set of weights (SAELens names and shapes)::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]

* ``relu`` (the paper, §3.2.3): ``f = ReLU((x - b_dec) @ W_enc + b_enc)``, ``x̂ = f @ W_dec + b_dec``,
  loss = MSE + λ·Σᵢ fᵢ‖W_dec,ᵢ‖. MSE is the mean over batch *and* input dimensions (``nn.MSELoss``, the scale
  behind the paper's "loss on the order of 1e-4"); the L1 term is summed over latents and averaged over the
  batch. With ``normalize_decoder`` every decoder row is put back on the unit sphere after each step, so the
  decoder-norm weight is 1; without it the L1 is weighted by the row norms (Anthropic's April 2024 update) so the
  SAE cannot dodge the penalty by shrinking ``f`` and growing ``W_dec``.
* ``topk`` (Gao et al. 2024): keep the ``k`` largest pre-activations per row (ReLU after), loss = MSE.

Inputs may be normalised (``SAEConfig.normalize_activations``): the statistics are estimated from the start of
the training stream and stored in ``cfg.json``; :meth:`SAE.encode` takes *raw* activations and normalises them,
:meth:`SAE.decode` returns reconstructions in raw units. Losses and ``mse`` are measured in the normalised
("working") space the SAE is trained in; ``mse_raw`` in :func:`evaluate_sae` converts back.

On disk an SAE is a directory with ``cfg.json`` + ``sae_weights.safetensors`` (:func:`save_sae`,
:func:`load_sae`). :func:`train_sae` streams numpy batches (never the whole matrix), can resume from per-epoch
checkpoints and ends with the same weights as an uninterrupted run; :func:`train_sae_on_shards` wires it to a
layer's Parquet shards with held-out rows (the loop and checkpoints are :mod:`layershift.core.training`'s).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from layershift.core.device import resolve_device, torch_threads
from layershift.core.io import atomic_path, read_json, read_safetensors, write_json
from layershift.core.training import (
    explained_variance,
    fit_epochs,
    holdout_metrics,
    load_checkpoint,
    make_adam,
    save_checkpoint,
    to_tensor,
    with_train_config,
)
from layershift.data.shards import ShardReader, shard_provenance
from layershift.dictionaries import sparse_codes
from layershift.dictionaries.interop import (
    WORKING_WEIGHTS_FILENAME,
    cfg_from_saelens,
    fold_normalization,
    saelens_cfg,
)

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
# 2: cfg.json in SAELens 6's layout (ours under "layershift"), normalisation folded into sae_weights, exact
# working-space weights in layershift_weights.safetensors; 1: our field names, working-space sae_weights.
FORMAT_VERSION = 2
ARCHITECTURES = ("relu", "topk")  # our names; SAELens's are interop.SAELENS_ARCHITECTURES
NORMALIZATIONS = ("none", "expected_average_only_in", "center_and_scale")
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
# Fields that must agree between a checkpoint and the run that resumes it (epochs may grow).
RESUME_TRAIN_FIELDS = (
    "lr",
    "batch_size",
    "seed",
    "split_seed",
    "holdout_fraction",
    "normalize_decoder",
    "shuffle",
    "init_rows",
    "precision",
    "lr_decay_fraction",
)


@dataclass
class SAEConfig:
    """What an SAE is: shapes, architecture, sparsity, input normalisation and provenance (→ ``cfg.json``)."""

    d_in: int  # width of the activations it reads (the model's d_model)
    d_sae: int = 1024  # number of latents (dictionary size); the paper uses 1024
    architecture: Literal["relu", "topk"] = "relu"  # paper's L1 ReLU SAE, or TopK (Gao et al. 2024)
    k: int = 32  # active latents per row for topk
    l1_coefficient: float = 1e-3  # λ of MSE + λ·L1 (relu only)
    normalize_activations: Literal["none", "expected_average_only_in", "center_and_scale"] = (
        "none"  # input scaling
    )
    hook_name: str = ""  # e.g. "hidden_states.3" (which layer it reads)
    dtype: str = "float32"  # parameter dtype
    metadata: dict = field(default_factory=dict)  # model/dataset/stage/layer/seed provenance
    format_version: int = FORMAT_VERSION  # on-disk format of cfg.json + weights
    activation_scale: float = 1.0  # input multiplier estimated by training (1 unless normalising)
    activation_mean: list[float] | None = (
        None  # [d_in] mean subtracted before scaling (center_and_scale only)
    )

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {NORMALIZATIONS}, got {self.normalize_activations!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")
        if self.architecture == "topk" and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"cfg format_version {self.format_version} is newer than this layershift ({FORMAT_VERSION})"
            )

    def to_dict(self) -> dict[str, Any]:
        """The ``cfg.json`` content (current format): SAELens 6's layout, our own fields under "layershift"."""
        return saelens_cfg({**dataclasses.asdict(self), "format_version": FORMAT_VERSION})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """Inverse of :meth:`to_dict`; also reads format 1 (our field names at the top level)."""
        # format 2 keeps our fields under "layershift"; format 1 had them at the top level
        data = cfg_from_saelens(data) if "layershift" in data else {"format_version": 1, **data}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainConfig:
    """How an SAE is trained (Adam, epochs over a streamed activation set)."""

    lr: float = 2e-5  # Adam learning rate (the paper's 2e-5)
    epochs: int = 10  # passes over the training rows (unless training_tokens is set)
    # rows (tokens) to train on in all, as SAELens's training_tokens: a layer with fewer rows gets more passes,
    # ceil(training_tokens / training rows), so every SAE of a study takes about the same number of steps
    training_tokens: int | None = None
    lr_decay_fraction: float = 0.0  # the last fraction of steps decays the learning rate linearly to 0
    batch_size: int = 256  # rows per optimiser step
    seed: int = 0  # seeds initialisation and shuffling
    normalize_decoder: bool = True  # unit-norm decoder rows after each step (keeps L1 honest)
    holdout_fraction: float = 0.1  # share of rows held out for evaluation
    split_seed: int = 0  # seeds the held-out rows: one value for every SAE of a layer, so all share the rows
    threads: int | None = None  # torch CPU threads (None: leave torch's setting)
    device: str = "auto"  # "auto" = cuda if available else cpu; or any torch device string
    precision: Literal["float32", "bf16"] = "float32"  # bf16 autocast for the forward pass (cuda only)
    shuffle: bool = True  # shuffle row groups and rows within a buffer each epoch (shard training)
    shuffle_buffer_groups: int = 8  # row groups mixed together when shuffling shards
    # a layer's training rows are kept in RAM (float32) after the first epoch when they take at most this
    # many MiB: later epochs skip Parquet decoding, same batches; larger layers stream (0: always stream)
    memory_cache_mb: float = 1024.0
    init_rows: int = 16384  # rows at the start of epoch 0 used to set b_dec and normalisation statistics
    log_every: int = 100  # steps per entry of the per-step loss curve (mean loss over those steps)
    eval_batch_size: int = 4096  # rows per batch when evaluating held-out rows


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


# --- files ------------------------------------------------------------------------------------------------
def save_sae(sae: SAE, directory: str | os.PathLike) -> None:
    """Write an SAE that both :func:`load_sae` and ``sae_lens.SAE.load_from_disk`` read, each file atomically.

    ``sae_weights.safetensors`` holds the weights with the input normalisation folded in (what SAELens runs on
    raw activations); with a normalisation on, ``layershift_weights.safetensors`` holds the working-space
    weights bit for bit. ``cfg.json`` comes last. Files are replaced one by one (not the whole directory), so
    siblings such as ``metrics.json`` survive.
    """
    directory = Path(directory)
    tensors = {name: getattr(sae, name).detach().to("cpu").contiguous() for name in WEIGHT_NAMES}
    meta = {"format": "pt", "format_version": str(FORMAT_VERSION)}
    mode = sae.cfg.normalize_activations
    folded = fold_normalization(tensors, mode, sae.cfg.activation_scale, sae.activation_mean.detach().cpu())
    with atomic_path(directory / SAE_WEIGHTS_FILENAME, suffix=".safetensors") as tmp:
        save_file(folded, tmp, metadata=meta)
    working = directory / WORKING_WEIGHTS_FILENAME
    if mode == "none":
        working.unlink(missing_ok=True)
    else:
        with atomic_path(working, suffix=".safetensors") as tmp:
            save_file(tensors, tmp, metadata=meta)
    write_json(sae.cfg.to_dict(), directory / SAE_CFG_FILENAME)


def load_sae(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SAE:
    """Read an SAE saved by :func:`save_sae`: class by ``architecture``, every weight shape checked."""
    directory = Path(directory)
    cfg = SAEConfig.from_dict(read_json(directory / SAE_CFG_FILENAME))
    sae = SAE(cfg)
    # format 1 stored working-space weights in sae_weights; format 2 folds them there and keeps them beside
    unfolded = cfg.format_version >= 2 and cfg.normalize_activations != "none"
    state = read_safetensors(
        directory / (WORKING_WEIGHTS_FILENAME if unfolded else SAE_WEIGHTS_FILENAME),
        {name: tuple(getattr(sae, name).shape) for name in WEIGHT_NAMES},
        DTYPES[cfg.dtype],
    )
    sae.load_state_dict(state, strict=True)
    return sae.to(device)


# --- training ---------------------------------------------------------------------------------------------
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


def initialize_from_data(sae: SAE, head: list[np.ndarray], n_rows: int) -> None:
    """Set normalisation statistics and ``b_dec`` (the working-space data mean) from the first rows."""
    rows = np.concatenate(head)[:n_rows] if head else np.zeros((0, sae.cfg.d_in), np.float32)
    if not len(rows):
        raise ValueError("the training stream yielded no rows")
    b_dec, scale, mean = activation_statistics(rows, sae.cfg.normalize_activations)
    sae.set_normalization(scale, mean)
    with torch.no_grad():
        sae.b_dec.copy_(torch.from_numpy(b_dec))


def train_sae(
    batches: Callable[[int], Iterable[np.ndarray]],
    cfg: SAEConfig,
    train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    steps_per_epoch: int | None = None,
) -> tuple[SAE, dict]:
    """Train an SAE on ``batches(epoch)`` (called once per epoch, yields ``[b, d_in]`` float32 arrays).

    ``steps_per_epoch`` (batches per epoch) is needed only for ``train.lr_decay_fraction`` > 0.

    With ``checkpoint_dir`` the weights, Adam state and loss curve are saved after every epoch and training
    resumes from the last complete epoch; given the same ``batches`` the result equals an uninterrupted run.
    Returns the SAE (on the training device) and a dict: ``loss_curve``, ``n_train_rows`` (rows per epoch),
    ``epochs``, ``steps``, ``resumed_from_epoch``, ``seconds``, ``rows_per_second`` (this run only).
    """
    with torch_threads(train.threads):
        device = resolve_device(train.device)
        sae = SAE(with_train_config(cfg, train), seed=train.seed).to(device)
        sae.decoder_is_unit_norm = train.normalize_decoder
        optimizer = make_adam([getattr(sae, name) for name in WEIGHT_NAMES], train.lr)
        state = new_trainer_state()
        resumed = load_checkpoint(
            checkpoint_dir,
            optimizer,
            dataclasses.asdict(train),
            # a decaying learning rate is scheduled over all epochs: only the same total may resume
            RESUME_TRAIN_FIELDS + (("epochs",) if train.lr_decay_fraction > 0 else ()),
            train.epochs,
        )
        if resumed:
            path, state, _ = resumed
            restore_checkpoint_weights(sae, path)
        resumed_from_epoch = state["epoch"]
        steps = SAESteps(
            sae, optimizer, train, state, device, total_steps=_total_steps(train, steps_per_epoch)
        )
        start = time.perf_counter()
        rows_this_run = fit_epochs(
            batches,
            train.epochs,
            state,
            steps,
            init_rows=train.init_rows,
            checkpoint=(
                lambda: save_checkpoint(
                    checkpoint_dir, lambda d: save_sae(sae, d), optimizer, state, dataclasses.asdict(train)
                )
            )
            if checkpoint_dir
            else None,
            progress=progress,
            name="SAE epoch",
        )
        seconds = time.perf_counter() - start
    sae.decoder_is_unit_norm = (
        False  # outside training, l1 always weights by the (≈1) norms, as after load_sae
    )
    metrics = {
        "loss_curve": {k: state[k] for k in EPOCH_CURVES}
        | {"step": state["log_step"], "step_loss": state["log_loss"]},
        "n_train_rows": state["n_train_rows"],
        "epochs": state["epoch"],
        "steps": state["step"],
        "resumed_from_epoch": resumed_from_epoch,
        "seconds": seconds,
        "rows_per_second": rows_this_run / seconds if rows_this_run else 0.0,
        "device": str(device),
    }
    return sae, metrics


EPOCH_CURVES = ("epoch_loss", "epoch_mse", "epoch_l1", "epoch_l0")  # per-epoch means of the SAEOutput terms


def _total_steps(train: TrainConfig, steps_per_epoch: int | None) -> int | None:
    if train.lr_decay_fraction <= 0:
        return None
    if not steps_per_epoch:
        raise ValueError("lr_decay_fraction > 0 needs steps_per_epoch (batches per epoch)")
    return train.epochs * steps_per_epoch


def lr_factor(step: int, total_steps: int | None, decay_fraction: float) -> float:
    """Learning-rate multiplier at 0-based ``step``: 1, then linear to 0 over the last ``decay_fraction`` of steps."""
    if total_steps is None or decay_fraction <= 0:
        return 1.0
    decay_steps = max(1, round(decay_fraction * total_steps))
    return min(1.0, max(0.0, (total_steps - step) / decay_steps))


def new_trainer_state() -> dict:
    """What a checkpoint remembers besides tensors: progress, loss curves and whether the last batch's codes
    were sparse (which path the next step tries, so a resumed run takes the same paths; JSON-friendly)."""
    progress = {"epoch": 0, "step": 0, "n_train_rows": 0, "log_step": [], "log_loss": [], "log_window": 0.0}
    return progress | {"codes_were_sparse": True} | {key: [] for key in EPOCH_CURVES}


class SAESteps:
    """One Adam step per batch for :func:`~layershift.core.training.fit_epochs`; per-epoch curves into ``state``."""

    def __init__(
        self,
        sae: SAE,
        optimizer,
        train: TrainConfig,
        state: dict,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        self.sae, self.optimizer, self.train, self.state, self.device = sae, optimizer, train, state, device
        self.total_steps = total_steps  # None: constant learning rate
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16")
        self.sparse = sparse_codes.takes_sparse_path(sae, train.precision)  # per batch: see sparse_codes

    def initialize(self, head: list[np.ndarray]) -> None:
        initialize_from_data(self.sae, head, self.train.init_rows)

    def start_epoch(self) -> None:
        # summed over steps on the device, no host syncs per step
        self.totals = torch.zeros(len(EPOCH_CURVES), dtype=torch.float64, device=self.device)
        self.window = torch.full((), self.state["log_window"], dtype=torch.float64, device=self.device)
        self.steps = 0

    def step(self, batch: np.ndarray) -> None:
        sae, train, state = self.sae, self.train, self.state
        x = to_tensor(batch, self.device)
        with self.autocast:
            # the sparse path once the previous batch's codes were sparse (so dense phases compute the
            # encoder once a step); it hands a batch back when its codes turn out too dense
            try_sparse = self.sparse and state.get("codes_were_sparse", True)  # checkpoints before the key
            out = sparse_codes.training_terms(sae, x) if try_sparse else None
            if out is None:
                out = sae.training_terms(x)
            if self.sparse:
                state["codes_were_sparse"] = sparse_codes.codes_are_sparse(out.l0.item(), sae.cfg.d_sae)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.total_steps is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = train.lr * lr_factor(state["step"], self.total_steps, train.lr_decay_fraction)
        self.optimizer.step()
        if train.normalize_decoder:
            sae.normalize_decoder_()
        terms = torch.stack([out.loss, out.mse, out.l1, out.l0]).detach().to(torch.float64)
        self.totals += terms
        self.window += terms[0]
        self.steps += 1
        state["step"] += 1
        if state["step"] % train.log_every == 0:
            state["log_step"].append(state["step"])
            state["log_loss"].append(self.window.item() / train.log_every)
            self.window.zero_()

    def end_epoch(self, rows: int) -> None:
        for key, value in zip(EPOCH_CURVES, (self.totals / max(self.steps, 1)).tolist(), strict=True):
            self.state[key].append(value)
        self.state["log_window"] = self.window.item()
        self.state["n_train_rows"] = rows


def restore_checkpoint_weights(sae: SAE, path: Path) -> None:
    """Copy a checkpoint's weights and normalisation into ``sae`` (same architecture required)."""
    saved = load_sae(path)
    if architecture_fields(saved.cfg) != architecture_fields(sae.cfg):
        raise ValueError(f"{path}: checkpoint SAE config differs from the requested one")
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            getattr(sae, name).copy_(getattr(saved, name))
    sae.set_normalization(saved.cfg.activation_scale, saved.cfg.activation_mean)


def architecture_fields(cfg: SAEConfig) -> dict:
    """What an SAE's weights are shaped and activated by: its config less provenance and normalisation."""
    ignored = {"metadata", "activation_scale", "activation_mean", "hook_name"}
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignored}


# --- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Iterable[np.ndarray]) -> dict:
    """Stream raw batches through ``sae``: mse (working space), mse_raw, explained_variance, l0, dead_fraction.

    Sums are kept in float64 and the explained variance is ``1 - SSE / SST`` over all rows (SST around the
    overall mean), so the numbers do not depend on how the rows are batched beyond float32 rounding.
    """
    device = sae.W_enc.device
    d_in = sae.cfg.d_in
    sse = torch.zeros((), dtype=torch.float64, device=device)
    active = torch.zeros((), dtype=torch.float64, device=device)
    x_sum = torch.zeros(d_in, dtype=torch.float64, device=device)
    x_sq = torch.zeros((), dtype=torch.float64, device=device)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=device)
    n = 0
    for batch in batches:
        x = sae.normalize(to_tensor(batch, device).to(sae.W_enc.dtype))
        f = sae.encode_normalized(x)  # [b, d_in] -> [b, d_sae]
        recon = sae.decode_normalized(f)  # [b, d_sae] -> [b, d_in]
        sse += (recon - x).double().pow(2).sum()
        positive = f > 0
        active += positive.sum()
        fired |= positive.any(dim=0)
        x64 = x.double()
        x_sum += x64.sum(dim=0)
        x_sq += x64.pow(2).sum()
        n += len(batch)
    if n == 0:
        raise ValueError("evaluate_sae got no rows")
    mse = (sse / (n * d_in)).item()
    return {
        "mse": mse,
        "mse_raw": mse / sae.cfg.activation_scale**2,
        "explained_variance": explained_variance(sse, x_sq, x_sum, n).item(),  # NaN: undefined (< 2 rows)
        "l0": (active / n).item(),
        "dead_fraction": 1.0 - fired.double().mean().item(),
        "n_rows": n,
    }


def with_epochs_for_tokens(train: TrainConfig, n_train_rows: int) -> TrainConfig:
    """``train`` with ``epochs`` = ceil(training_tokens / n_train_rows) when ``training_tokens`` is set."""
    if not train.training_tokens:
        return train
    return dataclasses.replace(train, epochs=max(1, math.ceil(train.training_tokens / max(n_train_rows, 1))))


# --- shards -----------------------------------------------------------------------------------------------
def train_sae_on_shards(
    shard_dir: str | os.PathLike,
    cfg: SAEConfig,
    train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[SAE, dict]:
    """Train on a layer's Parquet shards, holding out rows; metrics include held-out evaluation.

    The held-out rows are :func:`~layershift.data.shards.holdout_rows` of ``train.split_seed``: with the same
    split seed every SAE of a layer (both stages, the nulls, the crosscoder) trains and evaluates on the same
    row indices. Epoch ``e`` reads the training rows shuffled with seed ``train.seed + e`` (or in storage order
    when ``train.shuffle`` is off). Shard metadata (model, dataset, stage, layer) fills ``cfg.metadata`` and,
    if empty, ``hook_name`` = ``hidden_states.{layer}``. With no held-out row the evaluation uses training
    rows (``evaluation_split`` says which). ``cpu_seconds`` is this call's process CPU time, training and
    evaluation (of this run only, like ``seconds``, when it resumed).
    """
    cpu_start = time.process_time()
    reader = ShardReader(shard_dir)
    if reader.d_model != cfg.d_in:
        raise ValueError(f"{shard_dir}: activations have d_model={reader.d_model}, cfg.d_in={cfg.d_in}")
    train_reader, heldout_reader = reader.split(train.holdout_fraction, train.split_seed)
    train = with_epochs_for_tokens(train, train_reader.n_rows)
    train_reader.keep_in_memory(train.memory_cache_mb * 2**20)
    provenance, hook_name = shard_provenance(reader, cfg.hook_name)
    cfg = dataclasses.replace(cfg, hook_name=hook_name, metadata={**provenance, **cfg.metadata})

    def batches(epoch: int) -> Iterator[np.ndarray]:
        return train_reader.iter_batches(
            train.batch_size,
            shuffle=train.shuffle,
            seed=train.seed + epoch,
            buffer_groups=train.shuffle_buffer_groups,
        )

    steps_per_epoch = math.ceil(train_reader.n_rows / train.batch_size)
    sae, metrics = train_sae(batches, cfg, train, checkpoint_dir, progress, steps_per_epoch)
    evaluation = evaluate_sae(sae, (heldout_reader or train_reader).iter_batches(train.eval_batch_size))
    metrics |= {k: v for k, v in evaluation.items() if k != "n_rows"}
    metrics |= holdout_metrics(train_reader.n_rows, heldout_reader, train.split_seed)
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return sae, metrics
