from pathlib import Path

import pandas as pd

from layershift.crosscoder import crosscoder_sae_agreement, load_crosscoder
from layershift.diff import DiffConfig, diff_saes, paired_shard_batches
from layershift.features import attach_top_tokens
from layershift.io import write_json, write_parquet
from layershift.runtime import script_context
from layershift.sae import load_sae

with script_context(snakemake) as sm:
    w, params = sm.wildcards, sm.params.diff
    shard_dirs = [f"{tokens}/layer{w.layer}" for tokens in sm.input.tokens]
    sae_pre, sae_ft = (load_sae(Path(p).parent) for p in sm.input.sae)
    null = load_sae(Path(sm.input.null[0]).parent) if sm.input.null else None
    cfg = DiffConfig(
        quantile=params["null_quantile"],
        retained_cosine=params["cosine_threshold"],
        retained_correlation=params["correlation_threshold"],
        seed=sm.params.seed,
    )
    labels, summary = diff_saes(
        sae_pre, sae_ft, paired_shard_batches(*shard_dirs, batch_size=4096), cfg, null_sae=null
    )
    labels = attach_top_tokens(
        labels,
        {"pretrained": sae_pre, "finetuned": sae_ft},
        dict(zip(("pretrained", "finetuned"), shard_dirs, strict=True)),
        sm.params.top_tokens,
    )
    cc_dir = Path(sm.input.crosscoder).parent
    agreement = crosscoder_sae_agreement(
        pd.read_parquet(sm.input.crosscoder), labels, load_crosscoder(cc_dir), sae_pre, sae_ft
    )
    summary |= {f"crosscoder_{k}": v for k, v in agreement.items()}
    meta = {"model": w.model, "dataset": w.dataset, "layer": int(w.layer)}
    write_parquet(labels, sm.output.table, meta)
    write_json({**meta, **summary}, sm.output.summary)
