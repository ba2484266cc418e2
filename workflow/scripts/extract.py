from pathlib import Path

from layershift.activations import ExtractConfig, extract_activations
from layershift.config import from_section
from layershift.data import load_split
from layershift.models import pointer_dir
from layershift.runtime import script_context

with script_context(snakemake) as sm:
    w, act = sm.wildcards, sm.params.activations
    model_dir = pointer_dir(sm.input.model) if w.stage == "pretrained" else Path(sm.input.model).parent
    cfg = from_section(
        ExtractConfig,
        act,
        max_length=sm.params.max_length,
        token_sample=sm.params.token_sample,
        seed=sm.params.seed,
        threads=sm.threads,
    )
    texts = load_split(sm.input.split)["text"].tolist()
    meta = {"model": w.model, "dataset": w.dataset, "stage": w.stage}
    summary = extract_activations(
        model_dir, texts, sm.params.sae_layers, Path(sm.output.means).parent, cfg, meta
    )
    print(summary)
