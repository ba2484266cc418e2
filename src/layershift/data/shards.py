"""Token-activation shards: Parquet files of fixed-size row groups, streamed in and out.

One row per (sentence, token). Columns::

    sentence_id  int32    index of the sentence in the extracted split
    position     int32    token position in the sentence (0 = [CLS])
    token_id     int32    tokenizer id
    token        string   the token as shown (``layershift.data.tokens.token_strings``: the vocabulary string; byte-level BPE as text)
    activation   fixed_size_list<float16|float32>[d_model]

A layer's shards live in one directory as ``part-00000.parquet, part-00001.parquet, ...`` beside
``_manifest.json`` (each shard's rows, written last; readers check the files against it); the schema
metadata (key ``layershift``) names model, dataset, stage, layer, dtype and d_model. Writers never hold
more than one row group in memory; readers never more than a shuffle buffer of row groups.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from layershift.core.errors import ArtifactError
from layershift.core.io import (
    encode_metadata,
    read_json,
    read_metadata,
    reading,
    vector_compression,
    write_json,
)

ARROW_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
# rows per shard file, written last by ShardWriter.close; the leading "_" keeps pyarrow / pandas dataset
# readers of the directory from taking it for data
MANIFEST = "_manifest.json"
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


def shard_schema(d_model: int, dtype: str, metadata: dict) -> pa.Schema:
    return pa.schema(
        [
            ("sentence_id", pa.int32()),
            ("position", pa.int32()),
            ("token_id", pa.int32()),
            ("token", pa.string()),
            ("activation", pa.list_(ARROW_DTYPES[dtype], d_model)),
        ],
        metadata=encode_metadata({**metadata, "dtype": dtype, "d_model": d_model}),
    )


class ShardWriter:
    """Append token rows; flush a row group every ``rows_per_group`` rows, a new file every ``groups_per_shard``."""

    def __init__(
        self,
        directory: str | os.PathLike,
        d_model: int,
        dtype: str = "float16",
        rows_per_group: int = 4096,
        groups_per_shard: int = 16,
        metadata: dict | None = None,
    ) -> None:
        if dtype not in ARROW_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(ARROW_DTYPES)}, got {dtype!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.d_model, self.dtype = d_model, dtype
        self.rows_per_group, self.groups_per_shard = rows_per_group, groups_per_shard
        self.schema = shard_schema(d_model, dtype, metadata or {})
        self.n_rows = 0
        self._buffer: list[tuple] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._groups_in_shard = 0
        self._shard_index = 0
        self._tmp_path: Path | None = None
        self._finished: list[Path] = []  # shard files completed so far (removed if the block fails)
        self._shard_rows: dict[str, int] = {}  # finished shard name -> rows, written to the manifest on close
        self._rows_in_shard = 0

    @property
    def rows_appended(self) -> int:
        """Rows handed to ``append`` so far (written or still buffered)."""
        return self.n_rows + self._buffered

    def append(self, sentence_ids, positions, token_ids, tokens, activations: np.ndarray) -> None:
        """Add ``n`` rows; ``activations`` is ``[n, d_model]``."""
        if activations.ndim != 2 or activations.shape[1] != self.d_model:
            raise ValueError(f"activations must be [n, {self.d_model}], got {tuple(activations.shape)}")
        n = len(activations)
        if n == 0:
            return
        acts = np.ascontiguousarray(activations, dtype=NUMPY_DTYPES[self.dtype])
        self._buffer.append(
            (np.asarray(sentence_ids), np.asarray(positions), np.asarray(token_ids), list(tokens), acts)
        )
        self._buffered += n
        while self._buffered >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def _flush(self, n_rows: int) -> None:
        columns = [np.concatenate([b[i] for b in self._buffer]) for i in (0, 1, 2, 4)]
        tokens = [t for b in self._buffer for t in b[3]]
        head = [c[:n_rows] for c in columns]
        rest = [c[n_rows:] for c in columns]
        self._buffer = [(rest[0], rest[1], rest[2], tokens[n_rows:], rest[3])] if len(rest[0]) else []
        self._buffered = len(rest[0])
        self._write_group(head[0], head[1], head[2], tokens[:n_rows], head[3])

    def _write_group(self, sentence_ids, positions, token_ids, tokens, acts) -> None:
        flat = pa.array(acts.reshape(-1), type=self.schema.field("activation").type.value_type)
        table = pa.Table.from_arrays(
            [
                pa.array(sentence_ids, pa.int32()),
                pa.array(positions, pa.int32()),
                pa.array(token_ids, pa.int32()),
                pa.array(tokens, pa.string()),
                pa.FixedSizeListArray.from_arrays(flat, self.d_model),
            ],
            schema=self.schema,
        )
        if self._writer is None:
            self._tmp_path = self.directory / f".part-{self._shard_index:05d}.parquet.tmp"
            # Dictionary pages and min/max statistics only pay off for the token strings and the integer
            # keys; on float activations they cost ~2x the write time and ~5x the read time.
            self._writer = pq.ParquetWriter(
                self._tmp_path,
                self.schema,
                use_dictionary=["token"],
                write_statistics=["sentence_id", "position", "token_id"],
                compression=vector_compression(self.schema),
            )
        self._writer.write_table(table, row_group_size=max(len(table), 1))  # pyarrow refuses 0
        self.n_rows += len(table)
        self._rows_in_shard += len(table)
        self._groups_in_shard += 1
        if self._groups_in_shard >= self.groups_per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        final = self.directory / f"part-{self._shard_index:05d}.parquet"
        os.replace(self._tmp_path, final)
        self._finished.append(final)
        self._shard_rows[final.name] = self._rows_in_shard
        self._writer, self._tmp_path = None, None
        self._groups_in_shard = self._rows_in_shard = 0
        self._shard_index += 1

    def close(self) -> int:
        """Flush what is buffered, finish the last shard, and return the number of rows written."""
        if self._buffered:
            self._flush(self._buffered)
        if self._writer is None and self._shard_index == 0:
            self._write_group(
                *(np.zeros(0, np.int32),) * 3, [], np.zeros((0, self.d_model), NUMPY_DTYPES[self.dtype])
            )
        self._close_shard()
        write_json({"n_rows": self.n_rows, "shards": self._shard_rows}, self.directory / MANIFEST)
        return self.n_rows

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        if self._writer is not None:  # a failed block leaves no part file, finished or not
            self._writer.close()
            self._tmp_path.unlink(missing_ok=True)
            self._writer = None
        for path in self._finished:
            path.unlink(missing_ok=True)


def read_manifest(directory: str | os.PathLike) -> dict[str, int] | None:
    """Rows of each part file as the layer's writer recorded them; None for a layer written before manifests."""
    manifest = Path(directory) / MANIFEST
    return read_json(manifest)["shards"] if manifest.is_file() else None


def shard_paths(directory: str | os.PathLike) -> list[Path]:
    """The layer's shard files, checked against the manifest its writer left (:func:`checked_shard_paths`)."""
    return checked_shard_paths(directory, read_manifest(directory))


def checked_shard_paths(directory: str | os.PathLike, listed: dict[str, int] | None) -> list[Path]:
    """The layer's part files, which must be the ones the manifest ``listed`` (unless None): a deleted or added
    part file would otherwise go unnoticed, since Snakemake sees only the directory, and an SAE would silently
    train on part of the layer."""
    directory = Path(directory)
    paths = sorted(directory.glob("part-*.parquet"))
    if listed is not None:
        found = [p.name for p in paths]
        if found != sorted(listed):
            missing, extra = sorted(set(listed) - set(found)), sorted(set(found) - set(listed))
            problem = (
                f"{', '.join(missing)} missing" if missing else f"{', '.join(extra)} not written with it"
            )
            raise ArtifactError(
                f"{directory}: {problem} ({MANIFEST} lists {len(listed)} shards); delete the layer's tokens "
                "directory and rerun the extract job that writes it"
            )
    if not paths:
        raise FileNotFoundError(f"{directory}: no part-*.parquet shards")
    return paths


def _open_parquet(path: Path) -> pq.ParquetFile:
    with reading(path):
        return pq.ParquetFile(path)


class ShardReader:
    """Read a layer's shards (all rows, or the first ``max_rows``) back as float32 arrays, sequentially or
    shuffled, one buffer at a time."""

    def __init__(self, directory: str | os.PathLike, max_rows: int | None = None) -> None:
        listed = read_manifest(directory)
        self.paths = checked_shard_paths(directory, listed)
        self.metadata = read_metadata(self.paths[0])
        self.d_model = int(self.metadata["d_model"])
        self._files = [_open_parquet(p) for p in self.paths]
        # (file index, row group index, rows) for every non-empty row group, in storage order
        self.groups = [
            (f, g, fh.metadata.row_group(g).num_rows)
            for f, fh in enumerate(self._files)
            for g in range(fh.num_row_groups)
            if fh.metadata.row_group(g).num_rows
        ]
        self.n_rows = sum(n for _, _, n in self.groups)
        if listed is not None:
            self._check_rows(listed)
        self._rows: list[np.ndarray | None] = [None] * len(self.groups)  # per group: kept rows (None: all)
        self._cache: dict[int, np.ndarray] | None = None  # group -> float32 rows (keep_in_memory)
        if max_rows is not None:  # only the first rows, in storage order: later groups are never read
            head = self.subset(np.arange(min(max(max_rows, 0), self.n_rows)))
            self.groups, self._rows, self.n_rows = head.groups, head._rows, head.n_rows

    def _check_rows(self, listed: dict[str, int]) -> None:
        """Each part file holds the rows the manifest ``listed`` (a replaced file of another size is refused)."""
        for path, handle in zip(self.paths, self._files, strict=True):
            if handle.metadata.num_rows != listed[path.name]:
                raise ArtifactError(
                    f"{path}: {handle.metadata.num_rows} rows where its writer wrote {listed[path.name]} "
                    f"({MANIFEST}); delete the layer's tokens directory and rerun the extract job that writes it"
                )

    def keep_in_memory(self, max_bytes: float) -> bool:
        """Keep each row group's activations (float32) after its first read when all of this reader's rows
        take at most ``max_bytes``: later passes (training epochs) skip Parquet decoding, and yield exactly
        the batches a streaming pass would. Larger layers keep streaming. Returns whether rows are kept."""
        fits = self.n_rows * self.d_model * 4 <= max_bytes
        if not fits:
            self._cache = None
        elif self._cache is None:
            self._cache = {}
        return fits

    def group_activations(self, index: int) -> np.ndarray:
        """Row group ``index``'s ``[rows, d_model]`` float32 activations (read-only when kept in memory)."""
        kept = self._cache.get(index) if self._cache is not None else None
        if kept is None:
            kept = activations(self.read_group(index, ["activation"]))
            if self._cache is not None:
                kept.flags.writeable = False
                self._cache[index] = kept
        return kept

    def read_group(self, index: int, columns: list[str] | None = None) -> pa.Table:
        f, g, _ = self.groups[index]
        with reading(self.paths[f]):
            table = self._files[f].read_row_group(g, columns=columns)
        rows = self._rows[index]
        return table if rows is None else table.take(pa.array(rows))

    def subset(self, rows: np.ndarray) -> ShardReader:
        """A reader of only ``rows`` (indices into this reader's rows, kept in storage order), streamed as before.

        Two row-aligned readers (the same tokens in the same order) subset with the same ``rows`` stay aligned.
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= self.n_rows):
            raise IndexError(f"row indices must be in [0, {self.n_rows}), got {rows[0]}..{rows[-1]}")
        view = copy.copy(self)
        view.groups, view._rows, view._cache = [], [], None
        offset = 0
        for (f, g, n), kept in zip(self.groups, self._rows, strict=True):
            local = rows[np.searchsorted(rows, offset) : np.searchsorted(rows, offset + n)] - offset
            offset += n
            if not len(local):
                continue
            view.groups.append((f, g, len(local)))
            view._rows.append(
                None if len(local) == n and kept is None else (local if kept is None else kept[local])
            )
        view.n_rows = len(rows)
        return view

    def split(self, holdout_fraction: float, seed: int) -> tuple[ShardReader, ShardReader | None]:
        """(training rows, held-out rows or None) by :func:`holdout_rows` — row-based, whatever the layout."""
        heldout = holdout_rows(self.n_rows, holdout_fraction, seed)
        if not len(heldout):
            return self, None
        mask = np.ones(self.n_rows, dtype=bool)
        mask[heldout] = False
        return self.subset(np.flatnonzero(mask)), self.subset(heldout)

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for i in range(len(self.groups)):
            yield self.read_group(i, columns)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        buffer_groups: int = 8,
        drop_last: bool = False,
    ) -> Iterator[np.ndarray]:
        """Yield ``[batch, d_model]`` float32 batches; shuffled = random group order + shuffle within a buffer."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.groups)) if shuffle else np.arange(len(self.groups))
        carry = np.zeros((0, self.d_model), np.float32)
        buffers = [order[start : start + buffer_groups] for start in range(0, len(order), buffer_groups)]
        for block in self._prefetched(buffers):
            rows = np.concatenate([carry, *block])  # a fresh array: batches never alias kept rows
            perm = rng.permutation(len(rows)) if shuffle else None
            usable = len(rows) - len(rows) % batch_size
            for b in range(0, usable, batch_size):  # gathered batch by batch: no shuffled copy of the buffer
                yield rows[b : b + batch_size] if perm is None else rows[perm[b : b + batch_size]]
            carry = rows[usable:] if perm is None else rows[perm[usable:]]
        if len(carry) and not drop_last:
            yield carry

    def _prefetched(self, buffers: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
        """Each buffer's row groups, read and decoded one buffer ahead in a background thread (Parquet and
        the float16 conversion release the GIL), so the next buffer's I/O overlaps training on this one.

        Only when a core is free for it: with torch already running a thread on every usable core, a
        reader thread stalls torch's parallel regions (bench_sae, 2 threads on 2 cores: 0.87 -> 0.55 of
        the dense loop), so the groups are then read in line."""

        def load(groups: np.ndarray) -> list[np.ndarray]:
            return [self.group_activations(i) for i in groups]

        if len(buffers) < 2 or not spare_core():
            yield from map(load, buffers)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch") as pool:
            pending = pool.submit(load, buffers[0])
            for following in [*buffers[1:], None]:
                block = pending.result()
                pending = pool.submit(load, following) if following is not None else None
                yield block

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        """The whole layer as one table: for small layers, tests and per-token lookups only."""
        return pa.concat_tables(list(self.iter_tables(columns)))


def spare_core() -> bool:
    """Whether this process's torch threads leave a usable core free (for a reader thread)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return torch.get_num_threads() < cores


def activations(table: pa.Table) -> np.ndarray:
    """The ``activation`` column of ``table`` as a ``[rows, d_model]`` float32 array."""
    column = table.column("activation").combine_chunks()
    d_model = column.type.list_size
    return as_float32(column.flatten().to_numpy(zero_copy_only=False).reshape(-1, d_model))


def as_float32(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 (exact from float16). Float16 goes through torch, whose vectorised conversion is
    ~6x faster than NumPy's element-by-element one (a tenth of a one-epoch SAE run on float16 shards); only
    the processes that train or encode read shards, and they have torch loaded already."""
    if values.dtype != np.float16:
        return values.astype(np.float32, copy=False)
    import torch

    with warnings.catch_warnings():  # Arrow buffers are read-only; the conversion only reads them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(values).float().numpy()


def token_activations(
    directory: str | os.PathLike, columns: tuple[str, ...] = ("token",)
) -> Iterator[tuple[dict[str, list], np.ndarray]]:
    """(the named token columns as lists, activations ``[rows, d_model]`` float32) of a layer's shards, one row
    group at a time."""
    for table in ShardReader(directory).iter_tables([*columns, "activation"]):
        yield {name: table.column(name).to_pylist() for name in columns}, activations(table)


def holdout_rows(n_rows: int, holdout_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out rows: ``round(fraction·n)`` rows drawn with ``seed`` (at least one when the
    fraction is positive and there are two or more rows; never all). Depends only on ``n_rows``, the fraction
    and the seed, so every reader of a layer's tokens (both stages, nulls, crosscoder) holds out the same rows."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    n_holdout = round(holdout_fraction * n_rows)
    if holdout_fraction > 0 and n_rows >= 2:
        n_holdout = min(max(n_holdout, 1), n_rows - 1)
    elif n_rows < 2:
        n_holdout = 0
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=n_holdout, replace=False))


def shard_provenance(
    reader: ShardReader, hook_name: str = "", drop: tuple[str, ...] = ()
) -> tuple[dict, str]:
    """(the shards' metadata without dtype/d_model and ``drop``, the hook name: ``hook_name`` or
    ``hidden_states.{layer}``) - what a dictionary trained on these shards records about its input."""
    provenance = {k: v for k, v in reader.metadata.items() if k not in ("dtype", "d_model", *drop)}
    return provenance, hook_name or (f"hidden_states.{provenance['layer']}" if "layer" in provenance else "")


# --- a layer's shards of both stages, row by row ----------------------------------------------------------
def layer_shard_dir(tokens_dir: str | os.PathLike, layer: int | str) -> str:
    """Where extraction writes layer ``layer``'s token shards under a stage's ``tokens/`` directory."""
    return f"{tokens_dir}/layer{layer}"


def open_paired(
    dir_a: str | os.PathLike, dir_b: str | os.PathLike, max_rows: int | None = None
) -> tuple[ShardReader, ShardReader]:
    """Two readers over shards of the same tokens, checked row group by row group.

    The layouts must match (same row count per group) and every group must hold the same
    ``(sentence_id, position)`` keys in the same order; then equal shuffling seeds keep rows paired.
    ``max_rows``: both readers keep only their first that many rows (:class:`ShardReader`).
    """
    reader_a, reader_b = ShardReader(dir_a, max_rows), ShardReader(dir_b, max_rows)
    layout_a = [n for _, _, n in reader_a.groups]
    layout_b = [n for _, _, n in reader_b.groups]
    if layout_a != layout_b:
        raise ValueError(
            f"{dir_a} and {dir_b}: row groups differ ({len(layout_a)} vs {len(layout_b)} groups)"
        )
    keys = ["sentence_id", "position"]
    for group in range(len(layout_a)):
        if not reader_a.read_group(group, keys).equals(reader_b.read_group(group, keys)):
            raise ValueError(f"{dir_a} and {dir_b}: row group {group} holds different tokens")
    return reader_a, reader_b


def zip_paired(
    reader_a: ShardReader,
    reader_b: ShardReader,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    buffer_groups: int = 8,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x_a, x_b)`` batches from two readers of :func:`open_paired`, shuffled identically."""
    stream_a = reader_a.iter_batches(batch_size, shuffle=shuffle, seed=seed, buffer_groups=buffer_groups)
    stream_b = reader_b.iter_batches(batch_size, shuffle=shuffle, seed=seed, buffer_groups=buffer_groups)
    yield from zip(stream_a, stream_b, strict=True)


def paired_batches(
    dir_a: str | os.PathLike, dir_b: str | os.PathLike, batch_size: int = 4096, memory_cache_mb: float = 0.0
) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """A factory of ``(x_a, x_b)`` batches in storage order from two layers' shards of the same tokens.

    When both layers' rows take at most ``memory_cache_mb`` MiB together (float32), each row group is
    decoded on the first pass and kept for the later ones (:meth:`ShardReader.keep_in_memory`; the same
    batches); otherwise every pass streams the shards again."""
    reader_a, reader_b = open_paired(dir_a, dir_b)
    keep_pair_in_memory(reader_a, reader_b, memory_cache_mb)
    return lambda: zip_paired(reader_a, reader_b, batch_size)


def keep_pair_in_memory(reader_a: ShardReader, reader_b: ShardReader, memory_cache_mb: float) -> None:
    """:meth:`ShardReader.keep_in_memory` for two stages' readers sharing one budget of ``memory_cache_mb``
    MiB (each stage's half: both keep their rows or, for equal layers, neither)."""
    for reader in (reader_a, reader_b):
        reader.keep_in_memory(memory_cache_mb * 2**19)
