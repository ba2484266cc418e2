"""Training an SAE: streamed numpy batches, Adam, per-epoch checkpoints, and the wiring to a layer's shards.

:func:`train_sae` streams batches (never the whole matrix), resumes from the checkpoint made with the same
settings and ends with the same weights as an uninterrupted run (the loop and checkpoints are
:mod:`layershift.dictionaries.fitting`'s). :func:`train_sae_on_shards` trains on a layer's Parquet shards with
held-out rows and evaluates on them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from layershift.core.checkpoints import settings_key
from layershift.core.device import resolve_device, torch_threads
from layershift.core.training import holdout_metrics, make_adam, to_tensor, with_train_config
from layershift.data.shards import ShardReader, shard_provenance
from layershift.dictionaries import sparse_codes
from layershift.dictionaries.fitting import Checkpointing, DictionaryRun, EpochTotals, fit_dictionary
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig, resume_settings
from layershift.dictionaries.sae.evaluate import evaluate_sae
from layershift.dictionaries.sae.files import load_sae, save_sae
from layershift.dictionaries.sae.model import SAE
from layershift.dictionaries.weights import WEIGHT_NAMES

SAE_CURVES = ("epoch_loss", "epoch_mse", "epoch_l1", "epoch_l0")  # per-epoch means of the SAEOutput terms


def train_sae(
    batches: Callable[[int], Iterable[np.ndarray]],
    cfg: SAEConfig,
    train: SAETrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    steps_per_epoch: int | None = None,
) -> tuple[SAE, dict]:
    """Train an SAE on ``batches(epoch)`` (called once per epoch, yields ``[b, d_in]`` float32 arrays).

    ``steps_per_epoch`` (batches per epoch) is needed only for ``train.lr_decay_fraction`` > 0.

    With ``checkpoint_dir`` the weights, Adam state and loss curve are saved after every epoch and training
    resumes from the last complete epoch of a run with the same settings; given the same ``batches`` the
    result equals an uninterrupted run. Returns the SAE (on the training device) and a dict: ``loss_curve``,
    ``n_train_rows`` (rows per epoch), ``epochs``, ``steps``, ``resumed_from_epoch``, ``seconds``,
    ``rows_per_second`` (this run only), ``device``.
    """
    with torch_threads(train.threads):
        device = resolve_device(train.device)
        sae = SAE(with_train_config(cfg, train), seed=train.seed).to(device)
        sae.decoder_is_unit_norm = train.normalize_decoder
        optimizer = make_adam([getattr(sae, name) for name in WEIGHT_NAMES], train.lr)
        state = new_trainer_state()
        total_steps = _total_steps(train, steps_per_epoch)
        steps = SAESteps(sae, optimizer, train, state, device, total_steps)
        checkpointing = Checkpointing(
            checkpoint_dir, settings_key(resume_settings(cfg, train)), save_sae, load_sae
        )
        resumed_from_epoch, rows_this_run, seconds = fit_dictionary(
            DictionaryRun(sae, optimizer, steps, state),
            batches,
            train.epochs,
            checkpointing,
            init_rows=train.init_rows,
            progress=progress,
            name="SAE epoch",
        )
    # outside training, l1 always weights by the (≈1) norms, as after load_sae
    sae.decoder_is_unit_norm = False
    return sae, _training_metrics(state, resumed_from_epoch, rows_this_run, seconds, device)


def _training_metrics(state: dict, resumed_from_epoch: int, rows: int, seconds: float, device) -> dict:
    return {
        "loss_curve": {k: state[k] for k in SAE_CURVES}
        | {"step": state["log_step"], "step_loss": state["log_loss"]},
        "n_train_rows": state["n_train_rows"],
        "epochs": state["epoch"],
        "steps": state["step"],
        "resumed_from_epoch": resumed_from_epoch,
        "seconds": seconds,
        "rows_per_second": rows / seconds if rows else 0.0,
        "device": str(device),
    }


def _total_steps(train: SAETrainConfig, steps_per_epoch: int | None) -> int | None:
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
    return progress | {"codes_were_sparse": True} | {key: [] for key in SAE_CURVES}


class SAESteps:
    """One Adam step per batch for :func:`~layershift.core.training.fit_epochs`; per-epoch curves into ``state``."""

    def __init__(
        self,
        sae: SAE,
        optimizer,
        train: SAETrainConfig,
        state: dict,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        self.sae, self.optimizer, self.train, self.state, self.device = sae, optimizer, train, state, device
        self.total_steps = total_steps  # None: constant learning rate
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16")
        self.sparse = sparse_codes.takes_sparse_path(sae, train.precision)  # per batch: see sparse_codes

    def initialize(self, head: list[np.ndarray]) -> None:
        self.sae.initialize_from_data(head, self.train.init_rows)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {}  # everything else the trainer keeps is in the state (JSON)

    def restore_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def start_epoch(self) -> None:
        self.totals = EpochTotals(SAE_CURVES, self.device)
        self.window = torch.full((), self.state["log_window"], dtype=torch.float64, device=self.device)

    def step(self, batch: np.ndarray) -> None:
        sae, train, state = self.sae, self.train, self.state
        out = self._training_terms(to_tensor(batch, self.device))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.total_steps is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = train.lr * lr_factor(state["step"], self.total_steps, train.lr_decay_fraction)
        self.optimizer.step()
        if train.normalize_decoder:
            sae.normalize_decoder_()
        terms = torch.stack([out.loss, out.mse, out.l1, out.l0]).detach().to(torch.float64)
        self.totals.add(terms)
        self.window += terms[0]
        state["step"] += 1
        if state["step"] % train.log_every == 0:
            state["log_step"].append(state["step"])
            state["log_loss"].append(self.window.item() / train.log_every)
            self.window.zero_()

    def _training_terms(self, x: torch.Tensor) -> sparse_codes.TrainingTerms:
        """The batch's loss terms: the sparse path once the previous batch's codes were sparse (so dense
        phases compute the encoder once a step); it hands a batch back when its codes turn out too dense."""
        state = self.state
        with self.autocast:
            try_sparse = self.sparse and state.get("codes_were_sparse", True)
            out = sparse_codes.training_terms(self.sae, x) if try_sparse else None
            if out is None:
                out = self.sae.training_terms(x)
            if self.sparse:
                state["codes_were_sparse"] = sparse_codes.codes_are_sparse(out.l0.item(), self.sae.cfg.d_sae)
        return out

    def end_epoch(self, rows: int) -> None:
        self.totals.append_means(self.state)
        self.state["log_window"] = self.window.item()
        self.state["n_train_rows"] = rows


def with_epochs_for_tokens(train: SAETrainConfig, n_train_rows: int) -> SAETrainConfig:
    """``train`` with ``epochs`` = ceil(training_tokens / n_train_rows) when ``training_tokens`` is set."""
    if not train.training_tokens:
        return train
    return dataclasses.replace(train, epochs=max(1, math.ceil(train.training_tokens / max(n_train_rows, 1))))


def train_sae_on_shards(
    shard_dir: str | os.PathLike,
    cfg: SAEConfig,
    train: SAETrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    max_rows: int | None = None,
) -> tuple[SAE, dict]:
    """Train on a layer's Parquet shards, holding out rows; metrics include held-out evaluation.

    The held-out rows are :func:`~layershift.data.shards.holdout_rows` of ``train.split_seed``: with the same
    split seed every SAE of a layer (both stages, the nulls, the crosscoder) trains and evaluates on the same
    row indices. Epoch ``e`` reads the training rows shuffled with seed ``train.seed + e`` (or in storage order
    when ``train.shuffle`` is off). Shard metadata (model, dataset, stage, layer) fills ``cfg.metadata`` and,
    if empty, ``hook_name`` = ``hidden_states.{layer}``. With no held-out row the evaluation uses training
    rows (``evaluation_split`` says which). ``cpu_seconds`` is this call's process CPU time, training and
    evaluation (of this run only, like ``seconds``, when it resumed). ``max_rows``: only the layer's first that
    many rows (in storage order) are the SAE's rows, its held-out rows drawn among them.
    """
    cpu_start = time.process_time()
    reader = ShardReader(shard_dir, max_rows)
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
