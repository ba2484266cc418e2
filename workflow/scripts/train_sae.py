from pathlib import Path

from layershift.config import sae_settings
from layershift.io import write_json
from layershift.runtime import script_context
from layershift.sae import save_sae, train_sae_on_shards
from layershift.shards import ShardReader

with script_context(snakemake) as sm:
    w = sm.wildcards
    shard_dir = f"{sm.input.tokens}/layer{w.layer}"
    meta = {"model": w.model, "dataset": w.dataset, "stage": w.stage, "layer": int(w.layer)}
    out_dirs = [Path(sm.output.sae[0]).parent] + [Path(p).parent for p in sm.output.null[:: len(sm.output.sae)]]
    for seed, out_dir in zip([sm.params.seed, *sm.params.null_seeds], out_dirs, strict=True):
        sae_cfg, train_cfg = sae_settings(sm.config, ShardReader(shard_dir).d_model, seed, sm.threads, meta)
        sae, metrics = train_sae_on_shards(shard_dir, sae_cfg, train_cfg, checkpoint_dir=f"{sm.params.checkpoints}/seed{seed}")
        save_sae(sae, out_dir)
        write_json({**meta, "seed": seed, **metrics}, out_dir / "metrics.json")
