from glob import glob

from layershift.core.runtime import script_context
from layershift.report.html import build_report

with script_context(snakemake) as sm:
    groups = {
        key: list(sm.input[key]) if not isinstance(sm.input[key], str) else [sm.input[key]]
        for key in sm.input.keys()  # noqa: SIM118 - a Namedlist iterates its values, not its keys
    }
    groups["benchmarks"] = sorted(glob("results/benchmarks/**/*.tsv", recursive=True))
    build_report(sm.output[0], sm.params.study, sm.params.config_file, groups)
