"""How a dictionary is trained, apart from what it is: batches on the device, Adam, the epoch loop, checkpoints.

``sae.py`` and ``crosscoder.py`` define their module, loss, files and evaluation; both train through
:func:`fit_epochs`, which calls a ``step(batch)`` callback for every batch of ``batches(epoch)`` and saves one
checkpoint per epoch. A checkpoint is a directory ``epoch-NNNN/`` under the run's checkpoint directory holding
the model's own files (written by the caller), the optimiser state as safetensors (``state.{param}.{key}``,
plus any ``trainer.{name}`` tensors the trainer keeps) and ``trainer_state.json`` (progress, loss curves,
optimiser param groups, the training config). Written atomically; older ones are removed once a newer one is
complete, so resuming always finds a whole epoch. The device, threads and seeds come from ``core.device``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from layershift.core.io import atomic_dir, read_json, remove_tree, write_json

OPTIMIZER_FILENAME = "optimizer.safetensors"
TRAINER_STATE_FILENAME = "trainer_state.json"


# --- batches on the device ------------------------------------------------------------------------------
def to_tensor(batch: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float batch on ``device`` without an extra host copy (``torch.from_numpy`` shares memory)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    batch = np.ascontiguousarray(batch)
    if batch.flags.writeable:
        return torch.from_numpy(batch).to(device, non_blocking=True)
    with warnings.catch_warnings():  # Arrow buffers are read-only; nothing here writes to the tensor
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(batch).to(device, non_blocking=True)


# --- optimiser and the epoch loop -------------------------------------------------------------------------
def with_train_config(cfg: Any, train: Any) -> Any:
    """``cfg`` (a dictionary's config dataclass) with the training config recorded in its metadata (→ cfg.json)."""
    import dataclasses

    return dataclasses.replace(cfg, metadata={**cfg.metadata, "train_config": dataclasses.asdict(train)})


def holdout_metrics(train_rows: int, heldout: Any, split_seed: int) -> dict:
    """What a shard-trained dictionary's metrics say about its rows (``heldout``: the held-out reader or None)."""
    return {
        "n_train_rows": train_rows,
        "n_heldout_rows": heldout.n_rows if heldout else 0,
        "evaluation_split": "heldout" if heldout else "train",
        "split_seed": split_seed,
    }


def explained_variance(sse: torch.Tensor, x_sq: torch.Tensor, x_sum: torch.Tensor, n: int) -> torch.Tensor:
    """``1 - SSE / SST`` (SST around the overall mean) from float64 sums over ``n`` rows; the sums may carry a
    leading batch dimension (one per model: ``sse``/``x_sq`` ``[m]``, ``x_sum`` ``[m, d]``).

    NaN where it is undefined: fewer than two rows, or rows all equal up to rounding (SST at most 1e-9 of
    ``Σ‖x‖²``; a clamped SST would turn the ratio into ±inf, 1.0 or -1e307 depending on rounding). NaN is
    written as null in metrics.json and shown as "-" in the report."""
    sst = x_sq - x_sum.pow(2).sum(dim=-1) / max(n, 1)
    ev = 1.0 - sse / sst.clamp_min(torch.finfo(torch.float64).tiny)
    undefined = (sst <= 1e-9 * x_sq) | (n < 2)
    return torch.where(undefined, torch.full_like(ev, float("nan")), ev)


def make_adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam over ``params``; the fused kernel when this torch/device has one."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def progress_bar(stream: Iterable, enabled: bool, description: str) -> Iterable:
    """``stream`` wrapped in a tqdm bar for the rule's log (updated at most every 5 s), or as it is."""
    if not enabled:
        return stream
    from tqdm.auto import tqdm

    return tqdm(stream, desc=description, unit="batch", mininterval=5.0)


def peek(
    batches: Iterator[Any], n_rows: int, rows_of: Callable[[Any], int] = len
) -> tuple[list[Any], Iterator[Any]]:
    """Take batches until ``n_rows`` rows are seen; return them and an iterator that still yields everything."""
    import itertools

    head: list[Any] = []
    seen = 0
    for batch in batches:
        head.append(batch)
        seen += rows_of(batch)
        if seen >= n_rows:
            break
    return head, itertools.chain(head, batches)


class Steps(Protocol):
    """What :func:`fit_epochs` drives: one optimiser ``step`` per batch, plus per-epoch bookkeeping."""

    def initialize(self, head: list[Any]) -> None: ...  # epoch 0: the batches holding the first rows

    def start_epoch(self) -> None: ...

    def step(self, batch: Any) -> None: ...

    def end_epoch(self, rows: int) -> None: ...  # rows: trained on in this epoch


def fit_epochs(
    batches: Callable[[int], Iterable[Any]],
    epochs: int,
    state: dict,
    steps: Steps,
    *,
    init_rows: int = 0,
    rows_of: Callable[[Any], int] = len,
    checkpoint: Callable[[], None] | None = None,
    progress: bool = True,
    name: str = "epoch",
) -> int:
    """Run epochs ``state["epoch"] .. epochs-1``: ``steps.step(batch)`` on every batch of ``batches(epoch)``.

    Before epoch 0's first step, ``steps.initialize`` gets the batches holding its first ``init_rows`` rows
    (they are still trained on). ``steps.start_epoch()`` runs before an epoch, ``steps.end_epoch(rows)``
    after it; then ``state["epoch"]`` advances and ``checkpoint()`` saves. Returns the rows trained on here.
    """
    rows_this_run = 0
    for epoch in range(state["epoch"], epochs):
        stream = iter(batches(epoch))
        if epoch == 0:
            head, stream = peek(stream, init_rows, rows_of)
            steps.initialize(head)
        steps.start_epoch()
        rows = 0
        for batch in progress_bar(stream, progress, f"{name} {epoch + 1}/{epochs}"):
            steps.step(batch)
            rows += rows_of(batch)
        if rows == 0:
            raise ValueError(f"batches({epoch}) yielded no rows")
        steps.end_epoch(rows)
        state["epoch"] = epoch + 1
        rows_this_run += rows
        if checkpoint is not None:
            checkpoint()
    return rows_this_run


# --- checkpoints ------------------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | os.PathLike,
    save_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    state: dict,
    train_config: dict,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``epoch-NNNN/`` atomically (``save_model(dir)``, optimiser + ``tensors``, trainer state), then
    remove older checkpoints. ``tensors`` are trainer tensors kept beside the optimiser (e.g. idle counters)."""
    directory = Path(directory)
    optim_state = optimizer.state_dict()
    flat = {
        f"state.{index}.{key}": value.detach().to("cpu").contiguous()
        for index, param_state in optim_state["state"].items()
        for key, value in param_state.items()
    } | {f"trainer.{name}": t.detach().to("cpu").contiguous() for name, t in (tensors or {}).items()}
    final = directory / f"epoch-{state['epoch']:04d}"
    with atomic_dir(final) as tmp:
        save_model(tmp)
        save_file(flat, tmp / OPTIMIZER_FILENAME)
        trainer = {**state, "param_groups": optim_state["param_groups"], "train_config": train_config}
        write_json(trainer, tmp / TRAINER_STATE_FILENAME)
    for older in complete_checkpoints(directory)[:-1]:
        remove_tree(older)
    return final


def complete_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint directories under their final names (hence complete), oldest first."""
    if not Path(directory).exists():
        return []
    return sorted(p for p in Path(directory).glob("epoch-[0-9]*") if (p / TRAINER_STATE_FILENAME).exists())


def load_checkpoint(
    directory: str | os.PathLike | None,
    optimizer: torch.optim.Optimizer,
    train_config: dict,
    resume_fields: Iterable[str],
    epochs: int,
) -> tuple[Path, dict, dict[str, torch.Tensor]] | None:
    """Restore the newest checkpoint's optimiser state; (its directory, trainer state, trainer tensors) or None
    (no directory, or nothing complete in it).

    Refuses a checkpoint whose ``resume_fields`` of the training config differ from ``train_config`` or that
    has more epochs than ``epochs``. The caller restores the model from the returned directory.
    """
    found = complete_checkpoints(directory) if directory else []
    if not found:
        return None
    path = found[-1]
    trainer = read_json(path / TRAINER_STATE_FILENAME)
    saved_train = trainer.pop("train_config")
    mismatched = [k for k in resume_fields if saved_train.get(k) != train_config.get(k)]
    if mismatched:
        raise ValueError(
            f"{path}: checkpoint trained with different {mismatched}; delete it or match the config"
        )
    if trainer["epoch"] > epochs:
        raise ValueError(
            f"{path}: checkpoint has {trainer['epoch']} epochs, more than the {epochs} asked for"
        )
    flat = load_file(path / OPTIMIZER_FILENAME)
    extra = {name.split(".", 1)[1]: t for name, t in flat.items() if name.startswith("trainer.")}
    optim = {name: t for name, t in flat.items() if name.startswith("state.")}
    optimizer.load_state_dict(unflatten_optimizer(optim, trainer.pop("param_groups")))
    return path, trainer, extra


def unflatten_optimizer(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict:
    """``state.{index}.{key}`` tensors + JSON param groups -> a ``torch.optim`` state dict."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in param_groups]
    return {"state": state, "param_groups": groups}
