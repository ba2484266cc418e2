"""The cost model and the rules table against the Snakemake workflow itself: the cluster profile's dry run
requests the model's resources, and the rules table's rules, wildcards and reads are what Snakemake lists, runs
and draws."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layershift.costs import predict, schedule
from layershift.study import rules as workflow_rules
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
        expected = predict.job_resources(rule, config, wildcards)
        line = re.search(r"resources: (.*)", block).group(1)
        assert f"mem_mb={expected['mem_mb']}," in line and f"runtime={expected['runtime']}," in line, line


@pytest.fixture(scope="module")
def every_rule_config(tmp_path_factory) -> Path:
    """The default study, whose DAG has every rule of the workflow (its verdict curve included)."""
    config = tmp_path_factory.mktemp("every_rule") / "config.yaml"
    shutil.copy(REPO / "config.yaml", config)
    assert "verdict_curve" in yaml.safe_load(config.read_text())
    return config


@pytest.fixture(scope="module")
def rule_graph(every_rule_config) -> dict[str, set[str]]:
    """rule -> the rules it reads, as `snakemake --rulegraph` draws them for the default study with its
    verdict curve (every rule)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--rulegraph", "-s", str(REPO / "Snakefile")]
        + ["--configfile", str(every_rule_config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', proc.stdout, flags=re.M))
    parents: dict[str, set[str]] = {name: set() for name in names.values()}
    for upstream, downstream in re.findall(r"^\s*(\d+) -> (\d+)$", proc.stdout, flags=re.M):
        parents[names[downstream]].add(names[upstream])
    return parents


def test_the_rules_table_names_the_workflows_rules():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "-s", str(REPO / "Snakefile")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    listed = set(re.findall(r"^(\w+)", proc.stdout, flags=re.M))
    assert set(workflow_rules.RULE_NAMES) == listed


def test_the_rules_table_reads_what_the_rule_graph_draws(rule_graph):
    table = {rule.name: set(rule.reads) for rule in workflow_rules.RULES}
    assert table == rule_graph


def test_the_rules_tables_wildcards_are_the_dry_runs(every_rule_config):
    """Each job block of `snakemake -n --forceall` on the default study (with its verdict curve) names the
    table's wildcards."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "-s", str(REPO / "Snakefile")]
        + ["--configfile", str(every_rule_config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen: dict[str, set[tuple[str, ...]]] = {}
    for rule, block in re.findall(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)+)", proc.stdout, flags=re.M):
        line = re.search(r"wildcards: (.*)", block)
        names = tuple(re.findall(r"(\w+)=", line.group(1))) if line else ()
        seen.setdefault(rule, set()).add(names)
    assert set(seen) == set(workflow_rules.RULE_NAMES)
    for rule, names in seen.items():
        assert names == {workflow_rules.rule_named(rule).wildcards}, rule


def test_the_schedules_dependencies_are_the_workflows_rule_graph(rule_graph):
    """The jobs a compute job waits for (schedule.upstream, from the rules table): their closure must be what
    `snakemake --rulegraph` draws between the compute rules (walking through light rules such as resolve_model)."""
    compute = set(schedule.STAGE_ORDER)

    def ancestors(rule: str, direct) -> set[str]:
        seen, todo = set(), list(direct(rule))
        while todo:
            rule = todo.pop()
            if rule not in seen:
                seen.add(rule)
                todo.extend(direct(rule))
        return seen & compute

    for rule in compute:
        in_graph = ancestors(rule, lambda name: rule_graph.get(name, ()))
        in_model = ancestors(rule, schedule.upstream)
        assert in_model == in_graph, rule
