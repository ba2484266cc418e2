"""Chance level of matched similarities: known answers on random and planted dictionaries."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layershift.analysis import chance
from tests.support.vectors import unit


def test_matched_cosines_is_the_power_assignment_on_4x4():
    rng = np.random.default_rng(1)
    for _ in range(10):
        a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
        rows, cols, cos = chance.matched_cosines(a, b, power=2.0)
        full = unit(a) @ unit(b).T
        score = np.clip(full, 0, None) ** 2
        best = max(itertools.permutations(range(4)), key=lambda p: score[range(4), p].sum())
        assert score[rows, cols].sum() == pytest.approx(score[range(4), best].sum())
        np.testing.assert_allclose(cos, full[rows, cols])


def test_matched_cosines_recover_a_permuted_dictionary():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 16))
    perm = rng.permutation(30)
    rows, cols, cos = chance.matched_cosines(a, 3.0 * a[perm])
    np.testing.assert_array_equal(perm[cols], rows)
    np.testing.assert_allclose(cos, 1.0)


def test_random_matching_chance_of_two_random_512_dictionaries_in_384_dimensions_and_is_cached():
    values = chance.random_matching_chance(512, 512, 384, draws=1)
    q = chance.chance_quantiles(values)
    assert 0.12 <= q["p50"] <= 0.18 and 0.18 <= q["p99"] <= 0.24, (
        q
    )  # matched cosine of unrelated dictionaries: p50 0.12-0.18, p99 ≈ 0.20
    assert chance.random_matching_chance(512, 512, 384, draws=1) is values  # cached by shape
    assert len(chance.random_matching_chance(10, 7, 5, draws=3)) == 21
    assert chance.random_matching_chance(0, 7, 5).size == 0
    # fewer dimensions or more candidates: matching alone reaches higher cosines
    small = chance.chance_quantiles(chance.random_matching_chance(40, 40, 32))
    assert small["p50"] > q["p50"] + 0.1


def test_chance_quantiles_keys_and_empty():
    assert chance.chance_quantiles(np.arange(101.0)) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert chance.chance_quantiles(np.array([np.nan])) == {"p50": None, "p90": None, "p99": None}


def test_seed_reproducibility_separates_a_noisy_copy_from_a_random_dictionary():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(100, 64))
    copy = chance.seed_reproducibility(w, w[::-1] + 0.1 * rng.normal(size=w.shape))
    assert copy["reproducible"] and copy["share_above_chance"] == 1.0 and copy["median_matched_cosine"] > 0.95
    random = chance.seed_reproducibility(w, rng.normal(size=w.shape))
    assert not random["reproducible"] and random["share_above_chance"] <= 0.05
    assert abs(random["median_matched_cosine"] - random["chance_cosine_p50"]) < 0.05
    # only live rows are matched, and the chance level is that of the live shapes (fewer candidates: lower)
    live = np.arange(100) < 20
    part = chance.seed_reproducibility(w, w + 0.1 * rng.normal(size=w.shape), live=live, seed_null_live=live)
    assert part["n_live"] == 20 and part["chance_cosine_p50"] < copy["chance_cosine_p50"] - 0.05


def test_spectrum_matched_null_is_higher_in_a_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 8)))[0].T  # an 8-dim subspace of R^64
    a, b = rng.normal(size=(20, 8)) @ basis, rng.normal(size=(20, 8)) @ basis
    like = chance.chance_quantiles(chance.random_matching_chance_like(a, b))
    iso = chance.chance_quantiles(chance.random_matching_chance(20, 20, 64))
    assert like["p50"] > iso["p50"] + 0.2


def test_random_encoder_correlation_chance_is_near_zero_on_isotropic_data_and_not_on_a_real_match():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32))
    w = rng.normal(size=(24, 32))
    acts = np.maximum(x @ unit(w).T - 1.0, 0.0)
    null = chance.random_encoder_correlation_chance(w, acts, x, np.full(24, 0.15), draws=2)
    q = chance.chance_quantiles(null)
    assert len(null) == 48 and q["p99"] < 0.6
    # the same directions as an "other side" correlate perfectly: far above that chance
    same = chance.pearson_pairs(
        acts, chance.random_encoder_acts(x, w, (acts > 0).mean(0)), *[np.arange(24)] * 2
    )
    assert same.min() > 0.99
