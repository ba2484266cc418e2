from layershift.core.runtime import script_context
from layershift.report.tables import accuracy_table

with script_context(snakemake) as sm:
    accuracy_table(sm.input, sm.output[0])
