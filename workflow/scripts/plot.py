from layershift.core.runtime import script_context
from layershift.report.figures import draw

with script_context(snakemake) as sm:
    params = dict(sm.params.items())
    dpi, palette = params.pop("dpi"), params.pop("palette")
    draw(sm.rule, sm.input, dict(sm.wildcards.items()), params, sm.output.png, dpi, palette)
