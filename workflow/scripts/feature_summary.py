from layershift.core.runtime import script_context
from layershift.report.tables import write_feature_summary

with script_context(snakemake) as sm:
    write_feature_summary(sm.input.features, sm.input.diffs, sm.output.table, sm.output.markdown)
