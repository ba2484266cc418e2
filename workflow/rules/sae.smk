rule train_sae:
    """A sparse autoencoder on one layer of one stage, plus same-data SAEs with other seeds (the null baseline)."""
    input:
        tokens=f"{T.ACTIVATIONS}/tokens",
    output:
        sae=expand(f"{T.SAE}/{{file}}", file=T.SAE_FILES, allow_missing=True),
        null=expand(f"{T.SAE_NULL}/{{file}}", file=T.SAE_FILES, seed=NULL_SEEDS, allow_missing=True),
    params:
        sae=config["sae"],
        seed=config["seed"],
        null_seeds=NULL_SEEDS,
        checkpoints="results/checkpoints/sae/{model}/{dataset}/{stage}/layer{layer}",
    threads: THREADS
    resources:
        **gpu_resources(),
    log:
        "results/logs/train_sae/{model}/{dataset}/{stage}/layer{layer}.log",
    benchmark:
        "results/benchmarks/train_sae/{model}/{dataset}/{stage}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/train_sae.py"


rule features:
    """Rank both stages' SAE features by variance, find their top tokens, and run the probe sentences."""
    input:
        sae=expand(f"{T.SAE}/sae_weights.safetensors", stage=T.STAGES, allow_missing=True),
        tokens=expand(f"{T.ACTIVATIONS}/tokens", stage=T.STAGES, allow_missing=True),
        models=both_stage_models,
    output:
        features=expand(T.FEATURES, stage=T.STAGES, allow_missing=True),
        probes=T.PROBES,
    params:
        features=config["features"],
        probes=lambda w: config["datasets"][w.dataset].get("probes", []),
        max_length=config["finetune"]["max_length"],
    threads: THREADS
    resources:
        **gpu_resources(),
    log:
        "results/logs/features/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/features/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/features.py"


rule feature_summary:
    """The paper's Table 1, generated: what the top features of each layer respond to, per stage."""
    input:
        features=[T.FEATURES.format(model=m, dataset=d, stage=s, layer=l) for m, d, l in T.model_layers(config) for s in T.STAGES],
        diffs=[T.DIFF_SUMMARY.format(model=m, dataset=d, layer=l) for m, d, l in T.model_layers(config)],
    output:
        table=T.FEATURE_SUMMARY,
        markdown=T.FEATURE_SUMMARY_MD,
    log:
        "results/logs/feature_summary.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/feature_summary.py"
