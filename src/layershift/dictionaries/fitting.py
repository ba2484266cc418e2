"""What the SAE and crosscoder trainers share: the resumable epoch loop, checkpoint state, per-epoch loss means.

A dictionary trainer builds its model, Adam and a ``Steps`` object (one optimiser step per batch, see
:class:`~layershift.core.training.Steps`) and hands them to :func:`fit_dictionary`, which resumes from the
checkpoint made with the same settings (:mod:`layershift.core.checkpoints`), runs the remaining epochs and
saves a checkpoint after each: the model's own files, the optimiser state, the trainer's progress and loss
curves, and any tensors its ``Steps`` keeps (:meth:`DictionarySteps.checkpoint_tensors`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from layershift.core import checkpoints
from layershift.core.training import Steps, fit_epochs


class Dictionary(Protocol):
    """What :func:`fit_dictionary` needs of a model besides its parameters."""

    cfg: Any

    def named_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]: ...

    def initialize_from_data(self, head: list[Any], n_rows: int) -> None: ...  # statistics of the first rows

    # the config values training derived from data
    def restore_trained_settings(self, saved_cfg: Any) -> None: ...


class DictionarySteps(Steps, Protocol):
    """A :class:`~layershift.core.training.Steps` whose tensors beside the model go into checkpoints."""

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]: ...

    def restore_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


@dataclass
class DictionaryRun:
    """One training run's moving parts: the model, its Adam, the per-batch steps and the progress state."""

    model: Dictionary
    optimizer: torch.optim.Optimizer
    steps: DictionarySteps
    state: dict  # epoch, step, tokens and the per-epoch loss curves


@dataclass
class Checkpointing:
    """Where a trainer's checkpoints live and how its model is written to and read from one."""

    directory: str | os.PathLike | None  # None: no checkpoints
    settings_key: str  # core.checkpoints.settings_key of what determines the run
    save_model: Callable[[Any, Path], None]
    load_model: Callable[[Path], Any]


def restore_checkpoint_weights(model: Dictionary, saved: Dictionary) -> None:
    """Copy a checkpoint's model into ``model``: the settings training derived from data, then every parameter."""
    model.restore_trained_settings(saved.cfg)
    saved_parameters = dict(saved.named_parameters())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(saved_parameters[name])


class EpochTotals:
    """Sums of a step's loss terms over an epoch, kept on the device (no host sync per step); their means are
    appended to the state's per-epoch curves (one list per name in ``curves``) when the epoch ends."""

    def __init__(self, curves: tuple[str, ...], device: torch.device) -> None:
        self.curves = curves
        self.sums = torch.zeros(len(curves), dtype=torch.float64, device=device)  # [n_curves]
        self.steps = 0

    def add(self, terms: torch.Tensor) -> None:
        """Add one step's ``[n_curves]`` float64 terms."""
        self.sums += terms
        self.steps += 1

    def append_means(self, state: dict) -> None:
        for key, value in zip(self.curves, (self.sums / max(self.steps, 1)).tolist(), strict=True):
            state[key].append(value)


def fit_dictionary(
    run: DictionaryRun,
    batches: Callable[[int], Iterable[Any]],
    epochs: int,
    checkpointing: Checkpointing,
    **fit_options: Any,
) -> tuple[int, int, float]:
    """Resume ``run`` (model, optimizer, steps, state) from a matching checkpoint, then train epochs
    ``state["epoch"] .. epochs-1`` with :func:`~layershift.core.training.fit_epochs` (``fit_options``: its
    keyword arguments), saving a checkpoint after each. Returns (epochs resumed from, rows trained on in this
    run, seconds this run took)."""
    model, optimizer, steps, state = run.model, run.optimizer, run.steps, run.state
    directory = checkpointing.directory
    resumed = (
        checkpoints.load_checkpoint(directory, checkpointing.settings_key, epochs) if directory else None
    )
    if resumed is not None:
        state.update(resumed.state["progress"])
        optimizer.load_state_dict(resumed.state["optimizer"])
        steps.restore_tensors(resumed.state["tensors"])
        restore_checkpoint_weights(model, checkpointing.load_model(resumed.path))
    resumed_from_epoch = state["epoch"]

    def save() -> None:
        trainer_state = {
            "progress": state,
            "optimizer": optimizer.state_dict(),
            "tensors": steps.checkpoint_tensors(),
        }
        checkpoints.save_checkpoint(
            directory,
            checkpointing.settings_key,
            state["epoch"],
            trainer_state,
            lambda path: checkpointing.save_model(model, path),
        )

    start = time.perf_counter()
    rows_this_run = fit_epochs(
        batches, epochs, state, steps, checkpoint=save if directory else None, **fit_options
    )
    return resumed_from_epoch, rows_this_run, time.perf_counter() - start
