rule similarity:
    """Per layer, between two runs of a model x dataset (pretrained vs a replicate, or two replicates): the
    paper's cosine of mean activations, linear CKA (sentences, tokens), per-sentence cosine; the sentence-level
    measures with a percentile interval from a seeded bootstrap over the sentences.
    """
    input:
        means=comparison_activations("means.parquet"),
        sentences=comparison_activations("sentences.parquet"),
        token_sample=comparison_activations("token_sample.parquet"),
    output:
        targets.SIMILARITY,
    log:
        "results/logs/similarity/{model}/{dataset}/{reference}_vs_{compared}.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        bootstrap=config["similarity"]["bootstrap"],
        interval=config["similarity"]["interval"],
        seed=config["seed"],
    script:
        "../scripts/similarity.py"


rule split_half:
    """The sampling floor of the mean-based measures: per layer, the cosine of the mean sentence vectors of two
    seeded random halves of the pretrained run's sentences (two samples of one model)."""
    input:
        f"{targets.ACTIVATIONS.format(model='{model}', dataset='{dataset}', stage=targets.PRETRAINED_RUN)}/sentences.parquet",
    output:
        targets.SPLIT_HALF,
    log:
        "results/logs/split_half/{model}/{dataset}.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        seed=config["seed"],
    script:
        "../scripts/split_half.py"


rule similarity_table:
    """All models x datasets x comparisons in one table, and per layer and measure the pretrained-vs-fine-tuned
    mean with its interval over replicates beside the between-run band."""
    input:
        comparisons=[
            path for model, dataset in targets.model_dataset_pairs(config)
            for path in targets.similarity_tables(config, model, dataset)
        ],
        split_half=expand(targets.SPLIT_HALF, model=MODELS, dataset=DATASETS),
    output:
        table=targets.SIMILARITY_ALL,
        replicates=targets.SIMILARITY_REPLICATES,
    log:
        "results/logs/similarity_table.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        interval=config["replicates"]["interval"],
    script:
        "../scripts/similarity_table.py"
