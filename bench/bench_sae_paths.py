"""SAE training with the sparse-code path against the dense path, at the study's SAE settings.

Two variants of the same ``train_sae_on_shards`` call, interleaved, same rows, seed and thread count:

    a  sparse   the trainer as shipped: a batch whose codes are at most ``sparse_codes.MAX_DENSITY`` active
                takes the sparse path (1 dense matmul of 5: the encoder; the rest over the active latents)
    b  dense    the same trainer with the sparse path switched off (every step through the dense ``SAE.training_terms``)

Rows: a real layer's token shards (``--shards results/activations/<model>/<dataset>/<stage>/tokens/layerN``,
written by the study) or, by default, synthetic float16 shards as ``bench_sae.py`` writes them (sparse
combinations of random directions, d_in 384). Settings: ``config.yaml``'s ``sae`` section (d_sae 512, batch
128, L1 3e-3, lr 3e-3, 300k training tokens); ``--quick`` shrinks everything. Reported: training-loop seconds
per variant, ``a_over_b`` = dense seconds / sparse seconds (speed-up), and both SAEs' held-out MSE, L0 and
dead fraction (the paths differ by rounding only, so these must agree closely).

    python bench/bench_sae_paths.py [--quick] [--shards DIR] [--out DIR] [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

import bench_sae
import common
import yaml

NAME = "sae_paths"
CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def settings(quick: bool, threads: int, d_in: int):
    """The study's SAE config and training config (or a tiny version of them with --quick)."""
    from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
    from layershift.study.schema import from_section

    section = yaml.safe_load(CONFIG.read_text())["sae"]
    if quick:
        section = {**section, "d_sae": 64, "training_tokens": 16_384, "batch_size": 64}
    cfg = from_section(SAEConfig, section, d_in=d_in)
    train = from_section(SAETrainConfig, section, seed=13, split_seed=0, threads=threads, device="cpu")
    return cfg, train


def train_once(shard_dir: Path, cfg, train, sparse: bool) -> dict:
    """One ``train_sae_on_shards`` call; ``sparse`` False switches the sparse-code path off for it."""
    from layershift.dictionaries import sparse_codes
    from layershift.dictionaries.sae import train as sae_training

    allowed = sparse_codes.takes_sparse_path
    if not sparse:
        sparse_codes.takes_sparse_path = lambda *args: False
    try:
        with common.clocked(sae_training, "train_sae", []) as clock:
            _, metrics = sae_training.train_sae_on_shards(shard_dir, cfg, train, progress=False)
    finally:
        sparse_codes.takes_sparse_path = allowed
    return {
        **clock[-1],
        "loop_seconds": metrics["seconds"],
        "steps": metrics["steps"],
        "heldout": {k: metrics[k] for k in ("mse", "explained_variance", "l0", "dead_fraction")},
    }


def run(args) -> None:
    from layershift.core.device import set_threads
    from layershift.data.shards import ShardReader

    set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sae-paths-"))
    try:
        if args.shards:
            shard_dir = Path(args.shards)
            source = str(shard_dir)
        else:
            size = bench_sae.sizes(args.quick)
            shard_dir = tmp / "shards"
            bench_sae.write_shards(shard_dir, size)
            source = f"synthetic: {size['rows']} rows, d_in {size['d_in']}, {size['n_atoms']} directions"
        cfg, train = settings(args.quick, args.threads, ShardReader(shard_dir).d_model)
        variants = {
            "a_sparse": lambda: train_once(shard_dir, cfg, train, sparse=True),
            "b_dense": lambda: train_once(shard_dir, cfg, train, sparse=False),
        }
        samples = common.interleaved(variants, args.repeats, warmup=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    seconds = {name: common.median([s["loop_seconds"] for s in runs]) for name, runs in samples.items()}
    ratios = {"a_over_b": seconds["b_dense"] / seconds["a_sparse"]}
    payload = {
        "inputs": {"shards": source, "sae": cfg.to_dict(), "train": dataclasses.asdict(train)},
        "loop_seconds": seconds,
        "raw": samples,
        "heldout": {name: runs[-1]["heldout"] for name, runs in samples.items()},
        "ratios": ratios,
        "targets": {},
    }
    held = payload["heldout"]
    summary = (
        f"loop s sparse={seconds['a_sparse']:.1f} dense={seconds['b_dense']:.1f}, speed-up "
        f"{ratios['a_over_b']:.2f}x; held-out mse {held['a_sparse']['mse']:.4g} vs {held['b_dense']['mse']:.4g}, "
        f"l0 {held['a_sparse']['l0']:.1f} vs {held['b_dense']['l0']:.1f}"
    )
    common.finish(NAME, args, payload, summary)


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shards", default=None, help="a layer's token shard folder (default: synthetic rows)"
    )


if __name__ == "__main__":
    run(common.parse_args(__doc__.splitlines()[0], extra_args))
