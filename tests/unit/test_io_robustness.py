"""Kills during deletion and file permissions: nothing half-deleted under a final name, usual file modes."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch
from safetensors.torch import save_file

from layershift.core.checkpoints import (
    complete_checkpoints,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from layershift.core.errors import ArtifactError
from layershift.core.io import atomic_dir, remove_tree, write_safetensors


class Killed(BaseException):
    """Stands for SIGKILL/SIGTERM arriving while a directory is being deleted."""


def interrupt_rmtree_once(monkeypatch):
    """The next shutil.rmtree deletes one file of the tree, then the process 'dies'."""
    real = shutil.rmtree
    state = {"armed": True}

    def rmtree(path, *args, **kwargs):
        if not state["armed"]:
            return real(path, *args, **kwargs)
        state["armed"] = False
        files = sorted(p for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())
        files[-1].unlink()  # a checkpoint's tensors.safetensors sorts last: deleted before checkpoint.json
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", rmtree)


def sae_checkpoint(directory, epoch=1):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(
        directory,
        "settings",
        epoch,
        {"optimizer": optimizer.state_dict()},
        lambda d: save_file(dict(model.state_dict()), d / "sae_weights.safetensors"),
    )


def test_a_kill_while_clearing_checkpoints_leaves_none_half_deleted(tmp_path, monkeypatch):
    """train_sae clears a finished SAE's checkpoints; killed during that, the rerun retrains that SAE and
    must start fresh, not fail on a checkpoint that still has its checkpoint.json but lost other files."""
    resume = tmp_path / "checkpoints/sae/finetuned/seed3"
    sae_checkpoint(resume)
    interrupt_rmtree_once(monkeypatch)
    with pytest.raises(Killed):
        remove_checkpoints(resume)
    assert complete_checkpoints(resume) == []
    assert load_checkpoint(resume, "settings", max_epoch=2) is None


def test_a_kill_while_replacing_a_directory_leaves_the_old_one_whole_or_gone(tmp_path, monkeypatch):
    final = tmp_path / "last"
    final.mkdir()
    for name in ("model.safetensors", "progress.json", "state.safetensors"):
        (final / name).write_text("old")
    interrupt_rmtree_once(monkeypatch)
    with pytest.raises(Killed), atomic_dir(final) as tmp:
        (tmp / "progress.json").write_text("new")
    assert not final.exists() or sorted(p.name for p in final.iterdir()) == [
        "model.safetensors",
        "progress.json",
        "state.safetensors",
    ]


def test_remove_tree_removes(tmp_path):
    (tmp_path / "d/sub").mkdir(parents=True)
    (tmp_path / "d/sub/f").write_text("x")
    remove_tree(tmp_path / "d")
    remove_tree(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_files_get_the_usual_permissions(tmp_path):
    """safetensors writes a fresh 0600 file; shared results trees need group/world-readable weights."""
    old = os.umask(0o022)
    try:
        write_safetensors({"w": torch.zeros(2)}, tmp_path / "a.safetensors", format_version=2)
        with atomic_dir(tmp_path / "model") as tmp:
            save_file({"w": torch.zeros(2)}, tmp / "model.safetensors")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.safetensors", tmp_path / "model/model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def artifact_error(call, path) -> str:
    """The one-line ArtifactError of ``call()``; it names ``path``."""
    with pytest.raises(ArtifactError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: cannot be read (") and "rerun" in message
    return message


def test_a_truncated_shard_sae_or_table_is_one_line_naming_the_file(tmp_path):
    """A job that loads several artifacts failed with the parser's words alone ('Parquet magic bytes not
    found', 'incomplete metadata'), naming no file; a missing file still raises FileNotFoundError."""
    import numpy as np
    import pandas as pd

    from layershift.core.io import read_table
    from layershift.data.shards import ShardReader, ShardWriter
    from layershift.dictionaries.sae.config import SAEConfig
    from layershift.dictionaries.sae.files import load_sae, save_sae
    from layershift.dictionaries.sae.model import SAE

    rows = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    with ShardWriter(tmp_path / "shards", 8, "float16", 16, 2, {"layer": 0}) as writer:
        writer.append(np.arange(64) // 8, np.arange(64) % 8, np.arange(64), ["t"] * 64, rows)
    shard = sorted((tmp_path / "shards").glob("part-*.parquet"))[-1]
    assert ShardReader(tmp_path / "shards").n_rows == 64
    truncate(shard)
    artifact_error(lambda: ShardReader(tmp_path / "shards"), shard)

    save_sae(SAE(SAEConfig(8, 16)), tmp_path / "sae")
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    truncate(weights)
    artifact_error(lambda: load_sae(tmp_path / "sae"), weights)
    (tmp_path / "sae" / "cfg.json").write_text('{"d_in": 8, ')
    artifact_error(lambda: load_sae(tmp_path / "sae"), tmp_path / "sae" / "cfg.json")

    table = tmp_path / "table.parquet"
    pd.DataFrame({"a": range(100)}).to_parquet(table)
    truncate(table)
    artifact_error(lambda: read_table(table), table)
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "missing.parquet")
