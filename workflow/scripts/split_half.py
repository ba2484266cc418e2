from layershift.analysis.replicates import split_half_similarity
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context

with script_context(snakemake) as sm:
    w = sm.wildcards
    table = split_half_similarity(sm.input[0], sm.params.seed)
    table.insert(0, "dataset", w.dataset)
    table.insert(0, "model", w.model)
    write_parquet(table, sm.output[0], {"model": w.model, "dataset": w.dataset})
