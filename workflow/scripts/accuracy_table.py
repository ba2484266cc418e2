from layershift.tables import accuracy_table
from layershift.runtime import script_context

with script_context(snakemake) as sm:
    accuracy_table(sm.input, sm.output[0])
