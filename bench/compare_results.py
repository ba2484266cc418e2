"""Two finished studies' artifacts compared by content, file by file: did a change of code change any result?

Every file under both ``results/`` trees is compared (logs, Snakemake benchmarks and checkpoints aside) by what it
holds, leaving out only what differs from run to run by design:

- Parquet: every column (NaN equal to NaN) and the schema metadata (paths aside), except columns of timings
  (``*second*``);
- JSON: every value, except timings (``seconds``, ``cpu_seconds``, ``rows_per_second``, ...) and file paths (a
  study run in another directory records other absolute paths);
- safetensors: every tensor, bit for bit, and the header metadata (the header's byte order may differ);
- CSV: every column except timings; PNG and anything else: the bytes;
- SVG: the drawing, apart from matplotlib's random element ids and the embedded date.

    .venv/bin/python bench/compare_results.py BASE/results NEW/results

Prints a count per kind of file and every file that differs; exits 1 when any file differs or exists on one
side only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

SKIPPED_DIRECTORIES = {"logs", "benchmarks", "checkpoints"}
PATH_KEYS = {"path", "model_dir", "source_path", "config_file"}
SVG_VOLATILE = re.compile(r'id="[^"]*"|url\(#[^)]*\)|xlink:href="#[^"]*"|<dc:date>[^<]*')


def is_timing(name: str) -> bool:
    return "second" in name or name in {"time", "elapsed", "duration"}


def json_differences(a, b, where: str = "") -> list[str]:
    """Paths at which two parsed JSON values differ, timings and file paths aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in a.keys() | b.keys() if not is_timing(k) and k not in PATH_KEYS}
        return [d for k in sorted(keys) for d in json_differences(a.get(k), b.get(k), f"{where}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in json_differences(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    if isinstance(a, str) and isinstance(b, str) and a.startswith("/") and b.startswith("/"):
        a, b = (
            Path(a).name,
            Path(b).name,
        )  # absolute paths of another checkout or venv: the same file if named alike
    return [] if a == b else [where or "/"]


def schema_metadata(table) -> dict:
    """A Parquet table's key-value metadata, JSON values parsed (so paths inside them can be set aside)."""
    parsed = {}
    for key, value in (table.schema.metadata or {}).items():
        try:
            parsed[key.decode()] = json.loads(value)
        except ValueError:
            parsed[key.decode()] = value
    return parsed


def same_parquet(a: Path, b: Path) -> bool:
    table_a, table_b = pq.read_table(a), pq.read_table(b)
    if table_a.column_names != table_b.column_names:
        return False
    if json_differences(schema_metadata(table_a), schema_metadata(table_b)):
        return False
    return all(table_a.column(c).equals(table_b.column(c)) for c in table_a.column_names if not is_timing(c))


def same_safetensors(a: Path, b: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(a), "np") as file_a, safe_open(str(b), "np") as file_b:
        if file_a.metadata() != file_b.metadata() or set(file_a.keys()) != set(file_b.keys()):
            return False
        return all(np.array_equal(file_a.get_tensor(k), file_b.get_tensor(k)) for k in file_a.keys())  # noqa: SIM118 (a safe_open handle)


def same_csv(a: Path, b: Path) -> bool:
    frame_a, frame_b = pd.read_csv(a), pd.read_csv(b)
    columns = [c for c in frame_a.columns if not is_timing(c)]
    return list(frame_a.columns) == list(frame_b.columns) and frame_a[columns].equals(frame_b[columns])


def same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".parquet":
        return same_parquet(a, b)
    if a.suffix == ".json":
        return not json_differences(json.loads(a.read_text()), json.loads(b.read_text()))
    if a.suffix == ".safetensors":
        return same_safetensors(a, b)
    if a.suffix == ".csv":
        return same_csv(a, b)
    if a.suffix in (".svg", ".html"):
        return SVG_VOLATILE.sub("", a.read_text()) == SVG_VOLATILE.sub("", b.read_text())
    return a.read_bytes() == b.read_bytes()


def artifact_files(results: Path) -> set[Path]:
    return {
        path.relative_to(results)
        for path in results.rglob("*")
        if path.is_file() and path.relative_to(results).parts[0] not in SKIPPED_DIRECTORIES
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    base, new = artifact_files(args.base), artifact_files(args.new)
    counts: dict[str, list[int]] = {}
    differing = []
    for relative in sorted(base & new):
        same = same_file(args.base / relative, args.new / relative)
        counts.setdefault(relative.suffix or "(none)", [0, 0])[0 if same else 1] += 1
        if not same:
            differing.append(relative)
    print(f"{len(base & new)} files in both trees; per kind, [equal, differing]: {counts}")
    for label, only in (("base", base - new), ("new", new - base)):
        for relative in sorted(only):
            print(f"only in {label}: {relative}")
    for relative in differing:
        print(f"differs: {relative}")
    return 1 if differing or base != new else 0


if __name__ == "__main__":
    sys.exit(main())
