from pathlib import Path

from layershift.core.io import atomic_path
from layershift.core.runtime import script_context
from layershift.data.prepare import load_label_names, load_split
from layershift.models.finetune import FinetuneConfig, finetune
from layershift.models.sources import pointer_dir
from layershift.study.schema import from_section

with script_context(snakemake) as sm:
    cfg = from_section(FinetuneConfig, sm.params.finetune, seed=sm.params.seed, threads=sm.threads)
    out_dir = Path(sm.output[0]).parent
    log = finetune(
        model_dir=pointer_dir(sm.input.pretrained),
        train_df=load_split(sm.input.train),
        val_df=load_split(sm.input.validation),
        label_names=load_label_names(sm.input.card),
        cfg=cfg,
        out_dir=out_dir,
        checkpoint_dir=sm.params.checkpoints,
    )
    with atomic_path(out_dir / "training_log.csv") as tmp:
        log.to_csv(tmp, index=False)
