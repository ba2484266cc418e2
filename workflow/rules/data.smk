rule prepare:
    """Clean, cap and split one dataset (hub datasets download here, on the submit host)."""
    input:
        dataset_source_file,
    output:
        splits=expand(targets.DATA, split=targets.SPLITS, allow_missing=True),
        card=targets.CARD,
    log:
        "results/logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../envs/layershift.yaml"
    params:
        dataset=dataset_cfg,
        data=canonical(config["data"]),
        seed=config["seed"],
    script:
        "../scripts/prepare.py"
