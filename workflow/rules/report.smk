rule report:
    """One self-contained HTML page: every table and figure of the study, plus computed findings."""
    input:
        cards=expand(T.CARD, dataset=DATASETS),
        models=expand(T.PRETRAINED, model=MODELS),
        accuracy=T.ACCURACY_TABLE,
        similarity=T.SIMILARITY_ALL,
        sae_metrics=[
            f"{T.SAE.format(model=m, dataset=d, stage=s, layer=l)}/metrics.json"
            for m, d, l in T.model_layers(config)
            for s in T.STAGES
        ],
        feature_summary=T.FEATURE_SUMMARY,
        diff_table=T.DIFF_TABLE,
        sae_sweep=[T.SAE_SWEEP.format(**T.sweep_layer(config))] if T.sweep_layer(config) else [],
        figures=T.figure_targets(config),
    output:
        T.REPORT,
    log:
        "results/logs/report.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        config_file=CONFIG_ORIGIN,
        study=canonical(config),
    script:
        "../scripts/report.py"
