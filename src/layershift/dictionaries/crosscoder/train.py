"""Training a crosscoder on streamed paired batches (the same tokens through both models), and on two
stages' Parquet shards of a layer with held-out rows.

Training resumes from the checkpoint made with the same settings (the loop and checkpoints are
:mod:`layershift.dictionaries.fitting`'s) and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from layershift.core.checkpoints import settings_key
from layershift.core.device import resolve_device, torch_threads
from layershift.core.training import holdout_metrics, make_adam, with_train_config
from layershift.data.shards import keep_pair_in_memory, open_paired, shard_provenance, zip_paired
from layershift.dictionaries.batches import PairedBatches
from layershift.dictionaries.crosscoder.config import CrosscoderConfig, CrosscoderTrainConfig, resume_settings
from layershift.dictionaries.crosscoder.evaluate import evaluate_crosscoder
from layershift.dictionaries.crosscoder.files import load_crosscoder, save_crosscoder
from layershift.dictionaries.crosscoder.model import Crosscoder
from layershift.dictionaries.fitting import Checkpointing, DictionaryRun, EpochTotals, fit_dictionary

CROSSCODER_CURVES = ("epoch_loss", "epoch_reconstruction", "epoch_sparsity", "epoch_aux", "epoch_l0")


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
    resumes from the last complete one of a run with the same settings. Metrics: ``loss_curve`` (per-epoch
    means), ``steps``, ``epochs``, ``seconds``, and :func:`evaluate_crosscoder` on ``eval_batches()``
    (default: ``paired_batches(0)``, then ``evaluation_split`` = "train").
    """
    with torch_threads(train.threads):
        crosscoder, metrics = _fit(paired_batches, cfg, train, checkpoint_dir, progress)
        evaluation = evaluate_crosscoder(crosscoder, eval_batches() if eval_batches else paired_batches(0))
    return crosscoder, metrics | evaluation | {"evaluation_split": "heldout" if eval_batches else "train"}


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
    provenance, hook_name = shard_provenance(reader_a, cfg.hook_name, drop=("stage", "run"))
    cfg = dataclasses.replace(cfg, hook_name=hook_name, metadata={**provenance, **cfg.metadata})

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return zip_paired(
            train_a, train_b, train.batch_size, train.shuffle, train.seed + epoch, train.shuffle_buffer_groups
        )

    crosscoder, metrics = train_crosscoder(
        batches,
        cfg,
        train,
        checkpoint_dir,
        progress,
        lambda: zip_paired(eval_a, eval_b, train.eval_batch_size),
    )
    metrics |= holdout_metrics(train_a.n_rows, heldout_a, train.split_seed)
    return crosscoder, metrics


def _fit(
    paired_batches: Callable[[int], PairedBatches],
    cfg: CrosscoderConfig,
    train: CrosscoderTrainConfig,
    checkpoint_dir: str | os.PathLike | None,
    progress: bool,
) -> tuple[Crosscoder, dict]:
    """The training itself (threads already set): a seeded crosscoder, resumed and trained to ``train.epochs``."""
    device = resolve_device(train.device)
    crosscoder = Crosscoder(
        with_train_config(cfg, train), seed=train.seed, init_decoder_norm=train.init_decoder_norm
    ).to(device)
    optimizer = make_adam([p for p in crosscoder.parameters() if p.numel()], train.lr)
    state = {"epoch": 0, "step": 0, "tokens": 0} | {key: [] for key in CROSSCODER_CURVES}
    steps = CrosscoderSteps(crosscoder, optimizer, train, state, device)
    checkpointing = Checkpointing(
        checkpoint_dir, settings_key(resume_settings(cfg, train)), save_crosscoder, load_crosscoder
    )
    resumed_from_epoch, _, seconds = fit_dictionary(
        DictionaryRun(crosscoder, optimizer, steps, state),
        paired_batches,
        train.epochs,
        checkpointing,
        init_rows=train.init_rows,
        rows_of=lambda pair: len(pair[0]),
        progress=progress,
        name="crosscoder epoch",
    )
    metrics = {
        "loss_curve": {key: state[key] for key in CROSSCODER_CURVES},
        "epochs": state["epoch"],
        "steps": state["step"],
        "resumed_from_epoch": resumed_from_epoch,
        "seconds": seconds,
        "threshold": crosscoder.cfg.threshold,
        "device": str(device),
    }
    return crosscoder, metrics


class CrosscoderSteps:
    """One Adam step per paired batch for :func:`~layershift.core.training.fit_epochs`: epoch means into ``state``,
    the BatchTopK threshold from the mean smallest kept score of each pass, idle-token counters for AuxK."""

    def __init__(
        self, crosscoder: Crosscoder, optimizer, train: CrosscoderTrainConfig, state: dict, device
    ) -> None:
        self.crosscoder, self.optimizer, self.train, self.state = crosscoder, optimizer, train, state
        self.aux_k = train.aux_k if train.aux_k is not None else max(crosscoder.cfg.d_in // 2, 1)
        # tokens since each latent last fired
        self.idle = torch.zeros(crosscoder.cfg.d_latent, dtype=torch.int64, device=device)

    def initialize(self, head: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.crosscoder.initialize_from_data(head, self.train.init_rows)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {"idle": self.idle}

    def restore_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.idle = tensors["idle"].to(self.idle.device)

    def start_epoch(self) -> None:
        self.totals = EpochTotals(CROSSCODER_CURVES, self.idle.device)
        self.kept_scores: list[float] = []

    def step(self, pair: tuple[np.ndarray, np.ndarray]) -> None:
        crosscoder, train, state = self.crosscoder, self.train, self.state
        x = crosscoder.scale_inputs(*pair)  # 2 × [b, d] -> [b, 2, d]
        warmup = min(1.0, (state["step"] + 1) / train.l1_warmup_steps) if train.l1_warmup_steps else 1.0
        dead = self.idle >= train.dead_after_tokens
        out = crosscoder(x, dead, self.aux_k, train.aux_coefficient, crosscoder.cfg.l1_coefficient * warmup)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            fired = (out.features > 0).any(dim=0)
            self.idle = torch.where(fired, torch.zeros_like(self.idle), self.idle + len(x))
            self.totals.add(
                torch.stack([out.loss, out.reconstruction, out.sparsity, out.aux, out.l0]).double()
            )
        if not math.isnan(out.min_kept_score.item()):
            self.kept_scores.append(out.min_kept_score.item())
        state["step"] += 1
        state["tokens"] += len(x)

    def end_epoch(self, rows: int) -> None:
        self.totals.append_means(self.state)
        if self.kept_scores:
            self.crosscoder.cfg.threshold = float(np.mean(self.kept_scores))
