"""Command line: `layershift validate CONFIG` checks a config; `layershift summary` prints the study's key tables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from layershift.core.errors import ArtifactError, LayershiftError
from layershift.core.io import read_table, reading


def validate(args: argparse.Namespace) -> int:
    from layershift.config import load_config

    load_config(args.config, base_dir=args.directory)
    print(f"{args.config}: ok")
    return 0


def _require(table: pd.DataFrame, path: Path, columns) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArtifactError(
            f"{path}: no column {', '.join(missing)} (not a table of this layershift version?); delete it and "
            "rerun the job that writes it (snakemake --cores N)"
        )


SUMMARY_TABLES = ("accuracy.csv", "similarity.parquet")  # what every finished study has


def summary(args: argparse.Namespace) -> int:
    """Markdown tables of a finished study (what the README shows): accuracy, similarity, SAEs, diff."""
    results = Path(args.results)
    missing = [name for name in SUMMARY_TABLES if not (results / "tables" / name).is_file()]
    if missing:
        raise LayershiftError(
            f"{results}/tables: no {', '.join(missing)}; run the study first (snakemake --cores N), or point "
            "--results at a finished study's results directory"
        )
    accuracy_path = results / "tables/accuracy.csv"
    with reading(accuracy_path):  # a damaged CSV: one line naming it, as for the Parquet tables
        accuracy = pd.read_csv(accuracy_path)
    _require(accuracy, accuracy_path, ("model", "dataset", "row", "accuracy"))
    rows = ("pretrained", "linear_probe", "finetuned")
    absent = [row for row in rows if row not in set(accuracy["row"])]
    if absent:
        raise ArtifactError(
            f"{accuracy_path}: no {', '.join(absent)} rows; delete it and rerun the job that writes it "
            "(snakemake --cores N)"
        )
    wide = accuracy.pivot_table(index=["model", "dataset"], columns="row", values="accuracy").reset_index()
    print("**Accuracy on the test split** (Table 2 rebuilt)\n")
    print(
        wide[["model", "dataset", "pretrained", "linear_probe", "finetuned"]].to_markdown(
            index=False, floatfmt=".3f"
        )
    )
    similarity = read_table(results / "tables/similarity.parquet")
    cols = [
        "model",
        "dataset",
        "layer",
        "cosine_of_means",
        "cka_sentences",
        "cka_tokens",
        "mean_sentence_cosine",
    ]
    _require(similarity, results / "tables/similarity.parquet", cols)
    print("\n**Pretrained vs fine-tuned similarity per layer**\n")
    print(similarity[cols].to_markdown(index=False, floatfmt=".3f"))
    diff_path = results / "tables/diff_summary.parquet"
    if diff_path.exists():
        diff = read_table(diff_path)
        keep = [
            c
            for c in (
                "model",
                "dataset",
                "layer",
                "verdict",
                "stable_fraction_pretrained",
                "stable_fraction_finetuned",
                "retained_fraction",
                "changed_fraction",
                "lost_fraction",
                "new_fraction",
            )
            if c in diff
        ]
        print(
            "\n**SAE feature diff per layer** (fractions of the *stable* features: those their stage's seed "
            "null reproduces above chance; `stable_fraction_*` = share of live features; an inconclusive "
            "layer's fractions support no finding)\n"
        )
        print(diff[keep].to_markdown(index=False, floatfmt=".2f"))
    return 0


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (a usage error, not a traceback, otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def costs(args: argparse.Namespace) -> int:
    """Predicted time, memory and disk of a study, per rule (layershift.costs.predict; no data or model is loaded)."""
    from layershift.costs.predict import report_markdown
    from layershift.study.schema import load_yaml, validate_schema

    config = validate_schema(load_yaml(args.config), str(args.config))
    print(report_markdown(config, args.results, cores=args.cores, gpu_nodes=args.gpu_nodes))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layershift", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "validate", help="validate a study config (schema + files + columns + model depth)"
    )
    check.add_argument("config")
    check.add_argument(
        "--directory", default=".", help="directory that relative data and model paths are relative to"
    )
    check.set_defaults(func=validate)
    show = sub.add_parser("summary", help="print Markdown tables of a finished study")
    show.add_argument("--results", default="results")
    show.set_defaults(func=summary)
    cost = sub.add_parser("costs", help="predict each rule's time and memory, the study's wall time and disk")
    cost.add_argument("config")
    cost.add_argument("--results", default="results", help="prepared data here gives measured token counts")
    cost.add_argument("--cores", type=_count(1), default=2, help="local cores")
    cost.add_argument(
        "--gpu-nodes",
        type=_count(0),
        default=4,
        help="cluster GPU nodes (one job per GPU; 0: no cluster line)",
    )
    cost.set_defaults(func=costs)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LayershiftError as err:
        print(f"layershift: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `layershift summary | head`: the reader stopped early; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


if __name__ == "__main__":
    sys.exit(main())
