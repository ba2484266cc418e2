from pathlib import Path

from layershift.analysis.crosscoder_latents import fit_and_save_crosscoder
from layershift.core.checkpoints import remove_checkpoints
from layershift.core.runtime import script_context
from layershift.data.shards import ShardReader, layer_shard_dir
from layershift.dictionaries.crosscoder.config import CrosscoderConfig, CrosscoderTrainConfig
from layershift.study.schema import from_section

with script_context(snakemake) as sm:
    w, p = sm.wildcards, sm.params
    dir_a, dir_b = (layer_shard_dir(tokens, w.layer) for tokens in sm.input.tokens)
    meta = {"model": w.model, "dataset": w.dataset, "layer": int(w.layer), "seed": p.seed}
    cfg = from_section(CrosscoderConfig, p.crosscoder, d_in=ShardReader(dir_a).d_model, metadata=meta)
    train = from_section(
        CrosscoderTrainConfig,
        p.crosscoder,
        seed=p.seed,
        split_seed=p.seed,
        holdout_fraction=p.holdout_fraction,
        threads=sm.threads,
    )
    # the checkpoint records the settings it was made with: one made with others is ignored and replaced
    fit_and_save_crosscoder(dir_a, dir_b, cfg, train, Path(sm.output[0]).parent, p.checkpoints)
    remove_checkpoints(p.checkpoints)
