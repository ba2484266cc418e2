from pathlib import Path

from layershift.config import sae_settings
from layershift.io import write_json
from layershift.runtime import checkpoint_dir, clear_checkpoints, script_context
from layershift.sae import save_sae, train_sae_on_shards
from layershift.shards import ShardReader

with script_context(snakemake) as sm:
    w, out = sm.wildcards, sm.output
    shards = {
        stage: f"{tokens}/layer{w.layer}"
        for stage, tokens in zip(("pretrained", "finetuned"), sm.input.tokens, strict=True)
    }
    # (stage, seed, output directory): each stage's SAE, then the seed-null SAEs of the pretrained stage
    runs = [
        (stage, sm.params.stage_seeds[stage], Path(out.sae[i * 3]).parent)
        for i, stage in enumerate(("pretrained", "finetuned"))
    ]
    runs += [
        ("pretrained", seed, Path(out.null[i * 3]).parent) for i, seed in enumerate(sm.params.null_seeds)
    ]
    for stage, seed, out_dir in runs:
        meta = {"model": w.model, "dataset": w.dataset, "stage": stage, "layer": int(w.layer)}
        sae_cfg, train_cfg = sae_settings(
            sm.config, ShardReader(shards[stage]).d_model, seed, sm.threads, meta
        )
        resume = checkpoint_dir(f"{sm.params.checkpoints}/{stage}/seed{seed}", {"sae": sm.params.sae})
        sae, metrics = train_sae_on_shards(shards[stage], sae_cfg, train_cfg, checkpoint_dir=resume)
        save_sae(sae, out_dir)
        write_json({**meta, "seed": seed, **metrics}, out_dir / "metrics.json")
        clear_checkpoints(resume)
