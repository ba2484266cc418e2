"""Feature-level model diff: which SAE features a fine-tuned model retained, changed, lost or gained.

Two SAEs are trained independently at one layer, A on the pretrained model's activations and B on the
fine-tuned model's (the token rows of the two activation sets line up: row ``t`` is the same token in both).
Each feature is compared by two independent signals:

* its **decoder direction**: the cosine matrix of A's and B's unit decoder rows ``[n_a, n_b]`` and a one-to-one
  assignment of live features (:func:`scipy.optimize.linear_sum_assignment`) maximising Σ max(cos, 0)^p
  (``DiffConfig.assignment_power``; p = 2 by default, see there);
* its **activation pattern**: the Pearson correlation of the two matched features' activations on the same
  tokens, accumulated in float64 over streamed batches for the matched pairs only.

Every feature then gets a label (:func:`label_features`):

``retained``  matched, cosine ≥ τ_cos and correlation ≥ τ_corr;
``changed``   matched, below one of those, yet both still ≥ the "same feature" floors;
``lost``      an A feature whose match falls below a floor (or that has no live match);
``new``       the same for a B feature;
``dead``      never (or too rarely) active; excluded from matching and from every fraction.

**Calibration by a seed null.** Two SAEs trained on the *same* activations with different seeds never agree
perfectly, so fixed thresholds invent change. Given a second SAE A′ of the pretrained stage, the same matching
of A against A′ (:func:`match_saes` on ``(x_a, x_a)`` batches) measures what seed noise alone produces, and
:func:`calibrate_thresholds` turns it into thresholds (all quantiles weighted by firing rate):

* τ = min(the ``q``-quantile of the seed-to-seed matched cosine / correlation, an effect size): a cross-stage
  match at least as good as what retraining alone gives is retained, and so is any difference smaller than
  the effect size (``DiffConfig.retained_*``), however reproducible the SAEs;
* chance = the median cosine / correlation of a feature with a random *other* feature (its decoy);
* floors = halfway from chance to τ: a match below a floor is closer to an unrelated feature than to a
  retained one, so the feature counts as lost / new.

:func:`diff_summary` reports the label fractions (per feature and per unit of activity) next to the rates the
same thresholds give on the null matching, so every "x % lost" comes with its seed-noise baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

# the matching primitives live in chance.py (which the labelling below needs); importable from here as before
from layershift.chance import decoder_cosine_matrix, optimal_matching, unit_rows  # noqa: F401

SIDE_A = "pretrained"  # the reference side (in a seed null: the first seed)
SIDE_B = "finetuned"  # the compared side (in a seed null: the second seed)
LABELS = ("retained", "changed", "lost", "new", "dead")
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

PairedBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (x_a [b, d_a], x_b [b, d_b]) for the same b tokens


@dataclass
class DiffConfig:
    """How features are matched, called dead and labelled."""

    quantile: float = 0.1  # q: seed noise level = q-quantile of the null's matched cosine / correlation
    # Effect sizes: retained needs cosine ≥ min(retained_cosine, seed noise level) and likewise for the
    # correlation, so neither seed noise nor a difference smaller than these counts as change. Without a seed
    # null they are the cut-offs on their own (floors then halfway to 0): uncalibrated, marked "fallback".
    retained_cosine: float = 0.7  # decoder cosine at which a match is retained whatever the seed noise
    retained_correlation: float = 0.5  # activation correlation at which a match is retained, likewise
    min_firing_rate: float = 1e-5  # features active on a smaller fraction of tokens (or never) are "dead"
    seed: int = 0  # seeds the choice of decoy features (the chance reference of each feature)
    # The assignment maximises Σ max(cos, 0)^p over matched pairs: p = 1 is the plain total cosine; p = 2 the
    # total captured energy (cos² = share of one unit direction the other explains), which never trades one
    # near-perfect match for two mediocre ones (a² + b² < 1 for junk pairs), as p = 1 readily does.
    assignment_power: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 0.5:
            raise ValueError(f"quantile must be in (0, 0.5), got {self.quantile}")
        if self.min_firing_rate < 0:
            raise ValueError(f"min_firing_rate must be ≥ 0, got {self.min_firing_rate}")
        if self.assignment_power <= 0:
            raise ValueError(f"assignment_power must be > 0, got {self.assignment_power}")


@dataclass(frozen=True)
class Thresholds:
    """The cut-offs :func:`label_features` applies, and where they came from."""

    cosine: float  # retained: matched decoder cosine ≥ this ...
    correlation: float  # ... and matched activation correlation ≥ this
    floor_cosine: float  # changed: below a retained cut-off but cosine ≥ this ...
    floor_correlation: float  # ... and correlation ≥ this; otherwise lost / new
    chance_cosine: float = 0.0  # cosine an unrelated feature reaches (median over decoys; 0 for the fallback)
    chance_correlation: float = 0.0  # correlation an unrelated feature reaches (likewise)
    null_cosine: float = math.nan  # the seed null's q-quantile matched cosine (NaN: no null given)
    null_correlation: float = math.nan  # the seed null's q-quantile matched correlation (NaN: no null)
    source: str = "fallback"  # "fallback" or "seed-null q=<q> n=<live matched null features>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fallback_thresholds(cfg: DiffConfig) -> Thresholds:
    """The fixed thresholds of ``cfg`` (chance taken as 0), for when no seed null exists: uncalibrated."""
    return thresholds_between(cfg.retained_cosine, cfg.retained_correlation, 0.0, 0.0, "fallback")


# --- decoder directions -----------------------------------------------------------------------------------
def decoder_rows(model: Any) -> np.ndarray:
    """An SAE's decoder ``[n_features, d]`` as float64 numpy (accepts a module with ``W_dec`` or an array)."""
    weights = getattr(model, "W_dec", model)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().to("cpu", torch.float64).numpy()
    return np.asarray(weights, dtype=np.float64)


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
    retained_cosine: float | None = 0.7,
    retained_correlation: float | None = 0.5,
) -> Thresholds:
    """Thresholds from a seed-null match table (same stage, two seeds), over its live matched features.

    All quantiles are weighted by firing rate, so they describe the features that carry the activity (rarely
    firing features, which SAEs reproduce worst across seeds, do not set the noise level on their own).

    * Seed noise = the ``quantile`` of the null's matched cosine / correlation (a fraction ``1 - q`` of
      seed-to-seed matches are at least this good). τ = min(seed noise, ``retained_*``): the null can only
      lower the bar, so a feature is never called changed for a difference that retraining alone produces,
      nor for one smaller than the effect size ``retained_*`` (``None``: no cap).
    * Chance = the median cosine / correlation with a random *other* feature (the decoys).
    * Floors = halfway from chance to τ: a match below a floor is closer to an unrelated feature than to a
      retained one, so the feature counts as lost / new.
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    matched = null_match_df[null_match_df["live"] & (null_match_df["match"] >= 0)]
    if matched.empty:
        raise ValueError("the null match table has no live matched features to calibrate on")
    weight = matched["firing_rate"]
    null_cos = weighted_quantile(matched["cosine"], weight, quantile)
    null_corr = weighted_quantile(matched["activation_correlation"], weight, quantile)
    return thresholds_between(
        cosine=null_cos if retained_cosine is None else min(null_cos, retained_cosine),
        correlation=null_corr if retained_correlation is None else min(null_corr, retained_correlation),
        chance_cosine=weighted_quantile(matched["decoy_cosine"], weight, 0.5, default=0.0),
        chance_correlation=weighted_quantile(matched["decoy_correlation"], weight, 0.5, default=0.0),
        source=f"seed-null q={quantile} n={len(matched)}",
        null_cosine=null_cos,
        null_correlation=null_corr,
    )


def thresholds_between(
    cosine: float,
    correlation: float,
    chance_cosine: float,
    chance_correlation: float,
    source: str,
    null_cosine: float = math.nan,
    null_correlation: float = math.nan,
) -> Thresholds:
    """Thresholds with retained cut-offs τ and floors halfway from the chance levels to τ (capped at τ)."""
    return Thresholds(
        cosine=cosine,
        correlation=correlation,
        floor_cosine=min(cosine, (chance_cosine + cosine) / 2),
        floor_correlation=min(correlation, (chance_correlation + correlation) / 2),
        chance_cosine=chance_cosine,
        chance_correlation=chance_correlation,
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


def label_features(match_df: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """A copy of ``match_df`` with a ``label`` column (one of :data:`LABELS`), rules in the module docstring."""
    df = match_df.copy()
    cos = df["cosine"].to_numpy(dtype=np.float64)
    corr = df["activation_correlation"].to_numpy(dtype=np.float64)  # NaN compares False: never "same"
    matched = df["match"].to_numpy() >= 0
    retained = matched & (cos >= thresholds.cosine) & (corr >= thresholds.correlation)
    same = matched & (cos >= thresholds.floor_cosine) & (corr >= thresholds.floor_correlation)
    gone = np.where(df["side"].to_numpy() == SIDE_A, "lost", "new")
    label = np.where(retained, "retained", np.where(same, "changed", gone))
    df["label"] = np.where(df["live"].to_numpy(dtype=bool), label, "dead")
    return df


def label_fractions(labels_df: pd.DataFrame) -> dict[str, float]:
    """Counts of live/dead features per side and label fractions among live features.

    ``retained``/``changed``/``lost`` fractions are of the live pretrained features; ``new`` of the live
    fine-tuned ones; ``*_finetuned`` gives retained/changed as fractions of the live fine-tuned features.
    ``*_activity_fraction`` weights each feature by its firing rate: the share of feature activity (rather
    than of dictionary entries) with that label, which rarely firing features barely move.
    """
    out: dict[str, float] = {}
    for side, suffix in ((SIDE_A, ""), (SIDE_B, "_finetuned")):
        rows = labels_df[labels_df["side"] == side]
        live = rows[rows["label"] != "dead"]
        out[f"n_live_{side}"] = len(live)
        out[f"n_dead_{side}"] = int((rows["label"] == "dead").sum())
        gone = "lost" if side == SIDE_A else "new"
        activity = live["firing_rate"].to_numpy(dtype=np.float64)
        for label in ("retained", "changed", gone):
            key = label + (suffix if label != gone else "")
            is_label = (live["label"] == label).to_numpy()
            out[f"{key}_fraction"] = float(is_label.mean()) if len(live) else math.nan
            out[f"{key}_activity_fraction"] = (
                float(activity[is_label].sum() / activity.sum()) if activity.sum() > 0 else math.nan
            )
    return out


def diff_summary(
    labels_df: pd.DataFrame, null_labels_df: pd.DataFrame | None = None, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """Label fractions of the diff and, side by side, the same fractions on the seed null (``baseline_*``).

    ``null_labels_df`` must be :func:`label_features` of the null match table *with the same thresholds*;
    a lost/new fraction near its baseline is what seed noise alone produces, not evidence of change.
    """
    summary: dict[str, Any] = dict(label_fractions(labels_df))
    if null_labels_df is not None:
        summary |= {f"baseline_{k}": v for k, v in label_fractions(null_labels_df).items()}
    if thresholds is not None:
        summary |= {f"threshold_{k}": v for k, v in thresholds.to_dict().items()}
    return summary


def diff_saes(
    sae_a: torch.nn.Module,
    sae_b: torch.nn.Module,
    paired_batches: Callable[[], PairedBatches],
    cfg: DiffConfig,
    null_sae: torch.nn.Module | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The whole diff: match A against B, calibrate on A against ``null_sae`` (A′, another seed), label.

    Without ``null_sae`` the fixed fallback thresholds of ``cfg`` are used and the summary has no baseline.
    Returns the labelled per-feature table and :func:`diff_summary`.
    """
    match_df = match_saes(sae_a, sae_b, paired_batches, cfg)
    null_labels = None
    if null_sae is not None:

        def same_stage() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            return ((x_a, x_a) for x_a, _ in paired_batches())

        null_df = match_saes(sae_a, null_sae, same_stage, cfg)
        thresholds = calibrate_thresholds(
            null_df, cfg.quantile, cfg.retained_cosine, cfg.retained_correlation
        )
        null_labels = label_features(null_df, thresholds)
    else:
        thresholds = fallback_thresholds(cfg)
    labels = label_features(match_df, thresholds)
    return labels, diff_summary(labels, null_labels, thresholds)


# --- paired shards ----------------------------------------------------------------------------------------
def open_paired_shards(dir_a: str | Path, dir_b: str | Path) -> tuple[Any, Any]:
    """Two :class:`~layershift.shards.ShardReader` over shards of the same tokens, checked row group by group.

    The layouts must match (same row count per group) and every group must hold the same
    ``(sentence_id, position)`` keys in the same order; then equal shuffling seeds keep rows paired.
    """
    from layershift.shards import ShardReader

    reader_a, reader_b = ShardReader(dir_a), ShardReader(dir_b)
    layout_a = [n for _, _, n in reader_a.groups]
    layout_b = [n for _, _, n in reader_b.groups]
    if layout_a != layout_b:
        raise ValueError(
            f"{dir_a} and {dir_b}: row groups differ ({len(layout_a)} vs {len(layout_b)} groups)"
        )
    keys = ["sentence_id", "position"]
    for group in range(len(layout_a)):
        if not reader_a.read_group(group, keys).equals(reader_b.read_group(group, keys)):
            raise ValueError(f"{dir_a} and {dir_b}: row group {group} holds different tokens")
    return reader_a, reader_b


def zip_paired(
    reader_a: Any,
    reader_b: Any,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    buffer_groups: int = 8,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x_a, x_b)`` batches from two readers of :func:`open_paired_shards`, shuffled identically."""
    stream_a = reader_a.iter_batches(batch_size, shuffle=shuffle, seed=seed, buffer_groups=buffer_groups)
    stream_b = reader_b.iter_batches(batch_size, shuffle=shuffle, seed=seed, buffer_groups=buffer_groups)
    yield from zip(stream_a, stream_b, strict=True)


def paired_shard_batches(
    dir_a: str | Path, dir_b: str | Path, batch_size: int = 4096
) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """A factory of ``(x_a, x_b)`` batches in storage order from two layers' shards of the same tokens."""
    reader_a, reader_b = open_paired_shards(dir_a, dir_b)
    return lambda: zip_paired(reader_a, reader_b, batch_size)
