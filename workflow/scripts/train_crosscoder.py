from pathlib import Path

from layershift.crosscoder import (
    CrosscoderConfig,
    CrosscoderTrainConfig,
    latent_table,
    save_crosscoder,
    train_crosscoder_on_shards,
)
from layershift.diff import open_paired_shards, zip_paired
from layershift.io import write_json, write_parquet
from layershift.runtime import checkpoint_dir, clear_checkpoints, script_context
from layershift.shards import ShardReader

with script_context(snakemake) as sm:
    w, params, seed = sm.wildcards, sm.params.crosscoder, sm.params.seed
    dirs = [f"{tokens}/layer{w.layer}" for tokens in sm.input.tokens]
    meta = {"model": w.model, "dataset": w.dataset, "layer": int(w.layer), "seed": seed}
    cfg = CrosscoderConfig(
        d_in=ShardReader(dirs[0]).d_model,
        d_latent=params["d_latent"],
        architecture=params["architecture"],
        k=params["k"],
        l1_coefficient=params["l1_coefficient"],
        n_shared=params["n_shared"],
        hook_name=f"hidden_states.{w.layer}",
        metadata=meta,
    )
    train = CrosscoderTrainConfig(
        lr=params["lr"],
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        seed=seed,
        threads=sm.threads,
    )
    resume = checkpoint_dir(sm.params.checkpoints, {"crosscoder": params, "seed": seed})
    cc, metrics = train_crosscoder_on_shards(*dirs, cfg, train, checkpoint_dir=resume)
    out_dir = Path(sm.output[0]).parent
    save_crosscoder(cc, out_dir)
    write_json({**meta, **metrics}, out_dir / "metrics.json")
    write_parquet(
        latent_table(cc, zip_paired(*open_paired_shards(*dirs), 4096)), out_dir / "latents.parquet", meta
    )
    clear_checkpoints(resume)
