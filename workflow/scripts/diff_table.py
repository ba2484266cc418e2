from layershift.analysis.replicates import diff_over_replicates
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.report.tables import diff_columns

with script_context(snakemake) as sm:
    table = diff_columns(sm.input).sort_values(["model", "dataset", "layer"], kind="stable")
    write_parquet(table, sm.output.table)
    write_parquet(diff_over_replicates(table, sm.params.interval), sm.output.replicates)
