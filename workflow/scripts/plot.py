from layershift.plots import draw
from layershift.runtime import script_context

with script_context(snakemake) as sm:
    params = dict(sm.params.items())
    dpi, palette = params.pop("dpi"), params.pop("palette")
    draw(sm.rule, sm.input, dict(sm.wildcards.items()), params, sm.output.png, dpi, palette)
