"""Command line: `layershift validate CONFIG` checks a config; `layershift summary` prints the study's key tables
(`--markdown`: its whole results page, from the artifacts alone)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from layershift.core.errors import LayershiftError
from layershift.core.io import atomic_path


def validate(args: argparse.Namespace) -> int:
    from layershift.config import load_config

    load_config(args.config, base_dir=args.directory)
    print(f"{args.config}: ok")
    return 0


DEFAULT_CONFIG = Path("config.yaml")


def study_config(given: str | None) -> Path | None:
    """The study config the results page reads (which datasets are synthetic): the one given, else
    config.yaml where there is one, else None (every dataset counted as real)."""
    if given is not None:
        return Path(given)  # a missing file is a one-line error when it is read
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def summary(args: argparse.Namespace) -> int:
    """Markdown tables of a finished study: the short summary, or with --markdown the full results page."""
    from layershift.report.results_page import results_page, summary_markdown_text

    if args.results_dir is not None and args.results is not None and args.results_dir != args.results:
        raise LayershiftError(
            f"two results directories given: {args.results_dir} and --results {args.results}"
        )
    given = args.results_dir or args.results or "results"
    results = Path(given)
    if not args.markdown:
        print(summary_markdown_text(results), end="")
        return 0
    output = f" --output {args.output}" if args.output else ""
    config = f" --config {args.config}" if args.config else ""
    page = results_page(
        results,
        command=f"layershift summary --markdown {given}{config}{output}",
        config_path=study_config(args.config),
    )
    if args.output:
        with atomic_path(args.output, suffix=".md") as tmp:
            tmp.write_text(page, encoding="utf-8")
        print(f"{args.output}: written from {results}", file=sys.stderr)
    else:
        print(page, end="")
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
    show = sub.add_parser("summary", help="print Markdown tables of a finished study, or its results page")
    show.add_argument(
        "results_dir", nargs="?", metavar="RESULTS_DIR", help="a finished study (default: results)"
    )
    show.add_argument("--results", help="the same as RESULTS_DIR")
    show.add_argument(
        "--markdown",
        action="store_true",
        help="the full results page (findings and every table), not the summary",
    )
    show.add_argument("--output", help="write the page here (e.g. docs/results.md) instead of to stdout")
    show.add_argument(
        "--config",
        help="the study's config, whose datasets.<name>.synthetic splits the page's findings into real and "
        "synthetic columns (default: config.yaml where there is one; without: every dataset is real)",
    )
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
