"""The sentence bootstrap behind the similarity intervals: each resample's measures against the measures of
the resampled rows themselves, coverage on planted data with a known population value, and the intervals as
figure bands and results-page cells."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from layershift.analysis.similarity import linear_cka
from layershift.analysis.similarity_interval import (
    INTERVAL_MEASURES,
    layer_resamples,
    percentile_interval,
    place_beside_points,
    resample_counts,
    resampled_cka,
    weighted_cosine_of_means,
)

matplotlib.use("Agg")


def paired_sentences(n: int, d: int, seed: int, noise: float = 0.5):
    """Paired sentence vectors ``[n, d]`` of two stages (the second a noisy linear map of the first) and
    token counts ``[n]``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    y = x @ rng.normal(size=(d, d)) / np.sqrt(d) + noise * rng.normal(size=(n, d)) + 0.3
    return x, y, rng.integers(3, 30, n).astype(float)


def drawn_rows(counts_row: np.ndarray) -> np.ndarray:
    """The row indices a count vector stands for, each repeated as often as it was drawn."""
    return np.repeat(np.arange(len(counts_row)), counts_row.astype(int))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- the resamples ---------------------------------------------------------------------------------


def test_resample_counts_draw_n_sentences_per_resample_seeded():
    counts = resample_counts(50, 30, seed=4)
    assert counts.shape == (30, 50) and (counts.sum(1) == 50).all() and (counts >= 0).all()
    np.testing.assert_array_equal(counts, resample_counts(50, 30, seed=4))
    assert not np.array_equal(counts, resample_counts(50, 30, seed=5))
    assert 0.55 < np.count_nonzero(counts) / counts.size < 0.72  # about 1 - 1/e of the sentences per draw


def test_each_resample_is_the_measures_of_its_drawn_sentences():
    """Every measure of a resample equals the measure computed directly on the drawn rows (duplicates kept):
    token-weighted mean for cosine_of_means, plain means, CKA of the repeated rows, mean of row cosines."""
    x, y, n_tokens = paired_sentences(80, 6, seed=0)
    counts = resample_counts(80, 5, seed=1)
    resampled = layer_resamples(x, y, n_tokens, counts)
    for b, counts_row in enumerate(counts):
        rows = drawn_rows(counts_row)
        tokens = n_tokens[rows]
        weighted_x, weighted_y = tokens @ x[rows] / tokens.sum(), tokens @ y[rows] / tokens.sum()
        row_cos = (
            np.sum(x[rows] * y[rows], 1) / np.linalg.norm(x[rows], axis=1) / np.linalg.norm(y[rows], axis=1)
        )
        expected = {
            "cosine_of_means": cosine_rows(weighted_x, weighted_y),
            "cosine_of_sentence_means": cosine_rows(x[rows].mean(0), y[rows].mean(0)),
            "cka_sentences": linear_cka(x[rows], y[rows]),
            "mean_sentence_cosine": float(row_cos.mean()),
        }
        for measure, value in expected.items():
            assert resampled[measure][b] == pytest.approx(value, rel=1e-5, abs=1e-9), (measure, b)


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_resampled_cka_on_the_full_sample_is_linear_cka(offset):
    x, y, _ = paired_sentences(300, 16, seed=2)
    ones = np.ones((1, 300))
    assert resampled_cka(x + offset, y - offset, ones)[0] == pytest.approx(linear_cka(x, y), rel=1e-6)


def test_resampled_cka_spans_several_gram_blocks(monkeypatch):
    """Off-diagonal Gram blocks count twice: with blocks smaller than the sample, the values do not move."""
    from layershift.analysis import similarity_interval

    x, y, _ = paired_sentences(90, 5, seed=3)
    counts = resample_counts(90, 4, seed=0)
    whole = resampled_cka(x, y, counts)
    monkeypatch.setattr(similarity_interval, "GRAM_BLOCK_ROWS", 16)
    np.testing.assert_allclose(resampled_cka(x, y, counts), whole, rtol=1e-6)


def test_cka_of_a_resample_of_one_distinct_sentence_is_undefined():
    x, y, _ = paired_sentences(10, 4, seed=4)
    counts = np.zeros((2, 10))
    counts[0, 3] = 10  # one sentence drawn ten times
    counts[1] = 1
    values = resampled_cka(x, y, counts)
    assert np.isnan(values[0]) and np.isfinite(values[1])


# --- the interval ----------------------------------------------------------------------------------


def test_identical_stages_give_an_interval_at_one():
    x, _, n_tokens = paired_sentences(200, 12, seed=5)
    counts = resample_counts(200, 100, seed=0)
    for measure, values in layer_resamples(x, x.copy(), n_tokens, counts).items():
        low, high = percentile_interval(values, 0.95)
        assert low == pytest.approx(1.0, abs=1e-6) and high == pytest.approx(1.0, abs=1e-6), measure


def test_percentile_interval_leaves_out_undefined_resamples():
    values = np.array([np.nan, *np.linspace(0.0, 1.0, 101)])
    assert percentile_interval(values, 0.9) == pytest.approx((0.05, 0.95))
    assert all(np.isnan(percentile_interval(np.full(5, np.nan), 0.95)))


def test_the_interval_covers_the_population_cosine_of_means_about_as_often_as_it_says():
    """Planted stages: sentence vectors around known means ``mu_x`` and ``mu_y`` (population cosine
    cos(0.6)), paired by a shared noise term, token counts independent of the vectors. Over 200 seeded
    repetitions the 95 % interval of the token-weighted cosine of means covers cos(0.6) about 95 % of the time."""
    angle, n, repetitions = 0.6, 300, 200
    mean_x, mean_y = np.array([1.0, 0.0, 0.0]), np.array([np.cos(angle), np.sin(angle), 0.0])
    covered = 0
    for repetition in range(repetitions):
        rng = np.random.default_rng(repetition)
        shared = rng.normal(size=(n, 3))
        x = mean_x + shared
        y = mean_y + 0.8 * shared + 0.6 * rng.normal(size=(n, 3))
        n_tokens = rng.integers(5, 40, n).astype(float)
        counts = resample_counts(n, 200, seed=repetition)
        low, high = percentile_interval(weighted_cosine_of_means(x, y, counts * n_tokens), 0.95)
        covered += low <= np.cos(angle) <= high
    assert 0.88 <= covered / repetitions <= 0.99, covered


def test_interval_columns_stand_beside_their_measures():
    table = pd.DataFrame(columns=["layer", "cosine_of_means", "n_tokens", "cka_sentences"])
    for measure in ("cosine_of_means", "cka_sentences"):
        table[f"{measure}_lo"], table[f"{measure}_hi"] = [], []
    ordered = place_beside_points(table).columns.tolist()
    assert ordered == [
        "layer",
        *("cosine_of_means", "cosine_of_means_lo", "cosine_of_means_hi"),
        "n_tokens",
        *("cka_sentences", "cka_sentences_lo", "cka_sentences_hi"),
    ]
    assert set(INTERVAL_MEASURES) >= {"cosine_of_means", "cka_sentences", "mean_sentence_cosine"}


# --- figures and the results page ------------------------------------------------------------------


def similarity_table(model: str, with_intervals: bool) -> pd.DataFrame:
    rows = []
    for dataset in ("movies", "news"):
        for layer, value in enumerate([0.99, 0.9, 0.7]):
            row = {"model": model, "dataset": dataset, "layer": layer, "relative_depth": layer / 2}
            row |= {"cosine_of_means": value, "cka_sentences": value - 0.1}
            if with_intervals:
                row |= {"cosine_of_means_lo": value - 0.02, "cosine_of_means_hi": min(value + 0.02, 1.0)}
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("with_intervals", [True, False])
def test_similarity_figures_of_one_run_draw_the_single_line(tmp_path, with_intervals):
    """The figures' bands are intervals over fine-tuning runs (tests/unit/test_report.py); a table of one run
    draws its lines alone, the sentence bootstrap or not, and the title says there is no interval."""
    from matplotlib.collections import PolyCollection

    from layershift.report.plotting import theme
    from layershift.report.similarity_figures import plot_depth, plot_similarity

    theme()
    path = tmp_path / "similarity.parquet"
    table = pd.concat([similarity_table("small", with_intervals), similarity_table("big", with_intervals)])
    table.to_parquet(path)
    for plot in (plot_similarity, plot_depth):
        for measure in ("cosine_of_means", "cka_sentences"):
            figure = plot([path], {"model": "small", "measure": measure}, {})
            bands = [c for c in figure.axes[0].collections if isinstance(c, PolyCollection)]
            assert bands == [] and "one fine-tuning run, no interval" in figure.axes[0].get_title()
            figure.savefig(tmp_path / "figure.png")


def test_results_page_shows_each_interval_beside_its_value():
    from layershift.report.results_page import similarity_section

    table = similarity_table("small", with_intervals=True).assign(cka_tokens=0.5, mean_sentence_cosine=0.4)
    table.loc[0, ["cosine_of_means_lo", "cosine_of_means_hi"]] = np.nan  # an undefined interval
    section = similarity_section(table)
    assert section.table["cosine_of_means"].tolist()[:2] == ["0.990", "0.900 [0.880, 0.920]"]
    assert "cosine_of_means_lo" not in section.table and "bootstrap" in section.note
    assert "0.900 [0.880, 0.920]" in section.markdown()
    old = similarity_section(similarity_table("small", with_intervals=False).assign(cka_tokens=0.5))
    assert old.table["cosine_of_means"].dtype == float and old.note == ""


def test_the_study_wide_table_keeps_the_interval_columns(tmp_path):
    """Per-dataset tables with intervals and one written before them concatenate into one table; the old
    table's rows read NaN there."""
    from layershift.report.tables import concat_parquet

    paths = [tmp_path / "new.parquet", tmp_path / "old.parquet"]
    similarity_table("small", with_intervals=True).to_parquet(paths[0])
    similarity_table("big", with_intervals=False).to_parquet(paths[1])
    table = concat_parquet([str(path) for path in paths], tmp_path / "similarity.parquet")
    assert {"cosine_of_means_lo", "cosine_of_means_hi"} <= set(
        pd.read_parquet(tmp_path / "similarity.parquet")
    )
    assert table.loc[table["model"] == "big", "cosine_of_means_lo"].isna().all()
