"""Every artifact path the study implies, derived from the validated config (no Snakemake needed).

Path templates live here once, each written out whole under results/; rules and target lists both format them.
"""

from __future__ import annotations

STAGES = ("pretrained", "finetuned")
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
FINETUNED = "results/models/{model}/{dataset}"
FINETUNED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "training_log.csv")
CLASSIFICATION = "results/metrics/{model}/{dataset}/classification.json"
ACTIVATIONS = "results/activations/{model}/{dataset}/{stage}"
SIMILARITY = "results/similarity/{model}/{dataset}.parquet"
SIMILARITY_ALL = "results/tables/similarity.parquet"
SAE = "results/sae/{model}/{dataset}/{stage}/layer{layer}"
SAE_NULL = "results/sae_null/{model}/{dataset}/{stage}/layer{layer}/seed{seed}"
SAE_FILES = ("cfg.json", "sae_weights.safetensors", "metrics.json")
SAE_SWEEP = "results/sae_sweep/{model}/{dataset}/{stage}/layer{layer}.parquet"
FEATURES = "results/features/{model}/{dataset}/{stage}/layer{layer}.parquet"
FEATURE_TOKENS = "results/features/{model}/{dataset}/{stage}/layer{layer}.top_tokens.parquet"
# top features on the probe sentences; the probe sentences' hidden states, both stages
PROBE_ACTIVATIONS = "results/probes/{model}/{dataset}/layer{layer}.parquet"
PROBE_STATES = "results/probes/{model}/{dataset}/states.parquet"
CROSSCODER = "results/crosscoder/{model}/{dataset}/layer{layer}"
CROSSCODER_FILES = ("cfg.json", "crosscoder_weights.safetensors", "metrics.json", "latents.parquet")
DIFF = "results/diff/{model}/{dataset}/layer{layer}.parquet"
DIFF_SUMMARY = "results/diff/{model}/{dataset}/layer{layer}.json"
ACCURACY_TABLE = "results/tables/accuracy.csv"
FEATURE_SUMMARY = "results/tables/feature_summary.parquet"
FEATURE_SUMMARY_MD = "results/tables/feature_summary.md"
DIFF_TABLE = "results/tables/diff_summary.parquet"
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


def _extra_seed(config: dict, i: int) -> int:
    """The ``i``-th seed after the study's own (0-based): null SAE ``i`` uses it."""
    return config["seed"] + 1000 * (i + 1)


def null_seeds(config: dict, stage: str = "pretrained") -> list[int]:
    """Seeds of a stage's seed-null SAEs (that stage's SAE retrained on the same rows with another seed).

    Both stages draw from one seed set: the pretrained SAE takes the study seed and its nulls the extra
    seeds; the fine-tuned SAE takes the first extra seed (:func:`stage_seeds`) and its first null the study
    seed. Each null pair then differs in exactly the seeds the cross-stage pair differs in, and not in data."""
    extra = [_extra_seed(config, i) for i in range(config["sae"]["null_seeds"])]
    if stage == "finetuned" and extra:
        extra[0] = config["seed"]
    return extra


def null_runs(config: dict) -> list[tuple[str, int]]:
    """(stage, seed) of every seed-null SAE of a layer, pretrained first: the order of :func:`null_sae_dirs`."""
    return [(stage, seed) for stage in STAGES for seed in null_seeds(config, stage)]


def null_sae_dirs(config: dict, stage: str | None = None, **fmt) -> list[str]:
    """Seed-null SAE directories of one layer (of one ``stage``, or both in :func:`null_runs` order).

    ``fmt`` fills ``model`` / ``dataset`` / ``layer``; those left out stay ``{wildcards}`` for rules."""
    fill = {key: "{" + key + "}" for key in ("model", "dataset", "layer")} | fmt
    runs = [(s, seed) for s, seed in null_runs(config) if stage in (None, s)]
    return [SAE_NULL.format(**fill, stage=s, seed=seed) for s, seed in runs]


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


def stage_sae_dirs(config: dict, stage: str, **fmt) -> dict[int, str]:
    """``{seed: directory}`` of every SAE the study trains on one stage's layer: the stage's own, then its nulls.

    ``fmt`` fills ``model`` / ``dataset`` / ``layer`` as in :func:`null_sae_dirs`."""
    fill = {key: "{" + key + "}" for key in ("model", "dataset", "layer")} | fmt
    nulls = dict(zip(null_seeds(config, stage), null_sae_dirs(config, stage, **fmt), strict=True))
    return {stage_seeds(config)[stage]: SAE.format(**fill, stage=stage)} | nulls


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
    stage = fmt.pop("stage")
    trained = stage_sae_dirs(config, stage, **fmt)
    return {seed: trained[seed] for seed in sweep_seeds(config) if seed in trained}


def sweep_seeds(config: dict) -> list[int]:
    """The sweep's two seeds: the two stages' SAE seeds, so its study-settings row is the study's own SAEs."""
    return [stage_seeds(config)[stage] for stage in STAGES]


def sweep_layer(config: dict) -> dict | None:
    """``{model, dataset, stage, layer}`` of the SAE settings sweep (defaults: the first model and dataset, the
    model's last SAE layer), or None when the sweep has no grid."""
    sweep = config.get("sae_sweep", {})
    if not sweep.get("grid"):
        return None
    model = sweep.get("model") or next(iter(config["models"]))
    dataset = sweep.get("dataset") or next(iter(config["datasets"]))
    layer = sweep.get("layer")
    layer = config["models"][model]["sae_layers"][-1] if layer is None else layer
    return {"model": model, "dataset": dataset, "stage": sweep.get("stage", "pretrained"), "layer": layer}


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
        out += [f"{FINETUNED.format(model=model, dataset=dataset)}/{f}" for f in FINETUNED_FILES]
        out.append(CLASSIFICATION.format(model=model, dataset=dataset))
    return out + [ACCURACY_TABLE]


def similarity_targets(config: dict) -> list[str]:
    return [SIMILARITY.format(model=m, dataset=d) for m, d in model_dataset_pairs(config)] + [SIMILARITY_ALL]


def sae_targets(config: dict) -> list[str]:
    out = []
    for model, dataset, layer in model_layers(config):
        for stage in STAGES:
            fmt = {"model": model, "dataset": dataset, "stage": stage, "layer": layer}
            out += [f"{SAE.format(**fmt)}/{f}" for f in SAE_FILES]
            out += [FEATURES.format(**fmt), FEATURE_TOKENS.format(**fmt)]
        out.append(PROBE_ACTIVATIONS.format(model=model, dataset=dataset, layer=layer))
    sweep = sweep_layer(config)
    if sweep is not None:
        out.append(SAE_SWEEP.format(**sweep))
    return out + [FEATURE_SUMMARY, FEATURE_SUMMARY_MD]


def diff_targets(config: dict) -> list[str]:
    out = []
    for model, dataset, layer in model_layers(config):
        fmt = {"model": model, "dataset": dataset, "layer": layer}
        out += [f"{CROSSCODER.format(**fmt)}/{f}" for f in CROSSCODER_FILES]
        out += [DIFF.format(**fmt), DIFF_SUMMARY.format(**fmt)]
    return out + [DIFF_TABLE]


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
        + verdict_curve_tables(config)
        + figure_targets(config)
        + [REPORT]
    )
