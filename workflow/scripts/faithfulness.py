from pathlib import Path

from layershift.analysis.faithfulness import FaithfulnessSettings, run_faithfulness
from layershift.core.io import write_parquet
from layershift.core.runtime import script_context
from layershift.data.prepare import load_label_names, load_split
from layershift.models.sources import pointer_dir
from layershift.study.schema import from_section
from layershift.study.targets import PRETRAINED_RUN, stage_of

with script_context(snakemake) as sm:
    w, p = sm.wildcards, sm.params
    stage = stage_of(w.stage)
    model_dir = pointer_dir(sm.input.model) if w.stage == PRETRAINED_RUN else Path(sm.input.model).parent
    settings = from_section(FaithfulnessSettings, p.faithfulness, max_length=p.max_length, seed=p.seed)
    sae_dirs = [(layer, Path(path).parent) for layer, path in zip(p.layers, sm.input.saes, strict=True)]
    tables = run_faithfulness(
        stage,
        model_dir,
        load_split(sm.input.train),
        load_split(sm.input.test),
        len(load_label_names(sm.input.card)),
        sae_dirs,
        settings,
    )
    meta = {"model": w.model, "dataset": w.dataset, "stage": stage, "run": w.stage}
    outputs = (sm.output.fidelity, sm.output.effects, sm.output.profiles, sm.output.sparse_probing)
    for table, out in zip(tables, outputs, strict=True):
        for position, (key, value) in enumerate(meta.items()):
            table.insert(position, key, value)
        write_parquet(table, out, meta)
