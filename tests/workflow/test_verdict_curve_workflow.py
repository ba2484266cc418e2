"""The verdict curve in the DAG: `snakemake -n` schedules its jobs only when the config's verdict_curve
section names fractions (the breadth study does, on its real corpus); without the section a study keeps its
jobs (and artifacts)."""

from __future__ import annotations

import re
from pathlib import Path

from layershift.costs import predict
from layershift.study.schema import load_yaml, validate_schema
from tests.support.study import default_study_inputs, run_snakemake, set_verdict_curve

JOBS_WITHOUT_CURVE = 225  # `snakemake -n` on the breadth study without its verdict_curve section


def dry_run_jobs(workdir: Path) -> dict[str, int]:
    """Jobs per rule (and ``total``) of `snakemake -n` in ``workdir``, from its config.yaml as a user runs it."""
    output = run_snakemake(workdir, "-n", configfile=False).stdout
    stats = output[output.index("Job stats:") :].split("\n\n")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}


def test_a_study_without_the_section_schedules_no_verdict_curve(tmp_path):
    workdir = default_study_inputs(tmp_path, "configs/breadth.yaml")
    set_verdict_curve(workdir / "config.yaml", None)
    jobs = dry_run_jobs(workdir)
    assert jobs["total"] == JOBS_WITHOUT_CURVE
    assert "verdict_curve" not in jobs and "fig_verdict_curve" not in jobs


def test_a_configured_verdict_curve_schedules_a_job_per_layer_and_its_figure(tmp_path, monkeypatch):
    workdir = default_study_inputs(tmp_path, "configs/breadth.yaml")
    curve = {"model": "minilm-l6", "dataset": "movies", "fractions": [0.25, 0.5]}  # layers 1, 3, 6
    config_path = set_verdict_curve(workdir / "config.yaml", curve)
    jobs = dry_run_jobs(workdir)
    assert jobs["verdict_curve"] == 3 and jobs["fig_verdict_curve"] == 1
    assert jobs["total"] == JOBS_WITHOUT_CURVE + 3 + 1
    monkeypatch.chdir(workdir)
    config = validate_schema(load_yaml(config_path), "config.yaml")
    assert (
        predict.predict_study(config, workdir / "results")["jobs"] == jobs["total"]
    )  # the cost model agrees
