rule finetune:
    """Fine-tune the pretrained encoder + a classification head on one dataset; keep the best epoch."""
    input:
        pretrained=targets.PRETRAINED,
        train=targets.DATA.replace("{split}", "train"),
        validation=targets.DATA.replace("{split}", "validation"),
        card=targets.CARD,
    output:
        expand("{dir}/{file}", dir=targets.FINETUNED, file=targets.FINETUNED_FILES),
    log:
        "results/logs/finetune/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/finetune/{model}/{dataset}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("finetune")),
    params:
        finetune=canonical(config["finetune"]),
        seed=config["seed"],
        checkpoints="results/checkpoints/finetune/{model}/{dataset}",
    script:
        "../scripts/finetune.py"


rule evaluate:
    """Test-split reports: pretrained encoder + random head, linear probe, fine-tuned model."""
    input:
        pretrained=targets.PRETRAINED,
        finetuned=f"{targets.FINETUNED}/model.safetensors",
        train=targets.DATA.replace("{split}", "train"),
        test=targets.DATA.replace("{split}", "test"),
        card=targets.CARD,
    output:
        targets.CLASSIFICATION,
    log:
        "results/logs/evaluate/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{dataset}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("evaluate")),
    params:
        finetune=canonical(config["finetune"]),
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


rule accuracy_table:
    """Table 2 of the paper, rebuilt: accuracy and macro-F1 per model x dataset x row."""
    input:
        expand(
            targets.CLASSIFICATION,
            zip,
            model=[m for m in MODELS for d in DATASETS],
            dataset=[d for m in MODELS for d in DATASETS],
        ),
    output:
        targets.ACCURACY_TABLE,
    log:
        "results/logs/accuracy_table.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/accuracy_table.py"
