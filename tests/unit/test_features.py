"""Feature statistics and top-activating tokens against NumPy references on the full encoded matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layershift.analysis.features import context_string, feature_statistics, top_activating_tokens
from layershift.data.shards import ShardWriter
from layershift.dictionaries.sae.config import SAEConfig
from layershift.dictionaries.sae.model import SAE

D_IN, D_SAE = 16, 24


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    """Shards of 1500 token rows in sentences of varying length (crossing row-group boundaries), and an SAE."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=400)
    sentence_ids = np.repeat(np.arange(len(lengths)), lengths)[:1500]
    positions = np.concatenate([np.arange(n) for n in lengths])[:1500]
    tokens = [f"s{s}p{p}" for s, p in zip(sentence_ids, positions, strict=True)]
    rows = (rng.normal(size=(1500, D_IN)) * rng.uniform(0.5, 3.0, size=D_IN) + 0.5).astype(np.float32)
    directory = tmp_path_factory.mktemp("layer")
    with ShardWriter(directory, D_IN, dtype="float32", rows_per_group=128, groups_per_shard=3) as writer:
        writer.append(sentence_ids, positions, positions, tokens, rows)

    sae = SAE(SAEConfig(D_IN, D_SAE, normalize_activations="center_and_scale"), seed=0)
    sae.set_normalization(0.7, rows.mean(axis=0))
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-2.0, 0.5, D_SAE))
        sae.b_enc[0] = -100.0  # feature 0 never fires
        encoded = sae.encode(torch.from_numpy(rows)).numpy()
    return directory, sae, encoded, sentence_ids, positions, tokens


def test_statistics_match_numpy(layer):
    directory, sae, encoded, *_ = layer
    stats = feature_statistics(sae, directory, batch_size=97)  # odd size: many uneven merges
    reference = encoded.astype(np.float64)
    assert list(stats.columns) == ["feature", "mean", "variance", "firing_rate", "max_activation", "rank"]
    assert stats["feature"].tolist() == list(range(D_SAE))
    np.testing.assert_allclose(stats["mean"], reference.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["variance"], reference.var(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["firing_rate"], (reference > 0).mean(axis=0))
    np.testing.assert_allclose(stats["max_activation"], reference.max(axis=0))
    assert stats.loc[0, "firing_rate"] == 0 and stats.loc[0, "variance"] == 0
    assert stats["firing_rate"].iloc[1:].min() > 0 and stats["firing_rate"].max() < 1  # the data is varied


def test_rank_follows_variance(layer):
    directory, sae, encoded, *_ = layer
    stats = feature_statistics(sae, directory)
    by_rank = stats.sort_values("rank")["feature"].to_numpy()
    np.testing.assert_array_equal(by_rank, np.argsort(-encoded.astype(np.float64).var(axis=0), kind="stable"))
    assert sorted(stats["rank"]) == list(range(1, D_SAE + 1))


def test_top_tokens_are_the_true_argmax_rows(layer):
    directory, sae, encoded, sentence_ids, positions, tokens = layer
    features = [5, 0, 23]
    top = top_activating_tokens(sae, directory, features, n_tokens=4, context=2)
    assert list(top.columns) == [
        "feature",
        "rank",
        "sentence_id",
        "position",
        "token",
        "activation",
        "context",
    ]
    assert 0 not in set(top["feature"])  # a feature that never fires has no top tokens
    for feature in (5, 23):
        rows = top[top["feature"] == feature]
        expected = np.argsort(-encoded[:, feature], kind="stable")[:4]
        assert rows["rank"].tolist() == [1, 2, 3, 4]
        assert rows["sentence_id"].tolist() == sentence_ids[expected].tolist()
        assert rows["position"].tolist() == positions[expected].tolist()
        assert rows["token"].tolist() == [tokens[i] for i in expected]
        np.testing.assert_array_equal(rows["activation"].to_numpy(), encoded[expected, feature])
        for row, i in zip(rows.itertuples(), expected, strict=True):
            same_sentence = np.flatnonzero(
                (sentence_ids == sentence_ids[i]) & (np.abs(positions - positions[i]) <= 2)
            )
            words = [f"**{tokens[j]}**" if j == i else tokens[j] for j in same_sentence]
            assert row.context == " ".join(words)


def test_context_string_clips_at_sentence_edges():
    tokens = {0: "[CLS]", 1: "a", 2: "b", 3: "[SEP]"}
    assert context_string(tokens, 0, 2) == "**[CLS]** a b"
    assert context_string(tokens, 2, 1) == "a **b** [SEP]"


def test_top_tokens_validates_features(layer):
    directory, sae, *_ = layer
    with pytest.raises(ValueError, match="features"):
        top_activating_tokens(sae, directory, [D_SAE])
    assert top_activating_tokens(sae, directory, []).empty
