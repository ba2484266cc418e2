"""Feature-level model diff: which SAE features a fine-tuned model retained, changed, lost or gained.

Two SAEs are trained independently at one layer, A on the pretrained model's activations and B on the
fine-tuned model's (the token rows of the two activation sets line up: row ``t`` is the same token in both).
Each feature is compared by two independent signals:

* its **decoder direction**: the cosine matrix of A's and B's unit decoder rows ``[n_a, n_b]`` and a one-to-one
  assignment of live features (:func:`scipy.optimize.linear_sum_assignment`) maximising Σ max(cos, 0)^p
  (``DiffConfig.assignment_power``; p = 2 by default, see there);
* its **activation pattern**: the Pearson correlation of the two matched features' activations on the same
  tokens, accumulated in float64 over streamed batches for the matched pairs only.

**Chance** (:mod:`layershift.analysis.chance`). A matched pair is the best of hundreds of candidates, so unrelated
dictionaries match well above 0 (two random 512 x 384 dictionaries: median ≈ 0.15, 99th percentile ≈ 0.2).
Every diff measures, for the live shapes it matches, the matched cosine of random isotropic dictionaries and
the matched activation correlation of random ReLU encoders (on a bounded in-memory sample of rows); the
chance level c is the largest 99th percentile over the cross-stage and the two seed-null matchings, and every
threshold lies above it by construction (:func:`thresholds_between`).

**Stability.** Each stage has a seed null: a second SAE on the same activations, another seed (pretrained
SAE s0 / its null s1; fine-tuned SAE s1 / its null s0, so each null pair differs from the real pair only in
data). A live feature is *stable* when its null partner reproduces it at ≥ c + ``stable_gap``·(1 − c) in
cosine and in correlation (:func:`mark_stability`); only stable features get a change label, and all
fractions are over stable features.

Every feature then gets a label (:func:`label_features`):

``retained``  stable; matched, cosine ≥ τ_cos and correlation ≥ τ_corr;
``changed``   stable; matched, below one of those, yet both still ≥ the "same feature" floors;
``lost``      a stable A feature whose match falls below a floor (or that has no live match);
``new``       the same for a stable B feature;
``unstable``  live, but its own seed null does not reproduce it clearly above chance: reported as a share;
``dead``      never (or too rarely) active; excluded from matching and from every fraction.

**Thresholds** (:func:`calibrate_thresholds`, quantiles weighted by firing rate, over the stable features of
both nulls): τ = the ``q``-quantile of the seed-to-seed matched cosine / correlation minus a tolerance
(``DiffConfig.tolerance_*``), never below the stability cut; floors = halfway from c to τ. The headline
``label`` uses these; ``label_capped`` (summary ``capped_*``) additionally caps τ at the fixed effect sizes
``retained_*``, which can only lower it (issue #17: with reproducible SAEs it calls a 0.72 match retained).

**Verdict** (:func:`diff_verdict`): a layer's diff is ``conclusive`` only with a null for both stages and
enough stable features on both sides; otherwise ``inconclusive`` with the reason, and no finding should state
retained / lost change for it.

:func:`diff_summary` reports the label fractions (per feature and per unit of activity) next to the rates the
same thresholds give on the pretrained null matching (``baseline_*``), the chance quantiles, the stable
shares and the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from layershift.analysis import chance
from layershift.analysis.chance import optimal_matching
from layershift.dictionaries.batches import PairedBatches
from layershift.dictionaries.decoders import decoder_cosine_matrix, decoder_rows

SIDE_A = "pretrained"  # the reference side (in a seed null: the first seed)
SIDE_B = "finetuned"  # the compared side (in a seed null: the second seed)
LABELS = ("retained", "changed", "lost", "new", "unstable", "dead")
MATCH_COLUMNS = (
    "side",  # SIDE_A or SIDE_B
    "feature",  # feature index in its own SAE
    "live",  # firing rate ≥ min_firing_rate (dead features are never matched)
    "firing_rate",  # fraction of tokens on which the feature is > 0
    "match",  # index of the matched feature on the other side (-1: none)
    "cosine",  # decoder cosine with the match (NaN: none)
    "activation_correlation",  # Pearson correlation of activations with the match on the same tokens
    "decoy",  # a random live feature on the other side other than the match: a chance reference (-1: none)
    "decoy_cosine",  # decoder cosine with the decoy
    "decoy_correlation",  # activation correlation with the decoy
)


@dataclass
class DiffConfig:
    """How features are matched, called dead, stable and labelled, and when a layer's diff is conclusive."""

    null_quantile: float = 0.1  # q: seed noise level = q-quantile of the nulls' matched cosine / correlation
    # Effect sizes. Without a seed null they are the retained cut-offs (raised above chance if need be):
    # uncalibrated, marked "fallback". With nulls they only cap τ for the secondary ``label_capped``
    # (τ = min(seed noise, cap)); the headline ``label`` has no cap (issue #17: a cap that can only lower
    # τ calls a 0.72 match retained when seeds reproduce features at 0.95).
    cosine_threshold: float = 0.7
    correlation_threshold: float = 0.5
    # The headline's effect size is relative instead: retained needs cosine ≥ (seed noise level − tolerance),
    # so a cross-stage difference a little larger than seed noise (finite data: two stages never see the
    # same noise) is not change, while one far beyond it is, however high the seed noise level.
    tolerance_cosine: float = 0.05
    tolerance_correlation: float = 0.1
    min_firing_rate: float = 1e-5  # features active on a smaller fraction of tokens (or never) are "dead"
    seed: int = 0  # seeds the decoys and the random dictionaries of the chance model
    # The assignment maximises Σ max(cos, 0)^p over matched pairs: p = 1 is the plain total cosine; p = 2 the
    # total captured energy (cos² = share of one unit direction the other explains), which never trades one
    # near-perfect match for two mediocre ones (a² + b² < 1 for junk pairs), as p = 1 readily does.
    assignment_power: float = 2.0
    # Stability: a live feature is stable when its own seed null reproduces it at ≥ c + stable_gap·(1 − c)
    # in cosine and in correlation, c being the chance 99th percentile of random matching (see
    # ``thresholds_between``). 0.5 = at least halfway from chance to a perfect reproduction.
    stable_gap: float = 0.5
    # Verdict (see ``diff_verdict``): conclusive only with this many stable features on each side, making
    # up at least this share of that side's live features.
    min_stable_features: int = 25
    min_stable_share: float = 0.5
    chance_draws: int = 4  # random dictionaries per chance distribution (cosine; half as many encoders)
    chance_rows: int = 4096  # token rows (first in storage order) held in memory for the correlation chance
    # The diff streams the layer's token rows seven times (firing rates and correlations for three matchings,
    # the chance sample); rows of both stages that fit this many MiB together (float32) are decoded once and
    # kept in RAM for the other passes (the same values: the results do not change). 0: decode every pass.
    memory_cache_mb: float = 1024.0

    def __post_init__(self) -> None:
        if not 0.0 < self.null_quantile < 0.5:
            raise ValueError(f"null_quantile must be in (0, 0.5), got {self.null_quantile}")
        if self.min_firing_rate < 0:
            raise ValueError(f"min_firing_rate must be ≥ 0, got {self.min_firing_rate}")
        if self.assignment_power <= 0:
            raise ValueError(f"assignment_power must be > 0, got {self.assignment_power}")
        if not 0.0 < self.stable_gap < 1.0:
            raise ValueError(f"stable_gap must be in (0, 1), got {self.stable_gap}")
        if not 0.0 <= self.min_stable_share <= 1.0 or self.min_stable_features < 1:
            raise ValueError("min_stable_share must be in [0, 1] and min_stable_features ≥ 1")
        if self.chance_draws < 1 or self.chance_rows < 2:
            raise ValueError("chance_draws must be ≥ 1 and chance_rows ≥ 2")
        if self.memory_cache_mb < 0:
            raise ValueError(f"memory_cache_mb must be ≥ 0, got {self.memory_cache_mb}")


@dataclass(frozen=True)
class Thresholds:
    """The cut-offs :func:`label_features` applies, and where they came from (see :func:`thresholds_between`)."""

    cosine: float  # retained: matched decoder cosine ≥ this ...
    correlation: float  # ... and matched activation correlation ≥ this
    floor_cosine: float  # changed: below a retained cut-off but cosine ≥ this ...
    floor_correlation: float  # ... and correlation ≥ this; otherwise lost / new
    chance_cosine: float = 0.0  # 99th percentile of matched cosine between random dictionaries (chance.py)
    chance_correlation: float = 0.0  # likewise for the matched activation correlation
    stable_cosine: float = 0.0  # a feature is stable when its seed null reproduces it at ≥ this ...
    stable_correlation: float = 0.0  # ... and ≥ this
    null_cosine: float = math.nan  # the seed nulls' q-quantile matched cosine (NaN: no null given)
    null_correlation: float = math.nan  # the seed nulls' q-quantile matched correlation (NaN: no null)
    source: str = "fallback"  # "fallback" or "seed-null q=<q> n=<stable matched null features>[ capped]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fallback_thresholds(
    cfg: DiffConfig, chance_cosine: float = 0.0, chance_correlation: float = 0.0
) -> Thresholds:
    """The fixed thresholds of ``cfg``, raised above the chance levels if need be, for when no seed null
    exists: uncalibrated."""
    return thresholds_between(
        cfg.cosine_threshold,
        cfg.correlation_threshold,
        chance_cosine,
        chance_correlation,
        "fallback",
        stable_gap=cfg.stable_gap,
    )


# --- decoder directions -----------------------------------------------------------------------------------
def random_decoys(partner: np.ndarray, n_other: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, a uniformly random column in ``range(n_other)`` other than ``partner[row]`` (-1 if none)."""
    has_partner = partner >= 0
    choices = n_other - has_partner.astype(np.int64)  # columns left once the partner is excluded
    draw = np.floor(rng.random(len(partner)) * np.maximum(choices, 1)).astype(np.int64)
    draw += has_partner & (draw >= partner)  # skip over the partner
    return np.where(choices > 0, draw, -1)


# --- activation statistics --------------------------------------------------------------------------------
@torch.inference_mode()
def encode_numpy(sae: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """``sae.encode`` on a raw numpy batch ``[b, d_in] -> [b, n_features]`` (float32 numpy)."""
    weight = sae.W_dec
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(weight.device, weight.dtype)
    return sae.encode(tensor).to("cpu", torch.float32).numpy()


class PairMoments:
    """Streaming float64 sums for the Pearson correlation of feature pairs on the same tokens."""

    def __init__(self, n_pairs: int) -> None:
        self.n = 0
        self.sums = np.zeros((5, n_pairs))  # Σa, Σb, Σa², Σb², Σab per pair

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add ``[tokens, n_pairs]`` activations of the A and B member of every pair."""
        a, b = a.astype(np.float64), b.astype(np.float64)
        self.n += len(a)
        self.sums += np.stack([a.sum(0), b.sum(0), (a * a).sum(0), (b * b).sum(0), (a * b).sum(0)])

    def correlation(self) -> np.ndarray:
        """Pearson r per pair (NaN where either feature has zero variance)."""
        n = max(self.n, 1)
        sa, sb, saa, sbb, sab = self.sums
        cov = sab - sa * sb / n
        var_a = np.maximum(saa - sa * sa / n, 0.0)
        var_b = np.maximum(sbb - sb * sb / n, 0.0)
        denom = np.sqrt(var_a * var_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)


def activation_correlation(acts_a: np.ndarray, acts_b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson r of ``acts_a[:, i]`` and ``acts_b[:, j]`` for each ``(i, j)`` in ``pairs [n_pairs, 2]``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    moments = PairMoments(len(pairs))
    moments.update(acts_a[:, pairs[:, 0]], acts_b[:, pairs[:, 1]])  # [tokens, n_pairs] each
    return moments.correlation()


def paired_activation_correlation(
    sae_a: torch.nn.Module, sae_b: torch.nn.Module, paired_batches: PairedBatches, pairs: np.ndarray
) -> np.ndarray:
    """Stream ``(x_a, x_b)`` batches of the same tokens through both SAEs; Pearson r per pair ``(i, j)``.

    Only the paired columns are kept per batch, so memory is ``O(batch × n_pairs)``, never ``[tokens, n_a]``.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    moments = PairMoments(len(pairs))
    for x_a, x_b in paired_batches:
        _check_paired(x_a, x_b)
        moments.update(encode_numpy(sae_a, x_a)[:, pairs[:, 0]], encode_numpy(sae_b, x_b)[:, pairs[:, 1]])
    return moments.correlation()


def paired_firing_rates(
    sae_a: torch.nn.Module, sae_b: torch.nn.Module, paired_batches: PairedBatches
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of tokens on which each feature of A (on x_a) and of B (on x_b) is > 0."""
    counts_a = counts_b = None
    n = 0
    for x_a, x_b in paired_batches:
        _check_paired(x_a, x_b)
        fired_a = (encode_numpy(sae_a, x_a) > 0).sum(0, dtype=np.int64)
        fired_b = (encode_numpy(sae_b, x_b) > 0).sum(0, dtype=np.int64)
        counts_a = fired_a if counts_a is None else counts_a + fired_a
        counts_b = fired_b if counts_b is None else counts_b + fired_b
        n += len(x_a)
    if n == 0:
        raise ValueError("paired_batches yielded no rows")
    return counts_a / n, counts_b / n


def _check_paired(x_a: np.ndarray, x_b: np.ndarray) -> None:
    if len(x_a) != len(x_b):
        raise ValueError(f"paired batches differ in length: {len(x_a)} vs {len(x_b)} rows")


# --- matching ---------------------------------------------------------------------------------------------
def match_features(
    cosine: np.ndarray,
    firing_a: np.ndarray,
    firing_b: np.ndarray,
    correlate: Callable[[np.ndarray], np.ndarray],
    min_firing_rate: float,
    seed: int = 0,
    assignment_power: float = 2.0,
) -> pd.DataFrame:
    """The per-feature match table (columns :data:`MATCH_COLUMNS`) from a cosine matrix and firing rates.

    Live features (firing rate ≥ ``min_firing_rate`` and > 0) are matched one-to-one by decoder cosine,
    maximising Σ max(cos, 0)^``assignment_power``;
    ``correlate(pairs [n, 2]) -> [n]`` supplies the activation correlation of (A feature, B feature) pairs
    and is called once, for the matched and decoy pairs together.
    """
    live_a = (firing_a > 0) & (firing_a >= min_firing_rate)
    live_b = (firing_b > 0) & (firing_b >= min_firing_rate)
    idx_a, idx_b = np.flatnonzero(live_a), np.flatnonzero(live_b)
    live_cos = cosine[np.ix_(idx_a, idx_b)]  # [live_a, live_b]
    rows, cols = optimal_matching(np.clip(live_cos, 0.0, None) ** assignment_power)
    partner_a = np.full(len(idx_a), -1, dtype=np.int64)
    partner_b = np.full(len(idx_b), -1, dtype=np.int64)
    partner_a[rows], partner_b[cols] = cols, rows
    rng = np.random.default_rng(seed)
    decoy_a = random_decoys(partner_a, len(idx_b), rng)  # local indices into idx_b
    decoy_b = random_decoys(partner_b, len(idx_a), rng)  # local indices into idx_a
    pairs = np.concatenate(
        [
            np.stack([idx_a[rows], idx_b[cols]], axis=1),
            _global_pairs(idx_a, idx_b, decoy_a, a_first=True),
            _global_pairs(idx_b, idx_a, decoy_b, a_first=False),
        ]
    ).astype(np.int64)
    unique = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    corr = dict(zip(map(tuple, unique.tolist()), correlate(unique) if len(unique) else [], strict=True))
    frame_a = _side_frame(SIDE_A, cosine, firing_a, live_a, idx_a, idx_b, partner_a, decoy_a, corr, True)
    frame_b = _side_frame(SIDE_B, cosine.T, firing_b, live_b, idx_b, idx_a, partner_b, decoy_b, corr, False)
    return pd.concat([frame_a, frame_b], ignore_index=True)


def _global_pairs(own: np.ndarray, other: np.ndarray, local: np.ndarray, a_first: bool) -> np.ndarray:
    keep = local >= 0
    pairs = np.stack([own[keep], other[local[keep]]], axis=1)
    return pairs if a_first else pairs[:, ::-1]


def _side_frame(
    side, cosine, firing, live, own_idx, other_idx, partner, decoys, corr, a_first
) -> pd.DataFrame:
    """One side's rows of the match table. ``cosine`` is oriented ``[own, other]``; ``partner`` / ``decoys``
    hold local indices (into ``other_idx``) per live feature (``own_idx``); ``corr`` maps global (a, b) pairs
    to correlations."""
    n = len(firing)
    match = np.full(n, -1, dtype=np.int64)
    decoy = np.full(n, -1, dtype=np.int64)
    has = partner >= 0
    match[own_idx[has]] = other_idx[partner[has]]
    has_decoy = decoys >= 0
    decoy[own_idx[has_decoy]] = other_idx[decoys[has_decoy]]

    def lookup(others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos = np.full(n, np.nan)
        cor = np.full(n, np.nan)
        for i in np.flatnonzero(others >= 0):
            j = int(others[i])
            cos[i] = cosine[i, j]
            cor[i] = corr[(i, j) if a_first else (j, i)]
        return cos, cor

    match_cos, match_corr = lookup(match)
    decoy_cos, decoy_corr = lookup(decoy)
    return pd.DataFrame(
        {
            "side": side,
            "feature": np.arange(n, dtype=np.int64),
            "live": live,
            "firing_rate": np.asarray(firing, dtype=np.float64),
            "match": match,
            "cosine": match_cos,
            "activation_correlation": match_corr,
            "decoy": decoy,
            "decoy_cosine": decoy_cos,
            "decoy_correlation": decoy_corr,
        }
    )


def match_dictionaries(
    W_dec_a: np.ndarray, W_dec_b: np.ndarray, acts_a: np.ndarray, acts_b: np.ndarray, cfg: DiffConfig
) -> pd.DataFrame:
    """Match table from decoders ``[n_a, d]``, ``[n_b, d]`` and in-memory activations ``[tokens, n_a|n_b]``."""
    if len(acts_a) != len(acts_b):
        raise ValueError(f"acts_a and acts_b must cover the same tokens: {len(acts_a)} vs {len(acts_b)} rows")
    cosine = decoder_cosine_matrix(W_dec_a, W_dec_b)
    firing_a, firing_b = (acts_a > 0).mean(axis=0), (acts_b > 0).mean(axis=0)
    return match_features(
        cosine,
        firing_a,
        firing_b,
        lambda pairs: activation_correlation(acts_a, acts_b, pairs),
        cfg.min_firing_rate,
        cfg.seed,
        cfg.assignment_power,
    )


def match_saes(
    sae_a: torch.nn.Module,
    sae_b: torch.nn.Module,
    paired_batches: Callable[[], PairedBatches],
    cfg: DiffConfig,
) -> pd.DataFrame:
    """Match table of two SAEs on streamed paired activations (two passes: firing rates, then correlations).

    ``paired_batches()`` must return a fresh iterable of ``(x_a, x_b)`` raw-activation batches each time it is
    called, in the same order both times. For a seed null pass the same stage twice: ``(x_a, x_a)``.
    """
    cosine = decoder_cosine_matrix(decoder_rows(sae_a), decoder_rows(sae_b))
    firing_a, firing_b = paired_firing_rates(sae_a, sae_b, paired_batches())
    return match_features(
        cosine,
        firing_a,
        firing_b,
        lambda pairs: paired_activation_correlation(sae_a, sae_b, paired_batches(), pairs),
        cfg.min_firing_rate,
        cfg.seed,
        cfg.assignment_power,
    )


# --- thresholds and labels --------------------------------------------------------------------------------
def calibrate_thresholds(
    null_match_df: pd.DataFrame,
    quantile: float = 0.1,
    retained_cosine: float | None = None,
    retained_correlation: float | None = None,
    chance_cosine: float = 0.0,
    chance_correlation: float = 0.0,
    stable_gap: float = 0.5,
    tolerance_cosine: float = 0.0,
    tolerance_correlation: float = 0.0,
) -> Thresholds:
    """Thresholds from seed-null match tables (same stage, two seeds), over their live matched *stable*
    features (a ``stable`` column, when present, selects them; see :func:`mark_stability`).

    ``null_match_df`` may hold several nulls concatenated (the pretrained and the fine-tuned one): only its
    ``SIDE_A`` rows are used. All quantiles are weighted by firing rate, so they describe the features
    that carry the activity.

    * Seed noise = the ``quantile`` of the null's matched cosine / correlation (a fraction ``1 - q`` of
      stable seed-to-seed matches are at least this good); τ = seed noise − ``tolerance_*`` (a relative
      effect size), never below the stability cut.
    * ``retained_*``: an optional effect-size cap, τ = min(seed noise, cap), still never below the
      stability cut. It lowers τ only, so with reproducible SAEs (seed noise 0.95) it calls a 0.72 match
      retained; :func:`diff_saes` reports capped labels beside the headline, which has no cap.
    * Chance = ``chance_*``, the 99th percentile of what random matching produces
      (:mod:`layershift.analysis.chance`); floors = halfway from chance to τ (:func:`thresholds_between`).
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    rows = null_match_df[null_match_df["side"] == SIDE_A]
    keep = rows["live"].to_numpy(bool) & (rows["match"].to_numpy() >= 0)
    if "stable" in rows:
        keep &= rows["stable"].to_numpy(bool)
    matched = rows[keep]
    if matched.empty:
        raise ValueError("the null match table has no live matched stable features to calibrate on")
    weight = matched["firing_rate"]
    null_cos = weighted_quantile(matched["cosine"], weight, quantile)
    null_corr = weighted_quantile(matched["activation_correlation"], weight, quantile)
    tau_cos, tau_corr = null_cos - tolerance_cosine, null_corr - tolerance_correlation
    return thresholds_between(
        cosine=tau_cos if retained_cosine is None else min(tau_cos, retained_cosine),
        correlation=tau_corr if retained_correlation is None else min(tau_corr, retained_correlation),
        chance_cosine=chance_cosine,
        chance_correlation=chance_correlation,
        source=f"seed-null q={quantile} n={len(matched)}" + ("" if retained_cosine is None else " capped"),
        null_cosine=null_cos,
        null_correlation=null_corr,
        stable_gap=stable_gap,
    )


def thresholds_between(
    cosine: float,
    correlation: float,
    chance_cosine: float,
    chance_correlation: float,
    source: str,
    null_cosine: float = math.nan,
    null_correlation: float = math.nan,
    stable_gap: float = 0.5,
) -> Thresholds:
    """Thresholds that lie above chance by construction.

    ``chance_*`` is the chance 99th percentile c (clipped to ≥ 0). The stability cut is
    s = c + ``stable_gap`` · (1 − c); τ = max(``cosine``, s); floor = (c + τ) / 2. So c < floor ≤ τ and
    c < s ≤ τ whenever c < 1; with ``stable_gap`` = 0.5, s ≥ floor too (a stable feature is never lost
    against its own seed null).
    """
    if not 0.0 < stable_gap < 1.0:
        raise ValueError(f"stable_gap must be in (0, 1), got {stable_gap}")
    c_cos, c_corr = max(float(chance_cosine), 0.0), max(float(chance_correlation), 0.0)
    s_cos, s_corr = c_cos + stable_gap * (1 - c_cos), c_corr + stable_gap * (1 - c_corr)
    tau_cos, tau_corr = max(float(cosine), s_cos), max(float(correlation), s_corr)
    return Thresholds(
        cosine=tau_cos,
        correlation=tau_corr,
        floor_cosine=(c_cos + tau_cos) / 2,
        floor_correlation=(c_corr + tau_corr) / 2,
        chance_cosine=c_cos,
        chance_correlation=c_corr,
        stable_cosine=s_cos,
        stable_correlation=s_corr,
        null_cosine=null_cosine,
        null_correlation=null_correlation,
        source=source,
    )


def weighted_quantile(values: pd.Series, weights: pd.Series, q: float, default: float | None = None) -> float:
    """The ``q``-quantile of the finite ``values`` under ``weights`` (inverted weighted CDF, no interpolation)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(v) & (w > 0)
    if not keep.any():
        if default is None:
            raise ValueError(f"no finite {getattr(values, 'name', 'values')} to take a quantile of")
        return default
    order = np.argsort(v[keep], kind="stable")
    v, cdf = v[keep][order], np.cumsum(w[keep][order])
    return float(v[np.searchsorted(cdf, q * cdf[-1], side="left").clip(max=len(v) - 1)])


def mark_stability(
    match_df: pd.DataFrame,
    thresholds: Thresholds,
    null_a_df: pd.DataFrame | None = None,
    null_b_df: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A copy of ``match_df`` with ``null_match``, ``null_cosine``, ``null_correlation`` and ``stable``.

    ``null_a_df`` / ``null_b_df`` are match tables of the pretrained / fine-tuned SAE (as their ``SIDE_A``)
    against their own seed null. A live feature is stable when its seed-null partner reproduces it clearly
    above chance: matched cosine ≥ ``thresholds.stable_cosine`` and correlation ≥
    ``thresholds.stable_correlation``. A side without a null is not assessed: its live features count as
    stable (and :func:`diff_verdict` calls the diff inconclusive).
    """
    df = match_df.copy()
    df["null_match"] = np.int64(-1)
    df["null_cosine"] = np.nan
    df["null_correlation"] = np.nan
    df["stable"] = df["live"].to_numpy(bool)
    for side, null_df in ((SIDE_A, null_a_df), (SIDE_B, null_b_df)):
        if null_df is None:
            continue
        own = null_df[null_df["side"] == SIDE_A].set_index("feature")
        mask = (df["side"] == side).to_numpy()
        features = df.loc[mask, "feature"].to_numpy()
        null_cos = own["cosine"].reindex(features).to_numpy(np.float64)
        null_corr = own["activation_correlation"].reindex(features).to_numpy(np.float64)
        df.loc[mask, "null_match"] = own["match"].reindex(features).fillna(-1).to_numpy(np.int64)
        df.loc[mask, "null_cosine"] = null_cos
        df.loc[mask, "null_correlation"] = null_corr
        with np.errstate(invalid="ignore"):  # NaN (no partner, constant feature) compares False: unstable
            stable = (null_cos >= thresholds.stable_cosine) & (null_corr >= thresholds.stable_correlation)
        df.loc[mask, "stable"] = df.loc[mask, "live"].to_numpy(bool) & stable
    return df


def label_features(match_df: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """A copy of ``match_df`` with a ``label`` column (one of :data:`LABELS`), rules in the module docstring.

    Without a ``stable`` column (:func:`mark_stability`) every live feature is labelled as if stable.
    """
    df = match_df.copy()
    cos = df["cosine"].to_numpy(dtype=np.float64)
    corr = df["activation_correlation"].to_numpy(dtype=np.float64)  # NaN compares False: never "same"
    matched = df["match"].to_numpy() >= 0
    with np.errstate(invalid="ignore"):
        retained = matched & (cos >= thresholds.cosine) & (corr >= thresholds.correlation)
        same = matched & (cos >= thresholds.floor_cosine) & (corr >= thresholds.floor_correlation)
    gone = np.where(df["side"].to_numpy() == SIDE_A, "lost", "new")
    label = np.where(retained, "retained", np.where(same, "changed", gone))
    live = df["live"].to_numpy(dtype=bool)
    stable = df["stable"].to_numpy(dtype=bool) if "stable" in df else live
    df["label"] = np.where(live, np.where(stable, label, "unstable"), "dead")
    return df


def label_fractions(labels_df: pd.DataFrame, column: str = "label") -> dict[str, float | int | None]:
    """Counts per side and label fractions among the *stable* live features.

    ``retained``/``changed``/``lost`` fractions are of the stable pretrained features; ``new`` of the stable
    fine-tuned ones; ``*_finetuned`` gives retained/changed as fractions of the stable fine-tuned features.
    ``*_activity_fraction`` weights each feature by its firing rate: the share of stable feature activity
    (rather than of dictionary entries) with that label. ``stable_fraction_<side>`` /
    ``unstable_fraction_<side>`` are shares of the live features. ``None`` where nothing is counted.
    """
    out: dict[str, float | int | None] = {}
    for side, suffix in ((SIDE_A, ""), (SIDE_B, "_finetuned")):
        rows = labels_df[labels_df["side"] == side]
        labels = rows[column]
        live = rows[labels != "dead"]
        stable = live[live[column] != "unstable"]
        out[f"n_live_{side}"] = len(live)
        out[f"n_dead_{side}"] = int((labels == "dead").sum())
        out[f"n_stable_{side}"] = len(stable)
        out[f"n_unstable_{side}"] = len(live) - len(stable)
        out[f"stable_fraction_{side}"] = len(stable) / len(live) if len(live) else None
        out[f"unstable_fraction_{side}"] = (len(live) - len(stable)) / len(live) if len(live) else None
        gone = "lost" if side == SIDE_A else "new"
        activity = stable["firing_rate"].to_numpy(dtype=np.float64)
        for label in ("retained", "changed", gone):
            key = label + (suffix if label != gone else "")
            is_label = (stable[column] == label).to_numpy()
            out[f"{key}_fraction"] = float(is_label.mean()) if len(stable) else None
            out[f"{key}_activity_fraction"] = (
                float(activity[is_label].sum() / activity.sum()) if activity.sum() > 0 else None
            )
    return out


def diff_verdict(
    fractions: dict[str, Any], cfg: DiffConfig, assessed: dict[str, bool] | None = None
) -> tuple[str, str]:
    """("conclusive" | "inconclusive", reason) for one layer's diff, from :func:`label_fractions`.

    The diff is conclusive only when, on *both* sides, stability was assessed against a seed null of that
    stage, at least ``cfg.min_stable_features`` features are stable and they make up at least
    ``cfg.min_stable_share`` of the live features. Why: (1) without a null for a stage, SAE instability on
    that side reads as change (issue #17); (2) a fraction over n stable features has a standard error up to
    0.5/√n, so n ≥ 25 keeps it ≤ 0.1, below the effects the study reports; (3) when most live features are
    unstable the stable ones are a selected minority (the frequent, easy features) and their labels say
    nothing about the layer: the SAEs, not fine-tuning, are what the numbers would describe. Random
    (untrained) SAEs have no stable features and land here, as does a near-chance or tiny-data layer.
    """
    reasons = []
    for side in (SIDE_A, SIDE_B):
        if assessed is not None and not assessed.get(side, False):
            reasons.append(f"no seed null for the {side} stage: its features' stability is unknown")
            continue
        n_stable, share = fractions.get(f"n_stable_{side}", 0), fractions.get(f"stable_fraction_{side}")
        if n_stable < cfg.min_stable_features:
            reasons.append(f"{n_stable} stable {side} features (< {cfg.min_stable_features})")
        elif share is None or share < cfg.min_stable_share:
            n_live = fractions.get(f"n_live_{side}", 0)
            reasons.append(
                f"{n_stable} of {n_live} live {side} features stable ({share or 0.0:.1%} < "
                f"{cfg.min_stable_share:.0%})"
            )
    if reasons:
        return "inconclusive", "; ".join(reasons)
    return "conclusive", (
        f"≥ {cfg.min_stable_features} stable features and ≥ {cfg.min_stable_share:g} of live features "
        "stable on both sides"
    )


def diff_summary(
    labels_df: pd.DataFrame,
    null_labels_df: pd.DataFrame | None = None,
    thresholds: Thresholds | None = None,
    *,
    chance: dict[str, Any] | None = None,
    verdict: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Label fractions over stable features and, side by side, the same on the seed null (``baseline_*``).

    ``null_labels_df`` must be :func:`label_features` of the pretrained null match table *with the same
    thresholds and stability*; with ``stable_gap`` = 0.5 its lost fraction is 0 by construction (stable
    means reproduced above the floor), so the null's instability shows as ``unstable_fraction_*``.
    When ``labels_df`` has a ``label_capped`` column its fractions appear as ``capped_*``. ``chance``
    (``chance_cosine_p50`` ... ) and ``verdict`` are copied in. JSON-safe: no NaN (``None`` instead).
    """
    summary: dict[str, Any] = dict(label_fractions(labels_df))
    if "label_capped" in labels_df:
        capped = label_fractions(labels_df, "label_capped")
        summary |= {
            f"capped_{k}": v for k, v in capped.items() if not k.startswith(("n_", "stable_", "unstable_"))
        }
    if null_labels_df is not None:
        summary |= {f"baseline_{k}": v for k, v in label_fractions(null_labels_df).items()}
    if thresholds is not None:
        summary |= {f"threshold_{k}": v for k, v in thresholds.to_dict().items()}
    summary |= chance or {}
    if verdict is not None:
        summary["verdict"], summary["verdict_reason"] = verdict
    return {k: _json_safe(v) for k, v in summary.items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def sample_rows(paired_batches: Callable[[], PairedBatches], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_rows`` rows of ``(x_a, x_b)`` (storage order): the bounded in-memory sample on which
    the correlation chance is measured."""
    parts_a, parts_b, n = [], [], 0
    for x_a, x_b in paired_batches():
        _check_paired(x_a, x_b)
        take = min(len(x_a), n_rows - n)
        parts_a.append(np.asarray(x_a[:take]))
        parts_b.append(np.asarray(x_b[:take]))
        n += take
        if n >= n_rows:
            break
    if not parts_a:
        raise ValueError("paired_batches yielded no rows")
    return np.concatenate(parts_a), np.concatenate(parts_b)


def _live(match_df: pd.DataFrame, side: str) -> pd.DataFrame:
    rows = match_df[match_df["side"] == side]
    return rows[rows["live"].to_numpy(bool)]


def matching_chance(
    sae_a: torch.nn.Module,
    sae_b: torch.nn.Module,
    match_df: pd.DataFrame,
    x_a: np.ndarray,
    x_b: np.ndarray,
    cfg: DiffConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Matched cosines and correlations that chance alone gives for the live shapes of ``match_df``.

    Cosine: :func:`~layershift.analysis.chance.random_matching_null` of the live counts. Correlation:
    :func:`~layershift.analysis.chance.random_encoder_correlation_null` of A's live features on the row sample
    ``x_a`` against random encoders on ``x_b`` firing at B's live rates (the bounded in-memory sample of
    :func:`sample_rows`, not the full stream).
    """
    live_a, live_b = _live(match_df, SIDE_A), _live(match_df, SIDE_B)
    d = decoder_rows(sae_a).shape[1]
    cos = chance.random_matching_null(
        len(live_a), len(live_b), d, draws=cfg.chance_draws, seed=cfg.seed, power=cfg.assignment_power
    )
    idx_a = live_a["feature"].to_numpy(np.int64)
    corr = chance.random_encoder_correlation_null(
        decoder_rows(sae_a)[idx_a],
        encode_numpy(sae_a, x_a)[:, idx_a],
        x_b,
        live_b["firing_rate"].to_numpy(np.float64),
        draws=max(1, cfg.chance_draws // 2),
        seed=cfg.seed,
        power=cfg.assignment_power,
    )
    return cos, corr


def diff_saes(
    sae_a: torch.nn.Module,
    sae_b: torch.nn.Module,
    paired_batches: Callable[[], PairedBatches],
    cfg: DiffConfig,
    null_a: torch.nn.Module | None = None,
    null_b: torch.nn.Module | None = None,
    *,
    null_sae: torch.nn.Module | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The whole diff of the pretrained SAE ``sae_a`` and the fine-tuned SAE ``sae_b``.

    ``null_a``: a second SAE of the *pretrained* stage (another seed); ``null_b``: a second SAE of the
    *fine-tuned* stage. (``null_sae`` is the old name of ``null_a``.) Steps:

    1. match A against B, A against ``null_a`` on ``(x_a, x_a)``, B against ``null_b`` on ``(x_b, x_b)``;
    2. chance: random-matching quantiles for each of those live shapes (:func:`matching_chance`), and for
       the cross-stage shape also random rows in the decoders' own spectrum
       (:func:`~layershift.analysis.chance.random_matching_null_like`); the chance level c = the largest 99th
       percentile among them;
    3. stability (:func:`mark_stability`) against each stage's own null, cut at c + ``stable_gap``·(1 − c);
    4. τ from the stable features of both nulls (:func:`calibrate_thresholds`: seed noise − ``tolerance_*``,
       no cap: the headline ``label``); the same with the effect-size cap ``retained_*`` goes to
       ``label_capped`` / ``capped_*``;
    5. :func:`diff_verdict`.

    Without any null the fallback thresholds of ``cfg`` (raised above chance) label every live feature and
    the verdict is inconclusive. Returns the labelled per-feature table and :func:`diff_summary`.
    """
    if null_sae is not None:
        if null_a is not None:
            raise TypeError("pass null_a or null_sae (its old name), not both")
        null_a = null_sae
    match_df = match_saes(sae_a, sae_b, paired_batches, cfg)

    def same_stage(k: int) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
        return lambda: ((pair[k], pair[k]) for pair in paired_batches())

    null_a_df = match_saes(sae_a, null_a, same_stage(0), cfg) if null_a is not None else None
    null_b_df = match_saes(sae_b, null_b, same_stage(1), cfg) if null_b is not None else None

    x_a, x_b = sample_rows(paired_batches, cfg.chance_rows)
    cos_chance, corr_chance = matching_chance(sae_a, sae_b, match_df, x_a, x_b, cfg)
    chance_summary = {
        **{f"chance_cosine_{k}": v for k, v in chance.chance_quantiles(cos_chance).items()},
        **{f"chance_correlation_{k}": v for k, v in chance.chance_quantiles(corr_chance).items()},
    }
    # isotropic random rows underrate chance for dictionaries confined to part of the space: also draw them
    # in the two live decoders' own spectrum, and take the higher 99th percentile
    live_rows = [
        decoder_rows(sae)[_live(match_df, side)["feature"].to_numpy(np.int64)]
        for sae, side in ((sae_a, SIDE_A), (sae_b, SIDE_B))
    ]
    like = chance.random_matching_null_like(
        *live_rows, draws=cfg.chance_draws, seed=cfg.seed, power=cfg.assignment_power
    )
    chance_summary["chance_cosine_p99_spectrum"] = chance.chance_quantiles(like)["p99"]
    levels_cos, levels_corr = (
        [chance_summary["chance_cosine_p99"], chance_summary["chance_cosine_p99_spectrum"]],
        [chance_summary["chance_correlation_p99"]],
    )
    for stage, (sae, null, null_df, x) in {
        SIDE_A: (sae_a, null_a, null_a_df, x_a),
        SIDE_B: (sae_b, null_b, null_b_df, x_b),
    }.items():
        if null_df is None:
            continue
        c_cos, c_corr = matching_chance(sae, null, null_df, x, x, cfg)
        q_cos, q_corr = chance.chance_quantiles(c_cos), chance.chance_quantiles(c_corr)
        chance_summary[f"chance_cosine_p99_null_{stage}"] = q_cos["p99"]
        chance_summary[f"chance_correlation_p99_null_{stage}"] = q_corr["p99"]
        levels_cos.append(q_cos["p99"])
        levels_corr.append(q_corr["p99"])
        repro = _live(null_df, SIDE_A)
        chance_summary[f"null_median_cosine_{stage}"] = (
            float(np.nanmedian(repro["cosine"])) if repro["cosine"].notna().any() else None
        )
        # the acceptance for a reproducible SAE: median ≥ 0.7 and ≥ 80 % of live features above the
        # random-matching 99th percentile of this null's live shapes (unmatched features count as below)
        above = (repro["cosine"].to_numpy(np.float64) > (q_cos["p99"] or 0.0)).mean() if len(repro) else None
        chance_summary[f"null_share_above_chance_{stage}"] = above
    chance_cos = max([v for v in levels_cos if v is not None], default=0.0)
    chance_corr = max([v for v in levels_corr if v is not None], default=0.0)
    gap = cfg.stable_gap
    base = thresholds_between(0.0, 0.0, chance_cos, chance_corr, "stability", stable_gap=gap)
    nulls = [df for df in (null_a_df, null_b_df) if df is not None]
    stable_nulls = [mark_stability(df, base, df, None) for df in nulls]  # SIDE_A rows: each SAE vs its null
    labelled = mark_stability(match_df, base, null_a_df, null_b_df)
    pooled = pd.concat(stable_nulls, ignore_index=True) if stable_nulls else None
    calibrate = pooled is not None and bool(
        (pooled["stable"] & (pooled["side"] == SIDE_A) & (pooled["match"] >= 0)).any()
    )
    if calibrate:
        tolerance = (cfg.tolerance_cosine, cfg.tolerance_correlation)
        thresholds = calibrate_thresholds(
            pooled, cfg.null_quantile, None, None, chance_cos, chance_corr, gap, *tolerance
        )
        capped = calibrate_thresholds(
            pooled,
            cfg.null_quantile,
            cfg.cosine_threshold,
            cfg.correlation_threshold,
            chance_cos,
            chance_corr,
            gap,
            *tolerance,
        )
    else:
        thresholds = capped = fallback_thresholds(cfg, chance_cos, chance_corr)
    labels = label_features(labelled, thresholds)
    labels["label_capped"] = label_features(labelled, capped)["label"]

    null_labels = None
    if null_a_df is not None:  # the pretrained null, both of its sides assessed against each other
        null_stable = mark_stability(null_a_df, base, null_a_df, _swap_sides(null_a_df))
        null_labels = label_features(null_stable, thresholds)
    verdict = diff_verdict(
        label_fractions(labels), cfg, {SIDE_A: null_a is not None, SIDE_B: null_b is not None}
    )
    summary = diff_summary(labels, null_labels, thresholds, chance=chance_summary, verdict=verdict)
    summary |= {f"capped_threshold_{k}": _json_safe(getattr(capped, k)) for k in ("cosine", "correlation")}
    summary["headline"] = "uncapped"
    # a side without its own seed null counts its live features as stable only so that they get a label
    summary |= {
        f"stability_assessed_{side}": null is not None for side, null in ((SIDE_A, null_a), (SIDE_B, null_b))
    }
    return labels, summary


def _swap_sides(match_df: pd.DataFrame) -> pd.DataFrame:
    """The same match table seen from the other SAE (its ``SIDE_B`` rows become ``SIDE_A``)."""
    return match_df.assign(side=np.where(match_df["side"] == SIDE_A, SIDE_B, SIDE_A))
