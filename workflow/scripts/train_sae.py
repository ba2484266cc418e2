from pathlib import Path

from layershift.core.checkpoints import remove_checkpoints
from layershift.core.io import write_json
from layershift.core.runtime import script_context
from layershift.data.shards import ShardReader, layer_shard_dir
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.files import save_sae
from layershift.dictionaries.sae.train import train_sae_on_shards
from layershift.study.schema import from_section
from layershift.study.targets import STAGES

with script_context(snakemake) as sm:
    w, out, section = sm.wildcards, sm.output, sm.params.sae
    shards = {
        stage: layer_shard_dir(tokens, w.layer) for stage, tokens in zip(STAGES, sm.input.tokens, strict=True)
    }
    # (stage, seed, output directory): each stage's SAE, then the seed-null SAEs of both stages
    runs = [
        (stage, sm.params.stage_seeds[stage], Path(out.sae[i * 3]).parent) for i, stage in enumerate(shards)
    ]
    runs += [
        (stage, seed, Path(out.null[i * 3]).parent) for i, (stage, seed) in enumerate(sm.params.null_runs)
    ]
    for stage, seed, out_dir in runs:
        meta = {"model": w.model, "dataset": w.dataset, "stage": stage, "layer": int(w.layer)}
        d_in = ShardReader(shards[stage]).d_model
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
        resume = f"{sm.params.checkpoints}/{stage}/seed{seed}"
        sae, metrics = train_sae_on_shards(shards[stage], sae_cfg, train_cfg, checkpoint_dir=resume)
        save_sae(sae, out_dir)
        write_json({**meta, "seed": seed, **metrics}, out_dir / "metrics.json")
        remove_checkpoints(resume)
