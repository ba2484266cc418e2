"""Similarity measures: linear CKA against an HSIC reference, streaming CKA, cosines, per-layer tables."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from layershift.analysis.similarity import (
    StreamingCKA,
    cosine,
    layer_similarity,
    linear_cka,
    mean_measures,
    sentence_measures,
    token_measures,
)
from layershift.analysis.similarity_interval import (
    INTERVAL_MEASURES,
    BootstrapSettings,
    resampled_measures,
)
from layershift.core.io import write_parquet
from layershift.models.extract import ExtractConfig, extract_activations
from tests.support.models import make_tiny_bert, perturbed_copy, tiny_sentences


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = XX^T, L = YY^T, H centring."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l_):
        return np.trace(k @ h @ l_ @ h) / (n - 1) ** 2

    k, l_ = x @ x.T, y @ y.T
    return float(hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_)))


def random_orthogonal(d: int, rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture
def xy():
    """Paired rows with shared structure: y is a noisy linear map of x (different widths)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
    y = x @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(60, 5))
    return x, y


# --- linear CKA ------------------------------------------------------------------------------------


def test_cka_of_identical_inputs_is_one(xy):
    x, _ = xy
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_matches_the_hsic_reference(xy):
    x, y = xy
    rng = np.random.default_rng(1)
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    independent = rng.normal(size=(60, 7))
    assert linear_cka(x, independent) == pytest.approx(hsic_cka(x, independent), rel=1e-10)
    assert 0.5 < linear_cka(x, y) < 1.0 and linear_cka(x, independent) < 0.3


def test_cka_invariances(xy):
    x, y = xy
    rng = np.random.default_rng(2)
    base = linear_cka(x, y)
    assert linear_cka(x @ random_orthogonal(8, rng), y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, y @ random_orthogonal(5, rng)) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 100.0, y - 3.0) == pytest.approx(base, rel=1e-8)
    # ...but not to an anisotropic rescaling of the features
    assert abs(linear_cka(x * np.array([50.0] + [1.0] * 7), y) - base) > 1e-3


def test_cka_is_symmetric(xy):
    x, y = xy
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)


@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_streaming_cka_equals_linear_cka(xy, offset):
    x, y = xy
    x, y = x + offset, y - offset
    for sizes in ([60], [1, 7, 13, 39], [20, 20, 20]):
        stream = StreamingCKA(8, 5)
        for part_x, part_y in zip(
            np.split(x, np.cumsum(sizes)[:-1]), np.split(y, np.cumsum(sizes)[:-1]), strict=True
        ):
            stream.update(part_x.astype(np.float32), part_y.astype(np.float32))
        assert stream.n == 60
        assert stream.value() == pytest.approx(
            linear_cka(x.astype(np.float32), y.astype(np.float32)), rel=1e-7
        )


# --- cosines ---------------------------------------------------------------------------------------


def test_cosine():
    a = np.array([1.0, 2.0, -3.0])
    assert cosine(a, 2 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(0.0)
    assert cosine(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(np.sqrt(0.5))
    assert cosine(np.zeros(3), a) == 0.0


def test_cosine_of_means_per_layer(tmp_path):
    def means(token_means, sentence_means):
        return pd.DataFrame(
            {
                "layer": [0, 1],
                "token_mean": [np.array(v, float) for v in token_means],
                "sentence_mean": [np.array(v, float) for v in sentence_means],
                "n_tokens": [10, 10],
                "n_sentences": [3, 3],
            }
        )

    write_parquet(means([[1, 0], [1, 1]], [[1, 2], [3, 4]]), tmp_path / "pre.parquet")
    write_parquet(means([[2, 0], [1, -1]], [[-1, -2], [3, 4]]), tmp_path / "ft.parquet")
    table = mean_measures(tmp_path / "pre.parquet", tmp_path / "ft.parquet")
    np.testing.assert_allclose(table["cosine_of_means"], [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(table["cosine_of_sentence_means"], [-1.0, 1.0], atol=1e-9)


def test_token_measures_pair_rows_by_key_not_by_order(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 6))
    keys = pd.DataFrame({"sentence_id": np.repeat(np.arange(10), 4), "position": np.tile(np.arange(4), 10)})
    pre = keys.assign(layer_0=list(vectors), layer_1=list(vectors))
    ft = keys.assign(layer_0=list(vectors), layer_1=list(rng.normal(size=(40, 6))))
    shuffled = ft.iloc[rng.permutation(40)].reset_index(drop=True)
    write_parquet(pre, tmp_path / "pre.parquet")
    write_parquet(shuffled, tmp_path / "ft.parquet")
    table = token_measures(tmp_path / "pre.parquet", tmp_path / "ft.parquet").set_index("layer")
    assert table.loc[0, "cka_tokens"] == pytest.approx(1.0)
    assert table.loc[1, "cka_tokens"] < 0.6
    assert (table["n_token_sample"] == 40).all()


# --- on extraction outputs -------------------------------------------------------------------------

CFG = ExtractConfig(
    batch_size=4, max_length=12, max_tokens=200, token_sample=40, dtype="float32",
    rows_per_group=64, groups_per_shard=2, seed=2, threads=1, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict:
    """Extraction outputs: the tiny model twice, a perturbed copy, and the tiny model with another seed."""
    root = tmp_path_factory.mktemp("similarity")
    model = make_tiny_bert(root / "model", n_layers=2, hidden=32, heads=2, seed=0)
    other = perturbed_copy(model, root / "other", scale=0.01, seed=1)
    texts = tiny_sentences(20, seed=4)
    runs = {
        "pre": (model, CFG),
        "again": (model, CFG),
        "ft": (other, CFG),
        "reseeded": (model, replace(CFG, seed=3)),
    }
    for name, (model_dir, cfg) in runs.items():
        extract_activations(model_dir, texts, [1], root / name, cfg, {"stage": name}, progress=False)
    return {name: root / name for name in runs}


def test_same_model_twice_is_identical_at_every_layer(stages):
    table = layer_similarity(stages["pre"], stages["again"], "tiny", "mood")
    assert table["layer"].tolist() == [0, 1, 2]
    assert (table["model"] == "tiny").all() and (table["dataset"] == "mood").all()
    np.testing.assert_allclose(table["relative_depth"], [0.0, 0.5, 1.0])
    for measure in (
        "cosine_of_means",
        "cosine_of_sentence_means",
        "cka_sentences",
        "cka_tokens",
        "mean_sentence_cosine",
    ):
        np.testing.assert_allclose(table[measure], 1.0, atol=1e-6, err_msg=measure)
    for measure in INTERVAL_MEASURES:  # every resample of identical stages is identical too
        for end in ("lo", "hi"):
            np.testing.assert_allclose(table[f"{measure}_{end}"], 1.0, atol=1e-6, err_msg=f"{measure}_{end}")
    assert (table["n_sentences"] == 20).all() and (table["n_token_sample"] == 40).all()


def test_the_bootstrap_on_the_full_sample_is_the_point_value(stages):
    """Every sentence drawn once reproduces the table's values: the token-weighted mean of sentence vectors is
    the token mean of means.parquet (to float32 rounding of the stored sentence vectors)."""
    table = layer_similarity(stages["pre"], stages["ft"], "tiny", "mood", BootstrapSettings(0))
    ones = np.ones((1, 20))
    full = resampled_measures(stages["pre"] / "sentences.parquet", stages["ft"] / "sentences.parquet", ones)
    for measure in INTERVAL_MEASURES:
        values = [full[layer][measure][0] for layer in table["layer"]]
        np.testing.assert_allclose(values, table[measure], rtol=0, atol=1e-6, err_msg=measure)


def test_intervals_are_seeded_and_leave_the_point_values_as_they_are(stages):
    plain = layer_similarity(stages["pre"], stages["ft"], "tiny", "mood", BootstrapSettings(0))
    first, again, other = (
        layer_similarity(
            stages["pre"], stages["ft"], "tiny", "mood", BootstrapSettings(50, 0.9, seed, threads=1)
        )
        for seed in (1, 1, 2)
    )
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first[plain.columns], plain)
    assert not any(column.endswith(("_lo", "_hi")) for column in plain.columns)
    assert not np.allclose(first["cka_sentences_lo"], other["cka_sentences_lo"])
    for measure in INTERVAL_MEASURES:
        assert (first[f"{measure}_lo"] <= first[f"{measure}_hi"]).all(), measure
        assert first.columns.get_loc(f"{measure}_lo") == first.columns.get_loc(measure) + 1


def test_a_changed_model_is_less_similar(stages):
    table = layer_similarity(stages["pre"], stages["ft"], "tiny", "mood")
    for measure in ("cka_sentences", "cka_tokens", "mean_sentence_cosine"):
        values = table[measure].to_numpy()
        assert np.all(values < 1 - 1e-4) and np.all(values > 0.2), (measure, values)


def test_sentence_measures_refuse_misaligned_sentences(stages):
    with pytest.raises(ValueError, match="same sentences in the same order"):
        sentence_measures(stages["pre"] / "sentences.parquet", stages["reseeded"] / "sentences.parquet")


def test_cka_of_a_single_sentence_is_undefined_not_zero():
    """One row (max_sentences: 1) or a side without variance has no CKA: NaN, not 0.0, which the report
    read as "about 0.000 after the first block ... the paper's shape does not hold here"."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1, 8)), rng.normal(size=(1, 5))
    assert np.isnan(linear_cka(x, y))
    stream = StreamingCKA(8, 5)
    stream.update(x, y)
    assert np.isnan(stream.value())
    assert np.isnan(linear_cka(np.ones((6, 8)), rng.normal(size=(6, 5))))  # constant side
    assert np.isfinite(linear_cka(rng.normal(size=(3, 8)), rng.normal(size=(3, 5))))
