"""What each compute rule's job computes, in units of work: FLOPs for the model and SAE rules (rows for
``prepare``, parameters for ``import_onnx``), the host memory its data structures take, its optimiser steps
and the activation values the host reads. One work function per rule, in :data:`WORK`; a job of a run
(``stage``: pretrained or one fine-tuning replicate) or of a comparison of two runs costs the same whichever
runs it names, so the work functions read only the model, dataset and layer.

Every function takes a validated config (``validate_schema`` filled the schema's defaults): the batch sizes,
widths and epochs are the config's, never restated here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layershift.costs.inputs import DataStats, Shape, dataset_stats, model_shape
from layershift.study import targets
from layershift.study.schema import dataset_row_cap

ADAM_FLOP_PER_PARAM = 12  # one Adam update of one parameter, in FLOPs (read-modify-write of 4 tensors)
EVAL_BATCH_ROWS = 4096  # rows per evaluation / encoding batch of the SAE, crosscoder and feature code


@dataclass(frozen=True)
class Work:
    flop: float  # FLOPs (for prepare: rows; for import_onnx: parameters)
    bytes: float  # host memory the job's data structures need beyond the fitted base
    steps: float = 0.0  # optimiser steps x layers (GPU launch-bound floor)
    low_precision: bool = False  # bf16 autocast on GPU
    host_values: float = 0.0  # activation values the host reads, stacks or copies (GPU runs: not on the GPU)


@dataclass
class Job:
    """One job: the study config, the job's wildcards and the results folder its inputs are measured in."""

    config: dict
    wildcards: dict
    results: str | Path

    @functools.cached_property
    def shape(self) -> Shape:
        return model_shape(self.config, self.wildcards["model"], self.results)

    @functools.cached_property
    def stats(self) -> DataStats:
        return dataset_stats(self.config, self.wildcards["dataset"], self.results)

    @property
    def tokens_per_row(self) -> float:
        return self.stats.tokens_per_row


def sae_count(config: dict) -> int:
    """SAEs one ``train_sae`` job trains: one run's SAE plus its seed nulls (``null_seeds``)."""
    return 1 + int(config["sae"]["null_seeds"])


def diff_sae_count(config: dict) -> int:
    """SAEs one ``diff`` job reads: each side's SAE and, with seed nulls, its first null."""
    return 2 + 2 * min(1, int(config["sae"]["null_seeds"]))


def sae_epochs(section: dict, train_rows: float) -> int:
    """Passes over a layer's training rows: ``epochs``, or ceil(``training_tokens`` / rows) when that is set."""
    if section.get("training_tokens"):
        return max(1, math.ceil(int(section["training_tokens"]) / max(train_rows, 1)))
    return int(section["epochs"])


def activation_rows(config: dict, stats: DataStats) -> tuple[float, float]:
    """(sentences, token rows) one extract job (one run) passes through / writes per layer."""
    activations = config["activations"]
    sentences = min(int(activations["max_sentences"]), stats.rows[activations["split"]])
    tokens = min(int(activations["max_tokens"]), sentences * stats.tokens_per_row)
    return float(sentences), float(tokens)


def _kept_rows(row_bytes: float, section: dict, epochs: int) -> tuple[float, int]:
    """(bytes held in RAM, Parquet decoding passes) of shard training: rows that fit ``memory_cache_mb``
    are decoded once and kept (``ShardReader.keep_in_memory``); larger layers stream."""
    if row_bytes <= float(section["memory_cache_mb"]) * 2**20:
        return row_bytes, 1
    return 0.0, epochs


def _adam_flop(params: float, steps: float) -> float:
    return ADAM_FLOP_PER_PARAM * params * steps


def _shard_rows(job: Job) -> tuple[float, float]:
    """(token rows of a layer's shards, the rows SAE training sees after the held-out fraction)."""
    _, rows = activation_rows(job.config, job.stats)
    return rows, rows * (1 - float(job.config["sae"]["holdout_fraction"]))


def _sae_buffers(hidden: int, d_sae: int) -> float:
    """Bytes of one evaluation batch of inputs and codes (float32)."""
    return 4.0 * EVAL_BATCH_ROWS * (hidden + d_sae) * 4


def prepare_work(job: Job) -> Work:
    return Work(flop=float(dataset_row_cap(job.config, job.wildcards["dataset"])), bytes=0.0)


def import_onnx_work(job: Job) -> Work:
    return Work(flop=float(job.shape.params), bytes=8.0 * job.shape.params)


def finetune_work(job: Job) -> Work:
    """Epochs of forward + backward over the train split, a forward pass of the validation split each epoch."""
    finetune, shape, tokens_per_row = job.config["finetune"], job.shape, job.tokens_per_row
    max_length = int(finetune["max_length"])
    epochs, batch = int(finetune["epochs"]), int(finetune["batch_size"])
    train, validation = job.stats.rows["train"], job.stats.rows["validation"]
    steps = epochs * math.ceil(train / batch)
    flop = epochs * (
        3 * shape.forward_flop(train * tokens_per_row, tokens_per_row)
        + shape.forward_flop(validation * tokens_per_row, tokens_per_row)
    )
    flop += _adam_flop(shape.params, steps)
    # saved activations of one batch: hidden-sized tensors and attention maps per layer, float32
    activations = 4.0 * batch * max_length * shape.layers * (16 * shape.hidden + 2 * shape.heads * max_length)
    low = str(finetune["precision"]).lower() in ("bf16", "fp16")
    return Work(
        flop=flop, bytes=16.0 * shape.params + activations, steps=steps * shape.layers, low_precision=low
    )


def evaluate_work(job: Job) -> Work:
    """The pretrained head and fine-tuned model on the test split, the linear probe's features of train + test."""
    rows = job.stats.rows["train"] + 3 * job.stats.rows["test"]
    tokens_per_row = job.tokens_per_row
    return Work(
        flop=job.shape.forward_flop(rows * tokens_per_row, tokens_per_row), bytes=8.0 * job.shape.params
    )


def extract_work(job: Job) -> Work:
    """One forward pass of the sentences; every layer's hidden states through the host."""
    config, shape, tokens_per_row = job.config, job.shape, job.tokens_per_row
    sentences, tokens = activation_rows(config, job.stats)
    batch, max_length = int(config["activations"]["batch_size"]), int(config["finetune"]["max_length"])
    hidden, layers = shape.hidden, shape.layers
    buffers = 4.0 * batch * max_length * (layers + 1) * hidden * 4
    n_sae_layers = len(config["models"][job.wildcards["model"]]["sae_layers"])
    values = sentences * tokens_per_row * (layers + 1) * hidden + tokens * n_sae_layers * hidden
    return Work(
        flop=shape.forward_flop(sentences * tokens_per_row, tokens_per_row),
        bytes=8.0 * shape.params + buffers,
        host_values=values,
    )


def train_sae_work(job: Job) -> Work:
    """One run's SAE and its seed nulls, trained on the layer's rows and evaluated on all of them."""
    rows, train_rows = _shard_rows(job)
    return _sae_training_work(job, sae_count(job.config), rows, train_rows)


def _sae_training_work(job: Job, n_saes: int, rows: float, train_rows: float) -> Work:
    """``n_saes`` SAEs of the study's settings trained on ``train_rows`` rows and evaluated on ``rows``."""
    sae, hidden = job.config["sae"], job.shape.hidden
    d_sae = int(sae["d_sae"])
    sae_params = 2.0 * hidden * d_sae
    epochs, batch = sae_epochs(sae, train_rows), int(sae["batch_size"])
    steps = n_saes * epochs * math.ceil(train_rows / batch)
    flop = n_saes * (epochs * train_rows * 6 * sae_params + rows * 2 * sae_params) + _adam_flop(
        sae_params, steps
    )
    bytes_ = n_saes * 16.0 * sae_params + _sae_buffers(hidden, d_sae)
    kept, passes = _kept_rows(
        train_rows * hidden * 4, sae, epochs
    )  # rows kept in RAM: one decode, not one an epoch
    return Work(
        flop=flop, bytes=bytes_ + kept, steps=steps, host_values=n_saes * (passes + 1) * rows * hidden
    )


def crosscoder_work(job: Job) -> Work:
    """One crosscoder over the primary pair's rows of the layer (the pretrained run and the first replicate:
    an encoder and a decoder per run)."""
    crosscoder, hidden = job.config["crosscoder"], job.shape.hidden
    rows, train_rows = _shard_rows(job)
    d_latent, epochs, batch = (
        int(crosscoder["d_latent"]),
        int(crosscoder["epochs"]),
        int(crosscoder["batch_size"]),
    )
    crosscoder_params = 4.0 * hidden * d_latent
    steps = epochs * math.ceil(train_rows / batch)
    flop = (
        epochs * train_rows * 6 * crosscoder_params
        + rows * 2 * crosscoder_params
        + _adam_flop(crosscoder_params, steps)
    )
    bytes_ = 16.0 * crosscoder_params + 4.0 * EVAL_BATCH_ROWS * (2 * hidden + d_latent) * 4
    kept, passes = _kept_rows(train_rows * 2 * hidden * 4, crosscoder, epochs)
    return Work(flop=flop, bytes=bytes_ + kept, steps=steps, host_values=(passes + 1) * rows * 2 * hidden)


def _sweep_point_work(job: Job, point: dict, study_saes: int) -> tuple[float, float, float, int]:
    """(training + evaluation FLOPs, firing-rate FLOPs, Adam FLOPs, optimiser steps) of one grid point: two SAEs with the study's settings overlaid by the
    point's; the study-settings point reads the study's own SAEs of its seeds instead of training them."""
    sae, hidden = job.config["sae"], job.shape.hidden
    rows, train_rows = _shard_rows(job)
    settings = {**sae, **point}
    trained = 2 - (study_saes if targets.is_study_setting(sae, point) else 0)
    point_params, epochs = 2.0 * hidden * int(settings["d_sae"]), sae_epochs(settings, train_rows)
    steps = trained * epochs * math.ceil(train_rows / int(settings["batch_size"]))
    flop = trained * (
        epochs * train_rows * 6 * point_params + rows * 2 * point_params
    )  # training, evaluation
    flop_rates = 2 * rows * 2 * point_params  # both seeds' firing rates, trained or read
    return flop, flop_rates, _adam_flop(point_params, steps), steps


def sae_sweep_work(job: Job) -> Work:
    """Every grid point of the sweep on its layer (:func:`_sweep_point_work`)."""
    sae, hidden = job.config["sae"], job.shape.hidden
    flop, steps = 0.0, 0.0
    study_saes = len(_sweep_study_saes(job.config))
    for point in job.config["sae_sweep"]["grid"]:
        training, rates, adam, point_steps = _sweep_point_work(job, point, study_saes)
        flop += training
        flop += rates
        flop += adam
        steps += point_steps
    d_sae = int(sae["d_sae"])
    sae_params = 2.0 * hidden * d_sae
    return Work(flop=flop, bytes=2 * 16.0 * sae_params + _sae_buffers(hidden, d_sae), steps=steps)


def _sweep_study_saes(config: dict) -> dict[int, str]:
    """The study's SAEs the sweep reads instead of training (none without a sweep)."""
    sweep = targets.sweep_layer(config)
    return targets.sweep_study_saes(config, **sweep) if sweep else {}


def diff_work(job: Job) -> Work:
    """The paired tokens of a comparison's two runs encoded through each run's SAE and its first null, decoder
    cosines and matching."""
    rows, _ = _shard_rows(job)
    return _diff_work(job, diff_sae_count(job.config), rows)


def _diff_work(job: Job, n_saes: int, rows: float) -> Work:
    """The diff of ``n_saes`` SAEs on ``rows`` paired rows."""
    config, hidden = job.config, job.shape.hidden
    d_sae = int(config["sae"]["d_sae"])
    sae_params = 2.0 * hidden * d_sae
    flop = n_saes * rows * 2 * sae_params + n_saes * 2 * d_sae * d_sae * hidden
    bytes_ = n_saes * 4.0 * sae_params + 8.0 * d_sae * d_sae * n_saes + _sae_buffers(hidden, d_sae)
    # both runs' rows, held in RAM across the passes when they fit diff.memory_cache_mb
    kept, _ = _kept_rows(rows * 2 * hidden * 4, config["diff"], 1)
    return Work(flop=flop, bytes=bytes_ + kept, host_values=3 * rows * 2 * hidden)


CURVE_SAES = 4  # SAEs of one verdict-curve point: each primary run's SAE and its first seed null


def verdict_curve_work(job: Job) -> Work:
    """Per fraction below 1 of the layer's rows: the four SAEs of a diff trained on those rows (the study's
    settings: with ``training_tokens`` the same steps as the study's SAEs, over fewer rows) and their diff
    on them. The point at 1 is the study's own diff, read."""
    rows, _ = _shard_rows(job)
    holdout = float(job.config["sae"]["holdout_fraction"])
    points = []
    for fraction in targets.verdict_curve_fractions(job.config):
        point_rows = fraction * rows
        points += [
            _sae_training_work(job, CURVE_SAES, point_rows, point_rows * (1 - holdout)),
            _diff_work(job, CURVE_SAES, point_rows),
        ]
    return Work(
        flop=sum(point.flop for point in points),
        bytes=max((point.bytes for point in points), default=0.0),  # one point's SAEs at a time
        steps=sum(point.steps for point in points),
        host_values=sum(point.host_values for point in points),
    )


def features_work(job: Job) -> Work:
    """The primary pair's two SAEs encode the layer's rows (feature variance and top tokens)."""
    hidden = job.shape.hidden
    rows, _ = _shard_rows(job)
    d_sae = int(job.config["sae"]["d_sae"])
    sae_params = 2.0 * hidden * d_sae
    bytes_ = 2 * 4.0 * sae_params + _sae_buffers(hidden, d_sae)
    return Work(flop=2 * rows * 2 * sae_params, bytes=bytes_, host_values=2 * rows * 2 * hidden)


def probes_work(job: Job) -> Work:
    """The probe sentences (16 tokens assumed) through the primary pair's two models."""
    probes = len(job.config["datasets"][job.wildcards["dataset"]].get("probes") or [])
    return Work(flop=2 * job.shape.forward_flop(probes * 16, 16), bytes=8.0 * job.shape.params)


FAITHFULNESS_PASSES = 5  # clean, spliced, zero-, mean-ablated and error-term passes of the test split
ASSUMED_CLASSES = 4  # the attribution pass takes a backward per class: the cost model knows no class count


def faithfulness_work(job: Job) -> Work:
    """Per SAE layer of one run: the test split through the classifier with the SAE and its untrained control
    spliced in, an attribution pass (a backward per class and for the loss) and one forward per ablated
    feature; then one forward of the test split and one of the train split for every layer together (feature
    profiles and sparse probing); for the pretrained run first the linear probe's features of the train split."""
    config, shape, tokens_per_row = job.config, job.shape, job.tokens_per_row
    section = config["faithfulness"]
    test_flop = shape.forward_flop(job.stats.rows["test"] * tokens_per_row, tokens_per_row)
    train_flop = shape.forward_flop(job.stats.rows["train"] * tokens_per_row, tokens_per_row)
    ablations = int(section["top_k"]) + int(section["random_features"])
    passes = 2 * FAITHFULNESS_PASSES + 3 * (ASSUMED_CLASSES + 1) + ablations + 1
    layers = len(config["models"][job.wildcards["model"]]["sae_layers"])
    flop = layers * passes * test_flop + test_flop + train_flop
    if job.wildcards.get("stage") == targets.PRETRAINED_RUN:
        flop += train_flop
    return Work(flop=flop, bytes=8.0 * shape.params)


# The rules with a cost model of their own, in the order the prediction reports them.
WORK: dict[str, Callable[[Job], Work]] = {
    "prepare": prepare_work,
    "import_onnx": import_onnx_work,
    "finetune": finetune_work,
    "evaluate": evaluate_work,
    "extract": extract_work,
    "train_sae": train_sae_work,
    "probes": probes_work,
    "features": features_work,
    "crosscoder": crosscoder_work,
    "diff": diff_work,
    "faithfulness": faithfulness_work,
    "sae_sweep": sae_sweep_work,
    "verdict_curve": verdict_curve_work,
}
COMPUTE_RULES = frozenset(WORK)


def work(rule: str, config: dict, wildcards: dict, results: str | Path = "results") -> Work:
    """The work of one job of ``rule`` (wildcards: model, dataset, layer where the rule has them)."""
    if rule not in WORK:
        raise KeyError(f"no cost model for rule {rule!r}")
    return WORK[rule](Job(config, wildcards, results))
