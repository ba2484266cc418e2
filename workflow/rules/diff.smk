rule diff:
    """Label stable SAE features retained / changed / lost / new against both stages' seed nulls and the
    matched-chance model; compare with the crosscoder."""
    input:
        sae=expand(f"{T.SAE}/sae_weights.safetensors", stage=T.STAGES, allow_missing=True),
        null_pretrained=[f"{d}/sae_weights.safetensors" for d in T.null_sae_dirs(config, "pretrained")],
        null_finetuned=[f"{d}/sae_weights.safetensors" for d in T.null_sae_dirs(config, "finetuned")],
        tokens=expand(f"{T.ACTIVATIONS}/tokens", stage=T.STAGES, allow_missing=True),
        crosscoder_latents=f"{T.CROSSCODER}/latents.parquet",
    output:
        table=T.DIFF,
        summary=T.DIFF_SUMMARY,
    log:
        "results/logs/diff/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/diff/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("diff")),
    params:
        diff=canonical(config["diff"]),
        seed=config["seed"],
        top_tokens=config["features"]["top_tokens"],
    script:
        "../scripts/diff.py"


rule diff_table:
    """Per-layer diff fractions (with seed-null baselines) across every model x dataset."""
    input:
        [T.DIFF_SUMMARY.format(model=m, dataset=d, layer=l) for m, d, l in T.model_layers(config)],
    output:
        T.DIFF_TABLE,
    log:
        "results/logs/diff_table.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/diff_table.py"


rule feature_summary:
    """The paper's Table 1, generated: what the top features of each layer respond to, per stage, with the diff."""
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
