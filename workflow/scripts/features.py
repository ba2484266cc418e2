from pathlib import Path

from layershift.analysis.features import feature_statistics, top_activating_tokens
from layershift.core.io import read_table, write_parquet
from layershift.core.runtime import script_context
from layershift.data.shards import layer_shard_dir
from layershift.dictionaries.sae.files import load_sae
from layershift.models.probes import probe_table, token_kind_shares
from layershift.study.targets import STAGES

with script_context(snakemake) as sm:
    w, params = sm.wildcards, sm.params.features
    layer = int(w.layer)
    saes, top = {}, {}
    outputs = zip(
        STAGES, sm.input.sae, sm.input.tokens, sm.output.features, sm.output.top_tokens, strict=True
    )
    for stage, sae_file, tokens, out, out_tokens in outputs:
        shard_dir = layer_shard_dir(tokens, layer)
        saes[stage] = load_sae(Path(sae_file).parent)
        stats = feature_statistics(saes[stage], shard_dir)
        top[stage] = stats.nsmallest(params["top_k"], "rank")["feature"].astype(int).tolist()
        tokens_df = top_activating_tokens(saes[stage], shard_dir, top[stage], n_tokens=params["top_tokens"])
        shares = token_kind_shares(saes[stage], shard_dir, top[stage])
        meta = {"model": w.model, "dataset": w.dataset, "stage": stage, "layer": layer}
        write_parquet(stats.merge(shares, on="feature", how="left"), out, meta)
        write_parquet(tokens_df.assign(stage=stage), out_tokens, meta)
    probes = probe_table(read_table(sm.input.probe_states), saes, top, layer)
    write_parquet(
        probes, sm.output.probe_activations, {"model": w.model, "dataset": w.dataset, "layer": layer}
    )
