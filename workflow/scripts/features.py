from pathlib import Path

from layershift.data import load_split
from layershift.features import feature_statistics, top_activating_tokens
from layershift.io import write_parquet
from layershift.models import pointer_dir
from layershift.probes import probe_table, token_kind_shares
from layershift.runtime import script_context
from layershift.sae import load_sae

with script_context(snakemake) as sm:
    w, params = sm.wildcards, sm.params.features
    layer = int(w.layer)
    stages = ("pretrained", "finetuned")
    saes, top = {}, {}
    outputs = zip(
        stages, sm.input.sae, sm.input.tokens, sm.output.features, sm.output.top_tokens, strict=True
    )
    for stage, sae_file, tokens, out, out_tokens in outputs:
        shard_dir = f"{tokens}/layer{layer}"
        saes[stage] = load_sae(Path(sae_file).parent)
        stats = feature_statistics(saes[stage], shard_dir)
        top[stage] = stats.nsmallest(params["top_k"], "rank")["feature"].astype(int).tolist()
        tokens_df = top_activating_tokens(saes[stage], shard_dir, top[stage], n_tokens=params["top_tokens"])
        shares = token_kind_shares(saes[stage], shard_dir, top[stage])
        meta = {"model": w.model, "dataset": w.dataset, "stage": stage, "layer": layer}
        write_parquet(stats.merge(shares, on="feature", how="left"), out, meta)
        write_parquet(tokens_df.assign(stage=stage), out_tokens, meta)
    model_dirs = {"pretrained": pointer_dir(sm.input.models[0]), "finetuned": Path(sm.input.models[1]).parent}
    sentences = sm.params.probes or load_split(sm.input.test)["text"].head(3).tolist()  # no probes configured
    probes = probe_table(model_dirs, saes, top, sentences, layer, sm.params.max_length)
    write_parquet(probes, sm.output.probes, {"model": w.model, "dataset": w.dataset, "layer": layer})
