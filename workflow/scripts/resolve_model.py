from pathlib import Path

from layershift.core.io import write_json
from layershift.core.runtime import script_context
from layershift.models.sources import check_layers, check_max_length, resolve_pretrained

with script_context(snakemake, offline=False) as sm:
    spec = sm.params.model
    imported = str(Path(sm.input[0]).parent) if sm.input else None
    info = resolve_pretrained(spec["source"], spec.get("revision"), imported)
    # read from the config, not a param: the check changes no output, so its layers must not trigger a rerun
    layers = sm.config["models"][sm.wildcards.model]["sae_layers"]
    check_layers(sm.wildcards.model, layers, info["num_hidden_layers"])
    check_max_length(sm.wildcards.model, sm.config["finetune"]["max_length"], info["path"])
    write_json({"model": sm.wildcards.model, **info}, sm.output[0])
