"""SAE settings search: reproducibility across seeds vs explained variance vs cost, per layer.

The command-line face of :func:`layershift.analysis.sweep.sweep` (the same code the workflow's ``sae_sweep`` rule runs):
for each shard directory and each grid point (a partial ``sae:`` section over ``DEFAULTS``), train one SAE per
seed with the study's trainer and hold-out, and append one row per point to a CSV: held-out explained
variance (worse seed), L0, dead fraction, CPU seconds per SAE, the median Hungarian-matched decoder cosine of
the two seeds' live features, the share above the random-matching 99th percentile and that percentile.

Usage::

    PYTHONPATH=src python bench/sae_settings_search.py --grid grid.json --out bench/results/sae_settings_search.csv \
        results/activations/minilm-l6/movies/pretrained/tokens/layer6

``--rows-per-group`` re-cuts shards first (the tables in bench/results/ were taken when the hold-out was still
chosen by row groups; it is by rows now, see ``layershift.data.shards.holdout_rows``). Their column names are the
script's earlier ones: ``ev`` = explained_variance, ``median_cos`` = median_matched_cosine,
``share_above_p99`` = share_above_chance, ``chance_p99`` = chance_cosine_p99.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from layershift.analysis.sweep import sweep
from layershift.data.shards import ShardReader, ShardWriter

DEFAULTS = {
    "architecture": "relu",
    "d_sae": 512,
    "l1_coefficient": 1e-3,
    "k": 32,
    "lr": 1e-3,
    "epochs": 5,
    "batch_size": 128,
    "normalize_activations": "none",
}


def regroup(shard_dir: str | Path, out_dir: str | Path, rows_per_group: int) -> Path:
    """Copy a layer's shards into ``out_dir`` with ``rows_per_group`` rows per row group (what
    ``activations.rows_per_group`` would have written); held-out row groups are then that fine."""
    reader = ShardReader(shard_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        return out_dir
    meta = {k: v for k, v in reader.metadata.items() if k not in ("dtype", "d_model")}
    dtype = reader.metadata.get("dtype", "float16")
    with ShardWriter(out_dir, reader.d_model, dtype, rows_per_group, metadata=meta) as writer:
        for table in reader.iter_tables():
            acts = table.column("activation").combine_chunks()
            acts = acts.flatten().to_numpy(zero_copy_only=False).reshape(-1, reader.d_model)
            writer.append(
                table.column("sentence_id").to_numpy(),
                table.column("position").to_numpy(),
                table.column("token_id").to_numpy(),
                table.column("token").to_pylist(),
                acts,
            )
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shard_dirs", nargs="+")
    ap.add_argument("--grid", required=True, help="JSON file: a list of setting dicts (keys of DEFAULTS)")
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 1))
    ap.add_argument("--holdout-fraction", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows-per-group", type=int, default=0, help="regroup shards first (0: as written)")
    ap.add_argument("--scratch", default="/tmp/sae_settings_search", help="where regrouped shards go")
    ap.add_argument("--out", required=True, help="CSV, appended to if it exists")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = json.loads(Path(args.grid).read_text())
    out = Path(args.out)
    for shard_dir in args.shard_dirs:
        if args.rows_per_group:
            name = "_".join(Path(shard_dir).resolve().parts[-5:])
            shard_dir = regroup(
                shard_dir, Path(args.scratch) / f"{name}_rpg{args.rows_per_group}", args.rows_per_group
            )
        for point in grid:
            base = {**DEFAULTS, "holdout_fraction": args.holdout_fraction}
            frame = sweep(shard_dir, base, [point], tuple(args.seeds), args.seeds[0], args.threads)
            frame.insert(0, "shard_dir", str(shard_dir))
            frame.to_csv(out, mode="a", header=not out.exists(), index=False)
            cols = ["shard_dir", "setting", "explained_variance", "l0", "dead_fraction"]
            cols += [
                "median_matched_cosine",
                "share_above_chance",
                "chance_cosine_p99",
                "cpu_seconds_per_sae",
            ]
            print(frame[cols].to_string(index=False, header=False), flush=True)


if __name__ == "__main__":
    main()
