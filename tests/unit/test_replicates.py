"""Aggregation over fine-tuning replicates: the Student-t interval's coverage on planted run-to-run noise, the
between-run test's false and true calls, the diff's flags against the between-run band, accuracy over runs,
and the split-half baseline of the pretrained model's sentences."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from layershift.analysis.replicates import (
    BETWEEN_RUN_TEST,
    CHANGED,
    NO_BASELINE,
    WITHIN_RUN_TO_RUN,
    accuracy_over_replicates,
    diff_over_replicates,
    mean_interval,
    run_order,
    similarity_over_replicates,
    split_half_similarity,
    split_halves,
)
from layershift.analysis.similarity import cosine
from layershift.models.extract import SentenceWriter

MEASURE = "cosine_of_means"


def runs(n_replicates: int) -> list[str]:
    return [f"finetuned-s{seed}" for seed in range(1, n_replicates + 1)]


def similarity_rows(layer: int, pre_values, between_values, measure: str = MEASURE) -> list[dict]:
    """One layer's rows: pretrained vs each fine-tuned run, then every pair of fine-tuned runs, in order."""
    finetuned = runs(len(pre_values))
    base = {"model": "tiny", "dataset": "mood", "layer": layer, "relative_depth": layer / 12}
    rows = [
        base
        | {
            "reference": "pretrained",
            "compared": run,
            "comparison": "pretrained_vs_finetuned",
            measure: value,
        }
        for run, value in zip(finetuned, pre_values, strict=True)
    ]
    pairs = list(itertools.combinations(finetuned, 2))
    rows += [
        base | {"reference": first, "compared": second, "comparison": "between_runs", measure: value}
        for (first, second), value in zip(pairs, between_values, strict=True)
    ]
    return rows


def planted_similarity(n_layers: int, n_replicates: int, separation: float, seed: int) -> pd.DataFrame:
    """``n_layers`` independent trials (one per layer): pre-vs-ft ~ N(0.9 - separation * 0.01, 0.01) and
    ft-vs-ft ~ N(0.9, 0.01), the run-to-run noise sigma = 0.01."""
    rng = np.random.default_rng(seed)
    n_pairs = n_replicates * (n_replicates - 1) // 2
    rows = []
    for layer in range(n_layers):
        pre = rng.normal(0.9 - separation * 0.01, 0.01, n_replicates)
        rows += similarity_rows(layer, pre, rng.normal(0.9, 0.01, n_pairs))
    return pd.DataFrame(rows)


# --- the interval -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_replicates", [3, 5])
def test_t_interval_covers_the_planted_mean_at_its_level(n_replicates):
    rng = np.random.default_rng(n_replicates)
    mu, sigma = 0.8, 0.05
    covered = [
        (interval := mean_interval(rng.normal(mu, sigma, n_replicates))).lo <= mu <= interval.hi
        for _ in range(2000)
    ]
    assert abs(np.mean(covered) - 0.95) <= 0.02


def test_interval_is_narrower_at_a_lower_level_and_drops_nan():
    values = [0.7, 0.8, np.nan, 0.9]
    wide, narrow = mean_interval(values, 0.95), mean_interval(values, 0.5)
    assert wide.n == 3 and wide.mean == pytest.approx(0.8)
    assert wide.lo < narrow.lo < 0.8 < narrow.hi < wide.hi


def test_one_value_has_no_interval_and_zero_spread_is_the_mean():
    single = mean_interval([0.7, np.nan])
    assert single.n == 1 and single.mean == 0.7 and np.isnan(single.lo) and np.isnan(single.hi)
    assert np.isnan(mean_interval([]).mean) and mean_interval([]).n == 0
    flat = mean_interval([1.0, 1.0, 1.0])
    assert flat.lo == flat.hi == flat.mean == 1.0


# --- the between-run test ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_replicates", [3, 5])
def test_same_distribution_is_rarely_called_changed(n_replicates):
    """Pre-vs-ft drawn from the ft-vs-ft distribution: measured 'changed' rates are about 1 % (R = 3) and
    under 0.1 % (R = 5) over 2000 seeded trials (three seeds tried); the test allows at most 5 %."""
    table = similarity_over_replicates(planted_similarity(2000, n_replicates, 0.0, seed=10), [MEASURE])
    assert len(table) == 2000 and (table["n_replicates"] == n_replicates).all()
    assert (table["verdict"] == CHANGED).mean() <= 0.05
    assert (table["verdict"] != NO_BASELINE).all()


@pytest.mark.parametrize("n_replicates", [3, 5])
def test_planted_separation_is_called_changed(n_replicates):
    """Pre-vs-ft 8 run-to-run sigmas below the between-run mean: measured 'changed' in over 99 % of trials (at
    4 sigmas about 75 % for R = 3 and 92 % for R = 5); the test asks for at least 95 %."""
    table = similarity_over_replicates(planted_similarity(500, n_replicates, 8.0, seed=11), [MEASURE])
    assert (table["verdict"] == CHANGED).mean() >= 0.95


def test_identical_models_are_within_run_to_run():
    table = similarity_over_replicates(
        pd.DataFrame(similarity_rows(0, [1.0] * 3, [1.0] * 3)), [MEASURE, "cka_sentences"]
    )
    assert table["measure"].tolist() == [MEASURE]  # an absent measure is skipped
    row = table.iloc[0]
    assert row["verdict"] == WITHIN_RUN_TO_RUN and row["pre_vs_ft_lo"] == row["pre_vs_ft_hi"] == 1.0


def test_one_replicate_has_no_interval_and_no_baseline():
    table = similarity_over_replicates(pd.DataFrame(similarity_rows(0, [0.5], [])), [MEASURE])
    row = table.iloc[0]
    assert row["n_replicates"] == 1 and row["n_between_pairs"] == 0
    assert np.isnan(row["pre_vs_ft_lo"]) and np.isnan(row["between_runs_min"])
    assert row["verdict"] == NO_BASELINE
    assert "lowest value between two fine-tuning runs" in BETWEEN_RUN_TEST


def test_values_in_run_order_nan_left_out_and_split_half_joined():
    rows = similarity_rows(2, [0.5, 0.6, np.nan], [0.95, 0.97, 0.99])
    for seed, row in zip([13, 2, 7], rows[:3], strict=True):  # seeds sort numerically, not as text
        row["compared"] = f"finetuned-s{seed}"
    shuffled = pd.DataFrame(rows).iloc[::-1]
    split_half = pd.DataFrame({"model": ["tiny"], "dataset": ["mood"], "layer": [2], MEASURE: [0.999]})
    table = similarity_over_replicates(shuffled, [MEASURE], split_half=split_half)
    row = table.iloc[0]
    assert row["pre_vs_ft_values"] == [0.6, 0.5] and row["n_replicates"] == 2
    assert row["between_runs_values"] == [0.95, 0.97, 0.99] and row["pretrained_split_half"] == 0.999
    assert (
        row["verdict"] == WITHIN_RUN_TO_RUN and table.columns[-1] == "verdict"
    )  # two values: t_{0.975,1} = 12.7
    assert sorted(["finetuned-s13", "pretrained", "finetuned-s7"], key=run_order)[1] == "finetuned-s7"


# --- the feature diff ----------------------------------------------------------------------------------


def diff_rows(layer: int, lost_pre, lost_between, retained_pre=None) -> list[dict]:
    """One layer of the diff: lost (and optionally retained) fractions, the other fractions NaN."""
    retained_pre = retained_pre if retained_pre is not None else [np.nan] * len(lost_pre)
    rows = similarity_rows(layer, lost_pre, lost_between, measure="lost_fraction")
    for row, retained in zip(rows, retained_pre + [0.9] * len(lost_between), strict=True):
        row |= {"retained_fraction": retained, "new_fraction": np.nan, "verdict": "conclusive"}
        del row["relative_depth"]
    rows[0]["verdict"] = "borderline"
    return rows


def test_diff_flags_against_the_between_run_band():
    rows = diff_rows(
        0, [0.30, 0.32, 0.31], [0.05, 0.08, 0.06], retained_pre=[0.5, 0.52, 0.51]
    )  # planted loss
    rows += diff_rows(
        1, [0.06, 0.07, 0.05], [0.05, 0.08, 0.06], retained_pre=[0.9, 0.91, 0.89]
    )  # in the band
    rows += diff_rows(2, [0.30], [])  # one run: no baseline
    rows += diff_rows(
        3, [0.07, 0.12, 0.10], [0.05, 0.08, 0.06]
    )  # mean above the band, interval reaches into it
    table = diff_over_replicates(pd.DataFrame(rows)).set_index("layer")
    assert table.loc[0, "lost_beyond_between_runs"]
    assert table.loc[0, "retained_below_between_runs"] and not table.loc[1, "retained_below_between_runs"]
    assert not table.loc[1, "lost_beyond_between_runs"]
    assert table.loc[3, "lost_fraction_mean"] > 0.08 and not table.loc[3, "lost_beyond_between_runs"]
    assert pd.isna(table.loc[2, "lost_beyond_between_runs"]) and pd.isna(
        table.loc[2, "retained_below_between_runs"]
    )
    assert table["new_beyond_between_runs"].isna().all()  # all-NaN fraction: no interval, no flag
    assert table.loc[0, "lost_fraction_values"] == [0.30, 0.32, 0.31]
    assert table.loc[0, "lost_fraction_between_max"] == 0.08 and table.loc[0, "n_between_pairs"] == 3
    assert table.loc[0, "conclusive_replicates"] == pytest.approx(2 / 3)
    assert table.loc[0, "verdicts"] == ["borderline", "conclusive", "conclusive"]
    assert np.isnan(table.loc[0, "stable_fraction_pretrained_mean"])  # absent column: NaN, no crash


# --- accuracy ------------------------------------------------------------------------------------------


def test_accuracy_over_runs():
    rows = [
        {
            "model": "tiny",
            "dataset": "mood",
            "run": run,
            "row": "finetuned",
            "accuracy": acc,
            "macro_f1": f1,
            "n_test": 200,
        }
        for run, acc, f1 in [
            ("finetuned-s2", 0.80, 0.7),
            ("finetuned-s1", 0.84, 0.74),
            ("finetuned-s3", 0.82, 0.72),
        ]
    ]
    rows.append(
        {
            "model": "tiny",
            "dataset": "mood",
            "run": "pretrained",
            "row": "pretrained",
            "accuracy": 0.5,
            "macro_f1": 0.3,
            "n_test": 200,
        }
    )
    table = accuracy_over_replicates(pd.DataFrame(rows)).set_index("row")
    finetuned = table.loc["finetuned"]
    assert finetuned["n_replicates"] == 3 and finetuned["accuracy_values"] == [0.84, 0.80, 0.82]
    assert finetuned["accuracy_lo"] < 0.82 < finetuned["accuracy_hi"] and finetuned["n_test"] == 200
    assert np.isnan(table.loc["pretrained", "macro_f1_lo"])


# --- the split-half baseline ---------------------------------------------------------------------------


def write_sentences(path, layers: np.ndarray, rows_per_group: int = 7) -> None:
    """``layers [n_layers, n, d]`` as ``sentences.parquet`` through the extraction's writer, in row groups."""
    n_layers, n, d = layers.shape
    writer = SentenceWriter(path, n_layers, d, {})
    for start in range(0, n, rows_per_group):
        batch = slice(start, start + rows_per_group)
        ids = np.arange(n)[batch]
        writer.write(ids, np.full(len(ids), 5), layers[:, batch].transpose(1, 0, 2))  # [batch, layers, d]
    writer.close()


def test_split_half_identical_halves_and_a_planted_shift(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 40, 6
    same = np.tile(rng.normal(size=d), (n, 1))  # every sentence the same vector: identical halves
    first = split_halves(n, seed=3)
    shifted = rng.normal(size=(n, d)) * 0.1 + 1.0
    shifted[first] += rng.normal(size=d) * 2  # planted shift of the first half only
    path = tmp_path / "sentences.parquet"
    write_sentences(path, np.stack([same, shifted]))
    table = split_half_similarity(path, seed=3)
    assert table["layer"].tolist() == [0, 1]
    assert table.loc[0, "cosine_of_sentence_means"] == pytest.approx(1.0, abs=1e-6)
    stored = shifted.astype(np.float32).astype(np.float64)
    expected = cosine(stored[first].mean(0), stored[~first].mean(0))
    assert table.loc[1, "cosine_of_sentence_means"] == pytest.approx(expected) and expected < 0.9
    assert first.sum() == n // 2 and not np.array_equal(first, split_halves(n, seed=4))
