from layershift.analysis.replicates import similarity_over_replicates
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.report.tables import concat_parquet
from layershift.study.targets import SIMILARITY_MEASURES

with script_context(snakemake) as sm:
    table = concat_parquet(sm.input.comparisons, sm.output.table)
    split_half = concat_parquet(sm.input.split_half, None)
    # the split-half floor is a cosine of mean sentence vectors: it stands beside that measure's rows
    measures = [*SIMILARITY_MEASURES, "cosine_of_sentence_means"]
    replicates = similarity_over_replicates(table, measures, sm.params.interval, split_half)
    write_parquet(replicates, sm.output.replicates)
