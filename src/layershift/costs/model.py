"""A measured cost model: each compute job's work, time and memory, from the study config alone.

Per compute rule a *work* function turns the config (dataset caps, epochs, batch sizes, SAE widths, seed
nulls) and the model's shape (layers, hidden size, intermediate size, vocabulary → parameters and forward
FLOPs per token) into work units, FLOPs for the model and SAE rules. Coefficients fitted on this project's
own runs (``bench/bench_costs.py``, shipped as ``cost_coefficients.json``) turn work into:

* CPU seconds: ``overhead + seconds_per_gflop × GFLOP`` (one torch thread; process start, imports and model
  load are in ``overhead``);
* peak host memory: ``base + bytes`` where ``bytes`` counts weights, gradients, optimiser state and batch
  buffers (coefficient 1: the measured studies hardly vary it, so only ``base`` is fitted, as the largest
  measured RSS above the count);
* GPU seconds: the CPU ``overhead`` plus a fixed CUDA start-up, FLOPs at an assumed fraction of an assumed
  GPU's peak (``GPU``, an A100-40GB unless told otherwise) and a launch-bound floor per optimiser step.

Nothing here imports torch or Snakemake; the workflow's ``resources`` call :func:`job_resources`.
Token counts are unknown before ``prepare`` runs: they come from the prepared splits when they exist
(``basis: "prepared"``), else from the local source file (``"source"``), else from the caps
(``max_rows`` × split × ``max_length``; ``"caps"``, an upper bound).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

from layershift.study import targets as _targets

COEFFICIENTS_FILE = "cost_coefficients.json"
COMPUTE_RULES = (
    "prepare",
    "import_onnx",
    "finetune",
    "evaluate",
    "extract",
    "train_sae",
    "probes",
    "features",
    "diff",
    "crosscoder",
    "sae_sweep",
)
# rules not measured on their own that run another rule's code: its per-FLOP cost applies
BORROWED_COEFFICIENTS = {
    "crosscoder": "diff",  # older coefficient files only (the crosscoder trained inside diff); now measured
    "sae_sweep": "train_sae",  # the same trainer on the same shards, other settings
}
ADAM_FLOP_PER_PARAM = 12  # one Adam update of one parameter, in FLOPs (read-modify-write of 4 tensors)
CHARS_PER_TOKEN = 4.0  # WordPiece on English: about 4 characters per token (+2 for [CLS] and [SEP])
SAFETY_TIME = 2.0
SAFETY_MEM = 1.5
FLOOR_MINUTES = 5
FLOOR_MB = 2000

# Shapes of hub models the paper names, for when the model is not in the local cache yet (no download
# at DAG time); anything else not local is assumed to be as large as bert-large (conservative).
KNOWN_SHAPES = {
    "google-bert/bert-base-uncased": (12, 768, 3072, 30522, 12),
    "bert-base-uncased": (12, 768, 3072, 30522, 12),
    "prajjwal1/bert-medium": (8, 512, 2048, 30522, 8),
    "prajjwal1/bert-small": (4, 512, 2048, 30522, 8),
    "prajjwal1/bert-mini": (4, 256, 1024, 30522, 4),
    "prajjwal1/bert-tiny": (2, 128, 512, 30522, 2),
}
FALLBACK_SHAPE = (24, 1024, 4096, 30522, 16)  # bert-large

# Host-side data work on a GPU node (reading and decoding float16 Parquet shards, per-batch stacking and
# copies of hidden states to numpy): values per second, as measured here (one 4,096 x 384 row group
# read back in 22-34 ms on this CPU, i.e. ~50 M values/s). Counted on top of the GPU's compute time.
HOST_VALUES_PER_S = 50e6

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


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    max_position: int = 512
    basis: str = "config.json"

    @property
    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        embeddings = (self.vocab + self.max_position + 2) * h + 2 * h
        block = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
        return embeddings + self.layers * block + h * h + h

    @property
    def params_blocks(self) -> int:
        """Parameters that every token multiplies through (not the embedding lookup)."""
        return self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate)

    def forward_flop(self, tokens: float, seq: float) -> float:
        """Forward FLOPs of ``tokens`` tokens in sequences of ``seq`` tokens: 2 per weight + attention."""
        return tokens * (2 * self.params_blocks + 4 * self.layers * seq * self.hidden)


def _shape_from_config(cfg: dict, basis: str) -> Shape:
    hidden = int(cfg["hidden_size"])
    return Shape(
        layers=int(cfg["num_hidden_layers"]),
        hidden=hidden,
        intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
        vocab=int(cfg.get("vocab_size") or 30522),
        heads=int(cfg.get("num_attention_heads") or max(1, hidden // 64)),
        max_position=int(cfg.get("max_position_embeddings") or 512),
        basis=basis,
    )


@functools.lru_cache(maxsize=64)
def _model_shape(source: str, onnx_import_dir: str) -> Shape:
    from layershift.models import sources

    parsed = sources.parse_source(source)
    try:
        if parsed.kind == "onnx-package":
            imported = Path(onnx_import_dir) / "config.json"
            if imported.is_file():
                return _shape_from_config(json.loads(imported.read_text()), "imported config.json")
            # before the import: the depth from the ONNX graph, MiniLM-like widths
            depth = sources.onnx_layer_count(sources.package_file(parsed.value, ".onnx"))
            return Shape(depth, 384, 1536, 30522, 12, basis="onnx depth, assumed width 384")
        if parsed.kind == "hub" and parsed.value in KNOWN_SHAPES:
            local = sources.cached_hub_dir(parsed.value)
            if local is None:
                return Shape(*KNOWN_SHAPES[parsed.value], basis="known hub shape")
        model_dir = sources.local_model_dir(parsed)
        if model_dir is not None:
            return _shape_from_config(sources.read_model_config(model_dir), "config.json")
    except Exception:  # noqa: BLE001 - a cost estimate must never stop the workflow
        pass
    if parsed.kind == "hub" and parsed.value in KNOWN_SHAPES:
        return Shape(*KNOWN_SHAPES[parsed.value], basis="known hub shape")
    return Shape(*FALLBACK_SHAPE, basis="not local: assumed bert-large")


def model_shape(config: dict, model: str, results: str | Path = "results") -> Shape:
    """The shape of a configured model, from its config.json without loading weights (or a stated fallback)."""
    source = config["models"][model]["source"]
    return _model_shape(source, str(Path(results) / "models" / model / "onnx_import"))


@functools.lru_cache(maxsize=64)
def _text_stats(path: str, column: str, kind: str) -> tuple[int, float]:
    """Rows and mean characters per text of a file (csv, json lines or parquet)."""
    import pandas as pd

    if kind == "parquet":
        texts = pd.read_parquet(path, columns=[column])[column]
    elif path.endswith((".json", ".jsonl")):
        texts = pd.read_json(path, lines=True)[column]
    else:
        texts = pd.read_csv(path, usecols=[column])[column]
    lengths = texts.astype(str).str.len()
    return len(texts), float(lengths.mean()) if len(texts) else 0.0


@dataclass(frozen=True)
class DataStats:
    rows: dict  # split -> rows
    tokens_per_row: float  # mean tokens of a row after truncation to finetune.max_length
    basis: str  # "prepared", "source" or "caps"


def dataset_stats(config: dict, dataset: str, results: str | Path = "results") -> DataStats:
    """Rows per split and mean tokens per row of a dataset: measured where the data is here, else bounds."""
    entry = config["datasets"][dataset]
    data = config.get("data", {})
    max_rows = int(data.get("max_rows", 25000))
    split = data.get("split") or {"train": 0.8, "validation": 0.1, "test": 0.1}
    max_length = int(config.get("finetune", {}).get("max_length", 128))
    prepared = Path(results) / "data" / dataset
    rows_total, chars, basis = max_rows, None, "caps"
    try:
        if _prepared_for(prepared, entry, max_rows) and all(
            (prepared / f"{s}.parquet").is_file() for s in split
        ):
            rows = {s: _text_stats(str(prepared / f"{s}.parquet"), "text", "parquet")[0] for s in split}
            chars = _text_stats(str(prepared / "train.parquet"), "text", "parquet")[1]
            return DataStats(rows, _tokens(chars, max_length), "prepared")
        source = str(entry["source"])
        if Path(source).is_file():
            n, chars = _text_stats(source, entry["text"], "file")
            rows_total, basis = min(max_rows, n), "source"
    except Exception:  # noqa: BLE001 - unreadable here: fall back to the caps
        chars, basis = None, "caps"
    rows = {s: int(round(rows_total * float(f))) for s, f in split.items()}
    return DataStats(rows, _tokens(chars, max_length) if chars is not None else float(max_length), basis)


def _prepared_for(prepared: Path, entry: dict, max_rows: int) -> bool:
    """Whether ``prepared`` holds this dataset entry's splits: its card names the same source and row cap
    (another config's results may hold a different corpus under the same dataset name)."""
    try:
        card = json.loads((prepared / "card.json").read_text())
    except (OSError, ValueError):
        return False
    return str(card.get("source")) == str(entry["source"]) and int(
        card.get("settings", {}).get("max_rows", -1)
    ) == int(max_rows)


def _tokens(chars: float, max_length: int) -> float:
    return float(min(max_length, chars / CHARS_PER_TOKEN + 2))


def sae_count(config: dict) -> int:
    """SAEs one ``train_sae`` job trains: both stages plus every seed-null SAE (``null_seeds`` per stage)."""
    return 2 + len(_targets.null_runs(_seeded(config)))


def _seeded(config: dict) -> dict:
    """``config`` with the schema's seed defaults where a (cut or hand-made) config leaves them out: the
    seed and ``sae.null_seeds``, which the seed-null layout in :mod:`layershift.study.targets` reads."""
    return {"seed": 0, **config, "sae": {"null_seeds": 1, **config.get("sae", {})}}


@dataclass(frozen=True)
class Work:
    flop: float  # FLOPs (for prepare: rows; for import_onnx: parameters)
    bytes: float  # host memory the job's data structures need beyond the fitted base
    steps: float = 0.0  # optimiser steps x layers (GPU launch-bound floor)
    low_precision: bool = False  # bf16 autocast on GPU
    host_values: float = 0.0  # activation values the host reads, stacks or copies (GPU runs: not on the GPU)


def _activation_rows(config: dict, stats: DataStats) -> tuple[float, float]:
    """(sentences, token rows) the extract step passes through / writes per stage and layer."""
    act = config.get("activations", {})
    sentences = min(int(act.get("max_sentences", 5000)), stats.rows.get(act.get("split", "train"), 0))
    tokens = min(int(act.get("max_tokens", 200000)), sentences * stats.tokens_per_row)
    return float(sentences), float(tokens)


def _adam_flop(params: float, steps: float) -> float:
    return ADAM_FLOP_PER_PARAM * params * steps


def work(rule: str, config: dict, wildcards: dict, results: str | Path = "results") -> Work:
    """The work of one job of ``rule`` (wildcards: model, dataset, layer where the rule has them)."""
    model, dataset = wildcards.get("model"), wildcards.get("dataset")
    ft = config.get("finetune", {})
    sae = config.get("sae", {})
    cc = config.get("crosscoder", {})
    max_length = int(ft.get("max_length", 128))
    if rule == "prepare":
        return Work(flop=float(config.get("data", {}).get("max_rows", 25000)), bytes=0.0)
    shape = model_shape(config, model, results)
    if rule == "import_onnx":
        return Work(flop=float(shape.params), bytes=8.0 * shape.params)
    stats = dataset_stats(config, dataset, results) if dataset else None
    tpr = stats.tokens_per_row if stats else float(max_length)
    h, layers = shape.hidden, shape.layers
    if rule == "finetune":
        epochs, batch = int(ft.get("epochs", 10)), int(ft.get("batch_size", 32))
        train, val = stats.rows.get("train", 0), stats.rows.get("validation", 0)
        steps = epochs * math.ceil(train / batch)
        flop = epochs * (3 * shape.forward_flop(train * tpr, tpr) + shape.forward_flop(val * tpr, tpr))
        flop += _adam_flop(shape.params, steps)
        act = 4.0 * batch * max_length * layers * (16 * h + 2 * shape.heads * max_length)
        low = str(ft.get("precision", "fp32")).lower() in ("bf16", "fp16")
        return Work(flop=flop, bytes=16.0 * shape.params + act, steps=steps * layers, low_precision=low)
    if rule == "evaluate":
        # pretrained head and fine-tuned model on the test split, the linear probe's features of train + test
        rows = stats.rows.get("train", 0) + 3 * stats.rows.get("test", 0)
        return Work(flop=shape.forward_flop(rows * tpr, tpr), bytes=8.0 * shape.params)
    if rule == "extract":
        sentences, tokens = _activation_rows(config, stats)
        batch = int(config.get("activations", {}).get("batch_size", 64))
        buffers = 4.0 * batch * max_length * (layers + 1) * h * 4
        n_sae_layers = len(config["models"][model]["sae_layers"])
        values = sentences * tpr * (layers + 1) * h + tokens * n_sae_layers * h
        return Work(
            flop=shape.forward_flop(sentences * tpr, tpr),
            bytes=8.0 * shape.params + buffers,
            host_values=values,
        )
    _, rows = _activation_rows(config, stats)
    train_rows = rows * (1 - float(sae.get("holdout_fraction", 0.1)))
    d_sae = int(sae.get("d_sae", 1024))
    sae_params = 2.0 * h * d_sae
    if rule == "train_sae":
        n, epochs, batch = sae_count(config), sae_epochs(sae, train_rows), int(sae.get("batch_size", 256))
        steps = n * epochs * math.ceil(train_rows / batch)
        flop = n * (epochs * train_rows * 6 * sae_params + rows * 2 * sae_params) + _adam_flop(
            sae_params, steps
        )
        bytes_ = n * 16.0 * sae_params + 4.0 * 4096 * (h + d_sae) * 4
        kept, passes = _kept_rows(
            train_rows * h * 4, sae, epochs
        )  # rows kept in RAM: one decode, not one an epoch
        return Work(flop=flop, bytes=bytes_ + kept, steps=steps, host_values=n * (passes + 1) * rows * h)
    if rule == "crosscoder":
        d_lat, epochs, batch = (
            int(cc.get("d_latent", 1024)),
            int(cc.get("epochs", 10)),
            int(cc.get("batch_size", 256)),
        )
        cc_params = 4.0 * h * d_lat
        steps = epochs * math.ceil(train_rows / batch)
        flop = epochs * train_rows * 6 * cc_params + rows * 2 * cc_params + _adam_flop(cc_params, steps)
        bytes_ = 16.0 * cc_params + 4.0 * 4096 * (2 * h + d_lat) * 4
        kept, passes = _kept_rows(train_rows * 2 * h * 4, cc, epochs)
        return Work(flop=flop, bytes=bytes_ + kept, steps=steps, host_values=(passes + 1) * rows * 2 * h)
    if rule == "sae_sweep":
        # two SAEs per grid point, each with the study's settings overlaid by the point's; the study-settings
        # point reads the study's own SAEs of its seeds (trained by train_sae) instead of training them
        flop, steps = 0.0, 0.0
        n_study = len(_sweep_study_saes(config))
        for point in config.get("sae_sweep", {}).get("grid", []):
            s = {**sae, **point}
            trained = 2 - (n_study if _targets.is_study_setting(sae, point) else 0)
            p_params, epochs = 2.0 * h * int(s.get("d_sae", 1024)), sae_epochs(s, train_rows)
            n_steps = trained * epochs * math.ceil(train_rows / int(s.get("batch_size", 256)))
            flop += trained * (
                epochs * train_rows * 6 * p_params + rows * 2 * p_params
            )  # training, evaluation
            flop += 2 * rows * 2 * p_params  # both seeds' firing rates, trained or read
            flop += _adam_flop(p_params, n_steps)
            steps += n_steps
        return Work(flop=flop, bytes=2 * 16.0 * sae_params + 4.0 * 4096 * (h + d_sae) * 4, steps=steps)
    if rule == "diff":
        # encode the paired tokens through both stages' SAEs and their nulls, decoder cosines and matching
        n = sae_count(config)
        flop = n * rows * 2 * sae_params + n * 2 * d_sae * d_sae * h
        bytes_ = n * 4.0 * sae_params + 8.0 * d_sae * d_sae * n + 4.0 * 4096 * (h + d_sae) * 4
        # both stages' rows, held in RAM across the passes when they fit diff.memory_cache_mb
        kept, _ = _kept_rows(rows * 2 * h * 4, config.get("diff", {}), 1)
        return Work(flop=flop, bytes=bytes_ + kept, host_values=3 * rows * 2 * h)
    if rule == "features":
        bytes_ = 2 * 4.0 * sae_params + 4.0 * 4096 * (h + d_sae) * 4
        return Work(flop=2 * rows * 2 * sae_params, bytes=bytes_, host_values=2 * rows * 2 * h)
    if rule == "probes":
        probes = len(config["datasets"][dataset].get("probes", []) or [])
        return Work(flop=2 * shape.forward_flop(probes * 16, 16), bytes=8.0 * shape.params)
    raise KeyError(f"no cost model for rule {rule!r}")


def _sweep_study_saes(config: dict) -> dict[int, str]:
    """The study's SAEs the sweep reads instead of training (none without a sweep)."""
    sweep = _targets.sweep_layer(config)
    return _targets.sweep_study_saes(_seeded(config), **sweep) if sweep else {}


def sae_epochs(section: dict, train_rows: float) -> int:
    """Passes over a layer's training rows: ``epochs``, or ceil(``training_tokens`` / rows) when that is set."""
    if section.get("training_tokens"):
        return max(1, math.ceil(int(section["training_tokens"]) / max(train_rows, 1)))
    return int(section.get("epochs", 10))


def _kept_rows(row_bytes: float, section: dict, epochs: int) -> tuple[float, int]:
    """(bytes held in RAM, Parquet decoding passes) of shard training: rows that fit ``memory_cache_mb``
    (default 1024) are decoded once and kept (``ShardReader.keep_in_memory``); larger layers stream."""
    if row_bytes <= float(section.get("memory_cache_mb", 1024)) * 2**20:
        return row_bytes, 1
    return 0.0, epochs


@functools.lru_cache(maxsize=1)
def load_coefficients(path: str | None = None) -> dict:
    """The fitted coefficients (``cost_coefficients.json`` shipped with the package, or ``path``)."""
    if path is not None:
        return json.loads(Path(path).read_text())
    text = importlib_resources.files("layershift.costs").joinpath(COEFFICIENTS_FILE).read_text()
    return json.loads(text)


def _rule_coefficients(rule: str, coefficients: dict) -> dict:
    rules = coefficients["rules"]
    if rule not in rules and rule in BORROWED_COEFFICIENTS:
        return rules[BORROWED_COEFFICIENTS[rule]]
    return rules.get(rule, UNMEASURED_RULE)


def predict_job(
    rule: str,
    config: dict,
    wildcards: dict,
    results: str | Path = "results",
    gpu: GPU | None = None,
    coefficients: dict | None = None,
) -> dict:
    """Predicted CPU seconds, GPU seconds and peak host memory (MB) of one job (no safety factor)."""
    coefficients = coefficients or load_coefficients()
    coef = _rule_coefficients(rule, coefficients)
    w = work(rule, config, wildcards, results)
    gflop = w.flop / 1e9
    cpu_s = coef["overhead_s"] + coef["s_per_gflop"] * gflop
    gpu = gpu or GPU()
    gpu_s = cpu_s if rule in ("prepare", "import_onnx") else _gpu_seconds(coef, w, gpu, rule)
    mem_mb = (coef["mem_base_mb"] + w.bytes / 1e6) if "mem_base_mb" in coef else 2000.0
    return {"rule": rule, "cpu_s": cpu_s, "gpu_s": gpu_s, "mem_mb": mem_mb, "gflop": gflop}


def _gpu_seconds(coef: dict, w: Work, gpu: GPU, rule: str) -> float:
    """Start-up (measured on CPU) + CUDA start-up + FLOPs at the assumed rate (or the launch-bound floor per
    step) + the host-side data work (``HOST_VALUES_PER_S``)."""
    peak = (gpu.tflops_bf16 if w.low_precision else gpu.tflops_fp32) * 1e12 * gpu.efficiency
    host = w.host_values / HOST_VALUES_PER_S
    return coef["overhead_s"] + gpu.cuda_startup_s + max(w.flop / peak, w.steps * gpu.step_latency_s) + host


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
    """SLURM-ready ``runtime`` (minutes) and ``mem_mb`` of one job: prediction × safety factor, with floors.

    On GPU studies (``resources.gpus`` > 0) the time is the GPU prediction; on CPU the single-thread CPU
    prediction (more threads are not counted as faster, so the request stays an upper bound)."""
    gpus = config.get("resources", {}).get("gpus", 0) if gpus is None else gpus
    p = predict_job(rule, config, wildcards, results, coefficients=coefficients)
    seconds = p["gpu_s"] if gpus else p["cpu_s"]
    return {
        "runtime": max(FLOOR_MINUTES, math.ceil(safety_time * seconds / 60)),
        "mem_mb": max(FLOOR_MB, int(math.ceil(safety_mem * p["mem_mb"] / 100) * 100)),
    }


def study_jobs(config: dict) -> dict[str, list[dict]]:
    """The compute jobs of a study, per rule, as wildcard dicts (what the DAG would schedule)."""
    models, datasets = list(config["models"]), list(config["datasets"])
    pairs = [{"model": m, "dataset": d} for m in models for d in datasets]
    layers = [
        {**p, "layer": str(layer)} for p in pairs for layer in config["models"][p["model"]]["sae_layers"]
    ]
    jobs = {
        "prepare": [{"dataset": d} for d in datasets],
        "import_onnx": [
            {"model": m} for m in models if config["models"][m]["source"].startswith("onnx-package:")
        ],
        "finetune": pairs,
        "evaluate": pairs,
        "extract": [{**p, "stage": s} for p in pairs for s in ("pretrained", "finetuned")],
        "train_sae": layers,
        "probes": pairs,
        "features": layers,
        "crosscoder": layers,
        "diff": layers,
        "sae_sweep": [sweep] if (sweep := _targets.sweep_layer(config)) else [],
    }
    return {rule: js for rule, js in jobs.items() if js}


def light_job_count(config: dict) -> int:
    """Jobs without a cost model of their own: one per figure (its PNG; the SVG comes with it), resolve_model
    per model, similarity per model x dataset, the four tables, the report and Snakemake's ``all``."""
    m, d = len(config["models"]), len(config["datasets"])
    figures = sum(1 for path in _targets.figure_targets(config) if path.endswith(".png"))
    tables = 4  # similarity, accuracy, diff and feature summary tables
    return figures + m + m * d + tables + 1 + 1


def disk_bytes(config: dict, results: str | Path = "results") -> dict[str, float]:
    """Approximate bytes each kind of output takes (weights in float32; token shards, sentence vectors and the
    token sample in the study's activation dtype)."""
    out = {"models": 0.0, "activations": 0.0, "saes": 0.0, "crosscoders": 0.0}
    act_bytes = 2 if str(config.get("activations", {}).get("dtype", "float16")) == "float16" else 4
    d_sae = int(config.get("sae", {}).get("d_sae", 1024))
    d_lat = int(config.get("crosscoder", {}).get("d_latent", 1024))
    for model in config["models"]:
        shape = model_shape(config, model, results)
        n_layers = len(config["models"][model]["sae_layers"])
        for dataset in config["datasets"]:
            stats = dataset_stats(config, dataset, results)
            sentences, rows = _activation_rows(config, stats)
            out["models"] += 4.0 * shape.params
            token_sample = int(config.get("similarity", {}).get("token_sample", 5000))
            # shards, sentence vectors and token sample, both stages, all at the shards' dtype
            vectors = rows * n_layers + (sentences + token_sample) * (shape.layers + 1)
            out["activations"] += 2 * vectors * shape.hidden * act_bytes
            out["saes"] += n_layers * sae_count(config) * 4.0 * (2 * shape.hidden * d_sae)
            out["crosscoders"] += n_layers * (4.0 * 4 * shape.hidden * d_lat + rows * 8)
    out["total"] = sum(out.values())
    return out


# What each compute job waits for: the jobs of these rules whose shared wildcards agree with its own (a
# fine-tuned extract waits for its fine-tune; the pretrained one only for its dataset's split). The rules'
# inputs in workflow/rules/*.smk, at the granularity the schedule needs.
UPSTREAM = {
    "finetune": ("prepare", "import_onnx"),
    "evaluate": ("finetune",),
    "probes": ("finetune",),
    "extract": ("prepare", "import_onnx", "finetune"),
    "train_sae": ("extract",),
    "crosscoder": ("extract",),
    "sae_sweep": ("train_sae",),
    "features": ("train_sae", "probes"),
    "diff": ("train_sae", "crosscoder"),
}


# Rules in an order that puts every rule after those it waits for.
STAGE_ORDER = (
    "prepare",
    "import_onnx",
    "finetune",
    "extract",
    "evaluate",
    "probes",
    "train_sae",
    "crosscoder",
    "features",
    "sae_sweep",
    "diff",
)


def _waits_for(rule: str, w: dict, up_rule: str, up: dict) -> bool:
    if rule == "extract" and up_rule == "finetune" and w.get("stage") == "pretrained":
        return False
    return all(w[k] == up[k] for k in w.keys() & up.keys())


def list_schedule(jobs: list[tuple[str, dict, float]], slots: int) -> float:
    """Makespan of ``(rule, wildcards, seconds)`` jobs on ``slots`` one-thread slots: each job starts on the
    first free slot once everything it waits for (:data:`UPSTREAM`) has finished, in DAG order (no
    look-ahead, as a greedy scheduler runs them). The few long jobs of a small study leave slots idle, which
    ``total / slots`` does not see."""
    done: dict[int, float] = {}  # job index -> finish time
    free = [0.0] * max(1, slots)  # when each slot is next free
    order = sorted(range(len(jobs)), key=lambda i: STAGE_ORDER.index(jobs[i][0]))
    for i in order:
        rule, w, seconds = jobs[i]
        ready = max(
            (
                done[j]
                for j, (up_rule, up, _) in enumerate(jobs)
                if up_rule in UPSTREAM.get(rule, ()) and _waits_for(rule, w, up_rule, up)
            ),
            default=0.0,
        )
        slot = min(range(len(free)), key=lambda k: max(free[k], ready))
        done[i] = max(free[slot], ready) + seconds
        free[slot] = done[i]
    return max(done.values(), default=0.0)


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
    the cores. ``longest_chain_*`` is the slowest prepare → finetune → extract → train_sae → crosscoder →
    diff chain of one model x dataset, the crosscoder counted after the SAEs though it may run beside them
    (the cluster's floor: a conservative critical path when every job gets its own node).
    """
    if cores < 1 or gpu_nodes < 0:
        raise ValueError(f"cores must be >= 1 and gpu_nodes >= 0, got cores={cores}, gpu_nodes={gpu_nodes}")
    coefficients = coefficients or load_coefficients()
    per_rule, chains = {}, {}
    scheduled = []
    for rule, jobs in study_jobs(config).items():
        preds = [predict_job(rule, config, w, results, coefficients=coefficients) for w in jobs]
        res = [job_resources(rule, config, w, results, coefficients=coefficients) for w in jobs]
        per_rule[rule] = {
            "jobs": len(jobs),
            "cpu_s": sum(p["cpu_s"] for p in preds),
            "gpu_s": sum(p["gpu_s"] for p in preds),
            "cpu_s_max": max(p["cpu_s"] for p in preds),
            "gpu_s_max": max(p["gpu_s"] for p in preds),
            "mem_mb_max": max(p["mem_mb"] for p in preds),
            "runtime_request_max": max(r["runtime"] for r in res),
            "mem_mb_request_max": max(r["mem_mb"] for r in res),
        }
        for w, p in zip(jobs, preds, strict=True):
            scheduled.append((rule, w, p["cpu_s"]))
            key = (w.get("model"), w.get("dataset"))
            chain = chains.setdefault(key, {})
            chain[rule] = (
                max(chain.get(rule, (0, 0))[0], p["cpu_s"]),
                max(chain.get(rule, (0, 0))[1], p["gpu_s"]),
            )
    light = light_job_count(config)
    light_s = light * coefficients["light_job_s"]
    longest = [0.0, 0.0]
    for key, chain in chains.items():
        if key[0] is None:
            continue
        prep = chains.get((None, key[1]), {}).get("prepare", (0, 0))
        for i in (0, 1):
            longest[i] = max(
                longest[i],
                prep[i]
                + sum(
                    chain.get(r, (0, 0))[i]
                    for r in ("finetune", "extract", "train_sae", "crosscoder", "diff")
                ),
            )
    cpu_total = sum(r["cpu_s"] for r in per_rule.values()) + light_s
    gpu_total = sum(r["gpu_s"] for r in per_rule.values()) + light_s
    result = {
        "rules": per_rule,
        "light_jobs": light,
        "light_s": light_s,
        "jobs": light + sum(r["jobs"] for r in per_rule.values()),
        "cpu_s_total": cpu_total,
        "gpu_s_total": gpu_total,
        "wall_s_local": max(cpu_total / cores, list_schedule(scheduled, cores) + light_s / cores),
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


def report_markdown(
    config: dict,
    results: str | Path = "results",
    cores: int = 2,
    gpu_nodes: int = 1,
) -> str:
    """The prediction of a study as Markdown: per rule, totals, local and cluster wall time, disk."""
    p = predict_study(config, results, cores=cores, gpu_nodes=gpu_nodes)
    gpu = GPU()
    lines = [
        "| rule | jobs | CPU per job (max) | CPU total | GPU per job (max) | GPU total | peak RAM (max) | request: runtime, mem_mb |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for rule, r in p["rules"].items():
        lines.append(
            f"| {rule} | {r['jobs']} | {_hms(r['cpu_s_max'])} | {_hms(r['cpu_s'])} | {_hms(r['gpu_s_max'])} | "
            f"{_hms(r['gpu_s'])} | {r['mem_mb_max']:,.0f} MB | {r['runtime_request_max']} min, {r['mem_mb_request_max']:,} |"
        )
    lines.append(
        f"| other ({p['light_jobs']} figure/table/report jobs) | {p['light_jobs']} | | {_hms(p['light_s'])} | | "
        f"{_hms(p['light_s'])} | | |"
    )
    lines.append(f"| **total** | {p['jobs']} | | {_hms(p['cpu_s_total'])} | | {_hms(p['gpu_s_total'])} | | |")
    disk = p["disk_bytes"]
    lines += [
        "",
        f"- local, {cores} cores (CPU, one thread per job): {_hms(p['wall_s_local'])} "
        f"(longest chain {_hms(p['longest_chain_cpu_s'])})",
    ]
    if "wall_s_cluster" in p:  # gpu_nodes 0: no cluster to predict for
        lines.append(
            f"- cluster, {gpu_nodes} GPU node(s) ({gpu.name} assumed: {gpu.tflops_bf16:g} TFLOP/s bf16, "
            f"{gpu.tflops_fp32:g} fp32, {gpu.efficiency:.0%} achieved): {_hms(p['wall_s_cluster'])} "
            f"(longest chain {_hms(p['longest_chain_gpu_s'])})"
        )
    lines.append("- disk: " + ", ".join(f"{k} {v / 1e9:,.1f} GB" for k, v in disk.items()))
    bases = sorted({dataset_stats(config, d, results).basis for d in config["datasets"]})
    shapes = sorted({model_shape(config, m, results).basis for m in config["models"]})
    lines.append(f"- token counts from: {', '.join(bases)}; model shapes from: {', '.join(shapes)}")
    return "\n".join(lines)
