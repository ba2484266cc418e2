"""Run every benchmark (full size, one after another) and print their results as one Markdown table.

    python bench/run_all.py [--out DIR] [--threads N] [--default] [--only extraction,sae,...] [--table-only]

Each script writes ``<out>/<name>.json``; ``--table-only`` prints the table from the JSON files already
there. ``--default`` also times the default study (bench_dag.py --default, up to 10 more minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import common

BENCHMARKS = ("extraction", "sae", "finetune", "dag")
# ratios that are reported but carry no target, with what they mean
INFO = {
    "extraction": {
        "a_loop_over_b_wall": "extraction loop only (no model load, tokenising, final files) over bare, wall clock"
    },
    "sae": {
        "a_over_c": "shard trainer over the same trainer on in-memory rows",
        "a_over_saelens": "shard trainer over SAELens's trainer (same rows, same objective)",
    },
}


def run_benchmarks(names: list[str], args) -> dict[str, float]:
    """Run ``bench_<name>.py`` for each name; return wall seconds per benchmark."""
    seconds = {}
    for name in names:
        cmd = [sys.executable, str(Path(__file__).with_name(f"bench_{name}.py")), "--out", str(args.out)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if name == "dag" and args.default:
            cmd.append("--default")
        start = time.perf_counter()
        proc = subprocess.run(cmd, text=True, capture_output=True, check=False)
        seconds[name] = time.perf_counter() - start
        print(proc.stdout.strip() or f"[{name}] no summary line", file=sys.stderr, flush=True)
        if proc.returncode != 0:
            print(f"[{name}] failed ({proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
    return seconds


def shown(value) -> str:
    if value is None:
        return "skipped"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(out: Path, names: list[str], seconds: dict[str, float]) -> str:
    """One row per target and per informational ratio, then the machine the numbers came from."""
    rows = ["| benchmark | measure | value | target | result |", "| --- | --- | --- | --- | --- |"]
    machine = None
    for name in names:
        path = out / f"{name}.json"
        if not path.is_file():
            rows.append(f"| {name} | (no result file) | | | |")
            continue
        result = json.loads(path.read_text())
        machine = machine or result["machine"]
        for key, t in result["targets"].items():
            verdict = {True: "pass", False: "**miss**", None: "n/a"}[t["pass"]]
            value = shown(t["value"]) + (f" ({t['note']})" if t.get("note") else "")
            rows.append(f"| {name} | {t['what'] or key} (`{key}`) | {value} | {t['target']} | {verdict} |")
        for key, what in INFO.get(name, {}).items():
            if key in result.get("ratios", {}):
                rows.append(f"| {name} | {what} (`{key}`) | {shown(result['ratios'][key])} | — | info |")
    lines = rows
    if machine:
        load = machine.get("load_average_1_5_15")
        lines.append("")
        lines.append(
            f"First result written {machine['date']} on {machine['cpu_count']} cores ({machine['platform']}), "
            f"torch {machine['torch_version']} with {machine['torch_threads']} thread(s), 1-min load average "
            f"then {load[0]:.1f}" + (f"; wall time {sum(seconds.values()) / 60:.1f} min." if seconds else ".")
            if load
            else f"Measured {machine['date']} on {machine['cpu_count']} cores, torch {machine['torch_version']}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--threads", type=int, default=None, help="passed to every benchmark")
    parser.add_argument("--default", action="store_true", help="also time the default study")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--table-only", action="store_true", help="print the table from existing results")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    seconds = {} if args.table_only else run_benchmarks(names, args)
    print(markdown_table(args.out, names, seconds))


if __name__ == "__main__":
    main()
