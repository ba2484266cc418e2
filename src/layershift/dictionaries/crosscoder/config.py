"""What a crosscoder is (:class:`CrosscoderConfig`, → ``cfg.json``) and how it is trained
(:class:`CrosscoderTrainConfig`).

Every field the config schema's ``crosscoder`` section has takes its default from there (the one place
defaults are written); the workflow passes the validated section's values (``study.schema.from_section``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from layershift.study.schema import from_section, schema_default

FORMAT_VERSION = 1
ARCHITECTURES = ("batchtopk", "l1")
PARAMETER_DTYPES = ("float32", "float64")  # names in dictionaries.weights.DTYPES a crosscoder may use
# Initial per-model decoder row norm: unit rows as in TopK/BatchTopK SAEs; 0.08 for L1 (Kissane et al. 2024).
DEFAULT_DECODER_NORM = {"batchtopk": 1.0, "l1": 0.08}


@dataclass
class CrosscoderConfig:
    """What a crosscoder is: shapes, sparsity, shared latents, input scales, threshold (→ ``cfg.json``)."""

    d_in: int  # width of each model's activations at the layer (the same for both models)
    d_latent: int = schema_default("crosscoder", "d_latent")  # latents in the shared dictionary
    # BatchTopK (Minder et al.) or L1 (Lindsey et al.)
    architecture: Literal["batchtopk", "l1"] = schema_default("crosscoder", "architecture")
    k: int = schema_default("crosscoder", "k")  # batchtopk: mean active latents per token (k·batch kept)
    # l1: λ on Σ f_i(‖d_a,i‖+‖d_b,i‖) against the summed squared error
    l1_coefficient: float = schema_default("crosscoder", "l1_coefficient")
    # designated shared latents (indices 0..n_shared-1) with one decoder for both models
    n_shared: int = schema_default("crosscoder", "n_shared")
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
        if self.dtype not in PARAMETER_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(PARAMETER_DTYPES)}, got {self.dtype!r}")
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


# What training sets from data or records: not part of what a crosscoder is for its checkpoints.
TRAINED_FIELDS = ("input_scale_a", "input_scale_b", "threshold")
PROVENANCE_FIELDS = ("metadata", "hook_name")


@dataclass
class CrosscoderTrainConfig:
    """How a crosscoder is trained (Adam over streamed paired batches)."""

    lr: float = schema_default("crosscoder", "lr")  # Adam learning rate
    epochs: int = schema_default("crosscoder", "epochs")  # passes over the paired rows
    # rows per step in shard training (train_crosscoder takes the caller's batches)
    batch_size: int = schema_default("crosscoder", "batch_size")
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
    # shard training: both stages' rows kept in RAM when they fit (as SAEs)
    memory_cache_mb: float = schema_default("crosscoder", "memory_cache_mb")
    eval_batch_size: int = 4096  # rows per batch when evaluating
    threads: int | None = None  # torch CPU threads (None: leave torch's setting)
    device: str = "auto"  # "auto" = cuda if available else cpu; or any torch device string


# Training settings that do not change the trained weights: a checkpoint made with other values resumes
# (epochs may grow: nothing is scheduled over them).
NOT_RESUME_SETTINGS = ("epochs", "threads", "device", "memory_cache_mb", "eval_batch_size")


def resume_settings(cfg: CrosscoderConfig, train: CrosscoderTrainConfig) -> dict:
    """What identifies a crosscoder training run for its checkpoints: the config less what training sets and
    provenance, and the training settings that change the weights."""
    ignored = TRAINED_FIELDS + PROVENANCE_FIELDS
    model = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignored}
    train_fields = {k: v for k, v in dataclasses.asdict(train).items() if k not in NOT_RESUME_SETTINGS}
    return {"crosscoder": model, "train": train_fields}
