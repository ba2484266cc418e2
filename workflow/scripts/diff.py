from pathlib import Path

from layershift.crosscoder import crosscoder_sae_agreement, fit_and_save_crosscoder
from layershift.diff import DiffConfig, diff_saes, paired_shard_batches
from layershift.features import attach_top_tokens
from layershift.io import write_json, write_parquet
from layershift.runtime import checkpoint_dir, clear_checkpoints, script_context
from layershift.sae import load_sae

with script_context(snakemake) as sm:
    w, params, seed = sm.wildcards, sm.params.diff, sm.params.seed
    meta = {"model": w.model, "dataset": w.dataset, "layer": int(w.layer)}
    shard_dirs = {
        stage: f"{tokens}/layer{w.layer}"
        for stage, tokens in zip(("pretrained", "finetuned"), sm.input.tokens, strict=True)
    }
    saes = {stage: load_sae(Path(path).parent) for stage, path in zip(shard_dirs, sm.input.sae, strict=True)}
    null = load_sae(Path(sm.input.null[0]).parent) if sm.input.null else None

    # 1. SAE matching, calibrated by the seed null
    cfg = DiffConfig(
        quantile=params["null_quantile"],
        retained_cosine=params["cosine_threshold"],
        retained_correlation=params["correlation_threshold"],
        seed=seed,
    )
    pairs = paired_shard_batches(shard_dirs["pretrained"], shard_dirs["finetuned"], batch_size=4096)
    labels, summary = diff_saes(saes["pretrained"], saes["finetuned"], pairs, cfg, null_sae=null)
    labels = attach_top_tokens(labels, saes, shard_dirs, sm.params.top_tokens)

    # 2. The crosscoder on the same paired tokens, and how far it agrees with the SAE labels
    resume = checkpoint_dir(sm.params.checkpoints, {"crosscoder": sm.params.crosscoder, "seed": seed})
    out_cc = Path(sm.output.crosscoder[0]).parent
    cc, latents = fit_and_save_crosscoder(
        *shard_dirs.values(), sm.params.crosscoder, out_cc, seed, sm.threads, resume, meta
    )
    agreement = crosscoder_sae_agreement(latents, labels, cc, saes["pretrained"], saes["finetuned"])
    summary |= {f"crosscoder_{k}": v for k, v in agreement.items()}

    write_parquet(labels, sm.output.table, meta)
    write_json({**meta, **summary}, sm.output.summary)
    clear_checkpoints(resume)
