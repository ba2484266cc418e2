"""What matching alone produces: the chance level of matched decoder cosines and activation correlations.

The feature diff matches two dictionaries one-to-one (:func:`matched_cosines`: the assignment maximising
Σ max(cos, 0)^p). A matched pair is the best of hundreds of candidates, so even two *unrelated* dictionaries
produce matched cosines well above 0: two random 512 x 384 dictionaries match at a median cosine of about
0.15 and a 99th percentile of about 0.2. A similarity is evidence of a shared feature only above that level.
Here *chance* always means such a random-matching distribution; a *seed null* is an SAE trained on the
same activations with another seed, which :func:`seed_reproducibility` measures against chance.

* :func:`random_matching_chance`: matched cosines of random isotropic dictionaries (Gaussian rows) of the
  given shapes, matched by the same algorithm, pooled over draws (cached by shape within a process).
  Pass the shapes actually matched, i.e. the *live* feature counts, not ``d_sae``.
* :func:`random_encoder_correlation_chance`: matched activation correlations of a dictionary's features with
  a random encoder's on the same activations (in memory, on a bounded sample of rows; see there).
* :func:`chance_quantiles`: the quantiles recorded in every diff summary.
* :func:`seed_reproducibility`: how well a seed-null SAE reproduces an SAE, against that chance level.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from layershift.dictionaries.decoders import decoder_cosine_matrix, unit_rows

CHANCE_QUANTILES = (0.5, 0.9, 0.99)


def optimal_matching(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one assignment maximising the summed similarity: (rows, cols), ``min(n_a, n_b)`` pairs."""
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64)


def match_cosine_matrix(cosine: np.ndarray, power: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The diff's assignment on a cosine matrix: maximise Σ max(cos, 0)^``power`` (see ``DiffConfig``)."""
    return optimal_matching(np.clip(cosine, 0.0, None) ** power)


def matched_cosines(
    reference_decoder: np.ndarray, compared_decoder: np.ndarray, power: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference rows, compared rows, cosine) of the one-to-one assignment the diff uses between two
    decoders' rows ``[n_reference, d]``, ``[n_compared, d]``."""
    cosine = decoder_cosine_matrix(reference_decoder, compared_decoder)
    rows, cols = match_cosine_matrix(cosine, power)
    return rows, cols, cosine[rows, cols]


@lru_cache(maxsize=64)
def _random_matching_chance(
    n_reference: int, n_compared: int, d: int, draws: int, seed: int, power: float
) -> np.ndarray:
    rng = np.random.default_rng([seed, n_reference, n_compared, d])
    pooled = [
        matched_cosines(rng.standard_normal((n_reference, d)), rng.standard_normal((n_compared, d)), power)[2]
        for _ in range(draws)
    ]
    out = np.concatenate(pooled) if pooled else np.zeros(0)
    out.flags.writeable = False  # shared through the cache
    return out


def random_matching_chance(
    n_reference: int, n_compared: int, d: int, *, draws: int = 4, seed: int = 0, power: float = 2.0
) -> np.ndarray:
    """Matched cosines of two random isotropic dictionaries ``[n_reference, d]``, ``[n_compared, d]``
    (Gaussian rows), matched like the diff, pooled over ``draws`` draws: ``draws x min(n_reference,
    n_compared)`` values (read-only, cached).

    Isotropic rows are the reproducibility criterion's chance level; a dictionary confined to a subspace of
    the residual stream matches a random one of that subspace higher, so this is a lower bound on chance for
    real SAEs (see :func:`random_matching_chance_like` for one drawn in the dictionaries' own spectrum).
    """
    if min(n_reference, n_compared, d) < 0 or draws < 1:
        raise ValueError(
            f"need n_reference, n_compared, d ≥ 0 and draws ≥ 1, got {(n_reference, n_compared, d, draws)}"
        )
    if min(n_reference, n_compared, d) == 0:
        return np.zeros(0)
    return _random_matching_chance(
        int(n_reference), int(n_compared), int(d), int(draws), int(seed), float(power)
    )


def random_matching_chance_like(
    reference_decoder: np.ndarray,
    compared_decoder: np.ndarray,
    *,
    draws: int = 4,
    seed: int = 0,
    power: float = 2.0,
) -> np.ndarray:
    """Like :func:`random_matching_chance` for the shapes of the two decoders, but with Gaussian
    rows whose covariance is that of the two decoders' pooled unit rows: random dictionaries living in the
    same (possibly low-dimensional, anisotropic) part of the space as the real ones. Never cached."""
    rows = np.concatenate([unit_rows(reference_decoder), unit_rows(compared_decoder)])
    n_reference, n_compared = len(reference_decoder), len(compared_decoder)
    d = rows.shape[1] if rows.ndim == 2 else 0
    if min(n_reference, n_compared, d) == 0:
        return np.zeros(0)
    # Gaussian rows with covariance rowsᵀrows / n: a random mix of the rows themselves has exactly that
    rng = np.random.default_rng([seed, n_reference, n_compared, d, 1])
    scale = 1.0 / np.sqrt(len(rows))
    pooled = [
        matched_cosines(
            rng.standard_normal((n_reference, len(rows))) @ rows * scale,
            rng.standard_normal((n_compared, len(rows))) @ rows * scale,
            power,
        )[2]
        for _ in range(draws)
    ]
    return np.concatenate(pooled)


def chance_quantiles(values: np.ndarray, qs: tuple[float, ...] = CHANCE_QUANTILES) -> dict[str, float | None]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of the finite ``values`` (``None`` where there are none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return {quantile_key(level): (float(np.quantile(finite, level)) if len(finite) else None) for level in qs}


def quantile_key(level: float) -> str:
    """``"p99"`` for 0.99 (``"p99.9"`` for 0.999)."""
    percent = 100 * level
    return f"p{round(percent):d}" if abs(percent - round(percent)) < 1e-9 else f"p{percent:g}"


def seed_reproducibility(
    decoder: np.ndarray,
    seed_null_decoder: np.ndarray,
    live: np.ndarray | None = None,
    seed_null_live: np.ndarray | None = None,
    *,
    power: float = 2.0,
    draws: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """How well a seed-null SAE (the same data, another seed) reproduces an SAE's live features, measured
    against random matching.

    Matches the live rows of ``decoder`` against the live rows of ``seed_null_decoder`` (boolean masks;
    ``None``: all rows) like the diff and returns ``median_matched_cosine``, ``share_above_chance`` (share of
    the SAE's live features whose matched cosine exceeds the random-matching 99th percentile; an unmatched
    feature counts as below), ``n_live``, ``n_live_null`` (the seed null's) and the chance quantiles
    ``chance_cosine_p*`` of random dictionaries of the same live shapes. A reproducible SAE has a median
    ≥ 0.7 and a share ≥ 0.8 (``reproducible`` below).
    """
    decoder = np.asarray(decoder, dtype=np.float64)
    seed_null_decoder = np.asarray(seed_null_decoder, dtype=np.float64)
    live = np.ones(len(decoder), bool) if live is None else np.asarray(live, bool)
    seed_null_live = (
        np.ones(len(seed_null_decoder), bool) if seed_null_live is None else np.asarray(seed_null_live, bool)
    )
    own, reproduced = decoder[live], seed_null_decoder[seed_null_live]
    if len(own) and len(reproduced):
        _, _, cosines = matched_cosines(own, reproduced, power)
    else:
        cosines = np.zeros(0)
    random_cosines = random_matching_chance(
        len(own), len(reproduced), decoder.shape[1], draws=draws, seed=seed
    )
    chance = chance_quantiles(random_cosines)
    p99 = chance["p99"]
    above = int((cosines > p99).sum()) if p99 is not None else 0
    median = float(np.median(cosines)) if len(cosines) else None
    share = above / len(own) if len(own) else None
    return {
        "median_matched_cosine": median,
        "share_above_chance": share,
        "n_live": int(len(own)),
        "n_live_null": int(len(reproduced)),
        "reproducible": bool(median is not None and share is not None and median >= 0.7 and share >= 0.8),
        **{f"chance_cosine_{key}": value for key, value in chance.items()},
    }


# --- activation correlation -------------------------------------------------------------------------------
def random_encoder_acts(x: np.ndarray, directions: np.ndarray, firing_rates: np.ndarray) -> np.ndarray:
    """Activations ``[rows, n]`` of a random ReLU encoder: ``relu(x · dir_j − θ_j)`` with θ_j the
    ``1 − firing_rates[j]`` quantile of ``x · dir_j`` on these rows, so feature j fires on that share."""
    pre = np.asarray(x, dtype=np.float32) @ unit_rows(directions).T.astype(np.float32)  # [rows, n]
    rates = np.clip(np.asarray(firing_rates, dtype=np.float64), 0.0, 1.0)
    # θ_j = the (1 − rate_j) quantile of column j (lower order statistic), all columns at once
    order = np.floor((1.0 - rates) * (len(pre) - 1)).astype(np.int64)
    theta = np.take_along_axis(np.sort(pre, axis=0), order[None, :], axis=0)
    return np.maximum(pre - theta, 0.0)


def pearson_pairs(
    reference_acts: np.ndarray, compared_acts: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Pearson r of ``reference_acts[:, rows[i]]`` and ``compared_acts[:, cols[i]]`` (NaN where either is
    constant)."""
    reference = np.asarray(reference_acts)[:, rows].astype(np.float64)  # [tokens, pairs]
    compared = np.asarray(compared_acts)[:, cols].astype(np.float64)
    reference, compared = reference - reference.mean(0), compared - compared.mean(0)
    denom = np.sqrt((reference * reference).sum(0) * (compared * compared).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (reference * compared).sum(0) / np.where(denom > 0, denom, 1.0), np.nan)


def random_encoder_correlation_chance(
    W_dec: np.ndarray,
    acts: np.ndarray,
    x: np.ndarray,
    firing_rates_other: np.ndarray,
    *,
    draws: int = 2,
    seed: int = 0,
    power: float = 2.0,
) -> np.ndarray:
    """Matched activation correlations between a dictionary's features and a random encoder's.

    In memory, on a bounded sample of token rows the caller chooses: ``x [rows, d]`` are the raw
    activations, ``acts [rows, n]`` the dictionary's feature activations on them (live features only, rows
    of ``W_dec [n, d]`` in the same order). Per draw, a random dictionary of ``len(firing_rates_other)``
    Gaussian directions becomes a ReLU encoder firing at those rates on ``x`` (:func:`random_encoder_acts`:
    the other side's live firing rates), is matched to ``W_dec`` by decoder cosine exactly as the diff
    matches, and the Pearson r of each matched pair is kept. Unrelated features that happen to point the
    same way correlate on anisotropic activations; this is that level. Pooled over draws, NaNs dropped.
    """
    W_dec, x = np.asarray(W_dec, dtype=np.float64), np.asarray(x, dtype=np.float64)
    n_other = len(firing_rates_other)
    if len(W_dec) == 0 or n_other == 0 or len(x) < 2:
        return np.zeros(0)
    rng = np.random.default_rng([seed, len(W_dec), n_other, x.shape[1], 2])
    pooled = []
    for _ in range(draws):
        directions = rng.standard_normal((n_other, x.shape[1]))
        rows, cols, _ = matched_cosines(W_dec, directions, power)
        random_acts = random_encoder_acts(x, directions[cols], np.asarray(firing_rates_other)[cols])
        correlations = pearson_pairs(acts, random_acts, rows, np.arange(len(cols)))
        pooled.append(correlations[np.isfinite(correlations)])
    return np.concatenate(pooled)
