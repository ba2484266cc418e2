from pathlib import Path

from layershift.analysis.similarity import layer_similarity
from layershift.analysis.similarity_interval import BootstrapSettings
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context

with script_context(snakemake) as sm:
    w = sm.wildcards
    pre, ft = Path(sm.input.pretrained[0]).parent, Path(sm.input.finetuned[0]).parent
    bootstrap = BootstrapSettings(sm.params.bootstrap, sm.params.interval, sm.params.seed, sm.threads)
    table = layer_similarity(pre, ft, w.model, w.dataset, bootstrap)
    write_parquet(table, sm.output[0], {"model": w.model, "dataset": w.dataset})
