from layershift.plots import draw
from layershift.runtime import script_context

with script_context(snakemake) as sm:
    fig = sm.config["figures"]
    draw(
        sm.rule,
        sm.input,
        dict(sm.wildcards.items()),
        dict(sm.params.items()),
        sm.output.png,
        fig["dpi"],
        fig["palette"],
    )
