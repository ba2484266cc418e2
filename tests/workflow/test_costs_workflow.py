"""The cost model against the Snakemake workflow itself: the cluster profile's dry run requests the model's
resources, and the schedule's dependencies are the workflow's rule graph."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layershift.costs import model as costs
from layershift.study.schema import validate_schema
from tests.support.study import build_tiny_study

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_with_cluster_profile_requests_model_resources(tmp_path, monkeypatch):
    """`snakemake -n --profile profiles/slurm`: each model job's runtime / mem_mb is the cost model's."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    build_tiny_study(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", str(REPO / "profiles/slurm")]
        + ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    monkeypatch.chdir(tmp_path)
    config = validate_schema(yaml.safe_load((tmp_path / "config.yaml").read_text()), "config")
    blocks = re.findall(r"rule (finetune|train_sae):\n(.*?)\n\n", output, flags=re.S)
    assert {rule for rule, _ in blocks} == {"finetune", "train_sae"}
    for rule, block in blocks:
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", block).group(1)))
        expected = costs.job_resources(rule, config, wildcards)
        line = re.search(r"resources: (.*)", block).group(1)
        assert f"mem_mb={expected['mem_mb']}," in line and f"runtime={expected['runtime']}," in line, line


def test_the_schedules_dependencies_are_the_workflows_rule_graph():
    """costs.UPSTREAM restates the rules' inputs: its closure must be what `snakemake --rulegraph` draws
    between the compute rules (walking through light rules such as resolve_model)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--rulegraph", "-s", str(REPO / "Snakefile")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', proc.stdout, flags=re.M))
    parents: dict[str, set[str]] = {}
    for up, down in re.findall(r"^\s*(\d+) -> (\d+)$", proc.stdout, flags=re.M):
        parents.setdefault(names[down], set()).add(names[up])
    compute = set(costs.STAGE_ORDER)

    def ancestors(rule: str, direct) -> set[str]:
        seen, todo = set(), list(direct(rule))
        while todo:
            rule = todo.pop()
            if rule not in seen:
                seen.add(rule)
                todo.extend(direct(rule))
        return seen & compute

    for rule in compute & set(parents):
        in_graph = ancestors(rule, lambda r: parents.get(r, ()))
        in_model = ancestors(rule, lambda r: costs.UPSTREAM.get(r, ()))
        assert in_model == in_graph, rule
