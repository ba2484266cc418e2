"""SAE settings search: reproducibility across seeds vs explained variance vs cost, per layer (issue #17).

For each shard directory and each grid point, train one SAE per seed with the library's own trainer
(``train_sae_on_shards``, which holds out row groups chosen by the seed, as the study's ``train_sae`` does) and
report, per grid point:

* ``ev`` / ``l0`` / ``dead_fraction``: held-out explained variance, active latents per row, dead latents
  (``evaluate_sae`` on each seed's held-out groups; min over seeds for ev, mean for l0 / dead);
* ``median_cos``: median Hungarian-matched decoder cosine between the two seeds' live features (one-to-one,
  maximising sum max(cos, 0)^2, as ``layershift.diff.match_features``); features of the larger side left
  unmatched count as cosine 0;
* ``chance_p99``: 99th percentile of matched cosines of random Gaussian dictionaries with the same live shapes,
  matched the same way (``n_null`` draws pooled);
* ``share_above_p99``: share of seed-0 live features whose matched cosine exceeds ``chance_p99``;
* ``s_per_sae`` / ``cpu_s_per_sae``: wall and process-CPU seconds of ``train_sae_on_shards`` per SAE (one torch
  thread unless told; on a shared machine the CPU seconds are the comparable cost).

Usage::

    PYTHONPATH=src python bench/sae_settings_search.py --grid bench/sae_grid.json \
        --out bench/results/sae_settings_search.csv results/activations/minilm-l6/movies/pretrained/tokens/layer6

A shard directory is a layer's ``tokens/layer{L}`` folder written by ``extract``. The core is :func:`sweep`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from layershift.sae import SAEConfig, TrainConfig, train_sae_on_shards
from layershift.shards import ShardReader, ShardWriter

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


def matched_cosines(dec_a: np.ndarray, dec_b: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Per row of ``dec_a``: cosine with its one-to-one partner in ``dec_b`` (0 when left unmatched)."""
    a = dec_a / np.linalg.norm(dec_a, axis=1, keepdims=True).clip(1e-12)
    b = dec_b / np.linalg.norm(dec_b, axis=1, keepdims=True).clip(1e-12)
    cos = a @ b.T
    rows, cols = linear_sum_assignment(np.clip(cos, 0.0, None) ** power, maximize=True)
    out = np.zeros(len(a))
    out[rows] = cos[rows, cols]
    return out


def random_matching_p99(n_a: int, n_b: int, d: int, n_null: int = 3, seed: int = 0) -> float:
    """99th percentile of matched cosines between random Gaussian dictionaries of shapes [n_a, d], [n_b, d]."""
    rng = np.random.default_rng(seed)
    pooled = [
        matched_cosines(rng.standard_normal((n_a, d)), rng.standard_normal((n_b, d))) for _ in range(n_null)
    ]
    return float(np.quantile(np.concatenate(pooled), 0.99))


def firing(sae, reader: ShardReader) -> np.ndarray:
    """Firing rate per latent over all rows of ``reader``."""
    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    n = 0
    with torch.no_grad():
        for batch in reader.iter_batches(4096):
            x = sae.normalize(torch.as_tensor(np.asarray(batch, dtype=np.float32)))
            counts += (sae.encode_normalized(x) > 0).double().sum(0)
            n += len(batch)
    return (counts / max(n, 1)).numpy()


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


def train_one(shard_dir: str | Path, point: dict, seed: int, holdout_fraction: float, threads: int | None):
    p = {**DEFAULTS, **point}
    reader = ShardReader(shard_dir)
    cfg = SAEConfig(
        d_in=reader.d_model,
        d_sae=int(p["d_sae"]),
        architecture=p["architecture"],
        k=int(p["k"]),
        l1_coefficient=float(p["l1_coefficient"]),
        normalize_activations=p["normalize_activations"],
    )
    train = TrainConfig(
        lr=float(p["lr"]),
        epochs=int(p["epochs"]),
        batch_size=int(p["batch_size"]),
        seed=seed,
        holdout_fraction=holdout_fraction,
        threads=threads,
        device="cpu",
    )
    t0, c0 = time.perf_counter(), time.process_time()
    sae, metrics = train_sae_on_shards(shard_dir, cfg, train, progress=False)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["cpu_seconds"] = time.process_time() - c0  # the honest cost on a shared machine (one thread)
    metrics["firing"] = firing(sae, reader)
    metrics["decoder"] = sae.W_dec.detach().cpu().numpy().astype(np.float64)
    return metrics


def evaluate_point(runs: list[dict], min_firing_rate: float = 0.0, n_null: int = 3) -> dict:
    """Reproducibility of seed 0 against seed 1 plus the per-seed quality numbers."""
    a, b = runs[0], runs[1]
    live_a = a["firing"] > min_firing_rate
    live_b = b["firing"] > min_firing_rate
    dec_a, dec_b = a["decoder"][live_a], b["decoder"][live_b]
    cos = matched_cosines(dec_a, dec_b) if len(dec_a) and len(dec_b) else np.zeros(len(dec_a))
    p99 = random_matching_p99(len(dec_a), len(dec_b), dec_a.shape[1], n_null=n_null) if len(cos) else np.nan
    return {
        "ev": min(r["explained_variance"] for r in runs),
        "ev_mean": float(np.mean([r["explained_variance"] for r in runs])),
        "l0": float(np.mean([r["l0"] for r in runs])),
        "dead_fraction": float(np.mean([r["dead_fraction"] for r in runs])),
        "n_live": int(live_a.sum()),
        "median_cos": float(np.median(cos)) if len(cos) else np.nan,
        "share_above_0.7": float((cos > 0.7).mean()) if len(cos) else np.nan,
        "chance_p99": p99,
        "share_above_p99": float((cos > p99).mean()) if len(cos) else np.nan,
        "s_per_sae": float(np.mean([r["seconds"] for r in runs])),
        "cpu_s_per_sae": float(np.mean([r["cpu_seconds"] for r in runs])),
        "n_train_rows": int(a["n_train_rows"]),
    }


def sweep(
    shard_dir: str | Path,
    grid: list[dict],
    seeds: tuple[int, int] = (0, 1),
    holdout_fraction: float = 0.1,
    threads: int | None = 1,
    min_firing_rate: float = 0.0,
) -> pd.DataFrame:
    """One row per grid point: EV, L0, dead fraction, matched cosine of seed 0 vs seed 1, share above chance."""
    rows = []
    for point in grid:
        runs = [train_one(shard_dir, point, s, holdout_fraction, threads) for s in seeds]
        rows.append(
            {"shard_dir": str(shard_dir), **{**DEFAULTS, **point}, **evaluate_point(runs, min_firing_rate)}
        )
    return pd.DataFrame(rows)


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
            frame = sweep(shard_dir, [point], tuple(args.seeds), args.holdout_fraction, args.threads)
            frame.to_csv(out, mode="a", header=not out.exists(), index=False)
            cols = ["shard_dir", "architecture", "d_sae", "l1_coefficient", "k", "lr", "epochs"]
            cols += [
                "ev",
                "l0",
                "dead_fraction",
                "median_cos",
                "share_above_p99",
                "chance_p99",
                "s_per_sae",
                "cpu_s_per_sae",
            ]
            print(frame[cols].to_string(index=False, header=False), flush=True)


if __name__ == "__main__":
    main()
