from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.report.tables import diff_columns

with script_context(snakemake) as sm:
    write_parquet(diff_columns(sm.input).sort_values(["model", "dataset", "layer"]), sm.output[0])
