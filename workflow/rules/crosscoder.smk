rule crosscoder:
    """One dictionary over both stages' activations of a layer (Lindsey et al. 2024), vetted by latent scaling
    (the pretrained run and the first replicate)."""
    input:
        tokens=primary_activations("tokens"),
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
