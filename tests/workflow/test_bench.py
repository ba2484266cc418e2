"""The benchmark scripts run (``--quick``: tiny inputs) and write complete result files; no timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMON_KEYS = {"benchmark", "quick", "machine", "repeats", "inputs", "raw", "ratios", "targets", "passed"}
MACHINE_KEYS = {"cpu_count", "torch_threads", "torch_version", "platform", "date"}


def run_bench(script: str, out: Path, *extra: str) -> dict:
    """Run ``bench/<script> --quick --out out``; return the result JSON after checking the summary line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out), *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("["), proc.stdout  # one summary line
    name = script.removeprefix("bench_").removesuffix(".py")
    result = json.loads((out / f"{name}.json").read_text())
    assert set(result) >= COMMON_KEYS, set(result)
    assert set(result["machine"]) >= MACHINE_KEYS
    assert result["benchmark"] == name and result["quick"] is True
    for entry in result["targets"].values():
        assert {"value", "target", "pass"} <= set(entry)
    return result


def test_extraction_bench_writes_ratios(tmp_path):
    result = run_bench("bench_extraction.py", tmp_path)
    assert {"a_project", "b_bare", "c_naive"} <= set(result["tokens_per_second"])
    assert {"a_over_b", "a_over_c", "rss_4x_over_1x"} <= set(result["targets"])
    assert result["ratios"]["a_over_b"] > 0 and result["inputs"]["tokens"] > 0


def test_sae_bench_writes_ratios(tmp_path):
    result = run_bench("bench_sae.py", tmp_path)
    assert {"a_shards", "b_dense", "c_memory"} <= set(result["rows_per_second"])
    assert {"a_over_b", "a_over_c"} <= set(result["ratios"])
    assert result["saelens"]["status"].startswith("skipped")
    assert 0 <= result["quality"]["project"]["dead_fraction"] <= 1


def test_sae_paths_bench_trains_both_paths_to_the_same_quality(tmp_path):
    result = run_bench("bench_sae_paths.py", tmp_path)
    assert set(result["loop_seconds"]) == {"a_sparse", "b_dense"} and result["ratios"]["a_over_b"] > 0
    sparse, dense = (result["heldout"][name] for name in ("a_sparse", "b_dense"))
    assert sparse["mse"] == pytest.approx(dense["mse"], rel=0.05)  # rounding apart, the same training


def test_finetune_bench_writes_ratios(tmp_path):
    result = run_bench("bench_finetune.py", tmp_path)
    assert {"a_project", "b_bare"} <= set(result["tokens_per_second"])
    assert result["ratios"]["a_over_b"] > 0 and result["inputs"]["tokens_per_epoch"] > 0


@pytest.mark.slow
def test_dag_bench_reruns_only_the_edited_dataset(tmp_path):
    result = run_bench("bench_dag.py", tmp_path)
    tiny = result["raw"]["tiny"]
    assert tiny["jobs_after_complete_run"] == 0
    assert tiny["rerun_after_edit"]["other_dataset_jobs"] == []
    assert result["raw"]["default"]["status"].startswith("skipped")
