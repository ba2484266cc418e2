from pathlib import Path

from layershift.core.runtime import script_context
from layershift.data.prepare import load_split
from layershift.models.extract import ExtractConfig, extract_activations
from layershift.models.sources import pointer_dir
from layershift.study.schema import from_section
from layershift.study.targets import PRETRAINED_RUN, stage_of

with script_context(snakemake) as sm:
    w, act = sm.wildcards, sm.params.activations
    model_dir = pointer_dir(sm.input.model) if w.stage == PRETRAINED_RUN else Path(sm.input.model).parent
    cfg = from_section(
        ExtractConfig,
        act,
        max_length=sm.params.max_length,
        token_sample=sm.params.token_sample,
        seed=sm.params.seed,
        threads=sm.threads,
    )
    texts = load_split(sm.input.split)["text"].tolist()
    meta = {"model": w.model, "dataset": w.dataset, "stage": stage_of(w.stage), "run": w.stage}
    summary = extract_activations(
        model_dir, texts, sm.params.sae_layers, Path(sm.output.means).parent, cfg, meta
    )
    print(summary)
