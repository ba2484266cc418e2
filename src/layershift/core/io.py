"""Atomic, self-describing artifact writing: nothing half-written ever sits under a final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from layershift.core.errors import ArtifactError

METADATA_KEY = b"layershift"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; final files get the usual permissions
    try:
        yield tmp_path
        # again: writers that replace the file (safetensors >= 0.5 writes a fresh 0600 file) undo the chmod above
        tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; swap it into place only if the block succeeds."""
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        for path in tmp.rglob("*"):  # files some writers create 0600 (safetensors) get the usual permissions
            if path.is_file() and not path.is_symlink():
                path.chmod(0o666 & ~_umask())
        # the old directory leaves its final name in one rename before it is deleted: a kill during the
        # deletion must not leave a half-deleted directory (a checkpoint missing its optimiser) under it
        if final.exists():
            remove_tree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a directory without ever leaving it half-deleted under its name: rename it to a hidden
    ``.<name>.<random>.removed`` sibling first (one atomic step), then delete that. A kill during the
    deletion leaves only the hidden sibling behind."""
    import shutil

    path = Path(path)
    if not path.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".removed", dir=path.parent))
    os.replace(path, trash)  # replaces the empty placeholder directory
    shutil.rmtree(trash, ignore_errors=True)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as pretty, key-sorted JSON, atomically (stable bytes for the same content)."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
        )


def _finite(value: Any) -> Any:
    """NaN and infinities become null, so every JSON file is standard JSON."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _finite(value.item())
    return value


def read_json(path: str | os.PathLike) -> Any:
    with reading(path):
        return json.loads(Path(path).read_text())


def read_table(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_parquet`` of a workflow artifact; a corrupt file is one line naming it (:func:`reading`)."""
    with reading(path):
        return pd.read_parquet(path, **kwargs)


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Parse errors of the artifact at ``path`` (truncated Parquet, safetensors or JSON) as one line naming it.

    A job loading several files otherwise fails with the parser's message alone (``Parquet magic bytes not
    found``, ``incomplete metadata``), which names no file; a missing file raises as it is.
    """
    from safetensors import SafetensorError

    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SafetensorError) as err:  # pyarrow's ArrowInvalid is a ValueError
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ArtifactError(
            f"{path}: cannot be read ({reason}); delete it and rerun the job that writes it"
        ) from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``df`` to Parquet atomically, with ``metadata`` stored as JSON in the schema."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), **encode_metadata(metadata or {})}
    )
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def vector_compression(schema: pa.Schema) -> dict[str, str]:
    """Parquet codecs per column: none for vector (list) columns, snappy for the rest.

    Float activations do not compress (snappy saves under 1 % of their bytes) and compressing them costs a
    third of the write time. pyarrow keys a list column's codec by its leaf path, ``name.list.element``."""
    codecs = {}
    for field in schema:
        is_vector = pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type)
        codecs[f"{field.name}.list.element" if is_vector else field.name] = "none" if is_vector else "snappy"
    return codecs


def encode_metadata(metadata: dict) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps(metadata, sort_keys=True, default=_json_default).encode()}


def read_metadata(path: str | os.PathLike) -> dict:
    """The layershift metadata dict stored in a Parquet file's schema ({} if none)."""
    with reading(path):
        raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_safetensors(tensors: dict, path: str | os.PathLike, format_version: int) -> None:
    """Write ``tensors`` (moved to CPU, contiguous) to a safetensors file atomically, with ``format_version``."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "format_version": str(format_version)})


def read_safetensors(path: str | os.PathLike, shapes: dict[str, tuple], dtype: Any = None) -> dict:
    """The tensors of a safetensors file, refused unless their names and shapes are ``shapes``; cast to ``dtype``."""
    from safetensors.torch import load_file

    with reading(path):
        state = load_file(path)
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != shapes:
        raise ValueError(f"{Path(path).parent}: weights {found} do not match cfg.json shapes {shapes}")
    return {name: t.to(dtype) if dtype is not None else t for name, t in state.items()}
