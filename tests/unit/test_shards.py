"""Token-activation shards: round trip, fixed row groups, several files, shuffled batches, atomicity."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from layershift.core.io import read_metadata
from layershift.data import shards
from layershift.data.shards import (
    ShardReader,
    ShardWriter,
    activations,
    as_float32,
    holdout_rows,
    open_paired,
    shard_paths,
    zip_paired,
)

D = 8


def token_rows(n: int, seed: int = 0):
    """``n`` fake token rows: (sentence_ids, positions, token_ids, tokens, activations [n, D])."""
    rng = np.random.default_rng(seed)
    sentence_ids = np.repeat(np.arange(n // 4 + 1), 4)[:n].astype(np.int32)
    positions = np.tile(np.arange(4), n // 4 + 1)[:n].astype(np.int32)
    token_ids = rng.integers(0, 100, n).astype(np.int32)
    tokens = [f"tok{t}" for t in token_ids]
    acts = rng.normal(size=(n, D)).astype(np.float32)
    return sentence_ids, positions, token_ids, tokens, acts


def write_rows(
    directory, rows, dtype="float32", rows_per_group=10, groups_per_shard=2, chunk=7, metadata=None
):
    """Append ``rows`` in uneven chunks of ``chunk`` rows; return the row count close() reports."""
    with ShardWriter(
        directory, D, dtype, rows_per_group, groups_per_shard, metadata or {"layer": 3}
    ) as writer:
        n = len(rows[4])
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            writer.append(rows[0][part], rows[1][part], rows[2][part], rows[3][part], rows[4][part])
    return writer.n_rows


@pytest.mark.parametrize(("dtype", "atol"), [("float32", 0.0), ("float16", 2e-3)])
def test_round_trip_keeps_every_column(tmp_path, dtype, atol):
    rows = token_rows(53)
    assert write_rows(tmp_path / "layer3", rows, dtype=dtype) == 53
    reader = ShardReader(tmp_path / "layer3")
    assert reader.n_rows == 53 and reader.d_model == D
    table = reader.read_all()
    np.testing.assert_array_equal(table.column("sentence_id").to_numpy(), rows[0])
    np.testing.assert_array_equal(table.column("position").to_numpy(), rows[1])
    np.testing.assert_array_equal(table.column("token_id").to_numpy(), rows[2])
    assert table.column("token").to_pylist() == rows[3]
    got = activations(table)
    assert got.dtype == np.float32 and got.shape == (53, D)
    np.testing.assert_allclose(got, rows[4], rtol=1e-3 if atol else 0, atol=atol)
    stored = pq.read_schema(reader.paths[0]).field("activation").type.value_type
    assert str(stored) == {"float32": "float", "float16": "halffloat"}[dtype]


def test_float16_rows_convert_exactly_like_numpy():
    # every float16 bit pattern: normals, subnormals, both zeros, infinities, NaNs
    every = np.arange(2**16, dtype=np.uint16).view(np.float16).reshape(-1, 64)
    every.flags.writeable = False  # as Arrow hands them over
    got = as_float32(every)
    assert got.dtype == np.float32 and got.flags.writeable
    want = every.astype(np.float32)
    finite_or_inf = ~np.isnan(want)  # NaNs stay NaN; the hardware conversion may quiet a signalling payload
    np.testing.assert_array_equal(np.isnan(got), ~finite_or_inf)
    np.testing.assert_array_equal(got[finite_or_inf].view(np.uint32), want[finite_or_inf].view(np.uint32))
    rows32 = np.ones((3, 4), np.float32)
    assert as_float32(rows32) is rows32  # float32 shards are not copied


def test_fixed_row_groups_and_several_shard_files(tmp_path):
    write_rows(tmp_path / "l", token_rows(53), rows_per_group=10, groups_per_shard=2)
    paths = shard_paths(tmp_path / "l")
    # 53 rows -> groups of 10,10,10,10,10,3 -> 2 groups per file -> 3 files
    assert [p.name for p in paths] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    sizes = [
        pq.ParquetFile(p).metadata.row_group(g).num_rows
        for p in paths
        for g in range(pq.ParquetFile(p).num_row_groups)
    ]
    assert sizes == [10, 10, 10, 10, 10, 3]
    reader = ShardReader(tmp_path / "l")
    assert [n for _, _, n in reader.groups] == sizes
    assert not list((tmp_path / "l").glob(".*tmp")), "no temporary part file may remain"


def test_metadata_is_stored_in_every_shard(tmp_path):
    write_rows(tmp_path / "l", token_rows(30), metadata={"layer": 3, "stage": "pretrained", "model": "m"})
    for path in shard_paths(tmp_path / "l"):
        meta = read_metadata(path)
        assert meta == {"layer": 3, "stage": "pretrained", "model": "m", "dtype": "float32", "d_model": D}
    assert ShardReader(tmp_path / "l").metadata["stage"] == "pretrained"


def test_empty_writer_leaves_a_readable_empty_shard(tmp_path):
    with ShardWriter(tmp_path / "l", D, "float16", 16, 2, {"layer": 0}):
        pass
    reader = ShardReader(tmp_path / "l")
    assert reader.n_rows == 0 and reader.d_model == D
    assert list(reader.iter_batches(4)) == []


def test_wrong_activation_width_is_refused(tmp_path):
    writer = ShardWriter(tmp_path / "l", D, "float32", 16, 2)
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        writer.append([0], [0], [0], ["a"], np.zeros((1, D + 1), np.float32))


def _row_keys(batches, rows) -> list[int]:
    """Map each returned activation row back to its index in ``rows`` (rows are distinct)."""
    lookup = {r.tobytes(): i for i, r in enumerate(rows[4])}
    return [lookup[r.tobytes()] for batch in batches for r in batch]


def test_sequential_batches_keep_storage_order(tmp_path):
    rows = token_rows(53)
    write_rows(tmp_path / "l", rows)
    batches = list(ShardReader(tmp_path / "l").iter_batches(8, buffer_groups=2))
    assert [len(b) for b in batches] == [8] * 6 + [5]
    assert _row_keys(batches, rows) == list(range(53))
    assert len(list(ShardReader(tmp_path / "l").iter_batches(8, drop_last=True))) == 6


def test_shuffled_batches_cover_every_row_once_and_repeat_for_a_seed(tmp_path):
    rows = token_rows(97)
    write_rows(tmp_path / "l", rows, rows_per_group=10, groups_per_shard=3)
    reader = ShardReader(tmp_path / "l")
    first = list(reader.iter_batches(16, shuffle=True, seed=5, buffer_groups=3))
    keys = _row_keys(first, rows)
    assert sorted(keys) == list(range(97)), "every row exactly once"
    assert keys != list(range(97)), "shuffled"
    again = _row_keys(reader.iter_batches(16, shuffle=True, seed=5, buffer_groups=3), rows)
    other = _row_keys(reader.iter_batches(16, shuffle=True, seed=6, buffer_groups=3), rows)
    assert again == keys
    assert other != keys and sorted(other) == list(range(97))
    assert all(len(b) == 16 for b in first[:-1]) and all(b.dtype == np.float32 for b in first)


def test_exception_inside_with_leaves_no_part_file(tmp_path):
    rows = token_rows(25)
    with (
        pytest.raises(RuntimeError, match="boom"),
        ShardWriter(tmp_path / "l", D, "float32", 10, 5) as writer,
    ):
        writer.append(*(c[:25] for c in rows[:4]), rows[4])  # two groups written into an open temp shard
        raise RuntimeError("boom")
    assert list((tmp_path / "l").iterdir()) == []


def test_exception_after_a_finished_shard_removes_it_too(tmp_path):
    rows = token_rows(35)
    with (
        pytest.raises(RuntimeError, match="boom"),
        ShardWriter(tmp_path / "l", D, "float32", 10, 1) as writer,
    ):
        writer.append(*rows)  # three finished one-group shards, 5 rows still buffered
        assert len(list((tmp_path / "l").glob("part-*.parquet"))) == 3
        raise RuntimeError("boom")
    assert list((tmp_path / "l").iterdir()) == []


# --- row-based hold-out ------------------------------------------------------------------------------------
def test_holdout_is_row_based_whatever_the_row_groups(tmp_path):
    """Two unequal row groups (4,096 + 1,402 rows, the default study's layout): the held-out share is the
    asked fraction, not one whole group, and every reader of the layer gets the same row indices."""
    n = 4096 + 1402
    rows = token_rows(n)
    for stage, scale in (("pretrained", 1.0), ("finetuned", 2.0)):
        write_rows(tmp_path / stage, (*rows[:4], rows[4] * scale), rows_per_group=4096, groups_per_shard=16)
    reader_a, reader_b = open_paired(tmp_path / "pretrained", tmp_path / "finetuned")
    assert [g[2] for g in reader_a.groups] == [4096, 1402]
    for fraction in (0.1, 0.25, 0.5):
        train_a, held_a = reader_a.split(fraction, seed=7)
        train_b, held_b = reader_b.split(fraction, seed=7)
        assert abs(held_a.n_rows / n - fraction) <= 0.02
        assert train_a.n_rows + held_a.n_rows == n
        keys = ["sentence_id", "position"]
        for a, b in ((train_a, train_b), (held_a, held_b)):
            assert a.read_all(keys).equals(b.read_all(keys))  # the same tokens, in the same order
            np.testing.assert_array_equal(activations(a.read_all()) * 2.0, activations(b.read_all()))
        whole = activations(reader_a.read_all())
        held = holdout_rows(n, fraction, 7)
        np.testing.assert_array_equal(activations(held_a.read_all()), whole[held])
        train_keys = train_a.read_all(keys).to_pandas()
        assert len(train_keys.merge(held_a.read_all(keys).to_pandas())) == 0  # disjoint
    assert not np.array_equal(holdout_rows(n, 0.1, 7), holdout_rows(n, 0.1, 8))


def test_subset_streams_shuffled_batches_in_step(tmp_path):
    rows = token_rows(95)
    write_rows(tmp_path / "a", rows, rows_per_group=10)
    write_rows(tmp_path / "b", (*rows[:4], rows[4] + 1.0), rows_per_group=10)
    reader_a, reader_b = open_paired(tmp_path / "a", tmp_path / "b")
    keep = np.arange(0, 95, 3)
    sub_a, sub_b = reader_a.subset(keep), reader_b.subset(keep)
    assert sub_a.n_rows == len(keep)
    seen = np.concatenate([a for a, _ in zip_paired(sub_a, sub_b, 4, shuffle=True, seed=3, buffer_groups=2)])
    for x_a, x_b in zip_paired(sub_a, sub_b, 4, shuffle=True, seed=3, buffer_groups=2):
        np.testing.assert_array_equal(x_a + 1.0, x_b)
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(rows[4][keep], axis=0))
    nested = sub_a.subset([0, 2])  # indices into the subset's own rows
    np.testing.assert_array_equal(activations(nested.read_all()), rows[4][keep[[0, 2]]])
    assert holdout_rows(1, 0.5, 0).size == 0 and ShardReader(tmp_path / "a").split(0.0, 0)[1] is None


def test_rows_kept_in_memory_give_the_streamed_batches_and_are_decoded_once(tmp_path, monkeypatch):
    rows = token_rows(97)
    write_rows(tmp_path / "l", rows, dtype="float16", rows_per_group=10, groups_per_shard=3)
    train, _ = ShardReader(tmp_path / "l").split(0.2, seed=1)  # a subset view, as SAE training uses
    streamed = ShardReader(tmp_path / "l").split(0.2, seed=1)[0]
    assert train.keep_in_memory(max_bytes=train.n_rows * D * 4)
    reads = []
    original = ShardReader.read_group
    counted = {id(train)}  # reads of the readers under test only, not of the streamed reference

    def counting_read(self, index, columns=None):
        if id(self) in counted:
            reads.append(index)
        return original(self, index, columns)

    monkeypatch.setattr(ShardReader, "read_group", counting_read)
    for epoch in range(3):
        kept = list(train.iter_batches(16, shuffle=True, seed=epoch, buffer_groups=3))
        assert len(reads) == len(train.groups), "every group read in the first pass only"
        reference = list(streamed.iter_batches(16, shuffle=True, seed=epoch, buffer_groups=3))
        assert len(kept) == len(reference)
        assert all(np.array_equal(a, b) for a, b in zip(kept, reference, strict=True))
        kept[0][:] = 0.0  # batches are the caller's to change: the kept rows stay intact
    # too large for the budget: keeps streaming, reading every group on every pass
    big = ShardReader(tmp_path / "l")
    assert not big.keep_in_memory(max_bytes=big.n_rows * D * 4 - 1)
    counted.add(id(big))
    reads.clear()
    for _ in range(2):
        list(big.iter_batches(16))
    assert len(reads) == 2 * len(big.groups)


def test_batches_read_ahead_give_the_same_stream_and_surface_read_errors(tmp_path, monkeypatch):
    rows = token_rows(97)
    write_rows(tmp_path / "l", rows, rows_per_group=10, groups_per_shard=3)
    reader = ShardReader(tmp_path / "l")
    threads = threading.active_count()
    monkeypatch.setattr(shards, "spare_core", lambda: False)  # torch busy on every core: read in line
    stream = reader.iter_batches(16, buffer_groups=2)
    inline = [next(stream)]
    assert threading.active_count() == threads
    inline += list(stream)
    monkeypatch.setattr(shards, "spare_core", lambda: True)
    # one buffer (no read-ahead) and many buffers (read-ahead) give the same rows; sequential keeps storage order
    whole = np.concatenate(list(reader.iter_batches(16, buffer_groups=len(reader.groups))))
    ahead = np.concatenate(list(reader.iter_batches(16, buffer_groups=2)))
    np.testing.assert_array_equal(ahead, whole)
    np.testing.assert_array_equal(np.concatenate(inline), whole)
    np.testing.assert_array_equal(whole, rows[4])
    stream = reader.iter_batches(16, shuffle=True, seed=3, buffer_groups=2)
    next(stream)
    assert threading.active_count() == threads + 1  # the read-ahead thread
    stream.close()  # stopping early waits for the read in flight and leaves nothing running
    assert threading.active_count() == threads

    original = ShardReader.group_activations

    def failing(self, index):
        if index == 7:
            raise OSError("corrupt row group 7")
        return original(self, index)

    monkeypatch.setattr(ShardReader, "group_activations", failing)
    with pytest.raises(OSError, match="corrupt row group 7"):
        list(reader.iter_batches(16, buffer_groups=2))


# --- manifest ----------------------------------------------------------------------------------------------
def written_layer(directory, n: int = 35):
    with ShardWriter(directory, D, "float32", 10, 1) as writer:
        writer.append(*token_rows(n))
    return sorted(directory.glob("part-*.parquet"))


def test_the_manifest_lists_every_shard_and_readers_check_it(tmp_path):
    """Snakemake sees only the tokens directory: a deleted, added or replaced part file went unnoticed and an
    SAE trained on part of the layer (unpaired with the other stage's rows)."""
    import json
    import shutil

    import pandas as pd

    from layershift.core.errors import ArtifactError

    paths = written_layer(tmp_path / "l")
    assert json.loads((tmp_path / "l" / shards.MANIFEST).read_text()) == {
        "n_rows": 35,
        "shards": {
            "part-00000.parquet": 10,
            "part-00001.parquet": 10,
            "part-00002.parquet": 10,
            "part-00003.parquet": 5,
        },
    }
    assert ShardReader(tmp_path / "l").n_rows == 35
    assert len(pd.read_parquet(tmp_path / "l")) == 35  # dataset readers of the directory skip the manifest

    shutil.copy(paths[1], tmp_path / "kept.parquet")
    paths[1].unlink()
    with pytest.raises(
        ArtifactError, match=r"l: part-00001.parquet missing \(_manifest.json lists 4 shards\)"
    ):
        ShardReader(tmp_path / "l")
    shutil.copy(paths[3], paths[1])  # a part file of another size under the missing name
    with pytest.raises(ArtifactError, match="part-00001.parquet: 5 rows where its writer wrote 10"):
        ShardReader(tmp_path / "l")
    shutil.copy(tmp_path / "kept.parquet", paths[1])
    shutil.copy(paths[0], tmp_path / "l" / "part-00009.parquet")
    with pytest.raises(ArtifactError, match="part-00009.parquet not written with it"):
        ShardReader(tmp_path / "l")


def test_a_layer_written_before_the_manifest_still_reads(tmp_path):
    written_layer(tmp_path / "l")
    (tmp_path / "l" / shards.MANIFEST).unlink()
    assert ShardReader(tmp_path / "l").n_rows == 35


def test_a_row_limit_reads_the_first_rows_and_never_the_later_groups(tmp_path, monkeypatch):
    """``max_rows`` keeps the first rows in storage order (whole groups, then the head of one), pairs two
    stages alike, and changes nothing at or above the layer's size."""
    rows = token_rows(95)
    write_rows(tmp_path / "a", rows, rows_per_group=10)
    write_rows(tmp_path / "b", (*rows[:4], rows[4] + 1.0), rows_per_group=10)
    head = ShardReader(tmp_path / "a", max_rows=23)
    assert head.n_rows == 23 and [n for _, _, n in head.groups] == [10, 10, 3]
    np.testing.assert_array_equal(activations(head.read_all()), rows[4][:23])
    seen = np.concatenate(list(head.iter_batches(4, shuffle=True, seed=1)))
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(rows[4][:23], axis=0))
    train, held = head.split(0.25, seed=2)  # held-out rows drawn among the 23, as for a 23-row layer
    np.testing.assert_array_equal(activations(held.read_all()), rows[4][:23][holdout_rows(23, 0.25, 2)])
    assert train.n_rows + held.n_rows == 23
    reader_a, reader_b = open_paired(tmp_path / "a", tmp_path / "b", max_rows=23)
    for x_a, x_b in zip_paired(reader_a, reader_b, 4, shuffle=True, seed=3):
        np.testing.assert_array_equal(x_a + 1.0, x_b)
    whole, limited = ShardReader(tmp_path / "a"), ShardReader(tmp_path / "a", max_rows=10**6)
    assert limited.groups == whole.groups and limited.n_rows == whole.n_rows == 95
    read = []
    original = ShardReader.read_group
    monkeypatch.setattr(
        ShardReader, "read_group", lambda self, i, c=None: read.append(i) or original(self, i, c)
    )
    list(ShardReader(tmp_path / "a", max_rows=15).iter_batches(8))
    assert read == [0, 1]  # the groups after the limit are never read
