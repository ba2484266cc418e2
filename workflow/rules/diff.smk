rule diff:
    """Label the compared run's stable SAE features retained / changed / lost / new against the reference run's,
    calibrated by both sides' seed nulls and the matched-chance model; for the primary pair, compare with the
    crosscoder. Pretrained vs a replicate is the study's diff; two replicates give the between-run baseline."""
    input:
        unpack(diff_saes),
        tokens=comparison_activations("tokens"),
        crosscoder_latents=primary_crosscoder_latents,
    output:
        table=targets.DIFF,
        summary=targets.DIFF_SUMMARY,
    log:
        "results/logs/diff/{model}/{dataset}/{reference}_vs_{compared}/layer{layer}.log",
    benchmark:
        "results/benchmarks/diff/{model}/{dataset}/{reference}_vs_{compared}/layer{layer}.tsv"
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
    """Per-layer diff fractions (with seed-null baselines) across every model x dataset x comparison, and per
    layer their mean and interval over replicates beside the between-run baseline."""
    input:
        [path for m, d, l in targets.model_layers(config) for path in targets.diff_summaries(config, m, d, l)],
    output:
        table=targets.DIFF_TABLE,
        replicates=targets.DIFF_REPLICATES,
    log:
        "results/logs/diff_table.log",
    params:
        interval=config["replicates"]["interval"],
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/diff_table.py"


rule feature_summary:
    """The paper's Table 1, generated: what the top features of each layer respond to, per stage, with the diff."""
    input:
        features=[
            targets.FEATURES.format(model=m, dataset=d, stage=run, layer=l)
            for m, d, l in targets.model_layers(config)
            for run in targets.primary_runs(config)
        ],
        diffs=[
            targets.primary_diff(config, targets.DIFF_SUMMARY, model=m, dataset=d, layer=l)
            for m, d, l in targets.model_layers(config)
        ],
    output:
        table=targets.FEATURE_SUMMARY,
        markdown=targets.FEATURE_SUMMARY_MD,
    log:
        "results/logs/feature_summary.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/feature_summary.py"
