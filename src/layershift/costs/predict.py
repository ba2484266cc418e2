"""Predictions from work and the fitted coefficients: each job's CPU seconds, GPU seconds and peak memory,
the SLURM requests the workflow makes, and a whole study's time, wall time and disk, as numbers or Markdown.

* CPU seconds: ``overhead + seconds_per_gflop x GFLOP`` (one torch thread; process start, imports and model
  load are in ``overhead``);
* peak host memory: ``base + bytes`` where ``bytes`` counts weights, gradients, optimiser state and batch
  buffers (coefficient 1: the measured studies hardly vary it, so only ``base`` is fitted, as the largest
  measured RSS above the count);
* GPU seconds: the CPU ``overhead`` plus a fixed CUDA start-up, FLOPs at an assumed fraction of an assumed
  GPU's peak (:class:`GPU`, an A100-40GB unless told otherwise) and a launch-bound floor per optimiser step.

Every function takes a validated config (``validate_schema`` filled the schema's defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from layershift.costs.calibration import describe
from layershift.costs.coefficients import load_coefficients, rule_coefficients
from layershift.costs.inputs import dataset_stats, model_shape
from layershift.costs.schedule import list_schedule
from layershift.costs.work import WORK, Work, activation_rows, sae_count, work
from layershift.study import rules as workflow_rules
from layershift.study import targets

SAFETY_TIME = 2.0
SAFETY_MEM = 1.5
FLOOR_MINUTES = 5
FLOOR_MB = 2000
DEFAULT_MEM_MB = 2000.0  # a rule whose coefficients have no memory base

# Host-side data work on a GPU node (reading and decoding float16 Parquet shards, per-batch stacking and
# copies of hidden states to numpy): values per second, as measured here (one 4,096 x 384 row group
# read back in 22-34 ms on this CPU, i.e. ~50 M values/s). Counted on top of the GPU's compute time.
HOST_VALUES_PER_S = 50e6

# The chain of one model x dataset that bounds a cluster run (after its dataset's prepare).
LONGEST_CHAIN = ("finetune", "extract", "train_sae", "crosscoder", "diff")


@dataclass(frozen=True)
class GPU:
    """The GPU the predictions assume (its datasheet numbers; ``efficiency`` is the achieved fraction)."""

    name: str = "A100-40GB"
    tflops_bf16: float = 312.0  # dense tensor-core peak
    tflops_fp32: float = 19.5
    bandwidth_gbs: float = 1555.0
    efficiency: float = 0.25  # achieved / peak on BERT-sized matmuls (assumed; no GPU measured here)
    cuda_startup_s: float = 10.0  # CUDA context + first kernels, per job
    step_latency_s: float = 0.4e-3  # launch-bound floor per layer per optimiser step (fwd + bwd + Adam)


def predict_job(
    rule: str,
    config: dict,
    wildcards: dict,
    results: str | Path = "results",
    gpu: GPU | None = None,
    coefficients: dict | None = None,
) -> dict:
    """Predicted CPU seconds, GPU seconds and peak host memory (MB) of one job (no safety factor). A rule
    that runs on no GPU (the rules table) costs its CPU seconds there too."""
    coefficients = coefficients or load_coefficients()
    coefficient = rule_coefficients(rule, coefficients)
    job_work = work(rule, config, wildcards, results)
    gflop = job_work.flop / 1e9
    fitted_cpu_s = coefficient["overhead_s"] + coefficient["s_per_gflop"] * gflop
    scale = coefficient.get("cpu_scale", {})  # a calibration of this machine's CPU (costs.calibration)
    cpu_s = (
        coefficient["overhead_s"] * scale.get("overhead_s", 1.0)
        + coefficient["s_per_gflop"] * scale.get("s_per_gflop", 1.0) * gflop
    )
    gpu = gpu or GPU()
    on_gpu = workflow_rules.rule_named(rule).gpu
    # GPU studies run on other nodes: their predictions stay as fitted, calibrated or not
    gpu_s = _gpu_seconds(coefficient, job_work, gpu) if on_gpu else fitted_cpu_s
    if "mem_base_mb" in coefficient:
        mem_mb = coefficient["mem_base_mb"] + job_work.bytes / 1e6
    else:
        mem_mb = DEFAULT_MEM_MB
    return {"rule": rule, "cpu_s": cpu_s, "gpu_s": gpu_s, "mem_mb": mem_mb, "gflop": gflop}


def _gpu_seconds(coefficient: dict, job_work: Work, gpu: GPU) -> float:
    """Start-up (measured on CPU) + CUDA start-up + FLOPs at the assumed rate (or the launch-bound floor per
    step) + the host-side data work (``HOST_VALUES_PER_S``)."""
    peak = (gpu.tflops_bf16 if job_work.low_precision else gpu.tflops_fp32) * 1e12 * gpu.efficiency
    host = job_work.host_values / HOST_VALUES_PER_S
    compute = max(job_work.flop / peak, job_work.steps * gpu.step_latency_s)
    return coefficient["overhead_s"] + gpu.cuda_startup_s + compute + host


def job_resources(
    rule: str,
    config: dict,
    wildcards: dict,
    results: str | Path = "results",
    gpus: int | None = None,
    safety_time: float = SAFETY_TIME,
    safety_mem: float = SAFETY_MEM,
    coefficients: dict | None = None,
) -> dict:
    """SLURM-ready ``runtime`` (minutes) and ``mem_mb`` of one job: prediction x safety factor, with floors.

    On GPU studies (``resources.gpus`` > 0) the time is the GPU prediction; on CPU the single-thread CPU
    prediction (more threads are not counted as faster, so the request stays an upper bound)."""
    gpus = config["resources"]["gpus"] if gpus is None else gpus
    prediction = predict_job(rule, config, wildcards, results, coefficients=coefficients)
    seconds = prediction["gpu_s"] if gpus else prediction["cpu_s"]
    return {
        "runtime": max(FLOOR_MINUTES, math.ceil(safety_time * seconds / 60)),
        "mem_mb": max(FLOOR_MB, int(math.ceil(safety_mem * prediction["mem_mb"] / 100) * 100)),
    }


# the runs a rule's ``stage`` wildcard takes: the fine-tuned runs for the rules that make or test one
FINETUNED_ONLY = frozenset({"finetune", "evaluate"})


def _wildcard_values(config: dict, rule: str, wildcard: str, job: dict) -> list[dict]:
    """The values a wildcard takes in a study's jobs of ``rule``, each as the wildcards it sets (a layer's: those
    of the job's model; a run's: the rule's runs; ``reference`` sets ``compared`` with it, one per comparison)."""
    if wildcard == "model":
        return [{"model": model} for model in config["models"]]
    if wildcard == "dataset":
        return [{"dataset": dataset} for dataset in config["datasets"]]
    if wildcard == "stage":
        runs = targets.finetuned_runs(config) if rule in FINETUNED_ONLY else targets.runs(config)
        return [{"stage": run} for run in runs]
    if wildcard == "reference":
        return [
            {"reference": reference, "compared": compared}
            for reference, compared in targets.comparisons(config)
        ]
    if wildcard == "compared":
        return [{}]  # set with its reference
    if wildcard == "layer":
        return [{"layer": str(layer)} for layer in config["models"][job["model"]]["sae_layers"]]
    raise KeyError(f"no values for wildcard {wildcard!r}")


def _rule_jobs(config: dict, rule: str) -> list[dict]:
    """Every job of a rule, as wildcard dicts: all combinations of its wildcards' values, except the ONNX
    import (only package models), the sweep (its one layer) and the verdict curve (its model x dataset)."""
    if rule == "sae_sweep":
        sweep = targets.sweep_layer(config)
        return [{**sweep, "layer": str(sweep["layer"])}] if sweep else []
    if rule == "verdict_curve":
        pair = targets.verdict_curve_pair(config)
        layers = config["models"][pair["model"]]["sae_layers"] if pair else []
        return [{**pair, "layer": str(layer)} for layer in layers]
    jobs = [{}]
    for wildcard in workflow_rules.rule_named(rule).wildcards:
        jobs = [{**job, **value} for job in jobs for value in _wildcard_values(config, rule, wildcard, job)]
    if rule == "import_onnx":
        return [job for job in jobs if config["models"][job["model"]]["source"].startswith("onnx-package:")]
    return jobs


def study_jobs(config: dict) -> dict[str, list[dict]]:
    """The compute jobs of a study, per rule, as wildcard dicts (what the DAG would schedule)."""
    jobs = {rule: _rule_jobs(config, rule) for rule in WORK}
    return {rule: rule_jobs for rule, rule_jobs in jobs.items() if rule_jobs}


def light_job_count(config: dict) -> int:
    """Jobs without a cost model of their own: one per figure (its PNG; the SVG comes with it), resolve_model
    per model, similarity per comparison and split_half per model x dataset, the five tables, the report and
    Snakemake's ``all``."""
    pairs = len(config["models"]) * len(config["datasets"])
    figures = sum(1 for path in targets.figure_targets(config) if path.endswith(".png"))
    similarity = pairs * len(targets.comparisons(config))
    tables = 5  # similarity, accuracy, diff, feature summary and faithfulness tables
    return figures + len(config["models"]) + similarity + pairs + tables + 1 + 1


def disk_bytes(config: dict, results: str | Path = "results") -> dict[str, float]:
    """Approximate bytes each kind of output takes (weights in float32; token shards, sentence vectors and the
    token sample in the study's activation dtype): fine-tuned weights per fine-tuned run, activations and
    SAEs (each with its seed nulls) per run, one crosscoder per layer (the primary pair)."""
    out = {"models": 0.0, "activations": 0.0, "saes": 0.0, "crosscoders": 0.0}
    activation_bytes = 2 if str(config["activations"]["dtype"]) == "float16" else 4
    d_sae = int(config["sae"]["d_sae"])
    d_latent = int(config["crosscoder"]["d_latent"])
    runs, finetuned_runs = len(targets.runs(config)), len(targets.finetuned_runs(config))
    for model in config["models"]:
        shape = model_shape(config, model, results)
        n_layers = len(config["models"][model]["sae_layers"])
        for dataset in config["datasets"]:
            stats = dataset_stats(config, dataset, results)
            sentences, rows = activation_rows(config, stats)
            out["models"] += finetuned_runs * 4.0 * shape.params
            token_sample = int(config["similarity"]["token_sample"])
            # shards, sentence vectors and token sample of one run, all at the shards' dtype
            vectors = rows * n_layers + (sentences + token_sample) * (shape.layers + 1)
            out["activations"] += runs * vectors * shape.hidden * activation_bytes
            out["saes"] += runs * n_layers * sae_count(config) * 4.0 * (2 * shape.hidden * d_sae)
            out["crosscoders"] += n_layers * (4.0 * 4 * shape.hidden * d_latent + rows * 8)
    out["total"] = sum(out.values())
    return out


def _rule_summary(predictions: list[dict], requests: list[dict]) -> dict:
    """Job count, summed and largest predictions, and largest requests of one rule's jobs."""
    return {
        "jobs": len(predictions),
        "cpu_s": sum(prediction["cpu_s"] for prediction in predictions),
        "gpu_s": sum(prediction["gpu_s"] for prediction in predictions),
        "cpu_s_max": max(prediction["cpu_s"] for prediction in predictions),
        "gpu_s_max": max(prediction["gpu_s"] for prediction in predictions),
        "mem_mb_max": max(prediction["mem_mb"] for prediction in predictions),
        "runtime_request_max": max(request["runtime"] for request in requests),
        "mem_mb_request_max": max(request["mem_mb"] for request in requests),
    }


def _add_to_chain(chains: dict, rule: str, wildcards: dict, prediction: dict) -> None:
    """Record a job's (CPU, GPU) seconds under its (model, dataset), the largest per rule."""
    chain = chains.setdefault((wildcards.get("model"), wildcards.get("dataset")), {})
    cpu_before, gpu_before = chain.get(rule, (0, 0))
    chain[rule] = (max(cpu_before, prediction["cpu_s"]), max(gpu_before, prediction["gpu_s"]))


def _longest_chain(chains: dict) -> list[float]:
    """(CPU, GPU) seconds of the slowest prepare -> :data:`LONGEST_CHAIN` of one model x dataset."""
    longest = [0.0, 0.0]
    for (model, dataset), chain in chains.items():
        if model is None:
            continue
        prepare = chains.get((None, dataset), {}).get("prepare", (0, 0))
        for clock in (0, 1):
            chain_seconds = sum(chain.get(rule, (0, 0))[clock] for rule in LONGEST_CHAIN)
            longest[clock] = max(longest[clock], prepare[clock] + chain_seconds)
    return longest


def _predict_rules(config: dict, results: str | Path, coefficients: dict) -> tuple[dict, list, dict]:
    """Per rule its summary, every job as ``(rule, wildcards, CPU seconds)`` for the schedule, and the chains."""
    per_rule, scheduled, chains = {}, [], {}
    for rule, jobs in study_jobs(config).items():
        predictions = [
            predict_job(rule, config, wildcards, results, coefficients=coefficients) for wildcards in jobs
        ]
        requests = [
            job_resources(rule, config, wildcards, results, coefficients=coefficients) for wildcards in jobs
        ]
        per_rule[rule] = _rule_summary(predictions, requests)
        for wildcards, prediction in zip(jobs, predictions, strict=True):
            scheduled.append((rule, wildcards, prediction["cpu_s"]))
            _add_to_chain(chains, rule, wildcards, prediction)
    return per_rule, scheduled, chains


def predict_study(
    config: dict,
    results: str | Path = "results",
    cores: int = 2,
    gpu_nodes: int = 0,
    coefficients: dict | None = None,
) -> dict:
    """Per rule: job count, CPU / GPU seconds per job (max) and in total, memory; the study's wall time.

    Study wall time on ``cores``: the compute jobs list-scheduled on the cores (:func:`list_schedule`), plus
    the light jobs' fitted mean cost each spread over the cores, and never less than all CPU seconds over
    the cores. ``longest_chain_*`` is the slowest prepare -> finetune -> extract -> train_sae -> crosscoder ->
    diff chain of one model x dataset, the crosscoder counted after the SAEs though it may run beside them
    (the cluster's floor: a conservative critical path when every job gets its own node).
    """
    if cores < 1 or gpu_nodes < 0:
        raise ValueError(f"cores must be >= 1 and gpu_nodes >= 0, got cores={cores}, gpu_nodes={gpu_nodes}")
    coefficients = coefficients or load_coefficients()
    per_rule, scheduled, chains = _predict_rules(config, results, coefficients)
    light = light_job_count(config)
    fitted_light_s = light * coefficients["light_job_s"]
    light_s = fitted_light_s * coefficients.get("light_job_cpu_scale", 1.0)  # calibrated CPU only
    longest = _longest_chain(chains)
    cpu_total = sum(summary["cpu_s"] for summary in per_rule.values()) + light_s
    gpu_total = sum(summary["gpu_s"] for summary in per_rule.values()) + fitted_light_s
    result = {
        "rules": per_rule,
        "light_jobs": light,
        "light_s": light_s,
        "light_gpu_s": fitted_light_s,
        "jobs": light + sum(summary["jobs"] for summary in per_rule.values()),
        "cpu_s_total": cpu_total,
        "gpu_s_total": gpu_total,
        "wall_s_local": max(cpu_total / cores, list_schedule(scheduled, cores, config) + light_s / cores),
        "longest_chain_cpu_s": longest[0],
        "longest_chain_gpu_s": longest[1],
        "disk_bytes": disk_bytes(config, results),
        "gpu": GPU().name,
    }
    if gpu_nodes:
        result["wall_s_cluster"] = max(gpu_total / gpu_nodes, longest[1])
    return result


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _rule_rows(prediction: dict) -> list[str]:
    """The per-rule table of a study prediction, the light jobs and the total."""
    lines = [
        "| rule | jobs | CPU per job (max) | CPU total | GPU per job (max) | GPU total | peak RAM (max) | request: runtime, mem_mb |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for rule, summary in prediction["rules"].items():
        lines.append(
            f"| {rule} | {summary['jobs']} | {_hms(summary['cpu_s_max'])} | {_hms(summary['cpu_s'])} | "
            f"{_hms(summary['gpu_s_max'])} | {_hms(summary['gpu_s'])} | {summary['mem_mb_max']:,.0f} MB | "
            f"{summary['runtime_request_max']} min, {summary['mem_mb_request_max']:,} |"
        )
    light_jobs, light_s = prediction["light_jobs"], _hms(prediction["light_s"])
    light_gpu_s = _hms(prediction["light_gpu_s"])
    lines.append(
        f"| other ({light_jobs} figure/table/report jobs) | {light_jobs} | | {light_s} | | {light_gpu_s} | | |"
    )
    lines.append(
        f"| **total** | {prediction['jobs']} | | {_hms(prediction['cpu_s_total'])} | | "
        f"{_hms(prediction['gpu_s_total'])} | | |"
    )
    return lines


def report_markdown(
    config: dict,
    results: str | Path = "results",
    cores: int = 2,
    gpu_nodes: int = 1,
    coefficients: dict | None = None,
) -> str:
    """The prediction of a study as Markdown: per rule, totals, local and cluster wall time, disk, and
    whether the CPU coefficients are calibrated to this machine."""
    coefficients = coefficients or load_coefficients()
    prediction = predict_study(config, results, cores=cores, gpu_nodes=gpu_nodes, coefficients=coefficients)
    gpu = GPU()
    lines = _rule_rows(prediction)
    lines += [
        "",
        f"- local, {cores} cores (CPU, one thread per job): {_hms(prediction['wall_s_local'])} "
        f"(longest chain {_hms(prediction['longest_chain_cpu_s'])})",
    ]
    if "wall_s_cluster" in prediction:  # gpu_nodes 0: no cluster to predict for
        lines.append(
            f"- cluster, {gpu_nodes} GPU node(s) ({gpu.name} assumed: {gpu.tflops_bf16:g} TFLOP/s bf16, "
            f"{gpu.tflops_fp32:g} fp32, {gpu.efficiency:.0%} achieved): {_hms(prediction['wall_s_cluster'])} "
            f"(longest chain {_hms(prediction['longest_chain_gpu_s'])})"
        )
    disk = prediction["disk_bytes"]
    lines.append("- disk: " + ", ".join(f"{kind} {size / 1e9:,.1f} GB" for kind, size in disk.items()))
    bases = sorted({dataset_stats(config, dataset, results).basis for dataset in config["datasets"]})
    shapes = sorted({model_shape(config, model, results).basis for model in config["models"]})
    lines.append(f"- token counts from: {', '.join(bases)}; model shapes from: {', '.join(shapes)}")
    lines.append(f"- {describe(coefficients)}")
    return "\n".join(lines)
