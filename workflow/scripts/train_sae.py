from pathlib import Path

from layershift.io import write_json
from layershift.runtime import script_context
from layershift.sae import sae_configs, save_sae, train_sae_on_shards

with script_context(snakemake) as sm:
    w = sm.wildcards
    meta = {"model": w.model, "dataset": w.dataset, "stage": w.stage, "layer": int(w.layer)}
    out_dirs = [Path(sm.output.sae[0]).parent] + [Path(p).parent for p in sm.output.null[:: len(sm.output.sae)]]
    for seed, out_dir in zip([sm.params.seed, *sm.params.null_seeds], out_dirs, strict=True):
        sae_cfg, train_cfg = sae_configs(sm.params.sae, d_in=None, seed=seed, threads=sm.threads, metadata=meta)
        sae, metrics = train_sae_on_shards(
            f"{sm.input.tokens}/layer{w.layer}", sae_cfg, train_cfg, checkpoint_dir=f"{sm.params.checkpoints}/seed{seed}"
        )
        save_sae(sae, out_dir)
        write_json({**meta, "seed": seed, **metrics}, out_dir / "metrics.json")
