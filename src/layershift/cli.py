"""Command line: `layershift validate CONFIG` checks a config; `layershift summary` prints the study's key tables,
each number a mean with its interval over the fine-tuning runs beside the between-run baseline (`--markdown`:
its whole results page, from the artifacts alone); `layershift costs CONFIG` predicts a study's
time, memory and disk; `layershift calibrate` measures this machine for those predictions."""

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


def _probe_this_machine(budget_s: float) -> dict:
    """Run the calibration probe, its progress and the factors on stderr; the record with machine and date."""
    from layershift.costs import calibration, probe
    from layershift.costs.coefficients import load_coefficients

    print(f"calibration probe (about {budget_s:g} CPU seconds, one thread):", file=sys.stderr)
    record = calibration.probe_record(
        probe.run_probe(budget_s, report=lambda line: print(f"  {line}", file=sys.stderr))
    )
    factors = calibration.probe_factors(record, load_coefficients())
    print(
        f"  took {record['wall_s']:.1f} s; time here / on the fit's machine: "
        + ", ".join(f"{name} {factor:.2f}" for name, factor in factors.items()),
        file=sys.stderr,
    )
    return record


def costs(args: argparse.Namespace) -> int:
    """Predicted time, memory and disk of a study, per rule (layershift.costs.predict; no data or model is
    loaded), with this machine's calibration when there is one (--calibrate: measured now)."""
    from layershift.costs import calibration
    from layershift.costs.coefficients import load_coefficients
    from layershift.costs.predict import report_markdown
    from layershift.study.schema import load_yaml, validate_schema

    config = validate_schema(load_yaml(args.config), str(args.config))
    if args.calibrate:
        record = _probe_this_machine(args.budget)
        coefficients = calibration.calibrated_coefficients(load_coefficients(), record)
    else:
        coefficients, notes = calibration.machine_coefficients()
        for note in notes[:-1]:  # the last line, which coefficients, is part of the report
            print(f"layershift: {note}", file=sys.stderr)
    print(
        report_markdown(
            config, args.results, cores=args.cores, gpu_nodes=args.gpu_nodes, coefficients=coefficients
        )
    )
    return 0


def calibrate(args: argparse.Namespace) -> int:
    """Measure this machine against the one the cost coefficients were fitted on; write the result where
    `layershift costs` and the workflow's resource requests read it."""
    from layershift.costs import calibration

    output = Path(args.output) if args.output else calibration.calibration_path()
    if output is None:
        raise LayershiftError(f"${calibration.CALIBRATION_ENV} disables calibration: give --output PATH")
    record = _probe_this_machine(args.budget)
    calibration.write_calibration(record, output)
    print(f"{output}: written (calibrated on this machine on {record['date']})")
    return 0


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_cost_commands(sub: argparse._SubParsersAction) -> None:
    """`costs CONFIG` (predictions) and `calibrate` (this machine's probe)."""
    from layershift.costs.calibration import DEFAULT_BUDGET_S

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
    cost.add_argument(
        "--calibrate",
        action="store_true",
        help="probe this machine first (~30 s) and scale the CPU coefficients to it (nothing is written)",
    )
    cost.add_argument(
        "--budget", type=_seconds, default=DEFAULT_BUDGET_S, help="CPU seconds the --calibrate probe aims at"
    )
    cost.set_defaults(func=costs)
    probe = sub.add_parser(
        "calibrate",
        help="probe this machine's CPU (~30 s) and save the factors `costs` and the workflow then apply",
    )
    probe.add_argument(
        "--output",
        help="where to write it (default: $LAYERSHIFT_CALIBRATION, else ~/.cache/layershift/calibration.json)",
    )
    probe.add_argument(
        "--budget", type=_seconds, default=DEFAULT_BUDGET_S, help="CPU seconds the probe aims at"
    )
    probe.set_defaults(func=calibrate)


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
    _add_cost_commands(sub)
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
