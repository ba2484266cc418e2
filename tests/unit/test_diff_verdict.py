"""The diff's verdict with its uncertainty: feature resamples say conclusive / borderline / inconclusive and
give the label fractions' 95 % intervals; checked on planted layers with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from layershift.analysis.diff.bootstrap import fraction_intervals, interval_keys, resample_layer
from layershift.analysis.diff.labels import label_features, label_fractions, mark_stability
from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.diff.thresholds import Thresholds, thresholds_between
from layershift.analysis.diff.verdict import diff_summary, diff_verdict

STABILITY = thresholds_between(
    0.9, 0.8, 0.2, 0.1, "test"
)  # stable: seed null cosine ≥ 0.6, correlation ≥ 0.55
CFG = DiffConfig()  # the study's bar: ≥ 25 stable features making up ≥ 50 % of the live ones, per side
N_LIVE = 400


def planted_layer(
    stable: dict[str, int], n_live: int = N_LIVE
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A match table of ``n_live`` live features per side and each side's seed-null match table: the first
    ``stable[side]`` features reproduced by their seed null (cosine 0.95), the others not (0.3). Across the
    stages every fourth feature has no match (lost / new), the others match at cosine 0.95 (retained)."""
    cross, seed_nulls = [], {}
    for side, n_stable in stable.items():
        feature = np.arange(n_live)
        matched = feature % 4 != 0
        cross.append(
            pd.DataFrame(
                {
                    "side": side,
                    "feature": feature,
                    "live": True,
                    "firing_rate": 0.1,
                    "match": np.where(matched, feature, -1),
                    "cosine": np.where(matched, 0.95, np.nan),
                    "activation_correlation": np.where(matched, 0.9, np.nan),
                }
            )
        )
        seed_null_cosine = np.where(feature < n_stable, 0.95, 0.3)
        seed_nulls[side] = pd.DataFrame(
            {"side": "pretrained", "feature": feature, "match": feature, "cosine": seed_null_cosine}
        ).assign(activation_correlation=0.9)
    return pd.concat(cross, ignore_index=True), seed_nulls


def labelled(cross: pd.DataFrame, seed_nulls: dict[str, pd.DataFrame]) -> pd.DataFrame:
    marked = mark_stability(cross, STABILITY, seed_nulls["pretrained"], seed_nulls["finetuned"])
    return label_features(marked, STABILITY)


def test_a_layer_on_the_bar_is_borderline_and_a_rounding_change_keeps_it_so():
    """The hard bar flipped with rounding: here one feature's seed-null cosine sits exactly on the stability
    cut (stable share exactly 0.5), then 1e-9 below it (199 of 400: under the bar). Both are borderline."""
    cross, seed_nulls = planted_layer({"pretrained": 200, "finetuned": 320})
    seed_nulls["pretrained"].loc[199, "cosine"] = STABILITY.stable_cosine
    on_bar = labelled(cross, seed_nulls)
    seed_nulls["pretrained"].loc[199, "cosine"] = STABILITY.stable_cosine - 1e-9
    rounded = labelled(cross, seed_nulls)
    shares = [label_fractions(table)["stable_fraction_pretrained"] for table in (on_bar, rounded)]
    assert shares[0] == 0.5 and shares[1] == pytest.approx(0.4975)  # the point estimate crosses the bar
    verdicts = [diff_verdict(table, CFG) for table in (on_bar, rounded)]
    assert [verdict.outcome for verdict in verdicts] == ["borderline", "borderline"]
    assert 0.3 < verdicts[1].conclusive_share <= verdicts[0].conclusive_share < 0.7
    assert verdicts[0].reason.startswith("borderline: bar met in ")
    assert "200 of 400 live pretrained features stable (50.0%)" in verdicts[0].reason
    # a borderline layer states its fractions with intervals (every feature here is retained or lost)
    assert (
        verdicts[0].intervals["retained_fraction_lo"] < 0.75 < verdicts[0].intervals["retained_fraction_hi"]
    )


@pytest.mark.parametrize(
    "stable, outcome, reason",
    [
        ({"pretrained": 300, "finetuned": 280}, "conclusive", "≥ 25 stable features and ≥ 0.5 of live"),
        (
            {"pretrained": 120, "finetuned": 280},
            "inconclusive",
            "120 of 400 live pretrained features stable (30.0% < 50%)",
        ),
        ({"pretrained": 0, "finetuned": 0}, "inconclusive", "0 stable pretrained features (< 25)"),
    ],
)
def test_a_layer_far_from_the_bar_is_conclusive_or_inconclusive(stable, outcome, reason):
    verdict = diff_verdict(labelled(*planted_layer(stable)), CFG)
    assert verdict.outcome == outcome and reason in verdict.reason, verdict.reason
    assert verdict.conclusive_share == (1.0 if outcome == "conclusive" else 0.0)
    assert verdict.resamples == CFG.verdict_resamples
    assert bool(verdict.intervals) == (outcome == "conclusive")  # an inconclusive layer states no fractions


def test_few_stable_features_leave_the_count_bar_uncertain():
    """28 of 40 live features stable: well above the share, but 28 is within sampling noise of 25."""
    stable = {"pretrained": 28, "finetuned": 36}
    verdict = diff_verdict(labelled(*planted_layer(stable, n_live=40)), CFG)
    assert verdict.outcome == "borderline", verdict.reason


def test_the_verdict_is_seeded_and_untrained_layers_stay_inconclusive():
    table = labelled(*planted_layer({"pretrained": 200, "finetuned": 320}))
    assert diff_verdict(table, CFG) == diff_verdict(table, CFG)  # the same labels, the same resamples
    other_seed = diff_verdict(table, DiffConfig(seed=1))
    assert (
        other_seed.outcome == "borderline"
        and other_seed.conclusive_share != diff_verdict(table, CFG).conclusive_share
    )
    dead = table.assign(live=False, label="dead")  # e.g. every latent of an untrained SAE dead: nothing live
    verdict = diff_verdict(dead, CFG)
    assert verdict.outcome == "inconclusive" and verdict.conclusive_share == 0.0


def test_fraction_intervals_cover_the_planted_retained_probability():
    """300 layers whose 200 stable features are each retained with probability 0.3 (else lost): the 95 %
    interval of the retained fraction covers 0.3 in about 95 % of them."""
    rng = np.random.default_rng(0)
    probability, n_features, layers = 0.3, 200, 300
    covered = 0
    for layer in range(layers):
        labels = np.where(rng.random(n_features) < probability, "retained", "lost")
        table = pd.DataFrame({"side": "pretrained", "label": labels})
        intervals = fraction_intervals(resample_layer(table, CFG.verdict_resamples, seed=layer))
        covered += intervals["retained_fraction_lo"] <= probability <= intervals["retained_fraction_hi"]
        assert intervals["new_fraction_lo"] is None  # no fine-tuned feature: no fraction, no interval
    assert 0.90 <= covered / layers <= 0.99, covered / layers


def test_the_summary_keeps_every_key_and_value_and_adds_the_uncertainty():
    table = labelled(*planted_layer({"pretrained": 300, "finetuned": 280}))
    table["label_capped"] = table["label"]
    thresholds = Thresholds(cosine=0.9, correlation=0.8, floor_cosine=0.5, floor_correlation=0.4)
    chance = {"chance_cosine_p99": 0.2}
    verdict = diff_verdict(table, CFG)
    without = diff_summary(table, table, thresholds, chance=chance)
    summary = diff_summary(table, table, thresholds, chance=chance, verdict=verdict)
    fraction_keys = list(label_fractions(table))
    old_keys = {
        *fraction_keys,
        *(f"capped_{key}" for key in fraction_keys if not key.startswith(("n_", "stable_", "unstable_"))),
        *(f"baseline_{key}" for key in fraction_keys),
        *(f"threshold_{key}" for key in thresholds.to_dict()),
        *chance,
        "verdict",
        "verdict_reason",
    }
    assert old_keys == set(without) | {"verdict", "verdict_reason"}
    assert {key: summary[key] for key in without} == without  # no value moved
    added = set(summary) - old_keys
    assert added == {"conclusive_share", "verdict_resamples", *interval_keys()}
    for key in ("retained_fraction", "lost_fraction", "new_fraction", "stable_fraction_pretrained"):
        assert summary[f"{key}_lo"] <= summary[key] <= summary[f"{key}_hi"], key
    json.dumps(summary, allow_nan=False)
    inconclusive = diff_summary(table, verdict=diff_verdict(table, DiffConfig(min_stable_share=0.9)))
    assert inconclusive["verdict"] == "inconclusive" and inconclusive["retained_fraction_lo"] is None
