from layershift.analysis.replicates import accuracy_over_replicates
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.report.tables import accuracy_table

with script_context(snakemake) as sm:
    table = accuracy_table(sm.input, sm.output.table)
    write_parquet(accuracy_over_replicates(table, sm.params.interval), sm.output.replicates)
