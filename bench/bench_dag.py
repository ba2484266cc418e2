"""Workflow (DAG) costs: dry-run time on a finished tree, what one dataset's config edit reruns, study wall time.

On the tiny study of ``bench/tiny.py`` (1 tiny BERT x 2 datasets, ``mood`` and ``topic``), run against a
snapshot of the Snakefile + workflow/ taken at start (other people's edits to the rules mid-run would
otherwise trigger Snakemake's code-change reruns):

1. run the targets (the probe tables of layer 1 of both datasets: every rule from prepare to features;
   ``--quick``: the data splits only) with ``--cores 2``;
2. ``snakemake -n`` on the finished tree, ``--repeats`` times: must schedule 0 jobs; median wall time
   (target < 5 s; ``snakemake --version`` is timed alike, so the Python start-up share is visible);
3. edit ``datasets.topic.probes`` in config.yaml (one entry, key order kept, as a person would), dry-run,
   list the jobs: none may name ``mood``; the full run also expects topic's ``features`` job among them;
4. with ``--default``: copy the default study (config.yaml + data/demo/*.csv) to a temporary directory and
   time ``snakemake --cores 2`` (target <= 600 s), stopped at ``--default-timeout`` (900 s) with the jobs
   done so far recorded; "skipped" when data/demo/*.csv are missing.

    python bench/bench_dag.py [--quick] [--default [--default-timeout S]] [--out DIR]
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml

NAME = "dag"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "envs")
EDITED, OTHER = "topic", "mood"


def snapshot_workflow(dest: Path) -> Path:
    """Copy the Snakefile and what it includes into ``dest``; return the copied Snakefile."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = common.ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, dest / name)
    return dest / "Snakefile"


def invocation(snakefile: Path, workdir: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """Command line and offline environment of Snakemake on ``workdir`` with its config.yaml."""
    cmd = [str(SNAKEMAKE), "-s", str(snakefile), "--directory", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml"), *args]
    env = {
        **os.environ,
        "PYTHONPATH": str(common.ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    return cmd, env


def snakemake(
    snakefile: Path, workdir: Path, *args: str, check: bool = True
) -> tuple[float, subprocess.CompletedProcess]:
    """Run Snakemake on ``workdir`` (its config.yaml); return wall seconds and the finished process."""
    cmd, env = invocation(snakefile, workdir, *args)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return seconds, proc


def scheduled_jobs(output: str) -> list[dict]:
    """The jobs a dry run lists: ``{"rule", "wildcards", "reason"}`` per ``rule X:`` block."""
    jobs: list[dict] = []
    for line in output.splitlines():
        start = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line.strip())
        if start and not line.startswith(" "):
            jobs.append({"rule": start.group(1), "wildcards": "", "reason": ""})
        elif jobs and line.strip().startswith(("wildcards:", "reason:")):
            key, _, value = line.strip().partition(": ")
            jobs[-1][key] = value
    return jobs


def job_table(jobs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    return counts


def edit_probes(config_path: Path, probes: list[str]) -> None:
    """Replace ``datasets.topic.probes``, keeping every key where it was (``sort_keys=False``)."""
    config = yaml.safe_load(config_path.read_text())
    config["datasets"][EDITED]["probes"] = probes
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def targets_for(quick: bool) -> list[str]:
    if quick:  # the two data splits: seconds, still one job per dataset
        return [f"results/data/{dataset}/card.json" for dataset in (OTHER, EDITED)]
    return [f"results/probes/tiny2/{dataset}/layer1.parquet" for dataset in (OTHER, EDITED)]


def tiny_study_checks(args, tmp: Path, snakefile: Path) -> dict:
    from tiny import build_tiny_study

    workdir = tmp / "tiny"
    build_tiny_study(workdir, n_models=1, n_datasets=2)
    targets = targets_for(args.quick)
    run_seconds, _ = snakemake(snakefile, workdir, "--cores", "2", *targets)

    version_seconds, dry_seconds, leftovers = [], [], []
    for _ in range(args.repeats):  # interleaved: start-up alone, then a full dry run
        version_seconds.append(snakemake(snakefile, workdir, "--version")[0])
        seconds, proc = snakemake(snakefile, workdir, "-n", "--cores", "2", *targets)
        dry_seconds.append(seconds)
        leftovers.append(scheduled_jobs(proc.stdout))
    left = leftovers[-1]

    edit_probes(workdir / "config.yaml", ["a new probe sentence", "the app update was slow"])
    _, proc = snakemake(snakefile, workdir, "-n", "--cores", "2", *targets)
    rerun = scheduled_jobs(proc.stdout)
    other = [job for job in rerun if OTHER in job["wildcards"]]
    aggregate = [job for job in rerun if "dataset=" not in job["wildcards"]]
    return {
        "targets": targets,
        "tiny_run_seconds": run_seconds,
        "dry_run_seconds": dry_seconds,
        "startup_seconds": version_seconds,
        "dry_run_median_seconds": common.median(dry_seconds),
        "startup_median_seconds": common.median(version_seconds),
        "jobs_after_complete_run": len(left),
        "leftover_jobs": left,
        "rerun_after_edit": {
            "count": len(rerun),
            "by_rule": job_table(rerun),
            "other_dataset_jobs": other,
            "aggregate_jobs": [job["rule"] for job in aggregate],
            "features_of_edited_dataset": any(
                job["rule"] == "features" and EDITED in job["wildcards"] for job in rerun
            ),
            "jobs": rerun,
        },
    }


def default_study(tmp: Path, snakefile: Path, timeout: float) -> dict:
    """Time the default study (``--cores 2``) in a copy, if its demo data exist; stop it at ``timeout``."""
    config = yaml.safe_load((common.ROOT / "config.yaml").read_text())
    sources = sorted(
        {
            entry["source"]
            for entry in config["datasets"].values()
            if not str(entry["source"]).startswith("hub:")
        }
    )
    missing = [source for source in sources if not (common.ROOT / source).is_file()]
    if missing:
        return {"status": f"skipped: missing {', '.join(missing)}", "seconds": None}
    workdir = tmp / "default"
    workdir.mkdir()
    shutil.copy2(common.ROOT / "config.yaml", workdir / "config.yaml")
    for source in sources:
        (workdir / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(common.ROOT / source, workdir / source)
    seconds, code, log = run_capped(snakefile, workdir, timeout)
    progress = re.findall(r"(\d+) of (\d+) steps", log)
    done, total = (int(progress[-1][0]), int(progress[-1][1])) if progress else (None, None)
    if code is None:
        status = f"stopped at the {timeout:.0f}-s cap: {done} of {total} jobs done"  # seconds >= cap: a miss
    else:
        status = "ran" if code == 0 else f"failed ({code}): {log.strip().splitlines()[-1:]}"
    return {
        "status": status,
        "seconds": seconds,
        "cap_seconds": timeout,
        "jobs_done": done,
        "jobs_total": total,
    }


def run_capped(
    snakefile: Path, workdir: Path, timeout: float, cores: int = 2
) -> tuple[float, int | None, str]:
    """``snakemake --cores N`` in its own process group; past ``timeout`` the group gets SIGTERM (Snakemake
    then stops its jobs). Returns wall seconds, the exit code (None if stopped) and the log text."""
    cmd, env = invocation(snakefile, workdir, "--cores", str(cores))
    log_path = workdir / "bench-snakemake.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this call started, nothing else
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
    return time.perf_counter() - start, code, log_path.read_text()


def run(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    try:
        snakefile = snapshot_workflow(tmp / "workflow-snapshot")
        tiny = tiny_study_checks(args, tmp, snakefile)
        default = (
            default_study(tmp, snakefile, args.default_timeout)
            if args.default
            else {"status": "skipped: run with --default", "seconds": None}
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rerun = tiny["rerun_after_edit"]
    only_edited = not rerun["other_dataset_jobs"] and (args.quick or rerun["features_of_edited_dataset"])
    targets = {
        "dry_run_seconds": common.target(tiny["dry_run_median_seconds"], "<", 5, "snakemake -n on the finished tree (wall)"),
        "jobs_after_complete_run": common.target(tiny["jobs_after_complete_run"], "==", 0, "jobs a dry run schedules"),
        "rerun_only_edited_dataset": common.target(float(only_edited), "==", 1, f"jobs rerun after editing {EDITED}.probes name only {EDITED}"),
        "default_study_seconds": common.target(default["seconds"], "<=", 600, "default study wall time, --cores 2", note=default["status"]),
    }  # fmt: skip
    payload = {
        "inputs": {"study": "bench/tiny.py build_tiny_study(n_models=1, n_datasets=2)", "edited": f"datasets.{EDITED}.probes"},
        "raw": {"tiny": tiny, "default": default},
        "ratios": {"dry_run_over_startup": tiny["dry_run_median_seconds"] / tiny["startup_median_seconds"]},
        "targets": targets,
    }  # fmt: skip
    summary = (
        f"dry-run {tiny['dry_run_median_seconds']:.1f}s (start-up {tiny['startup_median_seconds']:.1f}s), "
        f"{rerun['count']} jobs rerun after the edit {rerun['by_rule']}; {common.fmt_targets(targets)}"
    )
    common.finish(NAME, args, payload, summary)


def extra_args(parser) -> None:
    parser.add_argument(
        "--default", action="store_true", help="also time the default study (needs data/demo/*.csv)"
    )
    parser.add_argument(
        "--default-timeout", type=float, default=900, help="stop the default study after this many seconds"
    )


if __name__ == "__main__":
    run(common.parse_args(__doc__.splitlines()[0], extra_args))
