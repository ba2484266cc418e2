"""Resume checkpoints, one scheme for every trainer: where a checkpoint lives, what settings it was made with,
how it is saved, found, and removed.

A trainer's checkpoint directory holds at most one complete checkpoint, ``epoch-NNNN/`` (the epochs it has
finished). Inside: whatever files the trainer writes (its model, best weights), ``tensors.safetensors`` and
``checkpoint.json``. The trainer's state is one nested value (dicts, lists, tuples, tensors, JSON scalars:
optimiser and scheduler state dicts, RNG states, progress and loss curves); its tensors go to the safetensors
file and the rest, with tensors replaced by their names, to ``checkpoint.json``. That file also records the
layout version and the *settings key*: a hash of everything that determines the training run
(:func:`settings_key`). A checkpoint is written atomically and replaces the earlier one only once complete.

On resume, :func:`load_checkpoint` returns the checkpoint only if it was made with the same settings key
(and has no more epochs than asked for); otherwise it logs that the checkpoint is ignored and returns None,
so training starts afresh and its first checkpoint replaces the stale one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layershift.core.io import atomic_dir, read_json, remove_tree, write_json

CHECKPOINT_FILENAME = "checkpoint.json"
TENSORS_FILENAME = "tensors.safetensors"
LAYOUT_VERSION = 2  # bump when the checkpoint layout changes; older checkpoints are then ignored
CHECKPOINT_GLOB = "epoch-[0-9]*"

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """A complete checkpoint: its directory, the epochs it finished, and the trainer's state (tensors on CPU)."""

    path: Path
    epoch: int
    state: Any


def settings_key(settings: Any, arrays: Iterable[np.ndarray] = ()) -> str:
    """A hash of what determines a training run: ``settings`` (JSON-able; keys sorted) and the bytes of
    ``arrays`` (e.g. the tokenised data). Two runs may share a checkpoint only if their keys are equal."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    """Where the checkpoint after ``epoch`` finished epochs lives."""
    return Path(directory) / f"epoch-{epoch:04d}"


def complete_checkpoints(directory: str | os.PathLike | None) -> list[Path]:
    """Checkpoint directories under their final names (hence complete), oldest first."""
    if directory is None or not Path(directory).exists():
        return []
    found = Path(directory).glob(CHECKPOINT_GLOB)
    return sorted(path for path in found if (path / CHECKPOINT_FILENAME).exists())


def save_checkpoint(
    directory: str | os.PathLike,
    key: str,
    epoch: int,
    state: Any,
    write_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write the checkpoint after ``epoch`` epochs atomically: ``write_files(dir)`` (the trainer's own files),
    then ``state`` (tensors + JSON skeleton) and the settings ``key``; then remove every other checkpoint."""
    from safetensors.torch import save_file

    final = checkpoint_path(directory, epoch)
    tensors, skeleton = flatten_state(state)
    with atomic_dir(final) as tmp:
        if write_files is not None:
            write_files(tmp)
        save_file(tensors, tmp / TENSORS_FILENAME)
        record = {"version": LAYOUT_VERSION, "settings": key, "epoch": epoch, "state": skeleton}
        write_json(record, tmp / CHECKPOINT_FILENAME)
    for other in complete_checkpoints(directory):
        if other != final:
            remove_tree(other)
    return final


def load_checkpoint(
    directory: str | os.PathLike | None, key: str, max_epoch: int | None = None
) -> Checkpoint | None:
    """The newest complete checkpoint in ``directory`` if it was made with settings ``key`` (and finished at
    most ``max_epoch`` epochs); otherwise None, with a log line when a checkpoint is ignored."""
    from safetensors.torch import load_file

    found = complete_checkpoints(directory)
    if not found:
        return None
    path = found[-1]
    record = read_json(path / CHECKPOINT_FILENAME)
    if record.get("version") != LAYOUT_VERSION or record.get("settings") != key:
        log.warning("ignoring checkpoint %s: it was made with other settings; training starts afresh", path)
        return None
    if max_epoch is not None and record["epoch"] > max_epoch:
        log.warning(
            "ignoring checkpoint %s: it has %d epochs, more than the %d asked for; training starts afresh",
            path,
            record["epoch"],
            max_epoch,
        )
        return None
    state = unflatten_state(record["state"], load_file(path / TENSORS_FILENAME))
    return Checkpoint(path, record["epoch"], state)


def remove_checkpoints(directory: str | os.PathLike | None) -> None:
    """Delete a finished run's checkpoint directory (its outputs are written; nothing to resume), and its
    parent if that leaves it empty."""
    if directory is None:
        return
    directory = Path(directory)
    remove_tree(directory)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tuples, tensors, JSON scalars) into safetensors-ready tensors and a
    JSON skeleton.

    Tensors become ``{"__tensor__": name}``; dicts ``{"__dict__": [[key, value], ...]}`` so integer keys
    (optimiser parameter ids) survive JSON; tuples ``{"__tuple__": [...]}`` (Adam's betas come back as tuples).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = value.detach().to("cpu").contiguous().clone()
            return {"__tensor__": name}
        if isinstance(value, dict):
            return {"__dict__": [[k, walk(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot checkpoint a {type(value).__name__}")

    return tensors, walk(obj)


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__tuple__" in skeleton:
        return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    if isinstance(skeleton, dict):
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton
