from layershift.core.runtime import script_context
from layershift.report.tables import concat_parquet

with script_context(snakemake) as sm:
    concat_parquet(sm.input.fidelity, sm.output.fidelity)
    concat_parquet(sm.input.effects, sm.output.effects)
    concat_parquet(sm.input.sparse_probing, sm.output.sparse_probing)
