from layershift.analysis.sweep import sweep
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.data.shards import layer_shard_dir
from layershift.study.targets import stage_of

with script_context(snakemake) as sm:
    w, p = sm.wildcards, sm.params
    shards = layer_shard_dir(sm.input.tokens, w.layer)
    study_saes = {int(seed): directory for seed, directory in p.study_saes}
    table = sweep(shards, p.sae, p.grid, p.seeds, p.split_seed, sm.threads, study_saes=study_saes)
    meta = {"model": w.model, "dataset": w.dataset, "stage": stage_of(w.stage), "layer": int(w.layer)}
    write_parquet(table.assign(**meta), sm.output[0], meta)
