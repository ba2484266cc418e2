"""bench/compare_results.py: two results trees compared by content; timings and paths are not results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "compare_results.py"


def make_results(root: Path, value: float = 0.5, seconds: float = 1.0, path: str = "/a") -> Path:
    results = root / "results"
    (results / "tables").mkdir(parents=True)
    pd.DataFrame({"layer": [1, 2], "cosine": [value, 0.25], "cpu_seconds": [seconds, seconds]}).to_parquet(
        results / "tables" / "similarity.parquet"
    )
    (results / "metrics.json").write_text(json.dumps({"accuracy": value, "seconds": seconds, "path": path}))
    save_file({"W_dec": torch.full((2, 3), value)}, str(results / "sae_weights.safetensors"))
    (results / "logs").mkdir()
    (results / "logs" / "job.log").write_text(f"took {seconds} s")
    return results


def compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True, check=False
    )


def test_timings_paths_and_logs_are_not_results(tmp_path):
    base = make_results(tmp_path / "base")
    new = make_results(tmp_path / "new", seconds=9.0, path="/b")
    proc = compare(base, new)
    assert proc.returncode == 0, proc.stdout
    assert "3 files in both trees" in proc.stdout


def test_a_changed_value_in_a_table_json_or_weight_is_a_difference(tmp_path):
    base = make_results(tmp_path / "base")
    new = make_results(tmp_path / "new", value=0.5000001)
    proc = compare(base, new)
    assert proc.returncode == 1
    for name in ("tables/similarity.parquet", "metrics.json", "sae_weights.safetensors"):
        assert f"differs: {name}" in proc.stdout


def test_a_file_on_one_side_only_is_a_difference(tmp_path):
    base = make_results(tmp_path / "base")
    new = make_results(tmp_path / "new")
    shutil.copy(new / "metrics.json", new / "extra.json")
    proc = compare(base, new)
    assert proc.returncode == 1 and "only in new: extra.json" in proc.stdout


def test_absolute_paths_count_by_file_name(tmp_path):
    base = make_results(tmp_path / "base", path="/work/a/.venv/lib/model.onnx")
    elsewhere = make_results(tmp_path / "elsewhere", path="/tmp/b/.venv/lib/model.onnx")
    other = make_results(tmp_path / "other", path="/work/a/.venv/lib/other.onnx")
    for results in (base, elsewhere, other):  # under a key that is not one of the known path keys
        metrics = json.loads((results / "metrics.json").read_text())
        (results / "metrics.json").write_text(json.dumps({**metrics, "onnx_file": metrics["path"]}))
    assert compare(base, elsewhere).returncode == 0
    assert "differs: metrics.json" in compare(base, other).stdout
