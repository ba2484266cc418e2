rule similarity:
    """Per layer: the paper's cosine of mean activations, linear CKA (sentences, tokens), per-sentence cosine;
    the sentence-level measures with a percentile interval from a seeded bootstrap over the sentences.
    """
    input:
        pretrained=expand(
            f"{targets.ACTIVATIONS}/{{file}}",
            stage="pretrained",
            file=["means.parquet", "sentences.parquet", "token_sample.parquet"],
            allow_missing=True,
        ),
        finetuned=expand(
            f"{targets.ACTIVATIONS}/{{file}}",
            stage="finetuned",
            file=["means.parquet", "sentences.parquet", "token_sample.parquet"],
            allow_missing=True,
        ),
    output:
        targets.SIMILARITY,
    log:
        "results/logs/similarity/{model}/{dataset}.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        bootstrap=config["similarity"]["bootstrap"],
        interval=config["similarity"]["interval"],
        seed=config["seed"],
    script:
        "../scripts/similarity.py"


rule similarity_table:
    """All models x datasets in one table."""
    input:
        expand(targets.SIMILARITY, model=MODELS, dataset=DATASETS),
    output:
        targets.SIMILARITY_ALL,
    log:
        "results/logs/similarity_table.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/concat_tables.py"
