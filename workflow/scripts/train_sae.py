from pathlib import Path

from layershift.config import sae_settings
from layershift.io import write_json
from layershift.runtime import checkpoint_dir, clear_checkpoints, script_context
from layershift.sae import save_sae, train_sae_on_shards
from layershift.shards import ShardReader

with script_context(snakemake) as sm:
    w, seed = sm.wildcards, sm.params.seed
    shard_dir = f"{sm.input.tokens}/layer{w.layer}"
    meta = {"model": w.model, "dataset": w.dataset, "stage": w.stage, "layer": int(w.layer)}
    sae_cfg, train_cfg = sae_settings(sm.config, ShardReader(shard_dir).d_model, seed, sm.threads, meta)
    resume = checkpoint_dir(sm.params.checkpoints, {"sae": sm.params.sae, "seed": seed})
    sae, metrics = train_sae_on_shards(shard_dir, sae_cfg, train_cfg, checkpoint_dir=resume)
    out_dir = Path(sm.output[0]).parent
    save_sae(sae, out_dir)
    write_json({**meta, "seed": seed, **metrics}, out_dir / "metrics.json")
    clear_checkpoints(resume)
