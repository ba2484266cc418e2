"""The diff's settings: how features are matched, called dead, stable and labelled, and when a diff is conclusive."""

from __future__ import annotations

from dataclasses import dataclass

from layershift.study.schema import schema_default


@dataclass
class DiffConfig:
    """How features are matched, called dead, stable and labelled, and when a layer's diff is conclusive."""

    # q: seed noise level = q-quantile of the seed nulls' matched cosine / correlation
    null_quantile: float = schema_default("diff", "null_quantile")
    # Effect sizes. Without a seed null they are the retained cut-offs (raised above chance if need be):
    # uncalibrated, marked "fallback". With seed nulls they only cap τ for the secondary ``label_capped``
    # (τ = min(seed noise, cap)); the headline ``label`` has no cap (a cap that can only lower τ calls a
    # 0.72 match retained when seeds reproduce features at 0.95).
    cosine_threshold: float = schema_default("diff", "cosine_threshold")
    correlation_threshold: float = schema_default("diff", "correlation_threshold")
    # The headline's effect size is relative instead: retained needs cosine ≥ (seed noise level − tolerance),
    # so a cross-stage difference a little larger than seed noise (finite data: two stages never see the
    # same noise) is not change, while one far beyond it is, however high the seed noise level.
    tolerance_cosine: float = schema_default("diff", "tolerance_cosine")
    tolerance_correlation: float = schema_default("diff", "tolerance_correlation")
    min_firing_rate: float = 1e-5  # features active on a smaller fraction of tokens (or never) are "dead"
    seed: int = 0  # seeds the decoys and the random dictionaries of the chance model
    # The assignment maximises Σ max(cos, 0)^p over matched pairs: p = 1 is the plain total cosine; p = 2 the
    # total captured energy (cos² = share of one unit direction the other explains), which never trades one
    # near-perfect match for two mediocre ones (a² + b² < 1 for junk pairs), as p = 1 readily does.
    assignment_power: float = 2.0
    # Stability: a live feature is stable when its own seed null reproduces it at ≥ c + stable_gap·(1 − c)
    # in cosine and in correlation, c being the chance 99th percentile of random matching (see
    # ``thresholds.thresholds_between``). 0.5 = at least halfway from chance to a perfect reproduction.
    stable_gap: float = schema_default("diff", "stable_gap")
    # Verdict (see ``verdict.diff_verdict``): conclusive only with this many stable features on each side,
    # making up at least this share of that side's live features.
    min_stable_features: int = schema_default("diff", "min_stable_features")
    min_stable_share: float = schema_default("diff", "min_stable_share")
    # Feature resamples of the verdict's bootstrap (seeded from ``seed``): the bar above is judged on each of
    # them, and they give the label fractions' 95 % intervals (see ``verdict.diff_verdict``).
    verdict_resamples: int = schema_default("diff", "verdict_resamples")
    chance_draws: int = 4  # random dictionaries per chance distribution (cosine; half as many encoders)
    chance_rows: int = 4096  # token rows (first in storage order) held in memory for the correlation chance
    # The diff streams the layer's token rows seven times (firing rates and correlations for three matchings,
    # the chance sample); rows of both stages that fit this many MiB together (float32) are decoded once and
    # kept in RAM for the other passes (the same values: the results do not change). 0: decode every pass.
    memory_cache_mb: float = schema_default("diff", "memory_cache_mb")

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
        if self.verdict_resamples < 100:
            raise ValueError(f"verdict_resamples must be ≥ 100, got {self.verdict_resamples}")
        if self.chance_draws < 1 or self.chance_rows < 2:
            raise ValueError("chance_draws must be ≥ 1 and chance_rows ≥ 2")
        if self.memory_cache_mb < 0:
            raise ValueError(f"memory_cache_mb must be ≥ 0, got {self.memory_cache_mb}")
