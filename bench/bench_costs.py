"""The cost model, measured: run small studies of growing size, fit per-unit costs, check the predictions.

1. ``run``: for each size (``data.max_rows``) copy a slice of the breadth study (the real MiniLM-L6 of
   ``configs/breadth.yaml`` on the demo corpus ``movies``, one fine-tuning run, every rule from prepare to the
   report: the study the shipped coefficients were fitted on, when it was the default) into
   ``--workdir/rows<N>`` and run ``snakemake --cores 2`` on it; record the study's wall and CPU time
   (``getrusage`` of the children: Snakemake and every job), its job count and each compute job's
   Snakemake benchmark row (``s``, ``cpu_time``, ``max_rss``), with the job's predicted work units
   (``layershift.costs.work``) next to it.
2. ``fit``: per compute rule, seconds = overhead + coef x work (non-negative least squares on the CPU
   clock) and peak RSS = base + coef x bytes (the largest residual added as slack); every job that has no
   benchmark (figures, tables, report, similarity) gets one mean per-job cost. The fit uses the sizes
   named by ``--fit`` (default: all but the largest) and predicts the others: per job, per rule and the
   whole study, against what was measured. Writes ``src/layershift/costs/cost_coefficients.json`` (the fit on
   all sizes, which the workflow uses) and ``bench/results/costs.json`` (measurements, held-out errors).

3. ``check``: the shipped coefficients (``src/layershift/costs/cost_coefficients.json``, not refitted) against
   the studies in ``--workdir`` and the measured default study: after a code change, whether the model
   still predicts within ±25 % (nothing written).
4. ``probe-reference``: the calibration probe (``layershift.costs.probe``) on this machine, stored beside
   the coefficients as ``calibration_reference``, the values ``layershift calibrate`` compares another
   machine with (``fit`` keeps the stored ones; run this on the machine the studies ran on).

    python bench/bench_costs.py run [--sizes 100 200 400] [--workdir /tmp/layershift-costs]
    python bench/bench_costs.py fit [--fit 100 200] [--workdir /tmp/layershift-costs]
    python bench/bench_costs.py check [--workdir /tmp/layershift-costs]
    python bench/bench_costs.py probe-reference [--budget 40]

CPU time is the clock: on a shared 2-core machine the wall clock carries other people's jobs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from layershift.costs import predict  # noqa: E402
from layershift.costs.calibration import REFERENCE_KEY, probe_record, reference_record  # noqa: E402
from layershift.costs.coefficients import BORROWED_COEFFICIENTS, FIT_META, load_coefficients  # noqa: E402
from layershift.costs.inputs import KNOWN_SHAPES  # noqa: E402
from layershift.costs.probe import run_probe  # noqa: E402
from layershift.costs.work import COMPUTE_RULES, work  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DATASETS = ("movies",)
MODEL = "minilm-l6"
BASE_CONFIG = (
    ROOT / "configs" / "breadth.yaml"
)  # the study the cuts are taken from: it has MODEL and DATASETS
RESULTS = ROOT / "bench" / "results" / "costs.json"
COEFFICIENTS = ROOT / "src" / "layershift" / "costs" / "cost_coefficients.json"


def study_config(rows: int) -> dict:
    """The breadth study cut to one model, the datasets of ``DATASETS`` and ``rows`` rows per dataset."""
    config = yaml.safe_load(BASE_CONFIG.read_text())
    config["models"] = {MODEL: config["models"][MODEL]}
    config["datasets"] = {name: config["datasets"][name] for name in DATASETS}
    config["data"]["max_rows"] = rows
    config["activations"]["max_sentences"] = rows  # every training sentence (80 % of the rows)
    config["activations"]["max_tokens"] = 1_000_000
    if config.get("sae_sweep", {}).get("grid"):  # the sweep stays, on a model and dataset the cut study has
        config["sae_sweep"] |= {"model": MODEL, "dataset": DATASETS[0]}
    config.pop("verdict_curve", None)  # the curve's own cost is the train_sae and diff coefficients'
    return config


def run_study(rows: int, workdir: Path, cores: int) -> dict:
    study = workdir / f"rows{rows}"
    if study.exists():
        shutil.rmtree(study)
    study.mkdir(parents=True)
    (study / "data").symlink_to(ROOT / "data", target_is_directory=True)
    (study / "config.yaml").write_text(yaml.safe_dump(study_config(rows), sort_keys=False))
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(study)]
    cmd += ["--configfile", str(study / "config.yaml"), "--cores", str(cores)]
    probe = study / "probe"
    probe.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LAYERSHIFT_COSTS_PROBE": str(probe),
    }
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT / 'bench' / 'costs_probe'}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    load = os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (study / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"study rows={rows} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    jobs = count_jobs(proc.stdout + proc.stderr)
    record = {
        "rows": rows,
        "dir": str(study),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "jobs": jobs,
        "cores": cores,
        "load_before": [round(average, 2) for average in load],
        "load_after": [round(average, 2) for average in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    (study / "study.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"rows={rows}: wall {wall:.0f} s, cpu {cpu:.0f} s, {jobs} jobs", flush=True)
    return record


def count_jobs(log: str) -> int:
    """The job count of Snakemake's "Job stats" table (its ``total`` row)."""
    for line in log.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return 0


def probe_rows(study: Path) -> list[dict]:
    """Every job's own record (bench/costs_probe/sitecustomize.py): rule, wildcards, cpu_s, max_rss_mb."""
    return [json.loads(path.read_text()) for path in sorted((study / "probe").glob("*.json"))]


def benchmark_rows(study: Path) -> list[dict]:
    """Every Snakemake benchmark TSV of a finished study: rule, wildcards (from the path), s, cpu_time, max_rss."""
    rows = []
    base = study / "results" / "benchmarks"
    for tsv in sorted(base.rglob("*.tsv")):
        parts = tsv.relative_to(base).with_suffix("").parts
        with tsv.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        rows.append(
            {
                "rule": parts[0],
                "keys": list(parts[1:]),
                "s": float(row["s"]),
                "cpu_time": float(row["cpu_time"]),
                "max_rss": float(row["max_rss"]) if row["max_rss"] not in ("", "-", "NA") else 0.0,
            }
        )
    return rows


# rules fitted together with the rule whose coefficients predict them (layershift.costs.coefficients.BORROWED_COEFFICIENTS):
# the sweep is the SAE trainer on other settings, and its 12 SAEs give the trainer's slope a second, larger
# point (a per-rule fit of one job per study would be a mean). Not the crosscoder: measured on its own.
FIT_WITH = {"sae_sweep": BORROWED_COEFFICIENTS["sae_sweep"]}


def load_study(rows: int, workdir: Path) -> dict:
    """A finished study: its record, validated config and every benchmarked job (a rule with a cost model)
    with its work."""
    from layershift.study.schema import validate_schema

    study = workdir / f"rows{rows}"
    record = json.loads((study / "study.json").read_text())
    config = validate_schema(yaml.safe_load((study / "config.yaml").read_text()), "config.yaml")
    jobs = []
    for row in probe_rows(study):
        if row["rule"] not in COMPUTE_RULES:
            continue
        wildcards = {name: str(value) for name, value in row["wildcards"].items()}
        row = {**row, "cpu_time": row["cpu_s"], "max_rss": row["max_rss_mb"]}
        job_work = work(row["rule"], config, wildcards, results=study / "results")
        jobs.append({**row, "wildcards": wildcards, "gflop": job_work.flop / 1e9, "bytes": job_work.bytes})
    record["config"] = config
    record["benchmarked"] = jobs
    return record


def fit_line(work: list[float], seconds: list[float]) -> tuple[float, float]:
    """Least squares seconds = overhead + slope x work with overhead, slope >= 0 (the two-variable NNLS,
    solved in closed form)."""
    import numpy as np

    work, seconds = np.asarray(work, float), np.asarray(seconds, float)
    if len(work) > 1 and np.ptp(work) > 0:
        slope, overhead = np.polyfit(work, seconds, 1)
        if overhead >= 0 and slope >= 0:
            return float(overhead), float(slope)
    overhead_only = float(max(0.0, seconds.mean()))
    slope_only = float(max(0.0, (work @ seconds) / (work @ work))) if (work @ work) > 0 else 0.0
    # the better of "overhead only" and "slope only"
    if ((seconds - overhead_only) ** 2).sum() <= ((seconds - slope_only * work) ** 2).sum():
        return overhead_only, 0.0
    return 0.0, slope_only


def fit(studies: list[dict]) -> dict:
    """Coefficients from the benchmarked jobs of ``studies`` (CPU clock) and the light jobs' mean cost."""
    rules: dict[str, dict] = {}
    by_rule: dict[str, list[dict]] = {}
    for study in studies:
        for job in study["benchmarked"]:
            by_rule.setdefault(FIT_WITH.get(job["rule"], job["rule"]), []).append(job)
    for rule, jobs in sorted(by_rule.items()):
        overhead, slope = fit_line([job["gflop"] for job in jobs], [job["cpu_time"] for job in jobs])
        base = max(job["max_rss"] - job["bytes"] / 1e6 for job in jobs)
        rules[rule] = {
            "overhead_s": round(overhead, 3),
            "s_per_gflop": round(slope, 6),
            "mem_base_mb": round(base, 1),
            "jobs_fitted": len(jobs),
            "gflop_range": [
                round(min(job["gflop"] for job in jobs), 4),
                round(max(job["gflop"] for job in jobs), 4),
            ],
        }
    light_cpu = sum(
        study["cpu_s"] - sum(job["cpu_time"] for job in study["benchmarked"]) for study in studies
    )
    light_jobs = sum(study["jobs"] - len(study["benchmarked"]) for study in studies)
    return {"rules": rules, "light_job_s": round(light_cpu / max(1, light_jobs), 3)}


def predict_measured(study: dict, coefficients: dict) -> dict:
    """Predicted vs measured CPU seconds per rule and for the whole study (and its wall time on the cores)."""
    results = Path(study["dir"]) / "results"
    per_rule: dict[str, dict] = {}
    for job in study["benchmarked"]:
        prediction = predict.predict_job(
            job["rule"], study["config"], job["wildcards"], results, coefficients=coefficients
        )
        summary = per_rule.setdefault(
            job["rule"],
            {
                "jobs": 0,
                "measured_cpu_s": 0.0,
                "predicted_cpu_s": 0.0,
                "measured_rss_mb": 0.0,
                "predicted_rss_mb": 0.0,
            },
        )
        summary["jobs"] += 1
        summary["measured_cpu_s"] += job["cpu_time"]
        summary["predicted_cpu_s"] += prediction["cpu_s"]
        summary["measured_rss_mb"] = max(summary["measured_rss_mb"], job["max_rss"])
        summary["predicted_rss_mb"] = max(summary["predicted_rss_mb"], prediction["mem_mb"])
    for summary in per_rule.values():
        summary["error"] = (
            round(summary["predicted_cpu_s"] / summary["measured_cpu_s"] - 1, 3)
            if summary["measured_cpu_s"]
            else None
        )
    whole = predict.predict_study(study["config"], results, cores=study["cores"], coefficients=coefficients)
    return {
        "rows": study["rows"],
        "rules": per_rule,
        "jobs": {"measured": study["jobs"], "predicted": whole["jobs"]},
        "cpu_s": compared(study["cpu_s"], whole["cpu_s_total"]),
        "wall_s": {
            **compared(study["wall_s"], whole["wall_s_local"]),
            "load_before": study["load_before"],
            "load_after": study["load_after"],
        },
    }


def compared(measured: float, predicted: float) -> dict:
    """A measured value beside its prediction and the relative error (predicted / measured - 1)."""
    return {
        "measured": measured,
        "predicted": round(predicted, 1),
        "error": round(predicted / measured - 1, 3),
    }


# The default study (config.yaml: 2 models x 3 datasets, 188 jobs) as measured on this machine, idle, on
# 2026-12-03 21:59-22:18 UTC with the sparse-code SAE path (sampled codes' gradient) and kept freed memory
# (CHANGELOG.md, 2026-12-03): whole-study wall and CPU seconds (/usr/bin/time of `snakemake
# --cores 2`), and summed job wall seconds per rule (Snakemake's benchmark files; one thread per job, idle
# machine: close to CPU seconds). Not a fitted point: a check at a larger size, with a second model and
# three datasets.
DEFAULT_STUDY_PROFILE = ROOT / "bench" / "results" / "profile_config.json"  # bench/profile_study.py's record


def measured_default_study() -> dict | None:
    """The default study as ``bench/profile_study.py`` measured it (wall seconds of the whole study and per rule,
    job count, date), or None when it has not been profiled on this checkout."""
    if not DEFAULT_STUDY_PROFILE.is_file():
        return None
    profile = json.loads(DEFAULT_STUDY_PROFILE.read_text())
    if (
        profile["study"]["wall_s"] is None
    ):  # a profile of a finished results/ folder: no whole-study wall time
        return None
    return {
        "date": profile["machine"]["date"],
        "wall_s": profile["study"]["wall_s"],
        "jobs": profile["study"]["jobs_predicted"],
        "rules_wall_s": {rule: row["wall_s"] for rule, row in profile["rules"].items()},
    }


def default_study_check(coefficients: dict) -> dict:
    from layershift.study.schema import validate_schema

    measured = measured_default_study()
    if measured is None:
        return {
            "skipped": f"no {DEFAULT_STUDY_PROFILE.name}: time the default study with bench/profile_study.py"
        }
    config = validate_schema(yaml.safe_load((ROOT / "config.yaml").read_text()), "config.yaml")
    prediction = predict.predict_study(config, ROOT / "results", cores=2, coefficients=coefficients)
    if prediction["jobs"] != measured["jobs"]:  # config.yaml is no longer the study that was measured
        return {
            "skipped": f"the measurement is of a {measured['jobs']}-job study ({measured['date']}); "
            f"config.yaml now has {prediction['jobs']} jobs: time it again with bench/profile_study.py"
        }
    rules = {
        rule: {
            "measured_s": seconds,
            "predicted_cpu_s": round(prediction["rules"][rule]["cpu_s"], 1),
            "error": round(prediction["rules"][rule]["cpu_s"] / seconds - 1, 3),
        }
        for rule, seconds in measured["rules_wall_s"].items()
        if rule in prediction["rules"]
    }
    return {
        "jobs": {"measured": measured["jobs"], "predicted": prediction["jobs"]},
        "wall_s": compared(measured["wall_s"], prediction["wall_s_local"]),
        "rules": rules,
    }


def fit_and_report(args) -> None:
    studies = [load_study(rows, args.workdir) for rows in args.sizes]
    fit_sizes = args.fit or sorted(args.sizes)[:-1]
    held_out = [study for study in studies if study["rows"] not in fit_sizes]
    partial = {**fit([study for study in studies if study["rows"] in fit_sizes]), **FIT_META}
    full = {**fit(studies), **FIT_META}
    full["fitted_on"] = {
        "studies": [
            f"breadth study cut to {MODEL} x {', '.join(DATASETS)}, max_rows {study['rows']}"
            for study in studies
        ],
        "clock": "each job's own CPU time, user + system (bench/costs_probe; one torch thread)",
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
    }
    shipped = json.loads(COEFFICIENTS.read_text())
    if REFERENCE_KEY in shipped:  # the probe's reference values: re-record them with `probe-reference`
        full[REFERENCE_KEY] = shipped[REFERENCE_KEY]
    COEFFICIENTS.write_text(json.dumps(full, indent=2) + "\n")
    report = {
        "coefficients": full,
        "held_out": {
            "fitted_on": fit_sizes,
            "coefficients": partial,
            "predictions": [predict_measured(study, partial) for study in held_out],
        },
        "in_sample": [predict_measured(study, full) for study in studies],
        "default_study": default_study_check(full),
        "studies": [{key: value for key, value in study.items() if key != "config"} for study in studies],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_report(
        report["default_study"],
        [("held out", report["held_out"]["predictions"]), ("in sample", report["in_sample"])],
    )


def record_probe_reference(budget_s: float) -> None:
    """Run the calibration probe on this machine (of the fit's kind) and store its values beside the shipped
    coefficients, the reference ``layershift calibrate`` divides by."""
    record = probe_record(run_probe(budget_s, report=print))
    coefficients = json.loads(COEFFICIENTS.read_text())
    coefficients[REFERENCE_KEY] = {
        **reference_record(record),
        "note": f"measured on the machine named here, of the kind the coefficients were fitted on "
        f"({coefficients['fitted_on']['machine']}, {coefficients['fitted_on']['date']}); not necessarily the same machine",
    }
    COEFFICIENTS.write_text(json.dumps(coefficients, indent=2) + "\n")
    print(f"{COEFFICIENTS}: {REFERENCE_KEY} from {record['machine']} ({record['wall_s']:.1f} s)")


def check_shipped(args) -> None:
    """The shipped coefficients, unchanged, against the measured studies and the default study."""
    shipped = load_coefficients()
    studies = [load_study(rows, args.workdir) for rows in args.sizes]
    print_report(
        default_study_check(shipped), [("shipped", [predict_measured(study, shipped) for study in studies])]
    )


def print_report(default: dict, predictions: list[tuple[str, list[dict]]]) -> None:
    if "skipped" in default:
        print(f"default study: {default['skipped']}")
    else:
        print_default_study(default)
    print_predictions(predictions)


def print_default_study(default: dict) -> None:
    print(
        f"default study: wall {default['wall_s']['predicted']:.0f} vs "
        f"{default['wall_s']['measured']:.0f} s ({default['wall_s']['error']:+.0%}), jobs {default['jobs']['predicted']} vs {default['jobs']['measured']}; "
        + ", ".join(
            f"{rule} {compared_rule['error']:+.0%}" for rule, compared_rule in default["rules"].items()
        )
    )


def print_predictions(predictions: list[tuple[str, list[dict]]]) -> None:
    for label, preds in predictions:
        for prediction in preds:
            print(
                f"{label} rows={prediction['rows']}: cpu {prediction['cpu_s']['predicted']:.0f} vs {prediction['cpu_s']['measured']:.0f} s "
                f"({prediction['cpu_s']['error']:+.0%}), wall {prediction['wall_s']['predicted']:.0f} vs {prediction['wall_s']['measured']:.0f} s "
                f"({prediction['wall_s']['error']:+.0%}), jobs {prediction['jobs']['predicted']} vs {prediction['jobs']['measured']}"
            )
            for rule, summary in sorted(prediction["rules"].items()):
                print(
                    f"    {rule:10s} {summary['predicted_cpu_s']:8.1f} vs {summary['measured_cpu_s']:8.1f} s ({summary['error']:+.0%})"
                    f"  rss {summary['predicted_rss_mb']:.0f} vs {summary['measured_rss_mb']:.0f} MB"
                )


def paper_dry_run(workdir: Path) -> dict:
    """`snakemake -n --profile profiles/slurm` on configs/paper.yaml, offline: the hub models replaced by
    config.json-only copies of their shapes (``path:``) and the two Kaggle files by hub ids, so token counts
    come from the caps exactly as ``layershift costs configs/paper.yaml`` computes them. Returns, per rule,
    the jobs and the largest runtime / mem_mb requested."""
    import re

    study = workdir / "paper-standin"
    shutil.rmtree(study, ignore_errors=True)
    study.mkdir(parents=True)
    config = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    for name, model in config["models"].items():
        layers, hidden, inter, vocab, heads = KNOWN_SHAPES[model["source"].removeprefix("hub:")]
        (study / "models" / name).mkdir(parents=True)
        cfg = {"architectures": ["BertModel"], "model_type": "bert", "num_hidden_layers": layers}
        cfg |= {"hidden_size": hidden, "intermediate_size": inter, "vocab_size": vocab}
        cfg |= {"num_attention_heads": heads, "max_position_embeddings": 512}
        (study / "models" / name / "config.json").write_text(json.dumps(cfg))
        model["source"] = f"path:models/{name}"
    for name, dataset in config["datasets"].items():
        if not dataset["source"].startswith("hub:"):
            dataset["source"] = f"hub:standin/{name}"
    (study / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(SNAKEMAKE), "-n", "--profile", str(ROOT / "profiles" / "slurm"), "-s", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(study), "--configfile", str(study / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=study, check=False)
    out = proc.stdout + proc.stderr
    (study / "dry_run.log").write_text(out)
    if proc.returncode != 0:
        raise RuntimeError(out[-3000:])
    rules: dict[str, dict] = {}
    for rule, block in re.findall(r"rule (\w+):\n(.*?)\n\n", out, flags=re.S):
        line = re.search(r"resources: (.*)", block)
        if not line or "runtime=" not in line.group(1):
            continue
        runtime = int(re.search(r"runtime=(\d+)", line.group(1)).group(1))
        mem = int(re.search(r"mem_mb=(\d+)", line.group(1)).group(1))
        summary = rules.setdefault(rule, {"jobs": 0, "runtime_max": 0, "mem_mb_max": 0})
        summary["jobs"] += 1
        summary["runtime_max"] = max(summary["runtime_max"], runtime)
        summary["mem_mb_max"] = max(summary["mem_mb_max"], mem)
    for rule, summary in sorted(rules.items()):
        print(
            f"{rule:16s} {summary['jobs']:4d} jobs, runtime <= {summary['runtime_max']} min, mem_mb <= {summary['mem_mb_max']}"
        )
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "fit", "check", "paper-dry-run", "probe-reference"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[120, 240, 480])
    parser.add_argument(
        "--fit", type=int, nargs="+", default=None, help="sizes to fit on (default: all but the largest)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/layershift-costs"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--budget", type=float, default=40.0, help="probe-reference: the probe's CPU seconds")
    args = parser.parse_args()
    if args.command == "run":
        for rows in args.sizes:
            run_study(rows, args.workdir, args.cores)
    elif args.command == "paper-dry-run":
        paper_dry_run(args.workdir)
    elif args.command == "probe-reference":
        record_probe_reference(args.budget)
    elif args.command == "check":
        check_shipped(args)
    else:
        fit_and_report(args)


if __name__ == "__main__":
    main()
