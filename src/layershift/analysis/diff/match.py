"""Pairing the features of two dictionaries: one-to-one by decoder cosine, then their activation correlation.

The *reference* dictionary's rows of a match table carry ``side`` = :data:`REFERENCE_SIDE`, the *compared*
dictionary's :data:`COMPARED_SIDE`. The values are the stage names ``"pretrained"`` / ``"finetuned"`` because
the cross-stage diff is what the tables are written for; in a seed-null matching (a stage's SAE against an
SAE of the same stage trained with another seed) the reference is that stage's SAE and the compared side its
seed null, whatever the stage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from layershift.analysis.chance import optimal_matching
from layershift.analysis.diff.activations import (
    PairedBatches,
    activation_correlation,
    paired_activation_correlation,
    paired_firing_rates,
)
from layershift.analysis.diff.settings import DiffConfig
from layershift.dictionaries.decoders import decoder_cosine_matrix, decoder_rows

REFERENCE_SIDE = (
    "pretrained"  # ``side`` of the reference dictionary's rows (a seed-null matching's stage SAE)
)
COMPARED_SIDE = "finetuned"  # ``side`` of the compared dictionary's rows (a seed-null matching's seed null)
MATCH_COLUMNS = (
    "side",  # REFERENCE_SIDE or COMPARED_SIDE
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


def live_rows(match_df: pd.DataFrame, side: str) -> pd.DataFrame:
    """The live features' rows of one side of a match table."""
    rows = match_df[match_df["side"] == side]
    return rows[rows["live"].to_numpy(bool)]


def swap_sides(match_df: pd.DataFrame) -> pd.DataFrame:
    """The same match table seen from the compared dictionary (its rows become the reference side's)."""
    return match_df.assign(side=np.where(match_df["side"] == REFERENCE_SIDE, COMPARED_SIDE, REFERENCE_SIDE))


def random_decoys(partner: np.ndarray, n_other: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, a uniformly random column in ``range(n_other)`` other than ``partner[row]`` (-1 if none)."""
    has_partner = partner >= 0
    choices = n_other - has_partner.astype(np.int64)  # columns left once the partner is excluded
    draw = np.floor(rng.random(len(partner)) * np.maximum(choices, 1)).astype(np.int64)
    draw += has_partner & (draw >= partner)  # skip over the partner
    return np.where(choices > 0, draw, -1)


def match_features(
    cosine: np.ndarray,
    reference_firing: np.ndarray,
    compared_firing: np.ndarray,
    correlate: Callable[[np.ndarray], np.ndarray],
    min_firing_rate: float,
    seed: int = 0,
    assignment_power: float = 2.0,
) -> pd.DataFrame:
    """The per-feature match table (columns :data:`MATCH_COLUMNS`) from a cosine matrix
    ``[n_reference, n_compared]`` and both sides' firing rates.

    Live features (firing rate ≥ ``min_firing_rate`` and > 0) are matched one-to-one by decoder cosine,
    maximising Σ max(cos, 0)^``assignment_power``; ``correlate(pairs [n, 2]) -> [n]`` supplies the activation
    correlation of (reference feature, compared feature) pairs and is called once, for the matched and decoy
    pairs together.
    """
    reference_live = (reference_firing > 0) & (reference_firing >= min_firing_rate)
    compared_live = (compared_firing > 0) & (compared_firing >= min_firing_rate)
    reference_index, compared_index = np.flatnonzero(reference_live), np.flatnonzero(compared_live)
    live_cosine = cosine[np.ix_(reference_index, compared_index)]  # [live reference, live compared]
    rows, cols = optimal_matching(np.clip(live_cosine, 0.0, None) ** assignment_power)
    reference_partner = np.full(len(reference_index), -1, dtype=np.int64)
    compared_partner = np.full(len(compared_index), -1, dtype=np.int64)
    reference_partner[rows], compared_partner[cols] = cols, rows
    rng = np.random.default_rng(seed)
    reference_decoy = random_decoys(reference_partner, len(compared_index), rng)  # into compared_index
    compared_decoy = random_decoys(compared_partner, len(reference_index), rng)  # into reference_index
    pairs = np.concatenate(
        [
            np.stack([reference_index[rows], compared_index[cols]], axis=1),
            global_pairs(reference_index, compared_index, reference_decoy, reference_first=True),
            global_pairs(compared_index, reference_index, compared_decoy, reference_first=False),
        ]
    ).astype(np.int64)
    unique = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    correlations = correlate(unique) if len(unique) else []
    pair_correlation = dict(zip(map(tuple, unique.tolist()), correlations, strict=True))
    reference_frame = side_frame(
        REFERENCE_SIDE,
        cosine,
        reference_firing,
        reference_live,
        (reference_index, compared_index),
        (reference_partner, reference_decoy),
        pair_correlation,
        reference_first=True,
    )
    compared_frame = side_frame(
        COMPARED_SIDE,
        cosine.T,
        compared_firing,
        compared_live,
        (compared_index, reference_index),
        (compared_partner, compared_decoy),
        pair_correlation,
        reference_first=False,
    )
    return pd.concat([reference_frame, compared_frame], ignore_index=True)


def global_pairs(own: np.ndarray, other: np.ndarray, local: np.ndarray, reference_first: bool) -> np.ndarray:
    """(reference feature, compared feature) pairs from each live ``own`` feature's ``local`` index into
    ``other`` (-1: none)."""
    keep = local >= 0
    pairs = np.stack([own[keep], other[local[keep]]], axis=1)
    return pairs if reference_first else pairs[:, ::-1]


def side_frame(
    side: str,
    cosine: np.ndarray,
    firing: np.ndarray,
    live: np.ndarray,
    live_index: tuple[np.ndarray, np.ndarray],
    partners: tuple[np.ndarray, np.ndarray],
    pair_correlation: dict[tuple[int, int], float],
    reference_first: bool,
) -> pd.DataFrame:
    """One side's rows of the match table. ``cosine`` is oriented ``[own, other]``; ``live_index`` holds the
    live features of (own, other) side; ``partners`` the (match, decoy) of each own live feature as local
    indices into the other side's live features; ``pair_correlation`` maps global (reference, compared) pairs
    to correlations."""
    own_index, other_index = live_index
    partner, decoys = partners
    n = len(firing)
    match = np.full(n, -1, dtype=np.int64)
    decoy = np.full(n, -1, dtype=np.int64)
    has = partner >= 0
    match[own_index[has]] = other_index[partner[has]]
    has_decoy = decoys >= 0
    decoy[own_index[has_decoy]] = other_index[decoys[has_decoy]]

    def lookup(others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos = np.full(n, np.nan)
        cor = np.full(n, np.nan)
        for own in np.flatnonzero(others >= 0):
            other = int(others[own])
            cos[own] = cosine[own, other]
            cor[own] = pair_correlation[(own, other) if reference_first else (other, own)]
        return cos, cor

    match_cosine, match_correlation = lookup(match)
    decoy_cosine, decoy_correlation = lookup(decoy)
    return pd.DataFrame(
        {
            "side": side,
            "feature": np.arange(n, dtype=np.int64),
            "live": live,
            "firing_rate": np.asarray(firing, dtype=np.float64),
            "match": match,
            "cosine": match_cosine,
            "activation_correlation": match_correlation,
            "decoy": decoy,
            "decoy_cosine": decoy_cosine,
            "decoy_correlation": decoy_correlation,
        }
    )


def match_dictionaries(
    reference_decoder: np.ndarray,
    compared_decoder: np.ndarray,
    reference_acts: np.ndarray,
    compared_acts: np.ndarray,
    cfg: DiffConfig,
) -> pd.DataFrame:
    """Match table from decoders ``[n_reference, d]``, ``[n_compared, d]`` and in-memory activations
    ``[tokens, n_reference]``, ``[tokens, n_compared]`` of the same tokens."""
    if len(reference_acts) != len(compared_acts):
        raise ValueError(
            "reference_acts and compared_acts must cover the same tokens: "
            f"{len(reference_acts)} vs {len(compared_acts)} rows"
        )
    cosine = decoder_cosine_matrix(reference_decoder, compared_decoder)
    reference_firing, compared_firing = (reference_acts > 0).mean(axis=0), (compared_acts > 0).mean(axis=0)
    return match_features(
        cosine,
        reference_firing,
        compared_firing,
        lambda pairs: activation_correlation(reference_acts, compared_acts, pairs),
        cfg.min_firing_rate,
        cfg.seed,
        cfg.assignment_power,
    )


def match_saes(
    reference: torch.nn.Module,
    compared: torch.nn.Module,
    paired_batches: Callable[[], PairedBatches],
    cfg: DiffConfig,
) -> pd.DataFrame:
    """Match table of two SAEs on streamed paired activations (two passes: firing rates, then correlations).

    ``paired_batches()`` must return a fresh iterable of ``(x_reference, x_compared)`` raw-activation batches
    each time it is called, in the same order both times. For a seed-null matching pass the same stage twice.
    """
    cosine = decoder_cosine_matrix(decoder_rows(reference), decoder_rows(compared))
    reference_firing, compared_firing = paired_firing_rates(reference, compared, paired_batches())
    return match_features(
        cosine,
        reference_firing,
        compared_firing,
        lambda pairs: paired_activation_correlation(reference, compared, paired_batches(), pairs),
        cfg.min_firing_rate,
        cfg.seed,
        cfg.assignment_power,
    )
