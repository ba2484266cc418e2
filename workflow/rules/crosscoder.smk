rule crosscoder:
    """One dictionary over both stages' activations of a layer (Lindsey et al. 2024), vetted by latent scaling."""
    input:
        tokens=expand(f"{targets.ACTIVATIONS}/tokens", stage=targets.STAGES, allow_missing=True),
    output:
        expand(f"{targets.CROSSCODER}/{{file}}", file=targets.CROSSCODER_FILES, allow_missing=True),
    log:
        "results/logs/crosscoder/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/crosscoder/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("crosscoder")),
    params:
        crosscoder=canonical(config["crosscoder"]),
        holdout_fraction=config["sae"]["holdout_fraction"],
        seed=config["seed"],
        checkpoints="results/checkpoints/crosscoder/{model}/{dataset}/layer{layer}",
    script:
        "../scripts/crosscoder.py"
