"""SAE training throughput: the project's streaming shard trainer against the dense compute limit.

Synthetic activations (sparse combinations of random unit directions plus a mean offset and noise, like a
transformer layer's) are written as float16 Parquet shards with ``ShardWriter``, as extraction writes them.
Variants, interleaved, one epoch each over the same training rows, same thread count:

    a  shards    ``train_sae_on_shards``: read + shuffle row groups, float16 -> float32, Adam steps
                 (rows/s of its training loop, as it reports; the held-out evaluation is timed apart)
    b  dense     a bare loop over an in-memory tensor: x @ W_enc -> ReLU -> @ W_dec, MSE + L1, backward,
                 fused Adam step: the compute limit for these shapes
    c  memory    ``train_sae`` (the same trainer) fed batches sliced from an in-memory numpy array
    d  saelens   SAELens's ``SAETrainer`` (standard L1 SAE) on the same rows in the same order, run in its own
                 venv (.venv-saelens from `make saelens-venv`, or /tmp/saelens-venv); skipped when that venv is missing

Targets: rows/s a/b >= 0.85, a/SAELens >= 1.1 (n/a without its venv); a/c is reported (near 1 = the
shard reader is not the bottleneck). SAELens is
trained with the same objective (its MSE is summed over d_in, ours averaged, so its L1 coefficient is
d_in x ours) and both SAEs are scored by ``evaluate_sae`` on the same held-out rows: MSE, L0, dead fraction.

    python bench/bench_sae.py [--quick] [--out DIR] [--threads N] [--saelens-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import common
import numpy as np

NAME = "sae"
# `make saelens-venv` builds the project's own (.venv-saelens); /tmp/saelens-venv is the older hand-made one
SAELENS_PYTHONS = (
    Path(__file__).resolve().parents[1] / ".venv-saelens/bin/python",
    Path("/tmp/saelens-venv/bin/python"),
)
SAELENS_PYTHON = next((p for p in SAELENS_PYTHONS if p.exists()), SAELENS_PYTHONS[0])


def sizes(quick: bool, rows: int | None = None) -> dict:
    """Full: d_in 384 -> d_sae 1024, batch 256 (MiniLM's width, the paper's d_sae). Quick: tiny.

    Rows default to 16 row groups of 4096 (65,536; 14 groups train, 2 held out): at ~3k rows/s per
    variant on one free core, 3 rounds of 4 variants fit the suite's 15-minute budget. ``--rows 200000``
    gives the brief's size (about 3x the time); rows/s do not depend on it beyond the first buffer.
    """
    if quick:
        return {
            "rows": rows or 8192,
            "d_in": 32,
            "d_sae": 64,
            "batch_size": 64,
            "rows_per_group": 512,
            "n_atoms": 128,
        }
    return {
        "rows": rows or 65_536, "d_in": 384, "d_sae": 1024, "batch_size": 256, "rows_per_group": 4096, "n_atoms": 2048,
    }  # fmt: skip


LR = 1e-3  # the default study's SAE learning rate
L1 = 1e-3  # the paper's λ


def synthetic_activations(
    n_rows: int, d_in: int, n_atoms: int, seed: int = 0, active: int = 16, chunk: int = 8192
):
    """Yield ``[chunk, d_in]`` float32 blocks: mean + Σ (16 of n_atoms unit directions) · exp(1) + noise."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d_in)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    mean = rng.standard_normal(d_in).astype(np.float32) * 0.5
    for start in range(0, n_rows, chunk):
        n = min(chunk, n_rows - start)
        index = rng.integers(0, n_atoms, size=(n, active))
        coef = rng.exponential(1.0, size=(n, active)).astype(np.float32)
        rows = np.einsum("nk,nkd->nd", coef, atoms[index]) + mean
        yield rows + 0.05 * rng.standard_normal((n, d_in)).astype(np.float32)


def write_shards(directory: Path, size: dict) -> None:
    """The synthetic activations as float16 token shards (dummy sentence/position/token columns)."""
    from layershift.data.shards import ShardWriter

    done = 0
    with ShardWriter(directory, size["d_in"], "float16", size["rows_per_group"], 16, {"layer": 0}) as writer:
        for block in synthetic_activations(size["rows"], size["d_in"], size["n_atoms"]):
            n = len(block)
            ids = np.arange(done, done + n, dtype=np.int32)
            writer.append(ids, np.zeros(n, np.int32), np.zeros(n, np.int32), ["x"] * n, block)
            done += n


def configs(size: dict, threads: int):
    from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig

    cfg = SAEConfig(d_in=size["d_in"], d_sae=size["d_sae"], l1_coefficient=L1)
    train = SAETrainConfig(
        lr=LR, epochs=1, batch_size=size["batch_size"], threads=threads, device="cpu", seed=0
    )
    return cfg, train


def train_and_heldout_rows(shard_dir: Path, train) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``train_sae_on_shards`` trains on and holds out (same split), as float32 arrays."""
    from layershift.data.shards import ShardReader, activations

    train_reader, held_reader = ShardReader(shard_dir).split(train.holdout_fraction, train.split_seed)
    rows = [activations(r.read_all(["activation"])) for r in (train_reader, held_reader)]
    return rows[0], rows[1]


def memory_batches(rows: np.ndarray, batch_size: int, seed: int):
    """``batches(epoch)`` for ``train_sae``: a seeded permutation per epoch, sorted within a batch."""

    def batches(epoch: int):
        order = np.random.default_rng(seed + epoch).permutation(len(rows))
        for start in range(0, len(order), batch_size):
            yield rows[np.sort(order[start : start + batch_size])]

    return batches


# --- variants --------------------------------------------------------------------------------------------
def run_shards(shard_dir: Path, cfg, train) -> dict:
    """The project's trainer on the shards; clocks ``train_sae`` inside it (setup + epochs, not the
    held-out evaluation, which is reported apart as ``call_wall_seconds``)."""
    from layershift.dictionaries.sae import train as sae_training

    with common.clocked(sae_training, "train_sae", []) as clock:
        _, metrics = sae_training.train_sae_on_shards(shard_dir, cfg, train, progress=False)
    heldout = {k: metrics[k] for k in ("mse", "explained_variance", "l0", "dead_fraction")}
    return {
        **clock[-1],
        "units": metrics["n_train_rows"],
        "loop_seconds": metrics["seconds"],
        "heldout": heldout,
    }


def run_memory(rows: np.ndarray, cfg, train) -> dict:
    """The same ``train_sae`` fed from an in-memory array, clocked over the same span as ``run_shards``."""
    from layershift.dictionaries.sae import train as sae_training

    with common.clocked(sae_training, "train_sae", []) as clock:
        _, metrics = sae_training.train_sae(
            memory_batches(rows, train.batch_size, train.seed), cfg, train, progress=False
        )
    return {**clock[-1], "units": len(rows), "loop_seconds": metrics["seconds"]}


def run_dense(x, size: dict, steps: int | None = None) -> dict:
    """The compute limit: the SAE's matmuls, loss, backward and a fused Adam step, nothing else."""
    import torch

    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(size["d_sae"], size["d_in"], generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = [W_dec.T.clone().requires_grad_(), torch.zeros(size["d_sae"], requires_grad=True)]
    params += [W_dec.requires_grad_(), torch.zeros(size["d_in"], requires_grad=True)]
    W_enc, b_enc, W_dec, b_dec = params
    try:
        optimizer = torch.optim.Adam(params, lr=LR, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.Adam(params, lr=LR)
    bs = size["batch_size"]
    n_steps = steps or len(x) // bs
    with common.Clock() as clock:
        for i in range(n_steps):
            batch = x[i * bs : (i + 1) * bs]
            f = torch.relu(batch @ W_enc + b_enc)  # [b, d_in] -> [b, d_sae]
            recon = f @ W_dec + b_dec  # [b, d_sae] -> [b, d_in]
            loss = (recon - batch).pow(2).mean() + L1 * f.sum() / bs
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return {**clock.as_dict(), "units": n_steps * bs}


class SAELensChild:
    """SAELens's trainer in its own venv on the same rows, started (and warmed up) once; each ``run()``
    trains a fresh SAE for one epoch and returns the child's clocks of ``fit()``."""

    def __init__(self, python: Path, rows_path: Path, out: Path, size: dict, threads: int) -> None:
        cmd = [
            str(python), str(Path(__file__).with_name("saelens_train.py")), "--serve", "--rows", str(rows_path),
            "--out", str(out), "--d-sae", str(size["d_sae"]), "--l1", repr(L1 * size["d_in"]), "--lr", repr(LR),
            "--batch-size", str(size["batch_size"]), "--threads", str(threads),
        ]  # fmt: skip
        env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.about = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"SAELens child failed:\n{self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def evaluate_saved_saelens(weights: Path, heldout: np.ndarray, cfg, batch_size: int) -> dict:
    """Load SAELens's four weights into our SAE class (same names and shapes) and score held-out rows."""
    import torch
    from safetensors.torch import load_file

    from layershift.dictionaries.sae.evaluate import evaluate_sae
    from layershift.dictionaries.sae.model import SAE

    sae = SAE(cfg)
    state = load_file(str(weights))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(state[name])
    batches = (heldout[i : i + batch_size] for i in range(0, len(heldout), batch_size))
    scores = evaluate_sae(sae, batches)
    return {k: scores[k] for k in ("mse", "explained_variance", "l0", "dead_fraction")}


# --- main ------------------------------------------------------------------------------------------------
def saelens_status(args) -> tuple[Path | None, str]:
    if args.quick:
        return None, "skipped: --quick"
    if args.no_saelens:
        return None, "skipped: --no-saelens"
    python = Path(args.saelens_python)
    if not python.exists():
        return None, f"skipped: no SAELens venv at {python} (see bench/README.md to create one)"
    return python, "ran"


def run(args) -> None:
    import torch

    from layershift.core.device import set_threads

    set_threads(args.threads)
    size = sizes(args.quick, args.rows)
    cfg, train = configs(size, args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sae-"))
    try:
        shard_dir = tmp / "layer0"
        write_shards(shard_dir, size)
        train_rows, heldout = train_and_heldout_rows(shard_dir, train)
        order = np.random.default_rng(train.seed).permutation(len(train_rows))
        dense_x = torch.from_numpy(train_rows[order])  # pre-shuffled once: the limit pays no gather
        saelens_python, saelens_note = saelens_status(args)

        variants = {
            "a_shards": lambda: run_shards(shard_dir, cfg, train),
            "b_dense": lambda: run_dense(dense_x, size),
            "c_memory": lambda: run_memory(train_rows, cfg, train),
        }
        warm = {"b_dense": lambda: run_dense(dense_x, size, steps=20)}
        warm["c_memory"] = lambda: run_memory(train_rows[: 40 * size["batch_size"]], cfg, train)
        child = None
        if saelens_python is not None:
            rows_path = tmp / "train_rows.npy"
            np.save(rows_path, train_rows)
            child = SAELensChild(saelens_python, rows_path, tmp / "saelens", size, args.threads)
            variants["d_saelens"] = child.run
        try:
            samples = common.interleaved(variants, args.repeats, warmup=warm)
        finally:
            if child is not None:
                child.close()
        clock = common.primary_clock(args.threads)
        raw, rps = common.throughput(samples, None, clock)
        pairs = {"a_over_b": ("a_shards", "b_dense"), "a_over_c": ("a_shards", "c_memory")}
        if child is not None:
            pairs["a_over_saelens"] = ("a_shards", "d_saelens")
        both = common.ratios_on_both_clocks(raw, pairs)

        quality = {"project": samples["a_shards"][-1]["heldout"], "n_heldout_rows": len(heldout)}
        saelens = {"status": saelens_note}
        if child is not None:
            quality["saelens"] = evaluate_saved_saelens(
                tmp / "saelens/sae_weights.safetensors", heldout, cfg, 4096
            )
            saelens |= {k: v for k, v in child.about.items() if k != "ready"}
            saelens["l1_coefficient"] = L1 * size["d_in"]
            p, q = quality["project"], quality["saelens"]
            saelens["project_dominates"] = bool(p["mse"] <= q["mse"] and p["l0"] <= q["l0"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = {name: rps[a] / rps[b] for name, (a, b) in pairs.items()}
    targets = {  # the ratios the trainer is held to
        "a_over_b": common.target(
            ratios["a_over_b"], ">=", 0.85, "shard trainer rows/s over dense fwd+bwd+Adam"
        ),
        "a_over_saelens": common.target(
            ratios.get("a_over_saelens"), ">=", 1.1, "shard trainer rows/s over SAELens's SAETrainer"
        ),
    }
    payload = {
        "inputs": {**size, "train_rows": len(train_rows), "heldout_rows": len(heldout), "epochs": 1, "lr": LR,
                   "l1_coefficient": L1, "shard_dtype": "float16", "holdout_fraction": train.holdout_fraction},
        "clock": clock,
        "raw": raw,
        "rows_per_second": rps,
        "ratios_by_clock": both,
        "ratios": ratios,
        "targets": targets,
        "quality": quality,
        "saelens": saelens,
    }  # fmt: skip
    extra = (
        f" saelens={rps['d_saelens']:.0f} (a/saelens={ratios['a_over_saelens']:.2f})"
        if "d_saelens" in rps
        else ""
    )
    summary = (
        f"rows/s a={rps['a_shards']:.0f} b={rps['b_dense']:.0f} c={rps['c_memory']:.0f}{extra}; "
        f"a/c={ratios['a_over_c']:.2f}, {common.fmt_targets(targets)}"
    )
    common.finish(NAME, args, payload, summary)


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--saelens-python", default=str(SAELENS_PYTHON), help="Python of a venv with sae-lens"
    )
    parser.add_argument("--no-saelens", action="store_true", help="skip the SAELens comparison")
    parser.add_argument("--rows", type=int, default=None, help="synthetic activation rows (default 65,536)")


if __name__ == "__main__":
    run(common.parse_args(__doc__.splitlines()[0], extra_args))
