rule extract:
    """One pass of a split through the pretrained or fine-tuned encoder: means, sentence vectors, token shards."""
    input:
        model=stage_model_dir,
        split=lambda w: targets.DATA.format(dataset=w.dataset, split=config["activations"]["split"]),
    output:
        means=f"{targets.ACTIVATIONS}/means.parquet",
        sentences=f"{targets.ACTIVATIONS}/sentences.parquet",
        token_sample=f"{targets.ACTIVATIONS}/token_sample.parquet",
        tokens=directory(f"{targets.ACTIVATIONS}/tokens"),
    log:
        "results/logs/extract/{model}/{dataset}/{stage}.log",
    benchmark:
        "results/benchmarks/extract/{model}/{dataset}/{stage}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("extract")),
    params:
        activations=canonical(config["activations"]),
        token_sample=config["similarity"]["token_sample"],
        max_length=config["finetune"]["max_length"],
        sae_layers=lambda w: config["models"][w.model]["sae_layers"],
        seed=config["seed"],
    script:
        "../scripts/extract.py"
