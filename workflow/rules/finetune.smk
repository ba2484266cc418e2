rule finetune:
    """Fine-tune the pretrained encoder + a classification head on one dataset with one replicate's seed
    (the run finetuned-s<seed>); keep the best epoch."""
    input:
        pretrained=targets.PRETRAINED,
        train=targets.DATA.replace("{split}", "train"),
        validation=targets.DATA.replace("{split}", "validation"),
        card=targets.CARD,
    output:
        expand("{dir}/{file}", dir=targets.FINETUNED, file=targets.FINETUNED_FILES),
    log:
        "results/logs/finetune/{model}/{dataset}/{stage}.log",
    benchmark:
        "results/benchmarks/finetune/{model}/{dataset}/{stage}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("finetune")),
    params:
        finetune=canonical(config["finetune"]),
        seed=lambda w: targets.run_seed(w.stage),
        checkpoints="results/checkpoints/finetune/{model}/{dataset}/{stage}",
    script:
        "../scripts/finetune.py"


rule evaluate:
    """Test-split reports of one replicate: pretrained encoder + random head, linear probe (both seeded by the
    study seed, so equal across replicates), fine-tuned model."""
    input:
        pretrained=targets.PRETRAINED,
        finetuned=f"{targets.FINETUNED}/model.safetensors",
        train=targets.DATA.replace("{split}", "train"),
        test=targets.DATA.replace("{split}", "test"),
        card=targets.CARD,
    output:
        targets.CLASSIFICATION,
    log:
        "results/logs/evaluate/{model}/{dataset}/{stage}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{dataset}/{stage}.tsv"
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
    """Table 2 of the paper, rebuilt: accuracy and macro-F1 per model x dataset x replicate x row, and their
    mean and interval over the replicates."""
    input:
        [
            targets.CLASSIFICATION.format(model=model, dataset=dataset, stage=run)
            for model, dataset in targets.model_dataset_pairs(config)
            for run in targets.finetuned_runs(config)
        ],
    output:
        table=targets.ACCURACY_TABLE,
        replicates=targets.ACCURACY_REPLICATES,
    log:
        "results/logs/accuracy_table.log",
    params:
        interval=config["replicates"]["interval"],
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/accuracy_table.py"
