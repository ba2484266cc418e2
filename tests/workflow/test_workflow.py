"""End-to-end DAG tests on the tiny study: complete run, caching, single targets, interruption, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.study import (
    OFFLINE_ENV,
    ROOT,
    SNAKEFILE,
    SNAKEMAKE,
    build_tiny_study,
    default_study_inputs,
    run_snakemake,
)

pytestmark = pytest.mark.slow


def jobs_of(dry_run_output: str) -> list[str]:
    """Rule names of the jobs a dry run would execute (from Snakemake's job table)."""
    lines = dry_run_output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("job ")) + 2
    except StopIteration:
        return []
    jobs = []
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs += [parts[0]] * int(parts[1])
    return jobs


def test_default_config_dry_run_lists_every_target(tmp_path):
    workdir = default_study_inputs(tmp_path)
    proc = run_snakemake(
        workdir, "-n", "--cores", "2", configfile=False
    )  # its config.yaml, as a user runs it
    jobs = jobs_of(proc.stdout)
    # one dataset, three fine-tuning replicates: a fine-tune per replicate, an extraction per run
    assert jobs.count("finetune") == 3 and jobs.count("evaluate") == 3 and jobs.count("extract") == 4
    # three SAE layers: SAEs per run; diffs per comparison (3 pretrained-vs-replicate, 3 between-run pairs)
    assert jobs.count("train_sae") == 4 * 3 and jobs.count("diff") == 6 * 3
    assert jobs.count("similarity") == 6 and jobs.count("split_half") == 1
    assert jobs.count("crosscoder") == 3  # the primary pair only, its own rule
    assert jobs.count("faithfulness") == 4  # every run's SAEs on its classifier
    assert "report" in jobs


def test_the_sweep_reads_the_studys_own_saes(tmp_path):
    """The sweep's study-settings row reads the study's own SAEs of that layer (both seeds), not a retraining."""
    workdir = default_study_inputs(tmp_path, "configs/breadth.yaml")
    proc = run_snakemake(
        workdir, "-n", "--cores", "2", configfile=False
    )  # its config.yaml, as a user runs it
    sweep_job = proc.stdout.split("rule sae_sweep:", 1)[1].split("\n\n", 1)[0]
    for sae in ("sae/minilm-l6/news/pretrained/layer6", "sae_null/minilm-l6/news/pretrained/layer6/null0"):
        assert f"results/{sae}/sae_weights.safetensors" in sweep_job, sweep_job


def test_tiny_study_runs_end_to_end_and_is_cached(tiny_study_done):
    results = tiny_study_done / "results"
    report = results / "report/index.html"
    assert report.stat().st_size > 10_000
    html = report.read_text()
    for heading in (
        "Fine-tuning",
        "Layer-wise similarity",
        "Sparse autoencoders",
        "Feature diff",
        "Findings",
    ):
        assert heading in html
    sae = results / "sae/tiny2/mood/finetuned-s3/layer2"
    assert {"cfg.json", "sae_weights.safetensors", "metrics.json"} <= {p.name for p in sae.iterdir()}
    seed = {  # (kind, stage) -> seed, kind "sae" or "null"
        (path.relative_to(results).parts[0], json.loads(path.read_text())["stage"]): json.loads(
            path.read_text()
        )["seed"]
        for path in results.glob("sae*/tiny2/mood/**/layer2/**/metrics.json")
    }
    # each stage's null takes the other stage's seed: a null pair differs from the cross-stage pair only in data
    assert seed["sae", "finetuned"] == seed["sae_null", "pretrained"] != seed["sae", "pretrained"], seed
    assert seed["sae_null", "finetuned"] == seed["sae", "pretrained"], seed
    metrics = json.loads((results / "metrics/tiny2/mood/finetuned-s3/classification.json").read_text())
    assert {"pretrained", "linear_probe", "finetuned"} <= set(metrics)
    assert not list(results.rglob("*.tmp")), "temporary files left behind"
    again = run_snakemake(tiny_study_done, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_editing_figure_settings_reruns_the_figures_only(tiny_study_done, tmp_path):
    """Every setting a job reads is a param, so Snakemake's rerun triggers see it: a new figures.dpi
    schedules every figure (and the report that embeds them), nothing upstream."""
    config = yaml.safe_load((tiny_study_done / "config.yaml").read_text())
    config["figures"] = {**config.get("figures", {}), "dpi": 77}
    edited = tmp_path / "config.yaml"
    edited.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tiny_study_done, "-n", "--cores", "2", "--configfile", str(edited), configfile=False)
    jobs = set(jobs_of(proc.stdout))
    assert jobs and all(job.startswith("fig_") or job in ("report", "all") for job in jobs), jobs
    assert {"fig_tokens", "fig_sae_loss", "fig_relnorm", "report"} <= jobs


def test_one_figure_builds_only_its_upstream(tmp_path):
    build_tiny_study(tmp_path, n_models=2, n_datasets=2)
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", "results/figures/tokens/tiny2/mood/layer1.png")
    out = proc.stdout
    assert "tiny1" not in out and "topic" not in out
    jobs = jobs_of(out)
    assert {"prepare", "finetune", "extract", "train_sae", "features", "fig_tokens"} <= set(jobs)
    assert "report" not in jobs and "evaluate" not in jobs and "diff" not in jobs


def planned_wildcards(dry_run_output: str) -> list[dict[str, str]]:
    """The wildcards of every job a dry run plans (its ``wildcards: model=m, dataset=d`` lines)."""
    planned = []
    for line in dry_run_output.splitlines():
        if line.strip().startswith("wildcards:"):
            pairs = line.split(":", 1)[1].split(",")
            planned.append(dict(pair.strip().split("=", 1) for pair in pairs))
    return planned


@pytest.mark.parametrize(
    "figure, model, dataset",
    [
        ("similarity/cosine_of_means/minilm-l6.png", "minilm-l6", None),
        ("diff/minilm-l3.png", "minilm-l3", None),  # the breadth study: two models, one replicate
        ("classification/minilm-l6/movies.png", "minilm-l6", "movies"),
        ("sae_loss/minilm-l3/news.png", "minilm-l3", "news"),
        ("tokens/minilm-l6/tweets/layer3.png", "minilm-l6", "tweets"),
    ],
)
def test_a_models_figure_schedules_no_job_of_another_model(tmp_path, figure, model, dataset):
    """From an empty results/, one model's (or model x dataset's) figure plans that model's (and dataset's)
    jobs only: the similarity figure reads the model's per-dataset tables, not the study-wide table that
    needs every model fine-tuned and extracted (17 jobs instead of 32)."""
    workdir = default_study_inputs(tmp_path, "configs/breadth.yaml")
    proc = run_snakemake(workdir, "-n", "--cores", "2", f"results/figures/{figure}")
    planned = planned_wildcards(proc.stdout)
    assert planned, proc.stdout[-3000:]
    assert {job["model"] for job in planned if "model" in job} == {model}, planned
    if dataset is not None:
        assert {job["dataset"] for job in planned if "dataset" in job} == {dataset}, planned
    jobs = jobs_of(proc.stdout)
    assert jobs.count("finetune") == (1 if dataset else 3), jobs  # the model's own fine-tunes only
    assert not {"similarity_table", "accuracy_table", "diff_table", "report"} & set(jobs), jobs


def test_editing_one_dataset_reruns_only_its_jobs(tmp_path):
    """After an edit of one dataset's entry, only that dataset's jobs rerun (through a model rule too)."""
    build_tiny_study(tmp_path, n_models=1, n_datasets=2)
    targets = [f"results/activations/tiny2/{d}/pretrained/means.parquet" for d in ("mood", "topic")]
    run_snakemake(tmp_path, "--cores", "2", *targets)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["datasets"]["topic"]["keep_labels"] = ["app", "film", "sport"]  # an edit `prepare` reads
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))  # key order must not matter
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", *targets)
    assert sorted(jobs_of(proc.stdout)) == ["extract", "prepare"], proc.stdout
    rerun = [line for line in proc.stdout.splitlines() if line.strip().startswith("wildcards:")]
    assert rerun and all("topic" in line for line in rerun), rerun


def test_editing_sae_layers_keeps_the_fine_tune(tiny_study_done, tmp_path):
    """sae_layers is read by the activation and SAE steps only: a changed layer list must not re-resolve the
    model (resolve_model's params) and so re-run its fine-tunes and evaluations."""
    config = yaml.safe_load((tiny_study_done / "config.yaml").read_text())
    config["models"]["tiny2"]["sae_layers"] = [1]
    edited = tmp_path / "config.yaml"
    edited.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tiny_study_done, "-n", "--cores", "2", "--configfile", str(edited), configfile=False)
    jobs = set(jobs_of(proc.stdout))
    assert "extract" in jobs and "train_sae" in jobs, jobs  # the layers' own steps do rerun
    assert not jobs & {"resolve_model", "finetune", "evaluate"}, jobs


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """Start Snakemake on the tiny study in its own process group (so a test can SIGKILL all of it)."""
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )


ARTIFACTS = [
    "results/data/mood/train.parquet",
    "results/data/mood/test.parquet",
    "results/models/tiny2/mood/finetuned-s3/model.safetensors",
    "results/sae/tiny2/mood/pretrained/layer1/sae_weights.safetensors",
    "results/sae/tiny2/mood/finetuned-s3/layer2/sae_weights.safetensors",
]


def same_artifact(a: Path, b: Path) -> bool:
    """Byte equality, except safetensors: same tensors (its header may list keys in another order)."""
    if a.suffix != ".safetensors":
        return a.read_bytes() == b.read_bytes()
    from safetensors.numpy import load_file

    ta, tb = load_file(a), load_file(b)
    return ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() and ta[k].dtype == tb[k].dtype for k in ta)


def _metrics(workdir: Path) -> dict:
    report = json.loads((workdir / "results/metrics/tiny2/mood/finetuned-s3/classification.json").read_text())
    return {row: report[row]["accuracy"] for row in ("pretrained", "linear_probe", "finetuned")}


def test_killed_run_resumes_to_identical_artifacts(tiny_study_done, tmp_path):
    """SIGKILL the whole Snakemake process group mid-training, rerun, compare with the uninterrupted run.

    A second run in another directory that must equal the first byte for byte (splits, weights, metrics):
    this is also the test that the same config on CPU gives the same artifacts."""
    build_tiny_study(tmp_path)
    targets = [*ARTIFACTS, "results/metrics/tiny2/mood/finetuned-s3/classification.json"]
    proc = start_snakemake(tmp_path, "--cores", "2", *targets)
    deadline = time.time() + 300
    logs = [
        tmp_path / "results/logs/finetune/tiny2/mood/finetuned-s3.log",
        tmp_path / "results/logs/train_sae/tiny2/mood/pretrained/layer1.log",
    ]
    while time.time() < deadline and not any(log.exists() and log.stat().st_size > 0 for log in logs):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results/sae/tiny2/mood/finetuned-s3/layer2/sae_weights.safetensors").exists()
    shutil.rmtree(tmp_path / ".snakemake/locks", ignore_errors=True)
    run_snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", *targets)
    for artifact in ARTIFACTS:
        assert same_artifact(tmp_path / artifact, tiny_study_done / artifact), artifact
    assert _metrics(tmp_path) == _metrics(tiny_study_done)


def test_concurrent_runs_are_refused(tmp_path):
    """While one Snakemake runs, a second one on the same results directory stops with the lock message.

    The second run passes --rerun-incomplete, the flag a user would reach for: without it Snakemake may
    refuse earlier (its incomplete-file check runs before the lock check) depending on whether the first
    run has started a job yet, and that race made the message this test reads nondeterministic. The first
    run is paused once it holds the lock, so it can't finish before the second one asks.
    """
    build_tiny_study(tmp_path)
    target = "results/metrics/tiny2/mood/finetuned-s3/classification.json"
    first = start_snakemake(tmp_path, "--cores", "1", target)
    try:
        locks = tmp_path / ".snakemake/locks"
        deadline = time.time() + 120
        while time.time() < deadline and not (locks.exists() and any(locks.iterdir())):
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGSTOP)  # hold the lock: the first run can't finish while we check
        second = run_snakemake(tmp_path, "--cores", "1", "--rerun-incomplete", target, check=False)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    assert "LockException" in second.stderr or "locked" in second.stderr.lower()


def test_summary_prints_the_tables_of_a_finished_study_and_one_line_elsewhere(
    tiny_study_done, tmp_path, capsys
):
    from layershift.cli import main

    assert main(["summary", "--results", str(tiny_study_done / "results")]) == 0
    out = capsys.readouterr().out
    assert "**Accuracy on the test split**" in out and "**SAE feature diff per layer and comparison**" in out
    assert "one fine-tuning run: no interval" in out  # the tiny study has one replicate
    assert main(["summary", "--results", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"layershift: {tmp_path}/results/tables: no accuracy.csv"), err
