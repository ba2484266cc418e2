"""How a model is trained, apart from what it is: batches on the device, Adam, the epoch loop.

The SAE and the crosscoder (``dictionaries``) define their module, loss, files and evaluation; both train
through :func:`fit_epochs`, which calls a ``step(batch)`` callback for every batch of ``batches(epoch)`` and a
``checkpoint()`` callback after every epoch (checkpoints themselves are :mod:`layershift.core.checkpoints`).
The device, threads and seeds come from :mod:`layershift.core.device`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch


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
