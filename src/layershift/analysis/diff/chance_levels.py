"""The chance level c of a diff: what random matching gives for the shapes each matching actually matched.

A matched pair is the best of hundreds of candidates, so unrelated dictionaries match well above 0 (two
random 512 x 384 dictionaries: median ≈ 0.15, 99th percentile ≈ 0.2). Every diff measures, for the live
shapes it matches, the matched cosine of random isotropic dictionaries (and, for the cross-stage matching,
of random rows in the decoders' own spectrum) and the matched activation correlation of random ReLU encoders
on a bounded in-memory sample of rows (:mod:`layershift.analysis.chance`). c is the largest 99th percentile
over the cross-stage and the two seed-null matchings; every threshold lies above it by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from layershift.analysis import chance
from layershift.analysis.diff.activations import encode_numpy
from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE, live_rows
from layershift.analysis.diff.settings import DiffConfig
from layershift.dictionaries.decoders import decoder_rows


def matching_chance(
    reference: torch.nn.Module,
    compared: torch.nn.Module,
    match_df: pd.DataFrame,
    x_reference: np.ndarray,
    x_compared: np.ndarray,
    cfg: DiffConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Matched cosines and correlations that chance alone gives for the live shapes of ``match_df``.

    Cosine: :func:`~layershift.analysis.chance.random_matching_chance` of the live counts. Correlation:
    :func:`~layershift.analysis.chance.random_encoder_correlation_chance` of the reference SAE's live features
    on the row sample ``x_reference [rows, d]`` against random encoders on ``x_compared [rows, d]`` firing at
    the compared side's live rates (the bounded in-memory sample of
    :func:`~layershift.analysis.diff.activations.sample_rows`, not the full stream).
    """
    reference_live, compared_live = live_rows(match_df, REFERENCE_SIDE), live_rows(match_df, COMPARED_SIDE)
    d = decoder_rows(reference).shape[1]
    cosines = chance.random_matching_chance(
        len(reference_live),
        len(compared_live),
        d,
        draws=cfg.chance_draws,
        seed=cfg.seed,
        power=cfg.assignment_power,
    )
    reference_features = reference_live["feature"].to_numpy(np.int64)
    correlations = chance.random_encoder_correlation_chance(
        decoder_rows(reference)[reference_features],
        encode_numpy(reference, x_reference)[:, reference_features],
        x_compared,
        compared_live["firing_rate"].to_numpy(np.float64),
        draws=max(1, cfg.chance_draws // 2),
        seed=cfg.seed,
        power=cfg.assignment_power,
    )
    return cosines, correlations


def cross_stage_chance(
    pretrained: torch.nn.Module,
    finetuned: torch.nn.Module,
    match_df: pd.DataFrame,
    sample: tuple[np.ndarray, np.ndarray],
    cfg: DiffConfig,
) -> dict[str, Any]:
    """``chance_cosine_p*``, ``chance_correlation_p*`` of the cross-stage matching ``match_df`` on the paired
    row ``sample``, and ``chance_cosine_p99_spectrum``: random rows drawn in the two live decoders' own
    spectrum (isotropic rows underrate chance for dictionaries confined to part of the space)."""
    cosines, correlations = matching_chance(pretrained, finetuned, match_df, *sample, cfg)
    summary = {
        **{f"chance_cosine_{key}": value for key, value in chance.chance_quantiles(cosines).items()},
        **{
            f"chance_correlation_{key}": value for key, value in chance.chance_quantiles(correlations).items()
        },
    }
    live_decoders = [
        decoder_rows(sae)[live_rows(match_df, side)["feature"].to_numpy(np.int64)]
        for sae, side in ((pretrained, REFERENCE_SIDE), (finetuned, COMPARED_SIDE))
    ]
    like = chance.random_matching_chance_like(
        *live_decoders, draws=cfg.chance_draws, seed=cfg.seed, power=cfg.assignment_power
    )
    summary["chance_cosine_p99_spectrum"] = chance.chance_quantiles(like)["p99"]
    return summary


def seed_null_chance(
    stage: str,
    sae: torch.nn.Module,
    seed_null: torch.nn.Module,
    seed_null_match: pd.DataFrame,
    x_stage: np.ndarray,
    cfg: DiffConfig,
) -> dict[str, Any]:
    """For one stage's SAE against its seed null (match table ``seed_null_match``, rows ``x_stage`` of that
    stage): the chance 99th percentiles of that matching (``chance_*_p99_null_<stage>``) and how well the
    seed null reproduces the SAE (``null_median_cosine_<stage>`` and ``null_share_above_chance_<stage>``: the
    share of live features matched above the chance 99th percentile, unmatched ones counting as below; a
    reproducible SAE has a median ≥ 0.7 and a share ≥ 0.8)."""
    cosines, correlations = matching_chance(sae, seed_null, seed_null_match, x_stage, x_stage, cfg)
    cosine_p99 = chance.chance_quantiles(cosines)["p99"]
    reproduced = live_rows(seed_null_match, REFERENCE_SIDE)
    median = float(np.nanmedian(reproduced["cosine"])) if reproduced["cosine"].notna().any() else None
    above = (
        (reproduced["cosine"].to_numpy(np.float64) > (cosine_p99 or 0.0)).mean() if len(reproduced) else None
    )
    return {
        f"chance_cosine_p99_null_{stage}": cosine_p99,
        f"chance_correlation_p99_null_{stage}": chance.chance_quantiles(correlations)["p99"],
        f"null_median_cosine_{stage}": median,
        f"null_share_above_chance_{stage}": above,
    }


def chance_level(chance_summary: dict[str, Any], measure: str) -> float:
    """c for ``measure`` ("cosine" or "correlation"): the largest 99th percentile ``chance_<measure>_p99*``
    among the matchings' chance distributions (0 where there is none)."""
    levels = [value for key, value in chance_summary.items() if key.startswith(f"chance_{measure}_p99")]
    return max([value for value in levels if value is not None], default=0.0)
