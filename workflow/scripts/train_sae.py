from pathlib import Path

from layershift.core.checkpoints import remove_checkpoints
from layershift.core.io import write_json
from layershift.core.runtime import script_context
from layershift.data.shards import ShardReader, layer_shard_dir
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.files import save_sae
from layershift.dictionaries.sae.train import train_sae_on_shards
from layershift.study.schema import from_section
from layershift.study.targets import stage_of

with script_context(snakemake) as sm:
    w, out, section = sm.wildcards, sm.output, sm.params.sae
    shards = layer_shard_dir(sm.input.tokens, w.layer)
    d_in = ShardReader(shards).d_model
    # (seed, output directory): the run's own SAE, then its seed nulls (three files per SAE)
    out_dirs = [Path(out.sae[0]).parent] + [Path(out.null[i * 3]).parent for i in range(len(out.null) // 3)]
    for seed, out_dir in zip(sm.params.seeds, out_dirs, strict=True):
        meta = {"model": w.model, "dataset": w.dataset, "stage": stage_of(w.stage), "run": w.stage}
        meta["layer"] = int(w.layer)
        sae_cfg = from_section(
            SAEConfig,
            section,
            d_in=d_in,
            hook_name=f"hidden_states.{w.layer}",
            metadata=meta | {"seed": seed},
        )
        train_cfg = from_section(
            SAETrainConfig, section, seed=seed, split_seed=sm.params.split_seed, threads=sm.threads
        )
        # the checkpoint records the settings it was made with: one made with others is ignored and replaced
        resume = f"{sm.params.checkpoints}/seed{seed}"
        sae, metrics = train_sae_on_shards(shards, sae_cfg, train_cfg, checkpoint_dir=resume)
        save_sae(sae, out_dir)
        write_json({**meta, "seed": seed, **metrics}, out_dir / "metrics.json")
        remove_checkpoints(resume)
