rule report:
    """One self-contained HTML page: every table and figure of the study, plus computed findings."""
    input:
        cards=expand(targets.CARD, dataset=DATASETS),
        models=expand(targets.PRETRAINED, model=MODELS),
        accuracy=targets.ACCURACY_TABLE,
        accuracy_replicates=targets.ACCURACY_REPLICATES,
        similarity=targets.SIMILARITY_ALL,
        similarity_replicates=targets.SIMILARITY_REPLICATES,
        sae_metrics=[
            f"{targets.SAE.format(model=model, dataset=dataset, stage=run, layer=layer)}/metrics.json"
            for model, dataset, layer in targets.model_layers(config)
            for run in targets.runs(config)
        ],
        feature_summary=targets.FEATURE_SUMMARY,
        diff_table=targets.DIFF_TABLE,
        diff_replicates=targets.DIFF_REPLICATES,
        # the SAEs judged by each run's classifier; the feature pages read the primary pair's diffs and profiles,
        # the findings every pretrained-vs-fine-tuned diff beside every run's feature effects
        fidelity=targets.SAE_FIDELITY,
        feature_effects=targets.FEATURE_EFFECTS_TABLE,
        sparse_probing=targets.SPARSE_PROBING_TABLE,
        diff_labels=[
            targets.DIFF.format(
                model=model,
                dataset=dataset,
                layer=layer,
                reference=reference,
                compared=compared,
            )
            for model, dataset, layer in targets.model_layers(config)
            for reference, compared in targets.comparisons(config)
            if reference == targets.PRETRAINED_RUN
        ],
        profiles=[
            targets.FEATURE_PROFILES.format(model=model, dataset=dataset, stage=run)
            for model, dataset in targets.model_dataset_pairs(config)
            for run in targets.primary_runs(config)
        ],
        sae_sweep=(
            [targets.SAE_SWEEP.format(**targets.sweep_layer(config))]
            if targets.sweep_layer(config)
            else []
        ),
        verdict_curve=targets.verdict_curve_tables(config),
        figures=targets.figure_targets(config),
    output:
        targets.REPORT,
    log:
        "results/logs/report.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        config_file=CONFIG_ORIGIN,
        study=canonical(config),
    script:
        "../scripts/report.py"
