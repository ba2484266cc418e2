"""Child script of bench_sae.py, run with the *SAELens* venv's Python: train SAELens's standard (L1 ReLU) SAE.

Reads ``[rows, d_in]`` float32 activations from a ``.npy`` file, feeds them to ``sae_lens.SAETrainer`` in
the row order bench_sae.py uses for its in-memory variant (a seeded permutation per epoch, batches of
``--batch-size``, last partial batch dropped), saves the four weights as ``sae_weights.safetensors`` and
prints one JSON line: wall and CPU seconds of ``fit()`` (after a short warm-up run), rows trained,
versions. With ``--serve`` it prints ``{"ready": ...}`` after the warm-up, then trains a fresh SAE for every
line it reads on stdin, so a parent can interleave these runs with its own at one start-up's cost.

    /tmp/saelens-venv/bin/python bench/saelens_train.py --rows X.npy --out DIR [--serve] [--l1 ..] [--lr ..]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def batches(rows: np.ndarray, batch_size: int, seed: int, epochs: int):
    """The data provider: the same seeded permutation per epoch as bench_sae.py's in-memory batches."""
    for epoch in range(epochs):
        order = np.random.default_rng(seed + epoch).permutation(len(rows))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield torch.from_numpy(np.ascontiguousarray(rows[np.sort(order[start : start + batch_size])]))


def make_trainer(rows, args, n_rows: int):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(args.seed)
    sae = StandardTrainingSAE(
        StandardTrainingSAEConfig(d_in=rows.shape[1], d_sae=args.d_sae, l1_coefficient=args.l1, device="cpu")
    )
    cfg = SAETrainerConfig(
        total_training_samples=n_rows,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=args.lr,
        device="cpu",
    )
    return SAETrainer(cfg, sae, batches(rows, args.batch_size, args.seed, args.epochs))


def train_once(rows: np.ndarray, args, per_epoch: int) -> dict:
    """One fresh SAE trained for ``args.epochs``; weights saved to ``args.out``; the clocks of ``fit()``."""
    from safetensors.torch import save_file

    trainer = make_trainer(rows, args, per_epoch * args.epochs)
    wall, cpu = time.perf_counter(), time.process_time()
    sae = trainer.fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    state = {k: v.detach().contiguous() for k, v in sae.state_dict().items() if k in WEIGHTS}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out / "sae_weights.safetensors"))
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "units": per_epoch * args.epochs,
        "steps": trainer.n_training_steps,
    }


WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--d-sae", type=int, default=1024)
    parser.add_argument("--l1", type=float, default=0.384)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--serve", action="store_true", help="train once per line read on stdin (one start-up)"
    )
    args = parser.parse_args()

    import sae_lens

    torch.set_num_threads(args.threads)
    rows = np.load(args.rows)  # [rows, d_in] float32, in memory like bench_sae.py's variant c
    per_epoch = (len(rows) // args.batch_size) * args.batch_size
    make_trainer(rows, args, 20 * args.batch_size).fit()  # warm-up: allocator, kernels, thread pool
    about = {"sae_lens_version": sae_lens.__version__, "torch_version": torch.__version__}
    about["torch_threads"] = torch.get_num_threads()
    print(json.dumps({"ready": True, **about}), flush=True)
    requests = sys.stdin if args.serve else ["once"]
    for _ in requests:
        print(json.dumps({**train_once(rows, args, per_epoch), **about}), flush=True)


if __name__ == "__main__":
    main()
