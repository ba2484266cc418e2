# Config validation, target lists and input functions (rules and directives: Snakefile). No ML here: it lives in src/layershift.
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # run from a checkout even without `pip install -e .`

from snakemake.utils import validate

from layershift.study import targets
from layershift.costs.calibration import machine_coefficients
from layershift.costs.predict import job_resources
from layershift.config import validate_config
from layershift.study.schema import SCHEMA_PATH
from layershift.data.sources import source_input_files
from layershift.core.errors import LayershiftError
from layershift.study.targets import all_targets

CONFIG_ORIGIN = str(workflow.configfiles[-1]) if workflow.configfiles else "config"
try:
    validate_config(config, origin=CONFIG_ORIGIN, base_dir=".")
except LayershiftError as err:
    sys.stderr.write(f"layershift: {err}\n")
    sys.exit(1)
validate(config, str(SCHEMA_PATH))  # the package's schema, wherever layershift is imported from


# the cost model's coefficients, scaled to this machine's CPU when `layershift calibrate` measured it
COST_COEFFICIENTS, COST_NOTES = machine_coefficients()
sys.stderr.write("".join(f"layershift: resource requests: {note}\n" for note in COST_NOTES))

MODELS = list(config["models"])
DATASETS = list(config["datasets"])
THREADS = config["resources"]["threads"]
GPUS = config["resources"]["gpus"]


def _choice(names):
    return "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))


def model_cfg(wildcards):
    """Where a model comes from (source, tokenizer, revision): not its sae_layers, which only the activation
    and SAE steps read, so adding a layer does not re-resolve the model and re-run its fine-tunes."""
    entry = config["models"][wildcards.model]
    return canonical({key: value for key, value in entry.items() if key != "sae_layers"})


def canonical(settings):
    """Settings with keys sorted: Snakemake compares params by their printed form, so key order in the
    config file must not trigger reruns."""
    return json.loads(json.dumps(settings, sort_keys=True))


KEYS_PREPARE_DOES_NOT_READ = ("probes", "synthetic")  # probes: the features step; synthetic: the report


def dataset_cfg(wildcards):
    """What `prepare` reads of a dataset entry (not its probes, which only the features step uses, nor
    whether it is synthetic, which only the report reads)."""
    entry = config["datasets"][wildcards.dataset]
    return canonical({key: value for key, value in entry.items() if key not in KEYS_PREPARE_DOES_NOT_READ})


def dataset_source_file(wildcards):
    """The local file behind a dataset (so editing it reruns prepare), or nothing for hub datasets."""
    return source_input_files(config["datasets"][wildcards.dataset]["source"])


def stage_model_dir(wildcards):
    """Input: the pointer to the pretrained model, or a fine-tuned run's weights."""
    wildcards = wildcards if isinstance(wildcards, dict) else dict(wildcards.items())
    if wildcards["stage"] == targets.PRETRAINED_RUN:
        return targets.PRETRAINED.format(model=wildcards["model"])
    return f"{targets.FINETUNED.format(**wildcards)}/model.safetensors"


def primary_stage_models(wildcards):
    """Inputs naming the pretrained (pointer) and first replicate's (weights) model of a model x dataset."""
    fmt = {"model": wildcards.model, "dataset": wildcards.dataset}
    return [stage_model_dir({**fmt, "stage": run}) for run in targets.primary_runs(config)]


def primary_activations(name):
    """The pretrained and first replicate's extraction output ``name`` (the pair the one-run rules read)."""
    return expand(f"{targets.ACTIVATIONS}/{name}", stage=targets.primary_runs(config), allow_missing=True)


def comparison_activations(name):
    """Input function: the reference and compared runs' extraction output ``name``."""

    def of_job(wildcards):
        fmt = {"model": wildcards.model, "dataset": wildcards.dataset}
        return [
            f"{targets.ACTIVATIONS.format(**fmt, stage=run)}/{name}"
            for run in (wildcards.reference, wildcards.compared)
        ]

    return of_job


def diff_saes(wildcards):
    """The four SAE weight files a diff reads (reference, its null, compared, its null; a side without seed
    nulls reads none)."""
    fmt = {key: wildcards[key] for key in ("model", "dataset", "layer")}
    dirs = targets.diff_sae_dirs(config, wildcards.reference, wildcards.compared, **fmt)
    return {role: f"{directory}/sae_weights.safetensors" for role, directory in dirs.items() if directory}


def primary_crosscoder_latents(wildcards):
    """The crosscoder's latents when the diff is the primary pair (the crosscoder is trained on it only)."""
    if [wildcards.reference, wildcards.compared] != targets.primary_runs(config):
        return []
    return f"{targets.CROSSCODER.format(model=wildcards.model, dataset=wildcards.dataset, layer=wildcards.layer)}/latents.parquet"


def onnx_import_input(wildcards):
    """The imported BertModel for onnx-package sources; nothing for the other kinds."""
    if config["models"][wildcards.model]["source"].startswith("onnx-package:"):
        return f"{targets.ONNX_IMPORT.format(model=wildcards.model)}/model.safetensors"
    return []


def sae_layers(wildcards):
    return config["models"][wildcards.model]["sae_layers"]


def gpu_resources(mem_mb, runtime):
    """Resources of every model-running step - memory (MB), wall time (minutes) and `gpu`, on which the
    cluster profile routes jobs to a GPU partition."""
    res = {"gpu": GPUS, "mem_mb": mem_mb, "runtime": runtime}
    if GPUS and config["resources"].get("gpu_model"):
        res["gpu_model"] = config["resources"]["gpu_model"]
    return res


def predicted(rule):
    """`mem_mb` and `runtime` of a rule's jobs from the cost model (layershift.costs.predict, fitted by
    bench/bench_costs.py; CPU times calibrated to this machine when it was, see COST_COEFFICIENTS): predicted
    for this job's model, dataset and layer, x2 time and x1.5 memory, at least 5 min and 2,000 MB; a SLURM
    retry (`attempt` 2) asks for twice as much."""

    def of_job(key):
        def value(wildcards, attempt):
            requests = job_resources(rule, config, dict(wildcards.items()), coefficients=COST_COEFFICIENTS)
            return requests[key] * attempt

        return value

    return {"mem_mb": of_job("mem_mb"), "runtime": of_job("runtime")}


def sae_metrics_of_dataset(wildcards):
    """metrics.json of every SAE (every run and its seed nulls) of every SAE layer of one model x dataset."""
    fmt = {"model": wildcards.model, "dataset": wildcards.dataset}
    return [
        f"{sae_dir}/metrics.json"
        for layer in sae_layers(wildcards)
        for run in targets.runs(config)
        for sae_dir in targets.run_sae_dirs(config, run, **fmt, layer=layer).values()
    ]


def sweep_study_saes(wildcards):
    """The study's own SAEs of the sweep layer and seeds, as ``[[seed, directory], ...]``: the sweep's
    study-settings row reads them instead of training them a second time."""
    where = {key: wildcards[key] for key in ("model", "dataset", "stage", "layer")}
    dirs = targets.sweep_study_saes(config, **where)
    return [[seed, directory] for seed, directory in dirs.items()]


def similarity_of_model(wildcards):
    """The per-comparison similarity tables of one model, datasets in config order."""
    return [path for dataset in DATASETS for path in targets.similarity_tables(config, wildcards.model, dataset)]


def diff_summaries_of_model(wildcards):
    """Every diff summary (every comparison) of one model's SAE layers, datasets in config order."""
    return [
        path
        for dataset in DATASETS
        for layer in sae_layers(wildcards)
        for path in targets.diff_summaries(config, wildcards.model, dataset, layer)
    ]
