"""The fitted coefficients that turn work into seconds and memory: the shipped ``cost_coefficients.json``
(fitted by ``bench/bench_costs.py``), what each of its numbers means, and which rule's numbers apply to a
rule that was not measured on its own."""

from __future__ import annotations

import functools
import json
from importlib import resources as importlib_resources
from pathlib import Path

COEFFICIENTS_FILE = "cost_coefficients.json"
# rules not measured on their own that run another rule's code: its per-FLOP cost applies
BORROWED_COEFFICIENTS = {
    "crosscoder": "diff",  # older coefficient files only (the crosscoder trained inside diff); now measured
    "sae_sweep": "train_sae",  # the same trainer on the same shards, other settings
    "verdict_curve": "train_sae",  # the same trainer on part of the same shards, then the diff's passes
    "faithfulness": "evaluate",  # forward passes of the classifier over the test split (until measured)
}
# A rule the fit has not measured (import_onnx: the measured studies use a package model): a start-up and
# a model's worth of memory, assumed.
UNMEASURED_RULE = {"overhead_s": 30.0, "s_per_gflop": 0.0, "mem_base_mb": 1500.0, "assumed": True}

FIT_META = {
    "units": {
        "overhead_s": "CPU seconds per job that do not scale with work (process start, imports, model load)",
        "s_per_gflop": "CPU seconds per 1e9 FLOPs of the rule's work (prepare: per 1e9 rows; import_onnx: per 1e9 parameters)",
        "mem_base_mb": "peak RSS (MB) above the counted bytes (weights, optimiser state, buffers)",
        "light_job_s": "mean CPU seconds of a job without a benchmark (figures, tables, similarity, report, Snakemake itself)",
    },
    "diff_includes_crosscoder": False,  # True in coefficient files fitted while diff trained the crosscoder
}


@functools.lru_cache(maxsize=1)
def load_coefficients(path: str | None = None) -> dict:
    """The fitted coefficients (``cost_coefficients.json`` shipped with the package, or ``path``)."""
    if path is not None:
        return json.loads(Path(path).read_text())
    text = importlib_resources.files("layershift.costs").joinpath(COEFFICIENTS_FILE).read_text()
    return json.loads(text)


def rule_coefficients(rule: str, coefficients: dict) -> dict:
    """A rule's fitted coefficients, a borrowed rule's, or :data:`UNMEASURED_RULE`'s assumptions."""
    rules = coefficients["rules"]
    if rule not in rules and rule in BORROWED_COEFFICIENTS:
        return rules[BORROWED_COEFFICIENTS[rule]]
    return rules.get(rule, UNMEASURED_RULE)
