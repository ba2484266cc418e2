"""Percentile intervals for the per-layer similarity measures: a seeded bootstrap over the split's sentences.

A resample draws the ``n`` sentences of the split with replacement (one draw shared by every layer, so the
layers of a resample see the same sentences) and recomputes, from the two stages' sentence vectors
(``sentences.parquet``: each sentence's mean token vector and its token count):

    cosine_of_means           cosine of the two stages' token-weighted means of sentence vectors,
                              sum_s n_s m_s / sum_s n_s (``n_s`` tokens in sentence ``s``, ``m_s`` its mean
                              vector): the token mean of the resampled sentences. On the full sample it is the
                              token mean of ``means.parquet`` up to the storage rounding of the sentence vectors
    cosine_of_sentence_means  the same with every sentence weighted 1
    cka_sentences             linear CKA of the resampled sentence vectors
    mean_sentence_cosine      mean of the resampled sentences' cosines

The interval runs from the ``(1 - c) / 2`` to the ``(1 + c) / 2`` percentile of the resampled values,
``c`` the ``interval`` setting. It
measures the sampling of sentences within one run only, not how much another fine-tuning run would differ.

A resample is a count vector ``w [n]`` (how often each sentence was drawn, summing to ``n``), and every measure is
a weighted sum over sentences, so all resamples are matrix products. For CKA, with ``X`` the sentence vectors
centred on the full sample and the resample's weighted mean ``mu = X^T w / n``, the resample's centred
cross-product is ``A - n mu_x mu_y^T`` with ``A = X^T diag(w) Y``, and its squared norm is
``w^T (K o L) w - 2 n sum_i w_i (x_i . mu_x)(y_i . mu_y) + n^2 |mu_x|^2 |mu_y|^2`` with the Gram matrices
``K = X X^T``, ``L = Y Y^T`` [n, n] (``o``: elementwise). The Gram matrices are built in square blocks on
and above the diagonal only, so no ``[n, n]`` matrix is held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from layershift.study.schema import schema_default

INTERVAL_MEASURES = (
    "cosine_of_means",
    "cosine_of_sentence_means",
    "cka_sentences",
    "mean_sentence_cosine",
)
GRAM_BLOCK_ROWS = 1024  # side of the square Gram blocks built at a time


@dataclass(frozen=True)
class BootstrapSettings:
    """The ``similarity`` section's resamples (0: no intervals) and interval coverage, and the draw's seed."""

    bootstrap: int = schema_default("similarity", "bootstrap")  # resamples of the sentences
    interval: float = schema_default("similarity", "interval")  # coverage of the percentile interval
    seed: int = 0  # seeds the draw (the workflow passes the study seed)
    # BLAS threads while resampling (None: the process's own). NumPy's BLAS starts one thread per core
    # whatever the job was given; beside other jobs that oversubscription makes the resampling 2-4x slower
    threads: int | None = None


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]`` float64: how often each of ``n`` sentences is drawn in each resample of size ``n``."""
    drawn = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # [resamples, n] sentence indices
    offsets = np.arange(resamples)[:, None] * n
    return np.bincount((drawn + offsets).ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def weighted_cosine_of_means(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of ``weights [B, n]``: cosine of the weighted means of ``x`` and ``y`` ``[n, d]``; ``[B]``."""
    mean_x = weights @ x / weights.sum(1, keepdims=True)  # [B, d]
    mean_y = weights @ y / weights.sum(1, keepdims=True)
    norms = np.linalg.norm(mean_x, axis=1) * np.linalg.norm(mean_y, axis=1)
    return np.sum(mean_x * mean_y, 1) / (norms + 1e-12)


def row_cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine of each paired row of ``x`` and ``y`` ``[n, d]``; ``[n]``."""
    return np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)


def gram_quadratic_forms(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[3, B]``: ``w^T (K o L) w``, ``w^T (K o K) w`` and ``w^T (L o L) w`` per row ``w`` of ``counts [B, n]``,
    ``K = x x^T`` and ``L = y y^T``.

    The Gram matrices are symmetric, so only their square blocks (``GRAM_BLOCK_ROWS`` a side) on and above the
    diagonal are built, each off-diagonal block counted twice; the three elementwise products of a block go
    through one matrix product with the resamples. Products are float32 (the forms differ from float64 by
    under 1e-6 relative), the sum over blocks float64."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    starts = range(0, len(x), GRAM_BLOCK_ROWS)
    blocks = [slice(start, start + GRAM_BLOCK_ROWS) for start in starts]
    weights = [np.ascontiguousarray(counts[:, block], np.float32) for block in blocks]  # [B, block] each
    forms = np.zeros((3, len(counts)))
    for first, rows in enumerate(blocks):
        for second in range(first, len(blocks)):
            columns = blocks[second]
            gram_x, gram_y = x[rows] @ x[columns].T, y[rows] @ y[columns].T  # [rows, columns] each
            products = np.concatenate(
                [gram_x * gram_y, gram_x * gram_x, gram_y * gram_y], 1
            )  # [rows, 3 cols]
            left = (weights[first] @ products).reshape(len(counts), 3, -1)  # [B, 3, columns]
            block_forms = np.einsum("bkc,bc->kb", left, weights[second]).astype(np.float64)  # [3, B]
            forms += block_forms if first == second else 2 * block_forms
    return forms


def resampled_cka(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Linear CKA of the paired rows ``x [n, d1]``, ``y [n, d2]`` in each resample ``counts [B, n]``; ``[B]``,
    NaN where undefined (a resample of one distinct row, or a side without variance)."""
    n = counts.sum(1)  # [B] rows per resample
    x, y = x - x.mean(0), y - y.mean(0)
    mean_x, mean_y = counts @ x / n[:, None], counts @ y / n[:, None]  # [B, d] resample means
    along_x, along_y = mean_x @ x.T, mean_y @ y.T  # [B, n]: each row's product with its resample's mean
    sq_x, sq_y = np.sum(mean_x**2, 1), np.sum(mean_y**2, 1)  # [B]
    forms = gram_quadratic_forms(x, y, counts)
    cross = forms[0] - 2 * n * np.sum(counts * along_x * along_y, 1) + n**2 * sq_x * sq_y
    self_x = forms[1] - 2 * n * np.sum(counts * along_x**2, 1) + n**2 * sq_x**2
    self_y = forms[2] - 2 * n * np.sum(counts * along_y**2, 1) + n**2 * sq_y**2
    norms = np.sqrt(np.clip(self_x, 0, None) * np.clip(self_y, 0, None))
    defined = (norms > 0) & (np.count_nonzero(counts, 1) >= 2)
    return np.where(defined, cross / np.where(defined, norms, 1.0), np.nan)


def layer_resamples(x: np.ndarray, y: np.ndarray, n_tokens: np.ndarray, counts: np.ndarray) -> dict:
    """Each of :data:`INTERVAL_MEASURES` ``[B]`` for one layer's sentence vectors ``x``, ``y`` ``[n, d]``, their
    token counts ``n_tokens [n]`` and the resamples ``counts [B, n]``."""
    return {
        "cosine_of_means": weighted_cosine_of_means(x, y, counts * n_tokens),
        "cosine_of_sentence_means": weighted_cosine_of_means(x, y, counts),
        "cka_sentences": resampled_cka(x, y, counts),
        "mean_sentence_cosine": counts @ row_cosines(x, y) / counts.sum(1),
    }


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The ``level`` percentile interval of the resampled ``values`` (NaNs left out; NaN if all are)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _layer_vectors(table, column: str) -> np.ndarray:
    """A fixed-size-list column as ``[rows, d]`` float64."""
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), -1).astype(np.float64)


def _aligned_sentences(pre: pq.ParquetFile, ft: pq.ParquetFile) -> np.ndarray:
    """The sentences' token counts ``[n]``, once both files are seen to hold the same sentences in order."""
    ids = [file.read(["sentence_id"]).column(0).to_numpy() for file in (pre, ft)]
    if not np.array_equal(*ids):
        raise ValueError("the two stages' sentence files do not hold the same sentences in the same order")
    return pre.read(["n_tokens"]).column(0).to_numpy().astype(np.float64)


def resampled_measures(pre_path: str | Path, ft_path: str | Path, counts: np.ndarray) -> dict[int, dict]:
    """Per layer, each of :data:`INTERVAL_MEASURES` ``[B]`` in the resamples ``counts [B, n]`` of the two stages'
    ``sentences.parquet`` (one layer's vectors in memory at a time); ``counts`` of ones: the full sample."""
    pre, ft = pq.ParquetFile(pre_path), pq.ParquetFile(ft_path)
    n_tokens = _aligned_sentences(pre, ft)
    resampled = {}
    for name in (name for name in pre.schema_arrow.names if name.startswith("layer_")):
        x, y = _layer_vectors(pre.read([name]), name), _layer_vectors(ft.read([name]), name)  # [n, d] each
        resampled[int(name.split("_")[1])] = layer_resamples(x, y, n_tokens, counts)
    return resampled


def similarity_intervals(
    pre_path: str | Path, ft_path: str | Path, settings: BootstrapSettings
) -> pd.DataFrame:
    """Per layer: ``{measure}_lo`` and ``{measure}_hi`` of every :data:`INTERVAL_MEASURES` from the two stages'
    ``sentences.parquet``, over ``settings.bootstrap`` resamples seeded by ``settings.seed``, on
    ``settings.threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    n = pq.ParquetFile(pre_path).metadata.num_rows
    counts = resample_counts(n, settings.bootstrap, settings.seed)
    with threadpool_limits(limits=settings.threads):
        resampled = resampled_measures(pre_path, ft_path, counts)
    rows = []
    for layer, measures in resampled.items():
        row = {"layer": layer}
        for measure, values in measures.items():
            row[f"{measure}_lo"], row[f"{measure}_hi"] = percentile_interval(values, settings.interval)
        rows.append(row)
    return pd.DataFrame(rows)


def place_beside_points(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each ``{measure}_lo`` / ``_hi`` pair moved right after its ``measure`` column."""
    bounds = {f"{measure}_{end}" for measure in INTERVAL_MEASURES for end in ("lo", "hi")}
    order = []
    for column in table.columns:
        if column in bounds:
            continue
        order.append(column)
        order += [bound for bound in (f"{column}_lo", f"{column}_hi") if bound in table.columns]
    return table[order]
