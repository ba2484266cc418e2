"""A short probe of this machine's CPU, one measurement per kind of work the cost model distinguishes:
encoder-sized dense matmuls, SAE training steps, float16 Parquet shard decoding, Python/torch per-call
overhead and a job's process start-up (interpreter + ``import torch``).

Every probe runs one thread (the study runs one torch thread per job) and times CPU seconds (user + system),
the clock the coefficients were fitted on, so other people's jobs on a shared machine stretch it less than
the wall clock. Each probe repeats a fixed unit of work until its share of the budget is spent (at least
:data:`MIN_REPEATS` times) and keeps the median; only the number of repeats depends on the budget, never the
unit, so values measured with different budgets compare.
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from layershift.core.io import vector_compression
from layershift.costs.calibration import DEFAULT_BUDGET_S

MIN_REPEATS = 3  # repeats per probe when the budget allows; a tiny budget runs each probe once
MAX_REPEATS = 40

# encoder-sized matmuls: a MiniLM feed-forward block (hidden 384, intermediate 1536) on 16 x 128 tokens
ENCODER_TOKENS, ENCODER_HIDDEN, ENCODER_INTERMEDIATE, ENCODER_BLOCKS = 2048, 384, 1536, 2
# SAE training steps of the default study: batch 128 rows of 384 values into 512 latents, Adam
SAE_BATCH, SAE_HIDDEN, SAE_LATENTS, SAE_STEPS = 128, 384, 512, 20
ADAM_FLOP_PER_PARAM = 12  # as layershift.costs.work counts an Adam update
# one activation shard's row group: 4,096 token rows of 384 float16 values, read 8 times
SHARD_ROWS, SHARD_WIDTH, SHARD_READS = 4096, 384, 8
CALLS = 100_000  # small torch ops per unit of the per-call probe
STARTUP_CODE = "import torch"


@dataclass(frozen=True)
class Probe:
    """One kind of work: what it measures, the unit its value is in and the work one repeat does."""

    name: str
    unit: str
    description: str


PROBES = {
    probe.name: probe
    for probe in (
        Probe(
            "encoder_matmul", "CPU s per GFLOP", "dense matmuls of encoder-sized shapes (fine-tune, extract)"
        ),
        Probe("sae_step", "CPU s per GFLOP", "SAE training steps: forward, backward, Adam (SAE, crosscoder)"),
        Probe("parquet_decode", "CPU s per 1e6 values", "float16 Parquet shard read and decode to float32"),
        Probe("per_call", "CPU us per call", "Python/torch per-call overhead (small tensor ops)"),
        Probe("startup", "CPU s per process", f"a job's process start: python -c {STARTUP_CODE!r}"),
    )
}


@dataclass(frozen=True)
class Measured:
    """One probe's result: the median over its repeats, with the smallest and largest repeat."""

    value: float
    low: float
    high: float
    repeats: int

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "repeats": self.repeats}


def _repeat(unit: Callable[[], float], share_s: float, min_repeats: int) -> Measured:
    """Run ``unit`` (it returns one repeat's value, and takes CPU time) until ``share_s`` CPU seconds are
    spent and it ran ``min_repeats`` times (at most :data:`MAX_REPEATS`); the median of the repeats."""
    values: list[float] = []
    started = time.process_time() + _children_cpu_s()
    while len(values) < MAX_REPEATS and (
        len(values) < min_repeats or time.process_time() + _children_cpu_s() - started < share_s
    ):
        values.append(unit())
    return Measured(statistics.median(values), min(values), max(values), len(values))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def encoder_matmul_unit() -> Callable[[], float]:
    """CPU seconds per GFLOP of two feed-forward projections, :data:`ENCODER_BLOCKS` times."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(ENCODER_TOKENS, ENCODER_HIDDEN, generator=generator)
    up = torch.randn(ENCODER_INTERMEDIATE, ENCODER_HIDDEN, generator=generator)
    down = torch.randn(ENCODER_HIDDEN, ENCODER_INTERMEDIATE, generator=generator)
    gflop = ENCODER_BLOCKS * 2 * 2 * ENCODER_TOKENS * ENCODER_HIDDEN * ENCODER_INTERMEDIATE / 1e9

    def blocks() -> None:
        for _ in range(ENCODER_BLOCKS):
            torch.nn.functional.linear(torch.nn.functional.linear(tokens, up), down)  # (tokens, hidden)

    blocks()  # warm-up: allocations and kernel selection
    return lambda: _cpu_seconds(blocks) / gflop


def sae_step_unit() -> Callable[[], float]:
    """CPU seconds per GFLOP of :data:`SAE_STEPS` training steps of a ReLU SAE (FLOPs counted as the cost
    model counts them: 6 x rows x parameters, plus Adam)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(SAE_BATCH, SAE_HIDDEN, generator=generator)
    encoder = torch.nn.Linear(SAE_HIDDEN, SAE_LATENTS)
    decoder = torch.nn.Linear(SAE_LATENTS, SAE_HIDDEN)
    optimiser = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    params = 2.0 * SAE_HIDDEN * SAE_LATENTS
    gflop = SAE_STEPS * (6 * SAE_BATCH * params + ADAM_FLOP_PER_PARAM * params) / 1e9

    def steps() -> None:
        for _ in range(SAE_STEPS):
            codes = torch.relu(encoder(rows))  # (batch, latents)
            loss = (decoder(codes) - rows).pow(2).mean() + 1e-3 * codes.abs().mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    steps()
    return lambda: _cpu_seconds(steps) / gflop


def shard_bytes() -> bytes:
    """One row group as the activation shards store it: a fixed-size list of float16, uncompressed."""
    values = np.random.default_rng(0).standard_normal(SHARD_ROWS * SHARD_WIDTH).astype(np.float16)
    activation = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float16()), SHARD_WIDTH)
    table = pa.table({"activation": activation})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=vector_compression(table.schema), use_dictionary=False)
    return buffer.getvalue()


def parquet_decode_unit() -> Callable[[], float]:
    """CPU seconds per million values of reading the row group and decoding it to a float32 matrix."""
    data = shard_bytes()
    values = SHARD_READS * SHARD_ROWS * SHARD_WIDTH / 1e6

    def reads() -> None:
        for _ in range(SHARD_READS):
            column = pq.read_table(io.BytesIO(data), use_threads=False).column("activation")
            column.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, SHARD_WIDTH).astype(
                np.float32
            )  # (rows, width)

    reads()
    return lambda: _cpu_seconds(reads) / values


def per_call_unit() -> Callable[[], float]:
    """CPU microseconds per small in-place tensor op called from a Python loop."""
    total, step = torch.zeros(16), torch.ones(16)

    def calls() -> None:
        for _ in range(CALLS):
            total.add_(step)

    calls()
    return lambda: _cpu_seconds(calls) / CALLS * 1e6


def startup_unit() -> Callable[[], float]:
    """CPU seconds (user + system) of a child process that starts Python and imports torch, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start() -> float:
        child = subprocess.Popen([sys.executable, "-c", STARTUP_CODE], env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"{sys.executable} -c {STARTUP_CODE!r} exited with {child.returncode}")
        return usage.ru_utime + usage.ru_stime

    return start


UNITS: dict[str, Callable[[], Callable[[], float]]] = {
    "encoder_matmul": encoder_matmul_unit,
    "sae_step": sae_step_unit,
    "parquet_decode": parquet_decode_unit,
    "per_call": per_call_unit,
    "startup": startup_unit,
}


def run_probe(budget_s: float = DEFAULT_BUDGET_S, report: Callable[[str], None] | None = None) -> dict:
    """Every probe, one torch thread, each given an equal share of ``budget_s`` CPU seconds; a budget under
    one second per probe runs each probe once. Returns ``{name: Measured.as_dict()}`` and the CPU and wall
    seconds the probe took."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    share = budget_s / len(UNITS)
    min_repeats = MIN_REPEATS if share >= 1.0 else 1
    started_wall, started_cpu = time.perf_counter(), time.process_time() + _children_cpu_s()
    results = {}
    try:
        for name, make_unit in UNITS.items():
            results[name] = _repeat(make_unit(), share, min_repeats).as_dict()
            if report:
                report(f"{name}: {results[name]['value']:.4g} {PROBES[name].unit}")
    finally:
        torch.set_num_threads(threads)
    return {
        "probes": results,
        "cpu_s": time.process_time() + _children_cpu_s() - started_cpu,
        "wall_s": time.perf_counter() - started_wall,
        "budget_s": budget_s,
    }
