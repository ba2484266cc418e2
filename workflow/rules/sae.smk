rule train_sae:
    """SAEs on one layer: the pretrained and fine-tuned stage, plus same-data SAEs with other seeds (the null)."""
    input:
        tokens=expand(f"{T.ACTIVATIONS}/tokens", stage=T.STAGES, allow_missing=True),
    output:
        sae=expand(f"{T.SAE}/{{file}}", stage=T.STAGES, file=T.SAE_FILES, allow_missing=True),
        null=expand(
            f"{T.SAE_NULL}/{{file}}",
            stage="pretrained",
            seed=NULL_SEEDS,
            file=T.SAE_FILES,
            allow_missing=True,
        ),
    log:
        "results/logs/train_sae/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/train_sae/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("train_sae")),
    params:
        sae=canonical(config["sae"]),
        stage_seeds=T.stage_seeds(config),
        null_seeds=NULL_SEEDS,
        checkpoints="results/checkpoints/sae/{model}/{dataset}/layer{layer}",
    script:
        "../scripts/train_sae.py"


rule probes:
    """The probe sentences through the pretrained and the fine-tuned model: hidden states of every SAE layer."""
    input:
        models=both_stage_models,
        test=T.DATA.replace("{split}", "test"),
    output:
        T.PROBE_STATES,
    log:
        "results/logs/probes/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/probes/{model}/{dataset}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("probes")),
    params:
        probes=lambda w: config["datasets"][w.dataset].get("probes", []),
        layers=lambda w: config["models"][w.model]["sae_layers"],
        max_length=config["finetune"]["max_length"],
    script:
        "../scripts/probes.py"


rule features:
    """Rank both stages' SAE features by variance, find their top tokens, and apply them to the probe sentences."""
    input:
        sae=expand(f"{T.SAE}/sae_weights.safetensors", stage=T.STAGES, allow_missing=True),
        tokens=expand(f"{T.ACTIVATIONS}/tokens", stage=T.STAGES, allow_missing=True),
        probe_states=T.PROBE_STATES,
    output:
        features=expand(T.FEATURES, stage=T.STAGES, allow_missing=True),
        top_tokens=expand(T.FEATURE_TOKENS, stage=T.STAGES, allow_missing=True),
        probes=T.PROBES,
    log:
        "results/logs/features/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/features/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("features")),
    params:
        features=canonical(config["features"]),
    script:
        "../scripts/features.py"


rule feature_summary:
    """The paper's Table 1, generated: what the top features of each layer respond to, per stage."""
    input:
        features=[
            T.FEATURES.format(model=m, dataset=d, stage=s, layer=l)
            for m, d, l in T.model_layers(config)
            for s in T.STAGES
        ],
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
