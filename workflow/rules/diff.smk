rule diff:
    """Label stable SAE features retained / changed / lost / new against both stages' seed nulls and the
    matched-chance model; compare with the crosscoder."""
    input:
        sae=expand(f"{targets.SAE}/sae_weights.safetensors", stage=targets.STAGES, allow_missing=True),
        null_pretrained=[f"{d}/sae_weights.safetensors" for d in targets.null_sae_dirs(config, "pretrained")],
        null_finetuned=[f"{d}/sae_weights.safetensors" for d in targets.null_sae_dirs(config, "finetuned")],
        tokens=expand(f"{targets.ACTIVATIONS}/tokens", stage=targets.STAGES, allow_missing=True),
        crosscoder_latents=f"{targets.CROSSCODER}/latents.parquet",
    output:
        table=targets.DIFF,
        summary=targets.DIFF_SUMMARY,
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
        [targets.DIFF_SUMMARY.format(model=m, dataset=d, layer=l) for m, d, l in targets.model_layers(config)],
    output:
        targets.DIFF_TABLE,
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
            targets.FEATURES.format(model=m, dataset=d, stage=s, layer=l)
            for m, d, l in targets.model_layers(config)
            for s in targets.STAGES
        ],
        diffs=[targets.DIFF_SUMMARY.format(model=m, dataset=d, layer=l) for m, d, l in targets.model_layers(config)],
    output:
        table=targets.FEATURE_SUMMARY,
        markdown=targets.FEATURE_SUMMARY_MD,
    log:
        "results/logs/feature_summary.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/feature_summary.py"
