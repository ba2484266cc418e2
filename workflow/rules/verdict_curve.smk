rule verdict_curve:
    """How much text a verdict needs: one layer's diff recomputed on the first fractions of its token rows
    (the four SAEs of a diff trained there with the study's settings and seeds), the study's diff as fraction 1;
    the pretrained run and the first replicate.
    Scheduled only when the config's verdict_curve section names fractions."""
    input:
        tokens=primary_activations("tokens"),
        study_diff=lambda w: targets.primary_diff(config, targets.DIFF_SUMMARY, **dict(w.items())),
    output:
        targets.VERDICT_CURVE,
    log:
        "results/logs/verdict_curve/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/verdict_curve/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("verdict_curve")),
    params:
        sae=canonical(config["sae"]),
        diff=canonical(config["diff"]),
        fractions=targets.verdict_curve_fractions(config),
        stage_seeds=targets.stage_seeds(config),
        null_seeds=targets.first_null_seeds(config),
        seed=config["seed"],
        checkpoints="results/checkpoints/verdict_curve/{model}/{dataset}/layer{layer}",
    script:
        "../scripts/verdict_curve.py"
