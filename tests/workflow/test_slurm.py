"""`snakemake --profile slurm` on a real SLURM cluster: the one-node cluster of `.ci/slurm/start.sh`.

The cluster tests derive a concrete profile from profiles/slurm/config.yaml (same keys; the placeholder
partitions become the local `cpu` / `gpu` partitions, no account, job status through squeue), run a
workflow through it and check, on the SLURM side, that every non-local job went through sbatch, that
the model rules landed in the GPU partition with a GPU request, that the artifacts equal those of a
local `--cores` run, and that a rerun has nothing to do.

`check_study_on_slurm(workdir, snakefile, configfile)` is the whole check as a function, so any study
can be pointed at it. Start the cluster first: `bash .ci/slurm/start.sh` (as root).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from layershift.study import rules as workflow_rules

REPO = Path(__file__).resolve().parents[2]
CLUSTER_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"

CPU_PARTITION = "cpu"  # partitions of the local cluster (.ci/slurm/slurm.conf.in)
GPU_PARTITION = "gpu"
# Rules that run a model or an SAE (the rules table's GPU rules): the cluster profile sends them to the GPU partition.
GPU_RULES = workflow_rules.GPU_RULES
# Snakemake's own bookkeeping (incl. the SLURM logs): not an artifact, left out of the comparison.
IGNORED_GLOBS = (".snakemake/*",)
# Artifacts whose content measures the run (logs, benchmarks, the report's timing table and date): they
# must exist after both runs, but their content is not compared.
VOLATILE_GLOBS = ("*/logs/*", "logs/*", "*/benchmarks/*", "benchmarks/*", "*.log", "*/report/*.html")
SNAKEMAKE_TIMEOUT_S = 1800  # one whole study; a hang fails the test instead of blocking CI

SUBMITTED_RE = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", re.MULTILINE)
# A job block of the snakemake log: "rule NAME:" or "localrule NAME:", then indented lines incl. "jobid: N".
JOB_BLOCK_RE = re.compile(r"^(local)?rule (\w+):\n((?:[ \t]+.*\n)+)", re.MULTILINE)
JOBID_RE = re.compile(r"^\s+jobid: (\d+)$", re.MULTILINE)
RUN_ID_RE = re.compile(r"^SLURM run ID: (\S+)", re.MULTILINE)
NOTHING_TO_DO = "Nothing to be done"


def cluster_unavailable_reason() -> str | None:
    """Why the local SLURM cluster cannot take jobs now, or None when it can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client tools (sinfo/sbatch) are not installed; run `bash .ci/slurm/start.sh` as root"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        if "UP" not in ping.stdout:
            return f"slurmctld does not answer ({ping.stdout.strip() or ping.stderr.strip()}); run .ci/slurm/start.sh"
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=15, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return f"SLURM does not answer: {err}"
    usable = {"idle", "mixed", "allocated", "completing"}
    partitions = {
        partition.rstrip("*"): state
        for partition, state in (line.split() for line in states.splitlines() if line.strip())
    }
    for name in (CPU_PARTITION, GPU_PARTITION):
        if partitions.get(name) not in usable:
            return f"partition {name!r} is not usable (sinfo: {partitions}); run .ci/slurm/start.sh"
    return None


def derive_test_profile(
    source: Path, dest_dir: Path, cpu_partition: str = CPU_PARTITION, gpu_partition: str = GPU_PARTITION
) -> Path:
    """Copy the cluster profile to `dest_dir/config.yaml` with its placeholders made concrete.

    Same keys as `source`; every `slurm_partition` that is not the GPU one becomes `cpu_partition`, the
    GPU placeholder `gpu_partition`; `slurm_account` is dropped (the test cluster has no accounting), job
    status is queried with squeue, and the first status check comes after 2 s instead of 40 s.
    """
    profile = yaml.safe_load(source.read_text())
    gpu_placeholders = {
        res["slurm_partition"]
        for res in profile.get("set-resources", {}).values()
        if "slurm_partition" in res
    }

    def concrete(resources: dict) -> dict:
        out = {key: value for key, value in resources.items() if key != "slurm_account"}
        if "slurm_partition" in out:
            out["slurm_partition"] = (
                gpu_partition if out["slurm_partition"] in gpu_placeholders else cpu_partition
            )
        return out

    profile["default-resources"] = concrete(profile.get("default-resources", {}))
    profile["set-resources"] = {rule: concrete(res) for rule, res in profile.get("set-resources", {}).items()}
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 2
    dest_dir.mkdir(parents=True, exist_ok=True)
    (dest_dir / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest_dir


def profile_gpu_rules(profile_path: Path) -> frozenset[str]:
    """Rules that a cluster profile sends to a partition of their own with a GPU (its GPU rules)."""
    profile = yaml.safe_load(profile_path.read_text())
    default_partition = profile.get("default-resources", {}).get("slurm_partition")
    return frozenset(
        rule
        for rule, res in profile.get("set-resources", {}).items()
        if res.get("slurm_partition", default_partition) != default_partition and int(res.get("gpu", 0)) >= 1
    )


def snakemake_command(snakefile: Path, workdir: Path, configfile: Path | None, *args: str) -> list[str]:
    """`python -m snakemake` of this interpreter (the SLURM jobs re-run the same one) on `snakefile`."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return cmd + list(args)


def run_snakemake(cmd: list[str], cwd: Path) -> str:
    """Run snakemake and return its log; on failure or timeout cancel its SLURM jobs and fail."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() + (err.stderr or b"").decode()
        cancel_run_jobs(output)
        pytest.fail(f"snakemake timed out after {SNAKEMAKE_TIMEOUT_S}s:\n{output[-6000:]}")
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        cancel_run_jobs(output)
        pytest.fail(f"snakemake exited {proc.returncode}: {' '.join(cmd)}\n{output[-6000:]}")
    return output


def cancel_run_jobs(log: str) -> None:
    """scancel the jobs of the SLURM run named in `log` (the executor names every job by its run id)."""
    match = RUN_ID_RE.search(log)
    if match and shutil.which("scancel"):
        subprocess.run(["scancel", "--name", match.group(1)], capture_output=True, timeout=30)


@dataclass
class LoggedJob:
    """One job of a snakemake log: its rule, whether it ran locally, and its SLURM job id if submitted."""

    rule: str
    local: bool
    slurm_id: int | None = None


def parse_jobs(log: str) -> dict[int, LoggedJob]:
    """Snakemake job id -> LoggedJob, from the job blocks and the executor's submission lines."""
    jobs: dict[int, LoggedJob] = {}
    for block in JOB_BLOCK_RE.finditer(log):
        jobid = JOBID_RE.search(block.group(3))
        if jobid:
            jobs[int(jobid.group(1))] = LoggedJob(rule=block.group(2), local=bool(block.group(1)))
    for jobid, slurm_id in SUBMITTED_RE.findall(log):
        jobs.setdefault(int(jobid), LoggedJob(rule="?", local=False)).slurm_id = int(slurm_id)
    return jobs


def scontrol_job(slurm_id: int) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge, an hour on the test cluster)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(slurm_id)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, f"SLURM does not know job {slurm_id}: {out.stderr.strip()}"
    return dict(re.findall(r"(\S+?)=(\S*)", out.stdout))


def requests_gpu(job: dict[str, str]) -> bool:
    """True if the SLURM job asked for a GPU (--gpus, --gres or --gpus-per-*)."""
    keys = ("TresPerJob", "TresPerNode", "TresPerSocket", "TresPerTask")
    return any("gpu" in job.get(key, "") for key in keys)


# Fields that measure the run rather than the result (wall time, throughput, dates): left out of the
# comparison of JSON keys and CSV/TSV columns. SVG drawings also carry a date and random element ids.
TIMING_FIELD_RE = re.compile(r"second|time|elapsed|duration|date", re.IGNORECASE)
SVG_VOLATILE_RE = re.compile(r"<dc:date>[^<]*</dc:date>|\bid=\"[^\"]*\"|url\(#[^)]*\)|href=\"#[^\"]*\"")


def _without_timing(value):
    if isinstance(value, dict):
        return {
            key: _without_timing(item) for key, item in value.items() if not TIMING_FIELD_RE.search(str(key))
        }
    if isinstance(value, list):
        return [_without_timing(item) for item in value]
    return value


def artifact_fingerprint(path: Path) -> str:
    """sha256 of what a file says as a result: Parquet data + schema metadata, safetensors tensors + header,
    JSON and CSV/TSV without timing fields, SVG without its date and element ids, other files byte for byte."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        table = pq.read_table(path)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        content = sink.getvalue().to_pybytes()
    elif suffix == ".json":
        content = json.dumps(_without_timing(json.loads(path.read_text())), sort_keys=True).encode()
    elif suffix in (".csv", ".tsv"):
        import pandas as pd

        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        content = (
            frame.drop(columns=[column for column in frame.columns if TIMING_FIELD_RE.search(str(column))])
            .to_csv()
            .encode()
        )
    elif suffix == ".safetensors":
        # The header's JSON key order varies between processes; the tensors are laid out deterministically.
        raw = path.read_bytes()
        size = int.from_bytes(raw[:8], "little")
        content = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True).encode() + raw[8 + size :]
    elif suffix == ".svg":
        content = SVG_VOLATILE_RE.sub("", path.read_text()).encode()
    else:
        content = path.read_bytes()
    return hashlib.sha256(content).hexdigest()


def artifact_digests(root: Path, volatile=VOLATILE_GLOBS) -> dict[str, str]:
    """Relative path -> fingerprint of every artifact under `root` ("volatile" for `volatile` globs)."""
    digests = {}
    for path in sorted(found for found in root.rglob("*") if found.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(fnmatch(rel, pattern) for pattern in IGNORED_GLOBS):
            continue
        volatile_file = any(fnmatch(rel, pattern) for pattern in volatile)
        digests[rel] = "volatile" if volatile_file else artifact_fingerprint(path)
    return digests


def check_slurm_record(job: LoggedJob, run_id: str, gpu_rules: frozenset[str]) -> dict[str, str]:
    """SLURM's record of a submitted job: of this run, completed, of its rule, in the partition its rule
    belongs to (GPU rules with a GPU request, the others without)."""
    record = scontrol_job(job.slurm_id)
    assert record.get("JobName") == run_id, (job.rule, record.get("JobName"), run_id)
    assert record.get("JobState") == "COMPLETED", (job.rule, record.get("JobState"))
    assert record.get("Comment", "").startswith(f"rule_{job.rule}"), (job.rule, record.get("Comment"))
    if job.rule in gpu_rules:
        assert record.get("Partition") == GPU_PARTITION, (job.rule, record.get("Partition"))
        assert requests_gpu(record), f"{job.rule} (SLURM job {job.slurm_id}) asked for no GPU: {record}"
    else:
        assert record.get("Partition") == CPU_PARTITION, (job.rule, record.get("Partition"))
        assert not requests_gpu(record), f"{job.rule} (SLURM job {job.slurm_id}) asked for a GPU"
    return record


@dataclass
class SlurmStudyReport:
    """What `check_study_on_slurm` saw: the jobs per rule and the SLURM records of the submitted ones."""

    jobs: dict[int, LoggedJob]
    slurm: dict[int, dict[str, str]] = field(default_factory=dict)
    artifacts: int = 0

    def rules(self, local: bool) -> set[str]:
        return {job.rule for job in self.jobs.values() if job.local == local}


def check_study_on_slurm(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    *,
    profile: Path = CLUSTER_PROFILE,
    targets: tuple[str, ...] = (),
    reference: Path | None = None,
    volatile: tuple[str, ...] = VOLATILE_GLOBS,
) -> SlurmStudyReport:
    """Run the study in `workdir` through SLURM and check the run end to end; return what was seen.

    `workdir` holds the study's inputs (config, data) and is left untouched. Its artifacts are compared
    with those of `reference`, a finished local run of the same study, or, without one, of a local
    `--cores 2` run made here. Both runs happen at the same absolute path (the local one is moved away
    when done), so artifacts that record where their inputs were still compare equal.
    """
    base = workdir.parent / f"{workdir.name}-runs"
    run_dir = base / "run"
    if reference is None:
        shutil.copytree(workdir, run_dir, symlinks=True)
        run_snakemake(snakemake_command(snakefile, run_dir, configfile, "--cores", "2", *targets), run_dir)
        reference = run_dir.rename(base / "local")
    shutil.copytree(workdir, run_dir, symlinks=True)
    derived = derive_test_profile(profile, base / "profile")
    gpu_rules = profile_gpu_rules(profile)

    slurm_run = snakemake_command(snakefile, run_dir, configfile, "--profile", str(derived), *targets)
    log = run_snakemake(slurm_run, cwd=run_dir)
    report = SlurmStudyReport(jobs=parse_jobs(log))

    remote = {jid: job for jid, job in report.jobs.items() if not job.local}
    assert remote, f"no job went to SLURM:\n{log[-4000:]}"
    unsubmitted = {jid: job.rule for jid, job in remote.items() if job.slurm_id is None}
    assert not unsubmitted, f"jobs that ran but were not submitted with sbatch: {unsubmitted}"

    run_id = RUN_ID_RE.search(log).group(1)
    for job in remote.values():
        report.slurm[job.slurm_id] = check_slurm_record(job, run_id, gpu_rules)

    local_artifacts = artifact_digests(reference, volatile)
    slurm_artifacts = artifact_digests(run_dir, volatile)
    only_one = set(slurm_artifacts) ^ set(local_artifacts)
    assert not only_one, f"files written by only one of the SLURM and the local run: {sorted(only_one)}"
    differing = [path for path, digest in slurm_artifacts.items() if local_artifacts[path] != digest]
    assert not differing, f"artifacts differ between the SLURM and the local run: {differing}"
    report.artifacts = len(slurm_artifacts)

    rerun = run_snakemake(slurm_run, cwd=run_dir)
    assert NOTHING_TO_DO in rerun, f"the rerun scheduled jobs:\n{rerun[-4000:]}"
    assert not SUBMITTED_RE.search(rerun), "the rerun submitted SLURM jobs"
    return report


# A three-rule stand-in with the real rule names for the CPU and GPU sides: checks cluster and profile
# without the ML workflow (seconds of work per job).
TOY_SNAKEFILE = textwrap.dedent(
    """
    configfile: "config.yaml"

    rule all:
        input: "results/report.txt"

    rule prepare_toy:
        output: "results/data.txt"
        shell: "echo {config[word]} > {output}"

    rule finetune:
        input: "results/data.txt"
        output: "results/model.txt"
        resources: gpu=0
        log: "logs/finetune.log"
        shell: "tr a-z A-Z < {input} > {output}; echo gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {log}"

    rule report:
        input: "results/model.txt"
        output: "results/report.txt"
        shell: "cat {input} {input} > {output}"
    """
)


@pytest.fixture
def toy_study(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A workdir with a config, and the toy Snakefile beside it: (workdir, snakefile, configfile)."""
    workdir = tmp_path / "study"
    workdir.mkdir()
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(TOY_SNAKEFILE)
    configfile = workdir / "config.yaml"
    configfile.write_text("word: layershift\n")
    return workdir, snakefile, configfile


def require_cluster() -> None:
    reason = cluster_unavailable_reason()
    if reason:
        pytest.skip(reason)


def test_derived_profile_keeps_keys_and_makes_partitions_concrete(tmp_path):
    derived_dir = derive_test_profile(CLUSTER_PROFILE, tmp_path)
    derived = yaml.safe_load((derived_dir / "config.yaml").read_text())
    original = yaml.safe_load(CLUSTER_PROFILE.read_text())
    assert set(original) <= set(derived)
    assert derived["executor"] == "slurm"
    assert derived["slurm-status-command"] == "squeue"
    assert derived["default-resources"]["slurm_partition"] == CPU_PARTITION
    assert "slurm_account" not in derived["default-resources"]
    assert set(derived["set-resources"]) == set(original["set-resources"])
    gpu_rules = profile_gpu_rules(CLUSTER_PROFILE)
    for rule in gpu_rules:
        assert derived["set-resources"][rule]["slurm_partition"] == GPU_PARTITION
    assert "<" not in (derived_dir / "config.yaml").read_text(), "a placeholder survived"


def test_the_profiles_gpu_rules_are_the_rules_tables():
    """profiles/slurm/config.yaml sends exactly the rules table's GPU rules to the GPU partition."""
    assert profile_gpu_rules(CLUSTER_PROFILE) == GPU_RULES


@pytest.mark.slurm
def test_toy_workflow_runs_through_slurm(toy_study):
    require_cluster()
    workdir, snakefile, configfile = toy_study
    report = check_study_on_slurm(workdir, snakefile, configfile)
    assert report.rules(local=False) == {"prepare_toy", "finetune", "report"}
    finetune = next(
        record for record in report.slurm.values() if record["Comment"].startswith("rule_finetune")
    )
    assert finetune["Partition"] == GPU_PARTITION and "gpu" in finetune["TresPerJob"]
    # The job saw the GPU that SLURM gave it; the local run saw none.
    runs = workdir.parent / f"{workdir.name}-runs"
    assert re.fullmatch(r"gpus=\d+", (runs / "run" / "logs" / "finetune.log").read_text().strip())
    assert (runs / "local" / "logs" / "finetune.log").read_text().strip() == "gpus=none"


@pytest.mark.slurm
def test_layershift_study_runs_through_slurm(tmp_path):
    require_cluster()
    try:
        from tests.support.study import build_tiny_study
    except ImportError as err:
        pytest.skip(f"no tiny study to run: {err}")
    # A tiny study of its own (the session's tiny_study directory may hold results or edits of other
    # tests), run once locally as the reference and once through SLURM. The targets need the GPU rules
    # up to the SAEs (GPU partition) and one figure (CPU partition); the whole DAG would only add minutes of
    # SLURM polling, not another kind of job.
    workdir = tmp_path / "tiny"
    configfile = build_tiny_study(workdir)
    targets = (
        "results/metrics/tiny2/mood/finetuned-s3/classification.json",
        "results/sae/tiny2/mood/finetuned-s3/layer2/metrics.json",
        "results/figures/training/tiny2/mood.png",
    )
    report = check_study_on_slurm(workdir, REPO / "Snakefile", configfile, targets=targets)
    ran = report.rules(local=False)
    target_rules = ("evaluate", "train_sae", "fig_training")
    needed = set(target_rules).union(*(workflow_rules.ancestors(rule) for rule in target_rules))
    assert ran & GPU_RULES == needed & GPU_RULES, f"GPU rules of the SLURM run: {ran & GPU_RULES}"
    assert "fig_training" in ran, ran


def test_dry_run_with_cluster_profile_lists_gpu_rules_with_gpus(tmp_path):
    """`snakemake -n --profile profiles/slurm`: every rule that declares `gpu` goes to the GPU partition."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from tests.support.study import default_study_inputs

    workdir = default_study_inputs(tmp_path, "configs/breadth.yaml")  # its verdict curve: every GPU rule
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", str(CLUSTER_PROFILE.parent)]
        + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    profile = yaml.safe_load(CLUSTER_PROFILE.read_text())
    gpu_partition = profile["set-resources"]["finetune"]["slurm_partition"]
    resources = {}  # rule -> its resources line (the same for every job of a rule)
    for block in JOB_BLOCK_RE.finditer(output):
        line = re.search(r"resources: (.*)", block.group(3))
        resources[block.group(2)] = line.group(1) if line else ""
    assert set(resources) >= GPU_RULES, f"GPU rules missing from the dry run: {GPU_RULES - set(resources)}"
    declaring_gpu = {rule for rule, line in resources.items() if re.search(r"\bgpu=", line)}
    assert declaring_gpu == GPU_RULES
    for rule in declaring_gpu:
        assert re.search(r"\bgpu=[1-9]", resources[rule]), f"{rule} asks for no GPU: {resources[rule]}"
        assert f"slurm_partition={gpu_partition}" in resources[rule], f"{rule}: {resources[rule]}"
    for rule in set(resources) - declaring_gpu:
        assert f"slurm_partition={gpu_partition}" not in resources[rule], f"{rule} sent to the GPU partition"
