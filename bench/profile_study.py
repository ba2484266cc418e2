"""Time a whole study from an empty results/ and profile it per rule, beside the cost model's prediction.

Copies a study's config and local data into a fresh directory, runs ``snakemake --cores N`` there (timed,
stopped at ``--timeout``), then reads every job's Snakemake benchmark file (wall seconds, CPU seconds, peak
RSS) and the prediction of ``layershift costs`` for the same config on the same machine:

- per rule: jobs, measured wall and CPU seconds, predicted CPU seconds, the prediction's error;
- the whole study: measured wall time against the bar (``--bar``, default 20 min) and the prediction.

Writes ``bench/results/profile_<config stem>.json`` and prints a Markdown table. Run it on an idle machine
(other load stretches every job); the JSON records the load average before and after::

    .venv/bin/python bench/profile_study.py                         # the default study, 2 cores
    .venv/bin/python bench/profile_study.py --config configs/breadth.yaml --timeout 3600
    .venv/bin/python bench/profile_study.py --results /path/to/a/finished/results   # profile only, no run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import common
from bench_dag import run_capped

sys.path.insert(0, str(common.ROOT / "src"))

from layershift.config import load_config  # noqa: E402
from layershift.costs.calibration import machine_coefficients  # noqa: E402
from layershift.costs.predict import predict_study  # noqa: E402
from layershift.data.sources import source_input_files  # noqa: E402


def copy_study(config_path: Path, workdir: Path) -> None:
    """The config (as config.yaml) and every local data file it names, at the same relative paths."""
    shutil.copy2(config_path, workdir / "config.yaml")
    config = load_config(config_path)
    for entry in config["datasets"].values():
        for source in source_input_files(entry["source"]):
            relative = Path(source)
            if relative.is_absolute():
                continue
            (workdir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(common.ROOT / relative, workdir / relative)


def rule_profile(results: Path) -> dict[str, dict]:
    """Per rule: jobs, wall seconds, CPU seconds and the largest peak RSS (MB) of its benchmark files."""
    profile: dict[str, dict] = defaultdict(
        lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0}
    )
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = path.relative_to(results / "benchmarks").parts[0]
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        entry = profile[rule]
        entry["jobs"] += 1
        entry["wall_s"] += float(row["s"])
        entry["cpu_s"] += float(row["cpu_time"])
        entry["max_rss_mb"] = max(entry["max_rss_mb"], float(row["max_rss"]))
    return dict(profile)


def compare(profile: dict, prediction: dict) -> dict[str, dict]:
    """Measured wall seconds per rule beside the predicted CPU seconds (one thread per job: a job's wall time
    is its CPU time when it has a core to itself) and the relative error."""
    rows = {}
    for rule, measured in sorted(profile.items(), key=lambda item: -item[1]["wall_s"]):
        predicted = prediction["rules"].get(rule, {}).get("cpu_s")
        error = None if predicted is None or not measured["wall_s"] else predicted / measured["wall_s"] - 1
        rows[rule] = {**measured, "predicted_cpu_s": predicted, "error": error}
    return rows


def markdown(report: dict) -> str:
    lines = [
        f"study `{report['config']}` on {report['machine']['cpu_count']} cores, {report['machine']['date']}",
        "",
        "| rule | jobs | wall s | CPU s | predicted s | error |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rule, row in report["rules"].items():
        predicted = "–" if row["predicted_cpu_s"] is None else f"{row['predicted_cpu_s']:.0f}"
        error = "–" if row["error"] is None else f"{row['error']:+.0%}"
        lines.append(
            f"| {rule} | {row['jobs']} | {row['wall_s']:.0f} | {row['cpu_s']:.0f} | {predicted} | {error} |"
        )
    study = report["study"]
    if study["wall_s"] is not None:
        lines += [
            "",
            f"whole study: {study['wall_s']:.0f} s wall ({study['status']}), bar {study['bar_s']:.0f} s: "
            f"{'within' if study['within_bar'] else 'OVER'}; predicted {study['predicted_wall_s']:.0f} s "
            f"({study['prediction_error']:+.0%})",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(common.ROOT / "config.yaml"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=2400, help="stop the study after this many seconds")
    parser.add_argument("--bar", type=float, default=1200, help="the wall time the study must stay within")
    parser.add_argument(
        "--results", help="profile this finished results/ folder instead of running the study"
    )
    parser.add_argument("--out", default=str(common.RESULTS_DIR))
    args = parser.parse_args()
    config_path = Path(args.config).resolve()
    load_before = os.getloadavg()
    wall_s, status = None, "not run: --results profiles a finished study"
    if args.results:
        results = Path(args.results)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="profile-study-"))
        copy_study(config_path, workdir)
        wall_s, code, log = run_capped(common.ROOT / "Snakefile", workdir, args.timeout, cores=args.cores)
        status = "ran" if code == 0 else ("stopped at the cap" if code is None else f"failed ({code})")
        results = workdir / "results"
    coefficients, _ = machine_coefficients()
    prediction = predict_study(load_config(config_path), results, cores=args.cores, coefficients=coefficients)
    report = {
        "config": str(
            config_path.relative_to(common.ROOT) if config_path.is_relative_to(common.ROOT) else config_path
        ),
        "machine": common.machine_info(args.cores)
        | {"load_before": load_before, "load_after": os.getloadavg()},
        "rules": compare(rule_profile(results), prediction),
        "study": {
            "status": status,
            "wall_s": wall_s,
            "bar_s": args.bar,
            "within_bar": wall_s is not None and wall_s <= args.bar,
            "predicted_wall_s": prediction["wall_s_local"],
            "prediction_error": None if not wall_s else prediction["wall_s_local"] / wall_s - 1,
            "jobs_predicted": prediction["jobs"],
        },
    }
    out = Path(args.out) / f"profile_{config_path.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
