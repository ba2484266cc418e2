rule train_sae:
    """SAEs on one run's layer: the run's own SAE plus its same-data SAEs with other seeds (the seed nulls),
    in one job that reads the layer's rows once into memory."""
    input:
        tokens=f"{targets.ACTIVATIONS}/tokens",
    output:
        sae=expand(f"{targets.SAE}/{{file}}", file=targets.SAE_FILES, allow_missing=True),
        null=[f"{null}/{file}" for null in targets.null_sae_dirs(config) for file in targets.SAE_FILES],
    log:
        "results/logs/train_sae/{model}/{dataset}/{stage}/layer{layer}.log",
    benchmark:
        "results/benchmarks/train_sae/{model}/{dataset}/{stage}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("train_sae")),
    params:
        sae=canonical(config["sae"]),
        seeds=lambda w: targets.run_sae_seeds(config, w.stage),
        split_seed=config["seed"],
        checkpoints="results/checkpoints/sae/{model}/{dataset}/{stage}/layer{layer}",
    script:
        "../scripts/train_sae.py"


rule probes:
    """The probe sentences through the pretrained model and the first replicate: hidden states of every SAE layer."""
    input:
        models=primary_stage_models,
        test=targets.DATA.replace("{split}", "test"),
    output:
        targets.PROBE_STATES,
    log:
        "results/logs/probes/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/probes/{model}/{dataset}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("probes")),
    params:
        probes=lambda w: config["datasets"][w.dataset].get("probes", []),
        layers=lambda w: config["models"][w.model]["sae_layers"],
        max_length=config["finetune"]["max_length"],
    script:
        "../scripts/probes.py"


rule features:
    """Rank both stages' SAE features by variance (pretrained and the first replicate), find their top tokens,
    and apply them to the probe sentences."""
    input:
        sae=expand(f"{targets.SAE}/sae_weights.safetensors", stage=targets.primary_runs(config), allow_missing=True),
        tokens=primary_activations("tokens"),
        probe_states=targets.PROBE_STATES,
    output:
        features=expand(targets.FEATURES, stage=targets.primary_runs(config), allow_missing=True),
        top_tokens=expand(targets.FEATURE_TOKENS, stage=targets.primary_runs(config), allow_missing=True),
        probe_activations=targets.PROBE_ACTIVATIONS,
    log:
        "results/logs/features/{model}/{dataset}/layer{layer}.log",
    benchmark:
        "results/benchmarks/features/{model}/{dataset}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("features")),
    params:
        features=canonical(config["features"]),
    script:
        "../scripts/features.py"


rule sae_sweep:
    """A small grid of SAE settings on one layer, two seeds each: seed reproducibility vs EV vs L0 vs cost.
    The study-settings row is the study's own SAEs of that layer (trained once, by train_sae)."""
    input:
        tokens=f"{targets.ACTIVATIONS}/tokens",
        study_saes=lambda w: [f"{d}/{file}" for _, d in sweep_study_saes(w) for file in targets.SAE_FILES],
    output:
        targets.SAE_SWEEP,
    log:
        "results/logs/sae_sweep/{model}/{dataset}/{stage}/layer{layer}.log",
    benchmark:
        "results/benchmarks/sae_sweep/{model}/{dataset}/{stage}/layer{layer}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("sae_sweep")),
    params:
        sae=canonical(config["sae"]),
        grid=canonical(config["sae_sweep"]["grid"]),
        seeds=targets.sweep_seeds(config),
        study_saes=sweep_study_saes,
        split_seed=config["seed"],
    script:
        "../scripts/sae_sweep.py"


rule faithfulness:
    """Every SAE layer of one run judged by the run's classifier on the test split: the reconstruction spliced
    in (loss recovered, KL, accuracy; an untrained SAE of the same shape as the control), each live
    feature's causal effect (attribution, exact ablation of the top and of random features) and profile
    (firing rate, mean activation per class, top sentences), and sparse probing (probes fitted on train on
    the k most label-predictive latents beside the dense probe of the layer)."""
    input:
        model=stage_model_dir,
        train=targets.DATA.replace("{split}", "train"),
        test=targets.DATA.replace("{split}", "test"),
        card=targets.CARD,
        saes=lambda w: [
            f"{targets.SAE.format(**dict(w.items()), layer=layer)}/sae_weights.safetensors"
            for layer in sae_layers(w)
        ],
    output:
        fidelity=targets.FIDELITY,
        effects=targets.FEATURE_EFFECTS,
        profiles=targets.FEATURE_PROFILES,
        sparse_probing=targets.SPARSE_PROBING,
    log:
        "results/logs/faithfulness/{model}/{dataset}/{stage}.log",
    benchmark:
        "results/benchmarks/faithfulness/{model}/{dataset}/{stage}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        **gpu_resources(**predicted("faithfulness")),
    params:
        faithfulness=canonical(config["faithfulness"]),
        layers=sae_layers,
        max_length=config["finetune"]["max_length"],
        seed=config["seed"],
    script:
        "../scripts/faithfulness.py"


rule faithfulness_table:
    """Every run's SAE fidelity, feature effects and sparse probing in three study-wide tables."""
    input:
        fidelity=[
            targets.FIDELITY.format(model=m, dataset=d, stage=run)
            for m, d in targets.model_dataset_pairs(config)
            for run in targets.runs(config)
        ],
        effects=[
            targets.FEATURE_EFFECTS.format(model=m, dataset=d, stage=run)
            for m, d in targets.model_dataset_pairs(config)
            for run in targets.runs(config)
        ],
        sparse_probing=[
            targets.SPARSE_PROBING.format(model=m, dataset=d, stage=run)
            for m, d in targets.model_dataset_pairs(config)
            for run in targets.runs(config)
        ],
    output:
        fidelity=targets.SAE_FIDELITY,
        effects=targets.FEATURE_EFFECTS_TABLE,
        sparse_probing=targets.SPARSE_PROBING_TABLE,
    log:
        "results/logs/faithfulness_table.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/faithfulness_table.py"
