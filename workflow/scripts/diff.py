from pathlib import Path

from layershift.analysis.crosscoder_latents import crosscoder_sae_agreement
from layershift.analysis.diff.pipeline import diff_saes
from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.features import attach_top_tokens
from layershift.core.io import read_table, write_json, write_parquet
from layershift.core.runtime import script_context
from layershift.data.shards import layer_shard_dir, paired_batches
from layershift.dictionaries.crosscoder.files import load_crosscoder
from layershift.dictionaries.sae.files import load_sae
from layershift.study.schema import from_section
from layershift.study.targets import STAGES, comparison_kind


def load_optional(inputs, role):
    """The SAE in the input named ``role``, or None where the rule gave none (no seed nulls)."""
    named = dict(inputs.items())  # a Namedlist's `in` looks at its values, not its names
    return load_sae(Path(named[role]).parent) if role in named else None


with script_context(snakemake) as sm:
    w, p = sm.wildcards, sm.params
    runs = {"reference": w.reference, "compared": w.compared}
    meta = {"model": w.model, "dataset": w.dataset, "layer": int(w.layer), **runs}
    meta["comparison"] = comparison_kind(w.reference, w.compared)
    # the reference side plays the pretrained stage's part in the labels, the compared side the fine-tuned one's
    shard_dirs = {
        stage: layer_shard_dir(tokens, w.layer) for stage, tokens in zip(STAGES, sm.input.tokens, strict=True)
    }
    saes = {stage: load_sae(Path(sm.input[role]).parent) for stage, role in zip(STAGES, runs, strict=True)}
    # each side's first seed null: which features of that side's SAE are stable
    seed_nulls = [load_optional(sm.input, f"{role}_null") for role in runs]

    # SAE matching, calibrated by the seed null; then how far the crosscoder agrees with the labels
    cfg = from_section(DiffConfig, p.diff, seed=p.seed)
    pairs = paired_batches(*shard_dirs.values(), batch_size=4096, memory_cache_mb=cfg.memory_cache_mb)
    labels, summary = diff_saes(saes["pretrained"], saes["finetuned"], pairs, cfg, *seed_nulls)
    labels = attach_top_tokens(labels, saes, shard_dirs, p.top_tokens)
    if sm.input.crosscoder_latents:  # the crosscoder is trained on the primary pair only
        crosscoder = load_crosscoder(Path(sm.input.crosscoder_latents).parent)
        latents = read_table(sm.input.crosscoder_latents)
        agreement = crosscoder_sae_agreement(
            latents, labels, crosscoder, saes["pretrained"], saes["finetuned"]
        )
        summary |= {f"crosscoder_{k}": v for k, v in agreement.items()}

    write_parquet(labels, sm.output.table, meta)
    write_json({**meta, **summary}, sm.output.summary)
