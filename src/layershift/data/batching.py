"""Length-grouped batches: rows of similar token length share a batch, so each batch pads little.

One grouping serves every pass over text: rows are taken in a given order, cut into runs of a few batches,
each run is sorted by length and cut into batches. Extraction keeps the runs in stream order (a prefix of
the stream stays a prefix of the sentence order, up to one run); training shuffles rows and batches from a
seeded generator; inference sorts all rows at once. Batches are arrays of row positions into ``lengths``.
"""

from __future__ import annotations

import numpy as np


def chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive slices of ``size`` rows, the remainder last."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def length_grouped_batches(
    lengths: np.ndarray,
    batch_size: int,
    run_batches: int | None = None,
    order: np.ndarray | None = None,
    longest_first: bool = False,
) -> list[np.ndarray]:
    """Batches of positions into ``lengths``, in runs sorted by length.

    ``order`` (default ``0..n-1``) is cut into runs of ``run_batches * batch_size`` rows (None: one run of
    every row); each run is sorted by length (stable: ties keep their order; shortest first, or longest
    first with ``longest_first``) and cut into batches of ``batch_size``, the run's remainder last.
    """
    rows = np.arange(len(lengths)) if order is None else order
    span = batch_size * run_batches if run_batches is not None else max(len(rows), 1)
    batches = []
    for run in chunks(rows, span):
        key = -lengths[run] if longest_first else lengths[run]
        batches.extend(chunks(run[np.argsort(key, kind="stable")], batch_size))
    return batches


def shuffled_length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, run_batches: int
) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows for training (the idea of Hugging Face's LengthGroupedSampler).

    Shuffle all rows, group them longest first in runs of ``run_batches`` batches
    (:func:`length_grouped_batches`), then shuffle the batch order and put the batch holding the longest row
    first, so an out-of-memory error shows up at the first step rather than late.
    """
    order = rng.permutation(len(lengths))
    batches = length_grouped_batches(lengths, batch_size, run_batches, order, longest_first=True)
    batches = [batches[i] for i in rng.permutation(len(batches))]  # ceil(n / batch_size) batches
    longest = int(np.argmax([lengths[b].max() for b in batches]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches
