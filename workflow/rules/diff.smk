rule diff:
    """Label SAE features retained / changed / lost / new against the seed null, and train the crosscoder."""
    input:
        sae=expand(f"{T.SAE}/sae_weights.safetensors", stage=T.STAGES, allow_missing=True),
        null=expand(
            f"{T.SAE_NULL}/sae_weights.safetensors", stage="pretrained", seed=NULL_SEEDS, allow_missing=True
        ),
        tokens=expand(f"{T.ACTIVATIONS}/tokens", stage=T.STAGES, allow_missing=True),
    output:
        table=T.DIFF,
        summary=T.DIFF_SUMMARY,
        crosscoder=expand(f"{T.CROSSCODER}/{{file}}", file=T.CROSSCODER_FILES, allow_missing=True),
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
        crosscoder=canonical(config["crosscoder"]),
        seed=config["seed"],
        top_tokens=config["features"]["top_tokens"],
        checkpoints="results/checkpoints/crosscoder/{model}/{dataset}/layer{layer}",
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
