"""The coefficients scaled to the machine at hand: the probe's values (:mod:`layershift.costs.probe`) over
the values measured beside the fit (``calibration_reference`` in ``cost_coefficients.json``) give one factor
per kind of work, and each rule's CPU coefficients scale by the factor of the work they pay for.

* ``overhead_s`` of every rule and ``light_job_s``: process start-up (``startup``);
* ``s_per_gflop`` of the encoder rules (fine-tune, evaluate, extract, probes): ``encoder_matmul``;
* ``s_per_gflop`` of the dictionary rules (SAE, crosscoder, sweep, verdict curve, diff, features): the part
  ``train_sae``'s own per-GFLOP cost explains scales by ``sae_step``; the rest (shard reading and decoding,
  Python-side bookkeeping) by the geometric mean of ``parquet_decode`` and ``per_call``;
* ``s_per_gflop`` of ``prepare`` (per row of text): ``per_call``.

GPU predictions keep the fitted numbers: the probe measures this machine's CPU, not a GPU node. Memory is
not scaled. A calibration is kept in a file (:func:`calibration_path`) that ``layershift costs`` and the
workflow's resource requests read when it was written on a machine with the same CPU model and core count.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
from pathlib import Path

from layershift.core.io import write_json
from layershift.costs.coefficients import load_coefficients

DEFAULT_BUDGET_S = 25.0  # CPU seconds the probe aims at (layershift.costs.probe)
CALIBRATION_ENV = "LAYERSHIFT_CALIBRATION"  # a calibration file's path; empty or "none": as fitted
CALIBRATION_NAME = Path("layershift") / "calibration.json"
REFERENCE_KEY = "calibration_reference"
ENCODER_RULES = frozenset({"finetune", "evaluate", "extract", "probes"})
TEXT_RULES = frozenset({"prepare"})
MATMUL_REFERENCE_RULE = (
    "train_sae"  # its per-GFLOP cost is the SAE matmul rate the other dictionary rules pay
)


def calibration_path() -> Path | None:
    """Where the calibration of this machine lives: ``$LAYERSHIFT_CALIBRATION`` (empty or ``none``: no
    calibration), else ``$XDG_CACHE_HOME/layershift/calibration.json`` (``~/.cache`` by default): a property
    of the machine, shared by every study and checkout on it."""
    given = os.environ.get(CALIBRATION_ENV)
    if given is not None:
        return None if given.strip().lower() in ("", "none") else Path(given).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / CALIBRATION_NAME


def this_machine() -> dict:
    """The CPU model (``/proc/cpuinfo``'s model name) and the cores this process may use (``nproc``)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": model or platform.processor() or platform.machine(), "nproc": cores}


def probe_record(measured: dict) -> dict:
    """A probe's result (:func:`layershift.costs.probe.run_probe`) with the machine and the date."""
    return {
        **measured,
        "machine": this_machine(),
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
    }


def reference_record(record: dict) -> dict:
    """The ``calibration_reference`` block of ``cost_coefficients.json``: the probe's values on a machine of
    the fit's kind, the machine and the date (factors of 1.0 mean: as fast as that machine)."""
    return {
        "probes": {name: {"value": measured["value"]} for name, measured in record["probes"].items()},
        "machine": record["machine"],
        "date": record["date"],
        "measured": "layershift.costs.probe, one thread, CPU seconds (user + system), median of repeats",
    }


def probe_factors(record: dict, coefficients: dict) -> dict[str, float]:
    """Per probe: this machine's value over the reference machine's (2.0: this machine takes twice as long)."""
    reference = coefficients[REFERENCE_KEY]["probes"]
    here = record["probes"]
    return {name: here[name]["value"] / reference[name]["value"] for name in reference if name in here}


def rule_scales(rule: str, coefficient: dict, factors: dict, matmul_rate: float) -> dict[str, float]:
    """The factors a rule's ``overhead_s`` and ``s_per_gflop`` are multiplied by (module docstring)."""
    if rule in ENCODER_RULES:
        per_gflop = factors["encoder_matmul"]
    elif rule in TEXT_RULES:
        per_gflop = factors["per_call"]
    else:
        rate = coefficient["s_per_gflop"]
        matmul_share = min(1.0, matmul_rate / rate) if rate > 0 else 1.0
        host = math.sqrt(factors["parquet_decode"] * factors["per_call"])
        per_gflop = matmul_share * factors["sae_step"] + (1 - matmul_share) * host
    return {"overhead_s": factors["startup"], "s_per_gflop": per_gflop}


def calibrated_coefficients(coefficients: dict, record: dict) -> dict:
    """A copy of ``coefficients`` whose rules carry ``cpu_scale`` (read by the CPU predictions only) and
    whose ``calibration`` says when, where and by how much."""
    factors = probe_factors(record, coefficients)
    scaled = copy.deepcopy(coefficients)
    matmul_rate = coefficients["rules"][MATMUL_REFERENCE_RULE]["s_per_gflop"]
    for rule, coefficient in scaled["rules"].items():
        coefficient["cpu_scale"] = rule_scales(rule, coefficient, factors, matmul_rate)
    scaled["light_job_cpu_scale"] = factors["startup"]
    scaled["calibration"] = {"date": record["date"], "machine": record["machine"], "factors": factors}
    return scaled


def write_calibration(record: dict, path: str | os.PathLike) -> None:
    write_json(record, path)


def read_calibration(path: Path | None) -> tuple[dict | None, str | None]:
    """A calibration file written on this machine, or None with the one-line reason it is not used
    (None when there is simply no file)."""
    if path is None or not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text())
        written_on, probes = dict(record["machine"]), dict(record["probes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"calibration {path} unreadable ({err}): ignored"
    here = this_machine()
    if written_on != here or not probes:
        return None, (
            f"calibration {path} is from another machine ({written_on.get('cpu_model')}, "
            f"{written_on.get('nproc')} cores; this one: {here['cpu_model']}, {here['nproc']} cores): ignored"
        )
    missing = sorted(set(load_coefficients()[REFERENCE_KEY]["probes"]) - set(probes))
    if missing:
        return None, f"calibration {path} lacks the probes {', '.join(missing)} (another version): ignored"
    return record, None


def describe(coefficients: dict) -> str:
    """One line: calibrated on this machine on DATE (with the factors), or as fitted."""
    calibration = coefficients.get("calibration")
    if calibration is None:
        fitted = coefficients.get("fitted_on", {})
        return (
            f"CPU coefficients as fitted ({fitted.get('machine', 'unknown machine')}, "
            f"{fitted.get('date', 'undated')}); `layershift calibrate` measures this machine"
        )
    factors = ", ".join(f"{name} x{factor:.2f}" for name, factor in calibration["factors"].items())
    return (
        f"CPU coefficients calibrated on this machine on {calibration['date']} ({factors}; "
        f"time here / time on the fit's machine); GPU predictions as fitted (the probe measures the CPU)"
    )


def machine_coefficients(path: Path | None = None) -> tuple[dict, list[str]]:
    """The coefficients for this machine: scaled by the calibration at ``path`` (default
    :func:`calibration_path`) when it was written here, else as fitted; and the lines that say which."""
    path = calibration_path() if path is None else path
    coefficients = load_coefficients()
    record, note = read_calibration(path)
    if record is not None:
        coefficients = calibrated_coefficients(coefficients, record)
    return coefficients, [line for line in (note, describe(coefficients)) if line]
