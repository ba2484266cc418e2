from pathlib import Path

from layershift.analysis.similarity import layer_similarity
from layershift.analysis.similarity_interval import BootstrapSettings
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.study.targets import comparison_kind

with script_context(snakemake) as sm:
    w = sm.wildcards
    reference, compared = (Path(path).parent for path in sm.input.means)
    bootstrap = BootstrapSettings(sm.params.bootstrap, sm.params.interval, sm.params.seed, sm.threads)
    table = layer_similarity(reference, compared, w.model, w.dataset, bootstrap)
    kind = comparison_kind(w.reference, w.compared)
    table.insert(2, "reference", w.reference)
    table.insert(3, "compared", w.compared)
    table.insert(4, "comparison", kind)
    meta = {"model": w.model, "dataset": w.dataset, "reference": w.reference, "compared": w.compared}
    write_parquet(table, sm.output[0], meta)
