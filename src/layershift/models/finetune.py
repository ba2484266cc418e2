"""Fine-tune a BERT-family encoder for sequence classification (the paper's §3.2.1), resumably.

The loop is deliberately plain: texts are tokenised once into a right-padded id matrix, every epoch is cut
into length-grouped batches (each padded only to its own longest row), and one optimiser step is one
forward + backward + clip + step with no host sync (the loss is summed on the device and read once per
epoch). After every epoch the model is scored on the validation split; the best epoch by validation
accuracy (ties: the earlier one) is what lands in ``out_dir``. With ``checkpoint_dir`` the complete training
state is saved after each epoch, so a killed job resumes at its last finished epoch and ends bit-identical
(on CPU) to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from layershift.core import checkpoints
from layershift.core.device import resolve_device, set_threads
from layershift.models.batches import Batch, Encodings, encode_split, make_batches
from layershift.models.classifier import (
    autocast,
    autocast_dtype,
    load_classifier,
    load_finetuned,
    load_tokenizer,
    predict_logits,
    save_model,
)
from layershift.models.metrics import score_logits
from layershift.models.optim import make_optimizer, make_scheduler, optimizer_step
from layershift.study.schema import schema_default

LOG_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "seconds",
    "tokens_per_second",
    "lr",
]


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune; every field that changes the numbers also keys the resume checkpoint."""

    # the paper: Adam; "adamw" decouples the weight decay
    optimizer: Literal["adam", "adamw"] = schema_default("finetune", "optimizer")
    lr: float = schema_default("finetune", "lr")  # peak learning rate (the paper: 2e-5)
    epochs: int = schema_default("finetune", "epochs")  # passes over the training split (the paper: 10)
    batch_size: int = schema_default("finetune", "batch_size")  # sequences per optimiser step
    # tokens kept per text after truncation, [CLS] and [SEP] included
    max_length: int = schema_default("finetune", "max_length")
    # fraction of all steps with a linear lr ramp from 0; then linear decay to 0
    warmup_ratio: float = schema_default("finetune", "warmup_ratio")
    # L2 (adam) or decoupled (adamw) decay; never applied to biases / LayerNorm
    weight_decay: float = schema_default("finetune", "weight_decay")
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this; None disables clipping
    megabatch_mult: int = 50  # length grouping: rows are sorted by length inside windows of this many batches
    seed: int = 0  # seeds the classifier head, dropout and the batch order of every epoch
    # autocast dtype on CUDA; CPU always runs fp32
    precision: Literal["fp32", "bf16", "fp16"] = schema_default("finetune", "precision")
    threads: int | None = None  # torch intra-op CPU threads; None keeps torch's default
    device: str = "auto"  # "auto" = cuda if available else cpu, or any torch device string

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 2 or self.megabatch_mult < 1:
            raise ValueError("epochs, batch_size and megabatch_mult must be >= 1 and max_length >= 2")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr < 0 or self.weight_decay < 0:  # lr 0: the no-step control
            raise ValueError("lr and weight_decay must be >= 0")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("max_grad_norm must be > 0 or None")

    def numeric_fields(self) -> dict:
        """The fields that change the trained weights (threads and device do not, on a given machine)."""
        return {k: v for k, v in asdict(self).items() if k not in ("threads", "device")}


# ----------------------------------------------------------------------------------------------------
# The training loop


@dataclass
class FinetuneState:
    """What a fine-tuning run carries from epoch to epoch (and into a checkpoint): the model and its optimiser,
    schedule and loss scaler, the log so far, and the best epoch with a CPU copy of its weights."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    log: list[dict]
    best_epoch: int  # 1-based; 0 = none yet
    best_accuracy: float
    best_state: dict[str, torch.Tensor] | None  # CPU copy of the best weights so far


def finetune(
    model_dir: str | Path,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    label_names: Sequence[str],
    cfg: FinetuneConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    keep_checkpoint: bool = False,
) -> pd.DataFrame:
    """Fine-tune ``model_dir`` on ``train_df`` and write the best epoch's model + tokenizer to ``out_dir``.

    ``train_df`` / ``val_df`` have columns ``text`` (str) and ``label`` (int id into ``label_names``).
    Returns the training log, one row per epoch (columns LOG_COLUMNS; ``seconds`` covers training and
    validation, ``tokens_per_second`` counts real training tokens over the optimiser steps only).
    ``callback(epoch, row)`` runs after each epoch (after its checkpoint). With ``checkpoint_dir`` the run
    resumes from the last finished epoch of an earlier run with the same config and data; the checkpoint
    is deleted after ``out_dir`` is written unless ``keep_checkpoint``.
    """
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(model_dir)
    train = encode_split(tokenizer, train_df, len(label_names), cfg.max_length, "train_df")
    val = encode_split(tokenizer, val_df, len(label_names), cfg.max_length, "val_df")
    fingerprint = training_fingerprint(cfg, train, val, label_names, model_dir)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    with _deterministic(device.type == "cpu"):
        run, start_epoch = _start_run(model_dir, label_names, cfg, train, device, ckpt, fingerprint)
        val_batches = make_batches(val, cfg.batch_size, pin_memory=device.type == "cuda")
        for epoch in range(start_epoch, cfg.epochs):
            row = _run_epoch(run, train, val_batches, val.labels, cfg, epoch, device, progress)
            if ckpt is not None:
                save_checkpoint(ckpt, run, epoch + 1, fingerprint)
            if callback is not None:
                callback(epoch + 1, row)

    run.model.load_state_dict(run.best_state)
    save_model(run.model, tokenizer, out_dir, summary=_summary(cfg, run, label_names))
    if ckpt is not None and not keep_checkpoint:
        checkpoints.remove_checkpoints(ckpt)
    log = pd.DataFrame(run.log, columns=LOG_COLUMNS)
    log.attrs["best_epoch"] = run.best_epoch
    return log


def _start_run(model_dir, label_names, cfg, train: Encodings, device, ckpt: Path | None, fingerprint: str):
    """A fresh run (seeded head) or the run saved in ``ckpt``; returns it and the 0-based epoch to start at."""
    model = load_classifier(model_dir, label_names, cfg.seed).to(device)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, steps_per_epoch * cfg.epochs, cfg.warmup_ratio)
    use_scaler = autocast_dtype(cfg.precision, device) == torch.float16
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    run = FinetuneState(model, optimizer, scheduler, scaler, [], 0, -math.inf, None)
    start_epoch = load_checkpoint(ckpt, run, fingerprint, device) if ckpt is not None else 0
    return run, start_epoch


def _run_epoch(
    run: FinetuneState, train: Encodings, val_batches, val_labels, cfg, epoch: int, device, progress: bool
) -> dict:
    """Train one epoch, score it on validation, update the best weights; returns (and logs) its row."""
    start = time.perf_counter()
    batches = make_batches(train, cfg.batch_size, cfg.seed, epoch, cfg.megabatch_mult, device.type == "cuda")
    train_start = time.perf_counter()
    bar = tqdm(
        total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr, disable=not progress
    )
    train_loss, lr = _train_pass(run, batches, cfg, device, bar)
    train_seconds = time.perf_counter() - train_start
    amp = autocast_dtype(cfg.precision, device)
    scores = score_logits(predict_logits(run.model, val_batches, device, amp), val_labels)
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": scores["loss"],
        "val_accuracy": scores["accuracy"],
        "val_macro_f1": scores["macro_f1"],
        "seconds": time.perf_counter() - start,
        "tokens_per_second": sum(b.n_tokens for b in batches) / max(train_seconds, 1e-9),
        "lr": lr,
    }
    bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{scores['accuracy']:.4f}")
    bar.close()
    run.log.append(row)
    if scores["accuracy"] > run.best_accuracy:
        run.best_epoch, run.best_accuracy = epoch + 1, scores["accuracy"]
        run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    return row


def _train_pass(
    run: FinetuneState, batches: Sequence[Batch], cfg: FinetuneConfig, device, bar
) -> tuple[float, float]:
    """One pass of optimiser steps; returns the example-weighted mean training loss and the last step's lr.

    The loss is accumulated on the device and read once at the end: no host sync per step.
    """
    model, optimizer, scheduler, scaler = run.model, run.optimizer, run.scheduler, run.scaler
    amp = autocast_dtype(cfg.precision, device)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    loss_sum = torch.zeros((), device=device)
    n_rows, lr = 0, optimizer.param_groups[0]["lr"]
    for batch in batches:
        b = batch.to(device)
        with autocast(device, amp):
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits  # [b, C]
        loss = F.cross_entropy(logits.float(), b.labels)
        lr = optimizer.param_groups[0]["lr"]
        optimizer_step(loss, params, optimizer, scaler, cfg.max_grad_norm)
        scheduler.step()
        loss_sum += loss.detach() * len(b.index)
        n_rows += len(b.index)
        bar.update()
    return loss_sum.item() / max(n_rows, 1), float(lr)


@contextlib.contextmanager
def _deterministic(enabled: bool):
    """Ask torch for deterministic kernels (warn-only) for the block, then restore the previous setting."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _summary(cfg: FinetuneConfig, run: FinetuneState, label_names: Sequence[str]) -> dict:
    return {
        "config": asdict(cfg),
        "best_epoch": run.best_epoch,
        "best_val_accuracy": run.best_accuracy,
        "label_names": list(label_names),
    }


# ----------------------------------------------------------------------------------------------------
# Checkpoints (core.checkpoints): the model and best weights as save_pretrained directories beside the state


def training_fingerprint(
    cfg: FinetuneConfig, train: Encodings, val: Encodings, label_names: Sequence[str], model_dir: str | Path
) -> str:
    """The checkpoint settings key: numeric config, model files, label names and the tokenised data."""
    model_files = sorted((p.name, p.stat().st_size) for p in Path(model_dir).iterdir() if p.is_file())
    config_text = (Path(model_dir) / "config.json").read_text()
    settings = [cfg.numeric_fields(), list(label_names), model_files, config_text]
    data = [array for enc in (train, val) for array in (enc.input_ids, enc.lengths, enc.labels)]
    return checkpoints.settings_key(settings, data)


def save_checkpoint(directory: Path, run: FinetuneState, epochs_done: int, fingerprint: str) -> None:
    """Replace the checkpoint in ``directory`` atomically with the state after ``epochs_done`` epochs."""
    best_is_current = run.best_epoch == epochs_done
    state = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "best_epoch": run.best_epoch,
        "best_accuracy": run.best_accuracy,
        "best_weights": "model" if best_is_current else "best",
        "log": run.log,
    }

    def write_models(path: Path) -> None:
        run.model.save_pretrained(path / "model", safe_serialization=True)
        if not best_is_current:
            run.model.save_pretrained(path / "best", state_dict=run.best_state, safe_serialization=True)

    checkpoints.save_checkpoint(directory, fingerprint, epochs_done, state, write_models)


def load_checkpoint(directory: Path, run: FinetuneState, fingerprint: str, device: torch.device) -> int:
    """Restore ``run`` from the checkpoint in ``directory`` if it was made with ``fingerprint``; returns the
    epoch to start at (0 = fresh)."""
    found = checkpoints.load_checkpoint(directory, fingerprint)
    if found is None:
        return 0
    state = found.state
    run.model.load_state_dict(load_finetuned(found.path / "model").state_dict())
    best = (
        run.model if state["best_weights"] == "model" else load_finetuned(found.path / state["best_weights"])
    )
    run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in best.state_dict().items()}
    run.best_epoch, run.best_accuracy, run.log = state["best_epoch"], state["best_accuracy"], state["log"]
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state["scaler"] is not None:
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return found.epoch
