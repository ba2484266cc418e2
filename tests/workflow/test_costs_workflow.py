"""The cost model and the rules table against the Snakemake workflow itself: the cluster profile's dry run
requests the model's resources, and the rules table's rules, wildcards and reads are what Snakemake lists, runs
and draws."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layershift.costs import predict, schedule
from layershift.study import rules as workflow_rules
from layershift.study.schema import validate_schema
from tests.support.study import build_tiny_study, run_snakemake

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
    """The breadth study (its ONNX import and verdict curve) with two fine-tuning replicates (the between-run
    comparison): a DAG with every rule of the workflow."""
    study = yaml.safe_load((REPO / "configs/breadth.yaml").read_text())
    assert "verdict_curve" in study and "replicates" not in study
    study["replicates"] = {"seeds": [13, 14]}
    config = tmp_path_factory.mktemp("every_rule") / "config.yaml"
    config.write_text(yaml.safe_dump(study, sort_keys=False))
    return config


@pytest.fixture(scope="module")
def rule_graph(every_rule_config) -> dict[str, set[str]]:
    """rule -> the rules it reads, as `snakemake --rulegraph` draws them for a study with every rule."""
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


def dry_run_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards in the order Snakemake prints them) of every job block of a dry run's output."""
    jobs = []
    for rule, block in re.findall(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)+)", output, flags=re.M):
        line = re.search(r"wildcards: (.*)", block)
        jobs.append((rule, dict(re.findall(r"(\w+)=([^,\s]+)", line.group(1))) if line else {}))
    return jobs


def test_the_cost_model_predicts_the_dry_runs_jobs_of_a_replicated_study(tmp_path, monkeypatch):
    """Two models x two datasets, two replicates (compared with the pretrained run and with each other), the
    sweep on a fine-tuned run and the verdict curve: every compute job the cost model predicts is a job of
    `snakemake -n --forceall`, with the same wildcards, and the light jobs are the rest."""
    config_path = build_tiny_study(tmp_path, n_models=2, n_datasets=2)
    study = yaml.safe_load(config_path.read_text())
    study["replicates"] = {"seeds": [3, 4]}
    study["sae_sweep"] = {"stage": "finetuned", "grid": [{}, {"d_sae": 16}]}
    study["verdict_curve"] = {"model": "tiny2", "dataset": "mood", "fractions": [0.5]}
    config_path.write_text(yaml.safe_dump(study, sort_keys=False))
    proc = run_snakemake(tmp_path, "-n", "--forceall", timeout=300)
    scheduled: dict[str, list[dict]] = {}
    for rule, wildcards in dry_run_jobs(proc.stdout):
        scheduled.setdefault(rule, []).append(wildcards)
    monkeypatch.chdir(tmp_path)  # the tiny models' paths are relative to the study
    config = validate_schema(study, "config.yaml")
    predicted = predict.study_jobs(config)

    def as_set(jobs: list[dict]) -> set:
        return {frozenset(wildcards.items()) for wildcards in jobs}

    for rule, jobs in predicted.items():
        assert len(jobs) == len(scheduled.get(rule, [])) and as_set(jobs) == as_set(scheduled[rule]), rule
    light = sum(len(jobs) for rule, jobs in scheduled.items() if rule not in predicted)
    assert predict.light_job_count(config) == light
    assert ("finetuned-s3", "finetuned-s4") in {
        (job["reference"], job["compared"]) for job in predicted["diff"]
    }
    assert predicted["sae_sweep"][0]["stage"] == "finetuned-s3"


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
    """Each job block of `snakemake -n --forceall` on a study with every rule names the table's wildcards."""
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
    for rule, wildcards in dry_run_jobs(proc.stdout):
        seen.setdefault(rule, set()).add(tuple(wildcards))
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
