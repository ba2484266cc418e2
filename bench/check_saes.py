"""Independent check of every SAE of a finished study: seed reproducibility, held-out EV and share.

Uses none of layershift's code: the weights come from each SAE's ``sae_weights.safetensors`` (SAELens
layout, normalisation folded in: ``f = relu((x - b_dec) @ W_enc + b_enc)``, TopK keeps the k largest), the
activations straight from the layer's Parquet shards, the matching from SciPy. For each SAE and its seed
null (``results/sae_null/.../{stage}/layer{L}/null*/``; a stage here is a run: pretrained or a replicate):

* live features: those that fire on at least one of ``--rows`` shard rows (first rows of the layer);
* matched decoder cosine: Hungarian matching of the live unit decoder rows, maximising the summed cosine;
* chance: the 99th percentile of the same matching between two Gaussian dictionaries of the same shapes
  (``--draws`` draws pooled); ``share`` = the SAE's live features whose matched cosine beats it;
* held-out explained variance and share of rows: read from the SAE's ``metrics.json``.

The reproducibility bar for every SAE: median ≥ 0.7, share ≥ 0.8, EV ≥ 0.6, held-out share 10 % ± 3 points.

    .venv/bin/python bench/check_saes.py [--results results] [--rows 20000] [--out bench/results/check_saes.csv]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from safetensors.numpy import load_file
from scipy.optimize import linear_sum_assignment

# The bar of layershift.study.acceptance, restated on purpose: this check uses none of layershift's code.
BAR = {"median": 0.7, "share": 0.8, "ev": 0.6, "holdout": (0.07, 0.13)}


def load_sae(directory: Path) -> dict:
    weights = load_file(str(directory / "sae_weights.safetensors"))
    cfg = json.loads((directory / "cfg.json").read_text())
    metrics = json.loads((directory / "metrics.json").read_text())
    return {"w": {k: v.astype(np.float64) for k, v in weights.items()}, "k": cfg.get("k"), "metrics": metrics}


def shard_rows(shard_dir: Path, n_rows: int) -> np.ndarray:
    """The first ``n_rows`` activation rows of a layer, ``[n, d]`` float64."""
    out, have = [], 0
    for path in sorted(shard_dir.glob("*.parquet")):
        table = pq.read_table(path, columns=["activation"])
        column = table.column("activation").combine_chunks()
        out.append(column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1))
        have += len(column)
        if have >= n_rows:
            break
    return np.concatenate(out)[:n_rows].astype(np.float64)


def live_features(sae: dict, x: np.ndarray) -> np.ndarray:
    w = sae["w"]
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]  # [n, d_sae]
    if sae["k"]:
        kth = np.partition(pre, -sae["k"], axis=1)[:, -sae["k"]][:, None]
        pre = np.where(pre >= kth, pre, 0.0)
    return (np.maximum(pre, 0.0) > 0).any(0)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def matched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = unit(a) @ unit(b).T
    r, c = linear_sum_assignment(cos, maximize=True)
    out = np.full(len(a), -1.0)  # an unmatched feature counts as below chance
    out[r] = cos[r, c]
    return out


def chance_p99(n_a: int, n_b: int, d: int, draws: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    pooled = [matched(rng.standard_normal((n_a, d)), rng.standard_normal((n_b, d))) for _ in range(draws)]
    return float(np.quantile(np.concatenate(pooled), 0.99))


def check_pair(sae_dir: Path, null_dir: Path, x: np.ndarray, draws: int) -> dict:
    sae, null = load_sae(sae_dir), load_sae(null_dir)
    live, live_null = live_features(sae, x), live_features(null, x)
    a, b = sae["w"]["W_dec"][live], null["w"]["W_dec"][live_null]
    cos = matched(a, b)
    p99 = chance_p99(len(a), len(b), a.shape[1], draws)
    m = sae["metrics"]
    n_train, n_held = m.get("n_train_rows"), m.get("n_heldout_rows")
    return {
        "n_live": int(live.sum()),
        "n_live_null": int(live_null.sum()),
        "median_matched_cosine": float(np.median(cos)),
        "chance_p99": p99,
        "share_above_chance": float((cos > p99).mean()),
        "explained_variance": m.get("explained_variance"),
        "l0": m.get("l0"),
        "heldout_share": n_held / (n_train + n_held) if n_train and n_held is not None else None,
    }


def study_pairs(results: Path):
    """(model, dataset, stage, layer, sae_dir, null_dir, shard_dir) for every SAE with a seed null."""
    for cfg in sorted((results / "sae").glob("*/*/*/layer*/cfg.json")):
        sae_dir = cfg.parent
        model, dataset, stage, layer = sae_dir.relative_to(results / "sae").parts
        nulls = sorted((results / "sae_null" / model / dataset / stage / layer).glob("null*/cfg.json"))
        shard_dir = results / "activations" / model / dataset / stage / "tokens" / layer
        for null in nulls:
            yield model, dataset, stage, int(layer.removeprefix("layer")), sae_dir, null.parent, shard_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--rows", type=int, default=20000, help="shard rows used to find live features")
    parser.add_argument("--draws", type=int, default=2, help="random dictionary pairs for the chance level")
    parser.add_argument("--out", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args()
    rows, cache = [], {}
    for model, dataset, stage, layer, sae_dir, null_dir, shard_dir in study_pairs(Path(args.results)):
        if shard_dir not in cache:
            cache = {shard_dir: shard_rows(shard_dir, args.rows)}  # one layer's rows in memory at a time
        row = check_pair(sae_dir, null_dir, cache[shard_dir], args.draws)
        rows.append({"model": model, "dataset": dataset, "stage": stage, "layer": layer, **row})
    table = pd.DataFrame(rows)
    if table.empty:
        raise SystemExit(f"no SAE with a seed null under {args.results}")
    lo, hi = BAR["holdout"]
    table["passes"] = (
        (table["median_matched_cosine"] >= BAR["median"])
        & (table["share_above_chance"] >= BAR["share"])
        & (table["explained_variance"] >= BAR["ev"])
        & table["heldout_share"].between(lo, hi)
    )
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.precision", 3):
        print(table.drop(columns=["n_live_null"]).to_string(index=False))
    print(f"{int(table['passes'].sum())} of {len(table)} SAEs pass the reproducibility bar {BAR}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
