from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.verdict_curve import CurveLayer, verdict_curve
from layershift.core.io import read_json, write_parquet
from layershift.core.runtime import script_context
from layershift.data.shards import layer_shard_dir
from layershift.study.schema import from_section
from layershift.study.targets import STAGES

with script_context(snakemake) as sm:
    w, p = sm.wildcards, sm.params
    diff_cfg = from_section(DiffConfig, p.diff, seed=p.seed)
    layer = CurveLayer(
        shard_dirs={
            stage: layer_shard_dir(tokens, w.layer)
            for stage, tokens in zip(STAGES, sm.input.tokens, strict=True)
        },
        sae_section=p.sae,
        diff_cfg=diff_cfg,
        stage_seeds=p.stage_seeds,
        null_seeds=p.null_seeds,
        split_seed=p.seed,
        layer=int(w.layer),
        metadata={"model": w.model, "dataset": w.dataset},
        threads=sm.threads,
    )
    curve = verdict_curve(layer, p.fractions, read_json(sm.input.study_diff), checkpoint_root=p.checkpoints)
    # the verdict's bar, for the figure
    bar = {"min_stable_share": diff_cfg.min_stable_share, "min_stable_features": diff_cfg.min_stable_features}
    write_parquet(curve, sm.output[0], {"model": w.model, "dataset": w.dataset, "layer": int(w.layer), **bar})
