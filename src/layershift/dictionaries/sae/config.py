"""What an SAE is (:class:`SAEConfig`, → ``cfg.json``) and how it is trained (:class:`SAETrainConfig`).

Every field the config schema's ``sae`` section has takes its default from there (the one place defaults are
written); the workflow passes the validated section's values (``study.schema.from_section``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from layershift.dictionaries.interop import cfg_from_saelens, saelens_cfg
from layershift.dictionaries.weights import DTYPES
from layershift.study.schema import schema_default

# 2: cfg.json in SAELens 6's layout (ours under "layershift"), normalisation folded into sae_weights, exact
# working-space weights in layershift_weights.safetensors; 1: our field names, working-space sae_weights.
FORMAT_VERSION = 2
ARCHITECTURES = ("relu", "topk")  # our names; SAELens's are interop.SAELENS_ARCHITECTURES
NORMALIZATIONS = ("none", "expected_average_only_in", "center_and_scale")


@dataclass
class SAEConfig:
    """What an SAE is: shapes, architecture, sparsity, input normalisation and provenance (→ ``cfg.json``)."""

    d_in: int  # width of the activations it reads (the model's d_model)
    d_sae: int = schema_default("sae", "d_sae")  # number of latents (dictionary size); the paper uses 1024
    # the paper's L1 ReLU SAE, or TopK (Gao et al. 2024)
    architecture: Literal["relu", "topk"] = schema_default("sae", "architecture")
    k: int = schema_default("sae", "k")  # active latents per row for topk
    l1_coefficient: float = schema_default("sae", "l1_coefficient")  # λ of MSE + λ·L1 (relu only)
    normalize_activations: Literal["none", "expected_average_only_in", "center_and_scale"] = schema_default(
        "sae", "normalize_activations"
    )  # input scaling
    hook_name: str = ""  # e.g. "hidden_states.3" (which layer it reads)
    dtype: str = "float32"  # parameter dtype
    metadata: dict = field(default_factory=dict)  # model/dataset/stage/layer/seed provenance
    format_version: int = FORMAT_VERSION  # on-disk format of cfg.json + weights
    activation_scale: float = 1.0  # input multiplier estimated by training (1 unless normalising)
    # [d_in] mean subtracted before scaling (center_and_scale only)
    activation_mean: list[float] | None = None

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


def architecture_fields(cfg: SAEConfig) -> dict:
    """What an SAE's weights are shaped and activated by: its config less provenance and normalisation."""
    ignored = {"metadata", "activation_scale", "activation_mean", "hook_name"}
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignored}


@dataclass
class SAETrainConfig:
    """How an SAE is trained (Adam, epochs over a streamed activation set)."""

    lr: float = schema_default("sae", "lr")  # Adam learning rate (the paper's 2e-5)
    epochs: int = schema_default("sae", "epochs")  # passes over the training rows (unless training_tokens)
    # rows (tokens) to train on in all, as SAELens's training_tokens: a layer with fewer rows gets more passes,
    # ceil(training_tokens / training rows), so every SAE of a study takes about the same number of steps
    training_tokens: int | None = schema_default("sae", "training_tokens")
    # the last fraction of steps decays the learning rate linearly to 0
    lr_decay_fraction: float = schema_default("sae", "lr_decay_fraction")
    batch_size: int = schema_default("sae", "batch_size")  # rows per optimiser step
    seed: int = 0  # seeds initialisation and shuffling
    # unit-norm decoder rows after each step (keeps L1 honest)
    normalize_decoder: bool = schema_default("sae", "normalize_decoder")
    holdout_fraction: float = schema_default(
        "sae", "holdout_fraction"
    )  # share of rows held out for evaluation
    split_seed: int = 0  # seeds the held-out rows: one value for every SAE of a layer, so all share the rows
    threads: int | None = None  # torch CPU threads (None: leave torch's setting)
    device: str = "auto"  # "auto" = cuda if available else cpu; or any torch device string
    precision: Literal["float32", "bf16"] = "float32"  # bf16 autocast for the forward pass (cuda only)
    shuffle: bool = True  # shuffle row groups and rows within a buffer each epoch (shard training)
    shuffle_buffer_groups: int = 8  # row groups mixed together when shuffling shards
    # a layer's training rows are kept in RAM (float32) after the first epoch when they take at most this
    # many MiB: later epochs skip Parquet decoding, same batches; larger layers stream (0: always stream)
    memory_cache_mb: float = schema_default("sae", "memory_cache_mb")
    init_rows: int = 16384  # rows at the start of epoch 0 used to set b_dec and normalisation statistics
    log_every: int = 100  # steps per entry of the per-step loss curve (mean loss over those steps)
    eval_batch_size: int = 4096  # rows per batch when evaluating held-out rows


# Training settings that do not change the trained weights: a checkpoint made with other values resumes.
# (epochs may grow, unless a decaying learning rate schedules over them; training_tokens sets epochs.)
NOT_RESUME_SETTINGS = ("epochs", "training_tokens", "threads", "device", "memory_cache_mb", "eval_batch_size")


def resume_settings(cfg: SAEConfig, train: SAETrainConfig) -> dict:
    """What identifies an SAE training run for its checkpoints: architecture and the training settings that
    change the weights (with ``epochs`` when the learning rate decays over them)."""
    ignored = NOT_RESUME_SETTINGS if train.lr_decay_fraction <= 0 else NOT_RESUME_SETTINGS[1:]
    train_fields = {k: v for k, v in dataclasses.asdict(train).items() if k not in ignored}
    return {"sae": architecture_fields(cfg), "train": train_fields}
