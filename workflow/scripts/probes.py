from pathlib import Path

from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.data.cleaning import clean_text
from layershift.data.prepare import load_split
from layershift.models.probes import probe_states
from layershift.models.sources import pointer_dir

with script_context(snakemake) as sm:
    w = sm.wildcards
    model_dirs = {"pretrained": pointer_dir(sm.input.models[0]), "finetuned": Path(sm.input.models[1]).parent}
    cleaning = sm.config["datasets"][w.dataset].get("cleaning", "paper")  # as the training text was
    probes = [clean_text(sentence, cleaning) for sentence in sm.params.probes]
    sentences = probes or load_split(sm.input.test)["text"].head(3).tolist()  # no probes configured
    states = probe_states(model_dirs, sentences, sm.params.layers, sm.params.max_length)
    write_parquet(states, sm.output[0], {"model": w.model, "dataset": w.dataset, "layers": sm.params.layers})
