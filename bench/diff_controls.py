"""The feature diff's falsification control on a finished study: never-trained SAEs through the same diff.

For each model x dataset x SAE layer of the study (or those named), four SAEs with the study's ``sae:``
settings are built and *not trained*: each starts exactly as training would (seeded random weights, the
decoder bias at the data mean of the first rows), with the study's seed pairing (pretrained s0, its null
s1; fine-tuned s1, its null s0). They go through ``layershift.analysis.diff.pipeline.diff_saes`` on the layer's real paired
shards with the study's ``diff:`` settings, the same code path as the ``diff`` rule. A diff that measured
learned features must call these layers inconclusive and nothing lost; the study's own diff summaries sit
beside them in the printed table.

    PYTHONPATH=src python bench/diff_controls.py [--config config.yaml] [--layers last] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from layershift.analysis.diff.pipeline import diff_saes
from layershift.analysis.diff.settings import DiffConfig
from layershift.config import load_config
from layershift.core.io import read_json, write_json
from layershift.data.shards import ShardReader, layer_shard_dir, paired_batches
from layershift.dictionaries.sae.config import SAEConfig
from layershift.dictionaries.sae.model import SAE
from layershift.study import targets
from layershift.study.schema import from_section

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("verdict", "stable_fraction_pretrained", "stable_fraction_finetuned", "retained_fraction")
KEYS += ("lost_fraction", "new_fraction", "null_median_cosine_pretrained", "null_median_cosine_finetuned")


def untrained_sae(config: dict, shard_dir: str, seed: int) -> SAE:
    """An SAE as training would start it: seeded weights, ``b_dec`` at the mean of the first rows."""
    reader = ShardReader(shard_dir)
    sae = SAE(from_section(SAEConfig, config["sae"], d_in=reader.d_model), seed=seed)
    head = [batch for _, batch in zip(range(4), reader.iter_batches(4096), strict=False)]
    sae.initialize_from_data(head, 16384)
    return sae


def control(config: dict, model: str, dataset: str, layer: int) -> dict:
    tokens = {  # the pretrained run and the first replicate
        stage: f"{targets.ACTIVATIONS.format(model=model, dataset=dataset, stage=run)}/tokens"
        for stage, run in zip(targets.STAGES, targets.primary_runs(config), strict=True)
    }
    shards = {stage: layer_shard_dir(path, layer) for stage, path in tokens.items()}
    seeds = targets.stage_seeds(config)
    saes = {stage: untrained_sae(config, shards[stage], seeds[stage]) for stage in targets.STAGES}
    seed_nulls = [
        untrained_sae(config, shards[stage], targets.null_seeds(config, stage)[0]) for stage in targets.STAGES
    ]
    cfg = from_section(DiffConfig, config["diff"], seed=config["seed"])
    pairs = paired_batches(shards["pretrained"], shards["finetuned"])
    _, summary = diff_saes(saes["pretrained"], saes["finetuned"], pairs, cfg, *seed_nulls)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--layers", choices=("all", "last"), default="all")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    rows = []
    for model, dataset, layer in targets.model_layers(config):
        if args.layers == "last" and layer != config["models"][model]["sae_layers"][-1]:
            continue
        summary = control(config, model, dataset, layer)
        study = read_json(
            targets.primary_diff(config, targets.DIFF_SUMMARY, model=model, dataset=dataset, layer=layer)
        )
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "layer": layer,
                "untrained": {k: summary.get(k) for k in KEYS},
                "study": {k: study.get(k) for k in KEYS},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    write_json({"config": args.config, "layers": rows}, Path(args.out) / "diff_controls.json")


if __name__ == "__main__":
    main()
