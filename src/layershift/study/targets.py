"""Every artifact path the study implies, derived from the validated config (no Snakemake needed).

Path templates live here once, each written out whole under results/; rules and target lists both format them.
"""

from __future__ import annotations

STAGES = ("pretrained", "finetuned")
# A run is one encoder the study reads: the pretrained model, or one fine-tuning replicate (one per seed). Paths
# name runs in their ``{stage}`` field; ``{reference}`` / ``{compared}`` name the two runs a comparison reads.
PRETRAINED_RUN = "pretrained"
FINETUNED_RUN = "finetuned-s{seed}"
RUN_PATTERN = r"pretrained|finetuned-s\d+"
FINETUNED_RUN_PATTERN = r"finetuned-s\d+"
PRETRAINED_VS_FINETUNED = "pretrained_vs_finetuned"
BETWEEN_RUNS = "between_runs"
SPLITS = ("train", "validation", "test")
SIMILARITY_MEASURES = (
    "cosine_of_means",
    "cosine_of_content_means",
    "cka_sentences",
    "cka_tokens",
    "mean_sentence_cosine",
)

DATA = "results/data/{dataset}/{split}.parquet"
CARD = "results/data/{dataset}/card.json"
PRETRAINED = "results/models/{model}/pretrained.json"
ONNX_IMPORT = "results/models/{model}/onnx_import"
FINETUNED = "results/models/{model}/{dataset}/{stage}"
FINETUNED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "training_log.csv")
CLASSIFICATION = "results/metrics/{model}/{dataset}/{stage}/classification.json"
ACTIVATIONS = "results/activations/{model}/{dataset}/{stage}"
SIMILARITY = "results/similarity/{model}/{dataset}/{reference}_vs_{compared}.parquet"
SPLIT_HALF = "results/similarity/{model}/{dataset}/pretrained_split_half.parquet"
SIMILARITY_ALL = "results/tables/similarity.parquet"
SIMILARITY_REPLICATES = "results/tables/similarity_replicates.parquet"
SAE = "results/sae/{model}/{dataset}/{stage}/layer{layer}"
SAE_NULL = "results/sae_null/{model}/{dataset}/{stage}/layer{layer}/null{index}"  # seed: its cfg.json
SAE_FILES = ("cfg.json", "sae_weights.safetensors", "metrics.json")
SAE_SWEEP = "results/sae_sweep/{model}/{dataset}/{stage}/layer{layer}.parquet"
FEATURES = "results/features/{model}/{dataset}/{stage}/layer{layer}.parquet"
FEATURE_TOKENS = "results/features/{model}/{dataset}/{stage}/layer{layer}.top_tokens.parquet"
# top features on the probe sentences; the probe sentences' hidden states, both stages
PROBE_ACTIVATIONS = "results/probes/{model}/{dataset}/layer{layer}.parquet"
PROBE_STATES = "results/probes/{model}/{dataset}/states.parquet"
CROSSCODER = "results/crosscoder/{model}/{dataset}/layer{layer}"
CROSSCODER_FILES = ("cfg.json", "crosscoder_weights.safetensors", "metrics.json", "latents.parquet")
DIFF = "results/diff/{model}/{dataset}/{reference}_vs_{compared}/layer{layer}.parquet"
DIFF_SUMMARY = "results/diff/{model}/{dataset}/{reference}_vs_{compared}/layer{layer}.json"
ACCURACY_TABLE = "results/tables/accuracy.csv"
ACCURACY_REPLICATES = "results/tables/accuracy_replicates.parquet"
FEATURE_SUMMARY = "results/tables/feature_summary.parquet"
FEATURE_SUMMARY_MD = "results/tables/feature_summary.md"
DIFF_TABLE = "results/tables/diff_summary.parquet"
DIFF_REPLICATES = "results/tables/diff_replicates.parquet"
FIDELITY = "results/fidelity/{model}/{dataset}/{stage}.parquet"  # each SAE layer of a run, spliced in
FEATURE_EFFECTS = "results/fidelity/{model}/{dataset}/{stage}.effects.parquet"
FEATURE_PROFILES = (
    "results/fidelity/{model}/{dataset}/{stage}.profiles.parquet"  # each live feature's profile
)
SPARSE_PROBING = "results/fidelity/{model}/{dataset}/{stage}.sparse_probing.parquet"
SAE_FIDELITY = "results/tables/sae_fidelity.parquet"
FEATURE_EFFECTS_TABLE = "results/tables/feature_effects.parquet"
SPARSE_PROBING_TABLE = "results/tables/sparse_probing.parquet"
VERDICT_CURVE = "results/verdict_curve/{model}/{dataset}/layer{layer}.parquet"
REPORT = "results/report/index.html"

FIG_CLASSIFICATION = "results/figures/classification/{model}/{dataset}.png"
FIG_ACCURACY = "results/figures/accuracy.png"
FIG_TRAINING = "results/figures/training/{model}/{dataset}.png"
FIG_SIMILARITY = "results/figures/similarity/{measure}/{model}.png"
FIG_DEPTH = "results/figures/depth/{measure}.png"
FIG_SAE_SWEEP = "results/figures/sae_sweep/{model}/{dataset}/{stage}/layer{layer}.png"
FIG_SAE_LOSS = "results/figures/sae_loss/{model}/{dataset}.png"
FIG_TOKENS = "results/figures/tokens/{model}/{dataset}/layer{layer}.png"
FIG_DIFF = "results/figures/diff/{model}.png"
FIG_RELNORM = "results/figures/relnorm/{model}/{dataset}.png"
FIG_DIFF_TOKENS = "results/figures/diff_tokens/{model}/{dataset}.png"
FIG_VERDICT_CURVE = "results/figures/verdict_curve/{model}_{dataset}.png"


def model_dataset_pairs(config: dict):
    for model in config["models"]:
        for dataset in config["datasets"]:
            yield model, dataset


def model_layers(config: dict):
    """(model, dataset, layer) for every SAE layer of every model x dataset."""
    for model, dataset in model_dataset_pairs(config):
        for layer in config["models"][model]["sae_layers"]:
            yield model, dataset, layer


def finetune_seeds(config: dict) -> list[int]:
    """Seed of each fine-tuning replicate: ``replicates.seeds``, or the study seed alone."""
    return list((config.get("replicates") or {}).get("seeds") or [config["seed"]])


def finetuned_runs(config: dict) -> list[str]:
    """The fine-tuned runs, one per replicate seed, in config order (``finetuned-s13``, ...)."""
    return [FINETUNED_RUN.format(seed=seed) for seed in finetune_seeds(config)]


def runs(config: dict) -> list[str]:
    """Every run of a model x dataset: the pretrained one, then each fine-tuning replicate."""
    return [PRETRAINED_RUN, *finetuned_runs(config)]


def primary_runs(config: dict) -> list[str]:
    """The pretrained run and the first replicate: the pair the one-run artifacts read (the crosscoder, the
    ranked features and probe sentences, the verdict curve)."""
    return [PRETRAINED_RUN, finetuned_runs(config)[0]]


def stage_of(run: str) -> str:
    """``pretrained`` or ``finetuned``: the stage a run belongs to."""
    return STAGES[0] if run == PRETRAINED_RUN else STAGES[1]


def run_seed(run: str) -> int:
    """The fine-tuning seed of a fine-tuned run."""
    return int(run.removeprefix("finetuned-s"))


def between_runs(config: dict) -> bool:
    """Whether the study compares fine-tuning replicates with each other (``replicates.between_runs``; unset:
    whenever there are two or more and seed nulls to pair their SAEs with, :func:`diff_sae_dirs`)."""
    asked = (config.get("replicates") or {}).get("between_runs")
    if asked is None:
        return len(finetune_seeds(config)) >= 2 and config["sae"]["null_seeds"] >= 1
    return bool(asked)


def comparisons(config: dict) -> list[tuple[str, str]]:
    """(reference, compared) runs of every comparison: pretrained vs each replicate, then, with the between-run
    baseline, every pair of replicates (what a second fine-tuning run alone changes)."""
    finetuned = finetuned_runs(config)
    pairs = [(PRETRAINED_RUN, run) for run in finetuned]
    if between_runs(config):
        pairs += [(a, b) for i, a in enumerate(finetuned) for b in finetuned[i + 1 :]]
    return pairs


def comparison_kind(reference: str, compared: str) -> str:
    """``pretrained_vs_finetuned`` or ``between_runs``."""
    return PRETRAINED_VS_FINETUNED if reference == PRETRAINED_RUN else BETWEEN_RUNS


def _extra_seed(config: dict, i: int) -> int:
    """The ``i``-th seed after the study's own (0-based): null SAE ``i`` uses it."""
    return config["seed"] + 1000 * (i + 1)


def null_seeds(config: dict, stage: str = "pretrained") -> list[int]:
    """Seeds of a stage's seed-null SAEs (that stage's SAE retrained on the same rows with another seed).

    Both stages draw from one seed set: the pretrained SAE takes the study seed and its nulls the extra
    seeds; the fine-tuned SAE takes the first extra seed (:func:`stage_seeds`) and its first null the study
    seed. Each null pair then differs in exactly the seeds the cross-stage pair differs in, and not in data.
    ``stage`` may name a run."""
    extra = [_extra_seed(config, i) for i in range(config["sae"]["null_seeds"])]
    if stage_of(stage) == "finetuned" and extra:
        extra[0] = config["seed"]
    return extra


def null_sae_dirs(config: dict, run: str = "{stage}", **fmt) -> list[str]:
    """Seed-null SAE directories of one run's layer (``null0``, ``null1``, ...: their seeds are
    :func:`null_seeds` of the run's stage, recorded in each ``cfg.json``).

    ``fmt`` fills ``model`` / ``dataset`` / ``layer``; those left out stay ``{wildcards}`` for rules."""
    fill = {key: "{" + key + "}" for key in ("model", "dataset", "layer")} | fmt
    return [SAE_NULL.format(**fill, stage=run, index=i) for i in range(config["sae"]["null_seeds"])]


def first_null_seeds(config: dict) -> dict[str, int]:
    """Seed of each stage's first seed null, the one the diff reads (empty without seed nulls)."""
    return {stage: seeds[0] for stage in STAGES if (seeds := null_seeds(config, stage))}


def stage_seeds(config: dict) -> dict[str, int]:
    """Seed of each stage's SAE. The fine-tuned SAE takes the first extra seed, so the (pretrained, fine-tuned)
    pair and each stage's (SAE, null) pair differ in exactly the same seeds and only the first differs in
    data: a null pair is the cross-stage comparison without fine-tuning. (With one seed for both stages, two
    SAEs trained on nearly equal early-layer activations start and stay alike, so they would look more alike
    than the seed null and no change could ever be detected there.)"""
    return {"pretrained": config["seed"], "finetuned": _extra_seed(config, 0)}


def run_sae_seeds(config: dict, run: str) -> list[int]:
    """Seeds of the SAEs one ``train_sae`` job trains on a run's layer: the run's own SAE, then its nulls."""
    stage = stage_of(run)
    return [stage_seeds(config)[stage], *null_seeds(config, stage)]


def run_sae_dirs(config: dict, run: str, **fmt) -> dict[int, str]:
    """``{seed: directory}`` of every SAE the study trains on one run's layer: the run's own, then its nulls.

    ``fmt`` fills ``model`` / ``dataset`` / ``layer`` as in :func:`null_sae_dirs`."""
    fill = {key: "{" + key + "}" for key in ("model", "dataset", "layer")} | fmt
    dirs = [SAE.format(**fill, stage=run), *null_sae_dirs(config, run, **fmt)]
    return dict(zip(run_sae_seeds(config, run), dirs, strict=True))


def diff_sae_dirs(config: dict, reference: str, compared: str, **fmt) -> dict[str, str | None]:
    """The four SAEs a diff reads: ``reference``, ``reference_null``, ``compared``, ``compared_null`` (a null
    is None without seed nulls).

    The reference side always uses the pretrained SAE's seed for its SAE and the fine-tuned SAE's seed for its
    null, the compared side the other way round: a between-run diff (two replicates) then differs in exactly
    the seeds a pretrained-vs-fine-tuned diff differs in, so the two are comparable."""
    seeds = stage_seeds(config)
    reference_dirs, compared_dirs = (run_sae_dirs(config, run, **fmt) for run in (reference, compared))
    return {
        "reference": reference_dirs[seeds["pretrained"]],
        "reference_null": reference_dirs.get(seeds["finetuned"]),
        "compared": compared_dirs[seeds["finetuned"]],
        "compared_null": compared_dirs.get(seeds["pretrained"]),
    }


def is_study_setting(base: dict, point: dict) -> bool:
    """Whether a sweep grid ``point`` laid over the study's ``sae`` section ``base`` leaves it as it is."""
    return {**base, **point} == base


def sweep_study_saes(config: dict, **fmt) -> dict[int, str]:
    """``{seed: directory}`` of the study's own SAEs that the sweep's study-settings row reads instead of
    training them again: its stage's SAEs of the sweep's seeds (none when no grid point is the study's setting).

    ``fmt`` fills ``model`` / ``dataset`` / ``stage`` / ``layer`` (the sweep layer's wildcards)."""
    sweep = config.get("sae_sweep", {})
    if not any(is_study_setting(config["sae"], point) for point in sweep.get("grid", [])):
        return {}
    run = fmt.pop("stage")
    trained = run_sae_dirs(config, run, **fmt)
    return {seed: trained[seed] for seed in sweep_seeds(config) if seed in trained}


def sweep_seeds(config: dict) -> list[int]:
    """The sweep's two seeds: the two stages' SAE seeds, so its study-settings row is the study's own SAEs."""
    return [stage_seeds(config)[stage] for stage in STAGES]


def sweep_layer(config: dict) -> dict | None:
    """``{model, dataset, stage, layer}`` of the SAE settings sweep (defaults: the first model and dataset, the
    model's last SAE layer; a fine-tuned sweep reads the first replicate), or None when the sweep has no grid."""
    sweep = config.get("sae_sweep", {})
    if not sweep.get("grid"):
        return None
    model = sweep.get("model") or next(iter(config["models"]))
    dataset = sweep.get("dataset") or next(iter(config["datasets"]))
    layer = sweep.get("layer")
    layer = config["models"][model]["sae_layers"][-1] if layer is None else layer
    run = dict(zip(STAGES, primary_runs(config), strict=True))[sweep.get("stage", "pretrained")]
    return {"model": model, "dataset": dataset, "stage": run, "layer": layer}


def verdict_curve_pair(config: dict) -> dict | None:
    """``{model, dataset}`` of the verdict curve, or None when it is off (no ``verdict_curve`` section, or no
    fractions: the config validation requires the model and dataset once fractions are given)."""
    curve = config.get("verdict_curve") or {}
    if not curve.get("fractions"):
        return None
    return {"model": curve["model"], "dataset": curve["dataset"]}


def verdict_curve_fractions(config: dict) -> list[float]:
    """The fractions of a layer's token rows the verdict curve trains on (below 1: the study's own diff is
    the curve's point at 1, read, not retrained)."""
    return [
        float(fraction)
        for fraction in (config.get("verdict_curve") or {}).get("fractions", [])
        if fraction < 1
    ]


def verdict_curve_tables(config: dict) -> list[str]:
    """The verdict curve's per-layer tables (none when it is off)."""
    pair = verdict_curve_pair(config)
    if pair is None:
        return []
    return [
        VERDICT_CURVE.format(**pair, layer=layer) for layer in config["models"][pair["model"]]["sae_layers"]
    ]


def with_svg(paths: list[str]) -> list[str]:
    return [p for path in paths for p in (path, path[: -len(".png")] + ".svg")]


def data_targets(config: dict) -> list[str]:
    out = []
    for dataset in config["datasets"]:
        out += [DATA.format(dataset=dataset, split=s) for s in SPLITS] + [CARD.format(dataset=dataset)]
    return out


def finetune_targets(config: dict) -> list[str]:
    out = []
    for model, dataset in model_dataset_pairs(config):
        for run in finetuned_runs(config):
            fmt = {"model": model, "dataset": dataset, "stage": run}
            out += [f"{FINETUNED.format(**fmt)}/{f}" for f in FINETUNED_FILES]
            out.append(CLASSIFICATION.format(**fmt))
    return out + [ACCURACY_TABLE, ACCURACY_REPLICATES]


def similarity_tables(config: dict, model: str, dataset: str) -> list[str]:
    """The per-comparison similarity tables of one model x dataset, in :func:`comparisons` order."""
    return [
        SIMILARITY.format(model=model, dataset=dataset, reference=reference, compared=compared)
        for reference, compared in comparisons(config)
    ]


def similarity_targets(config: dict) -> list[str]:
    out = []
    for model, dataset in model_dataset_pairs(config):
        out += similarity_tables(config, model, dataset) + [SPLIT_HALF.format(model=model, dataset=dataset)]
    return out + [SIMILARITY_ALL, SIMILARITY_REPLICATES]


def sae_targets(config: dict) -> list[str]:
    out = []
    for model, dataset, layer in model_layers(config):
        fmt = {"model": model, "dataset": dataset, "layer": layer}
        for run in runs(config):
            out += [
                f"{directory}/{f}"
                for directory in run_sae_dirs(config, run, **fmt).values()
                for f in SAE_FILES
            ]
        for run in primary_runs(config):
            out += [FEATURES.format(**fmt, stage=run), FEATURE_TOKENS.format(**fmt, stage=run)]
        out.append(PROBE_ACTIVATIONS.format(**fmt))
    sweep = sweep_layer(config)
    if sweep is not None:
        out.append(SAE_SWEEP.format(**sweep))
    return out + [FEATURE_SUMMARY, FEATURE_SUMMARY_MD]


def diff_summaries(config: dict, model: str, dataset: str, layer: int) -> list[str]:
    """The diff summaries of one layer, one per comparison in :func:`comparisons` order."""
    return [
        DIFF_SUMMARY.format(model=model, dataset=dataset, layer=layer, reference=reference, compared=compared)
        for reference, compared in comparisons(config)
    ]


def primary_diff(config: dict, template: str, **fmt) -> str:
    """``template`` (DIFF or DIFF_SUMMARY) for the pretrained run vs the first replicate."""
    reference, compared = primary_runs(config)
    return template.format(**fmt, reference=reference, compared=compared)


def diff_targets(config: dict) -> list[str]:
    out = []
    for model, dataset, layer in model_layers(config):
        fmt = {"model": model, "dataset": dataset, "layer": layer}
        out += [f"{CROSSCODER.format(**fmt)}/{f}" for f in CROSSCODER_FILES]
        for reference, compared in comparisons(config):
            pair = {**fmt, "reference": reference, "compared": compared}
            out += [DIFF.format(**pair), DIFF_SUMMARY.format(**pair)]
    return out + [DIFF_TABLE, DIFF_REPLICATES]


def fidelity_targets(config: dict) -> list[str]:
    out = []
    for model, dataset in model_dataset_pairs(config):
        for run in runs(config):
            out += [
                template.format(model=model, dataset=dataset, stage=run)
                for template in (FIDELITY, FEATURE_EFFECTS, FEATURE_PROFILES, SPARSE_PROBING)
            ]
    return out + [SAE_FIDELITY, FEATURE_EFFECTS_TABLE, SPARSE_PROBING_TABLE]


def figure_targets(config: dict) -> list[str]:
    figs = [FIG_ACCURACY]
    for model, dataset in model_dataset_pairs(config):
        fmt = {"model": model, "dataset": dataset}
        figs += [FIG_CLASSIFICATION.format(**fmt), FIG_TRAINING.format(**fmt), FIG_SAE_LOSS.format(**fmt)]
        figs += [FIG_RELNORM.format(**fmt), FIG_DIFF_TOKENS.format(**fmt)]
    for model in config["models"]:
        figs.append(FIG_DIFF.format(model=model))
        figs += [FIG_SIMILARITY.format(measure=m, model=model) for m in SIMILARITY_MEASURES]
    figs += [FIG_DEPTH.format(measure=m) for m in SIMILARITY_MEASURES]
    for model, dataset, layer in model_layers(config):
        fmt = {"model": model, "dataset": dataset, "layer": layer}
        figs.append(FIG_TOKENS.format(**fmt))
    sweep = sweep_layer(config)
    if sweep is not None:
        figs.append(FIG_SAE_SWEEP.format(**sweep))
    curve = verdict_curve_pair(config)
    if curve is not None:
        figs.append(FIG_VERDICT_CURVE.format(**curve))
    return with_svg(figs)


def all_targets(config: dict) -> list[str]:
    return (
        data_targets(config)
        + finetune_targets(config)
        + similarity_targets(config)
        + sae_targets(config)
        + diff_targets(config)
        + fidelity_targets(config)
        + verdict_curve_tables(config)
        + figure_targets(config)
        + [REPORT]
    )
