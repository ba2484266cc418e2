"""Streamed activation statistics of two dictionaries on the same tokens: firing rates and pair correlations.

The diff compares a *reference* and a *compared* dictionary (the two stages' SAEs, or a stage's SAE and its
seed null). Their raw activations arrive as paired batches ``(x_reference, x_compared)``: row ``t`` of both is
the same token. Firing rates and correlations are accumulated batch by batch, never ``[tokens, n_features]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from layershift.dictionaries.batches import PairedBatches
from layershift.dictionaries.codes import FiringCount, encode_batch

# (x_reference [b, d], x_compared [b, d]) raw activations of the same b tokens


def encoded_codes(sae: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """``sae.encode`` of a raw batch ``[b, d_in] -> [b, n_features]`` as a float32 CPU tensor."""
    return encode_batch(sae, x).to("cpu", torch.float32)


def encode_numpy(sae: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """``sae.encode`` on a raw numpy batch ``[b, d_in] -> [b, n_features]`` (float32 numpy)."""
    return encoded_codes(sae, x).numpy()


class PairMoments:
    """Streaming float64 sums for the Pearson correlation of feature pairs on the same tokens."""

    def __init__(self, n_pairs: int) -> None:
        self.rows = 0
        self.sums = np.zeros((5, n_pairs))  # Σr, Σc, Σr², Σc², Σrc per pair (r: reference, c: compared)

    def update(self, reference: np.ndarray, compared: np.ndarray) -> None:
        """Add ``[tokens, n_pairs]`` activations of the reference and the compared member of every pair."""
        reference, compared = reference.astype(np.float64), compared.astype(np.float64)
        self.rows += len(reference)
        self.sums += np.stack(
            [
                reference.sum(0),
                compared.sum(0),
                (reference * reference).sum(0),
                (compared * compared).sum(0),
                (reference * compared).sum(0),
            ]
        )

    def correlation(self) -> np.ndarray:
        """Pearson r per pair (NaN where either feature has zero variance)."""
        rows = max(self.rows, 1)
        sum_ref, sum_cmp, sum_ref_sq, sum_cmp_sq, sum_product = self.sums
        covariance = sum_product - sum_ref * sum_cmp / rows
        var_ref = np.maximum(sum_ref_sq - sum_ref * sum_ref / rows, 0.0)
        var_cmp = np.maximum(sum_cmp_sq - sum_cmp * sum_cmp / rows, 0.0)
        denom = np.sqrt(var_ref * var_cmp)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, covariance / np.where(denom > 0, denom, 1.0), np.nan)


def activation_correlation(
    reference_acts: np.ndarray, compared_acts: np.ndarray, pairs: np.ndarray
) -> np.ndarray:
    """Pearson r of ``reference_acts[:, i]`` and ``compared_acts[:, j]`` per ``(i, j)`` in ``pairs [n_pairs, 2]``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    moments = PairMoments(len(pairs))
    moments.update(reference_acts[:, pairs[:, 0]], compared_acts[:, pairs[:, 1]])  # [tokens, n_pairs] each
    return moments.correlation()


def paired_activation_correlation(
    reference: torch.nn.Module, compared: torch.nn.Module, paired_batches: PairedBatches, pairs: np.ndarray
) -> np.ndarray:
    """Stream paired batches through both SAEs; Pearson r per pair ``(reference feature, compared feature)``.

    Only the paired columns are kept per batch, so memory is ``O(batch × n_pairs)``, never ``[tokens, n]``.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    moments = PairMoments(len(pairs))
    for x_reference, x_compared in paired_batches:
        check_paired(x_reference, x_compared)
        moments.update(
            encode_numpy(reference, x_reference)[:, pairs[:, 0]],
            encode_numpy(compared, x_compared)[:, pairs[:, 1]],
        )
    return moments.correlation()


def paired_firing_rates(
    reference: torch.nn.Module, compared: torch.nn.Module, paired_batches: PairedBatches
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of tokens on which each reference feature (on its rows) and each compared one (on its) is > 0."""
    counts = None
    for x_reference, x_compared in paired_batches:
        check_paired(x_reference, x_compared)
        codes = encoded_codes(reference, x_reference), encoded_codes(compared, x_compared)
        if counts is None:
            counts = [FiringCount(code.shape[1]) for code in codes]
        for count, code in zip(counts, codes, strict=True):
            count.add(code)
    if counts is None:
        raise ValueError("paired_batches yielded no rows")
    return counts[0].rates(), counts[1].rates()


def check_paired(x_reference: np.ndarray, x_compared: np.ndarray) -> None:
    if len(x_reference) != len(x_compared):
        raise ValueError(f"paired batches differ in length: {len(x_reference)} vs {len(x_compared)} rows")


def sample_rows(paired_batches: Callable[[], PairedBatches], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_rows`` paired rows (storage order): the bounded in-memory sample on which the
    correlation chance is measured."""
    reference_parts, compared_parts, taken = [], [], 0
    for x_reference, x_compared in paired_batches():
        check_paired(x_reference, x_compared)
        take = min(len(x_reference), n_rows - taken)
        reference_parts.append(np.asarray(x_reference[:take]))
        compared_parts.append(np.asarray(x_compared[:take]))
        taken += take
        if taken >= n_rows:
            break
    if not reference_parts:
        raise ValueError("paired_batches yielded no rows")
    return np.concatenate(reference_parts), np.concatenate(compared_parts)
