from pathlib import Path

from layershift.core.io import write_json
from layershift.core.runtime import script_context
from layershift.data.prepare import load_label_names, load_split
from layershift.models.evaluate import classification_report
from layershift.models.sources import pointer_dir

with script_context(snakemake) as sm:
    report = classification_report(
        pretrained_dir=pointer_dir(sm.input.pretrained),
        finetuned_dir=Path(sm.input.finetuned).parent,
        train_df=load_split(sm.input.train),
        test_df=load_split(sm.input.test),
        label_names=load_label_names(sm.input.card),
        seed=sm.params.seed,
        max_length=sm.params.finetune["max_length"],
        threads=sm.threads,
    )
    w = sm.wildcards
    write_json({"model": w.model, "dataset": w.dataset, "run": w.stage, **report}, sm.output[0])
