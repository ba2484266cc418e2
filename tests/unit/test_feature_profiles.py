"""Feature profiles and sparse probing of SAE layers, on tiny models built from a config.

Profiles: streamed over small batches, every number and every context equals a brute-force computation over
the whole split at once, and a feature that never fires gets no row. Sparse probing, with planted truth: texts
labelled by one latent of an exact SAE are read by the 1-sparse probe on that very latent, as well as by the
dense probe of the layer; with shuffled labels every probe sits near chance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.analysis.feature_profiles import FeatureProfiles, feature_profile_table
from layershift.analysis.layer_codes import layer_codes
from layershift.analysis.sparse_probing import rank_latents, sparse_probing
from layershift.core.io import write_parquet
from layershift.models.batches import Encodings, encode_texts, make_batches
from tests.unit.test_fidelity import HIDDEN, VOCAB, exact_sae, orthonormal_basis, random_sae, tiny_classifier

PLANTED_LATENT = 5


# --- feature profiles ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_and_texts(tmp_path_factory):
    """A tiny BERT encoder with its tokenizer, 30 labelled sentences and a random SAE of layer 1 whose
    feature 0 can never fire."""
    from transformers import AutoModel, AutoTokenizer

    from tests.support.models import make_tiny_bert, tiny_sentences

    directory = make_tiny_bert(tmp_path_factory.mktemp("profiles") / "encoder", hidden=HIDDEN)
    encoder, tokenizer = AutoModel.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    texts = tiny_sentences(30, seed=4)
    labels = np.array([len(text.split()) % 3 for text in texts])
    sae = random_sae(HIDDEN, 24, seed=2)
    with torch.no_grad():
        sae.b_enc[0] = -1e6  # a dead feature
    return encoder, tokenizer, encode_texts(tokenizer, texts, 32, labels), sae


def brute_force_codes(encoder, encodings: Encodings, sae, layer: int) -> list[np.ndarray]:
    """Each sentence's latents ``[length, d_sae]``, each sentence through the encoder alone."""
    per_sentence = []
    with torch.no_grad():
        for ids, length in zip(encodings.input_ids, encodings.lengths, strict=True):
            hidden = encoder(input_ids=torch.as_tensor(ids[None, :length]), output_hidden_states=True)
            per_sentence.append(sae.encode(hidden.hidden_states[layer][0]).numpy())
    return per_sentence


def test_streamed_profiles_equal_the_brute_force_over_the_whole_split(encoder_and_texts, tmp_path):
    encoder, tokenizer, encodings, sae = encoder_and_texts
    contexts, width, n_classes = 3, 4, 3
    profiles = FeatureProfiles(sae.cfg.d_sae, n_classes, encodings.labels, contexts, width)
    for batch, _layer, _hidden, codes in layer_codes(encoder, make_batches(encodings, 4), {1: sae}):
        profiles.update(batch, codes)
    table = feature_profile_table([(1, profiles)], tokenizer, n_classes)

    codes = brute_force_codes(encoder, encodings, sae, layer=1)
    all_codes = np.concatenate(codes)  # [n_tokens, d_sae]
    token_labels = np.repeat(encodings.labels, encodings.lengths)
    live = np.flatnonzero((all_codes > 0).any(axis=0))
    assert 0 not in live and len(live) > 10
    assert table["layer"].eq(1).all() and table["feature"].tolist() == live.tolist()
    assert np.allclose(table["firing_rate"], (all_codes[:, live] > 0).mean(axis=0))
    for label in range(n_classes):
        expected = all_codes[token_labels == label][:, live].mean(axis=0)
        assert np.allclose(table[f"mean_activation_class_{label}"], expected, atol=1e-5)
    for feature, feature_contexts in zip(table["feature"], table["contexts"], strict=True):
        sentence_max = np.array([sentence[:, feature].max() for sentence in codes])
        top = np.argsort(-sentence_max)[:contexts]
        top = top[sentence_max[top] > 0]
        assert [context["activation"] for context in feature_contexts] == pytest.approx(
            sentence_max[top], abs=1e-5
        )
        for row, context in zip(top, feature_contexts, strict=True):
            assert context["label"] == encodings.labels[row]
            assert_window_around_the_max(context, codes[row][:, feature], encodings, row, tokenizer, width)

    write_parquet(table, tmp_path / "profiles.parquet")  # the contexts column is storable as it is
    assert (
        pd.read_parquet(tmp_path / "profiles.parquet")["contexts"].map(len).tolist()
        == table["contexts"].map(len).tolist()
    )


def assert_window_around_the_max(context, activations, encodings, row, tokenizer, width):
    """The context is a contiguous run of the sentence's tokens, as long as allowed, holding the max."""
    length = int(encodings.lengths[row])
    tokens = tokenizer.convert_ids_to_tokens(encodings.input_ids[row, :length].tolist())
    size = min(width, length)
    assert len(context["tokens"]) == len(context["activations"]) == size
    starts = [
        start
        for start in range(length - size + 1)
        if tokens[start : start + size] == context["tokens"]
        and np.allclose(activations[start : start + size], context["activations"], atol=1e-5)
    ]
    assert any(start <= int(activations.argmax()) < start + size for start in starts)


# --- sparse probing --------------------------------------------------------------------------------------------
def random_encodings(n: int, seed: int) -> Encodings:
    """``n`` random texts of 3..12 token ids, right-padded, unlabelled."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, size=n)
    ids = np.zeros((n, lengths.max()), dtype=np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, VOCAB, size=length)
    return Encodings(ids, lengths, None, 0)


def rows_of(encodings: Encodings, rows: np.ndarray, labels: np.ndarray) -> Encodings:
    return Encodings(encodings.input_ids[rows], encodings.lengths[rows], labels[rows], encodings.pad_id)


@pytest.fixture(scope="module")
def planted_probing():
    """A tiny classifier, exact SAEs of its two layers and 240 texts labelled by whether latent
    ``PLANTED_LATENT`` of layer 2's SAE, averaged over the text's real tokens, is above its median."""
    model = tiny_classifier("bert", seed=1)
    saes = {layer: exact_sae(orthonormal_basis(HIDDEN, seed=layer)) for layer in (1, 2)}
    encodings = random_encodings(240, seed=6)
    direction = saes[2].W_dec[PLANTED_LATENT]  # [d]
    pooled = np.empty(len(encodings))
    with torch.no_grad():
        for batch in make_batches(encodings, 16):
            hidden = model(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
            latent = torch.relu(hidden.hidden_states[2] @ direction)  # [b, L]
            mask = batch.attention_mask.float()
            pooled[batch.index] = ((latent * mask).sum(dim=1) / mask.sum(dim=1)).numpy()
    labels = (pooled > np.median(pooled)).astype(np.int64)
    return model, saes, encodings, labels


def probing_table(model, saes, encodings, labels) -> pd.DataFrame:
    train, test = np.arange(160), np.arange(160, 240)
    return sparse_probing(
        model,
        make_batches(rows_of(encodings, train, labels), 16),
        labels[train],
        make_batches(rows_of(encodings, test, labels), 16),
        labels[test],
        saes,
        ks=[1, 2, 5, 20],
        seed=0,
    )


def test_a_planted_latent_alone_reads_the_label_as_well_as_the_dense_probe(planted_probing):
    table = probing_table(*planted_probing)
    assert sorted(set(table["layer"])) == [1, 2]
    for _layer, probes in table.groupby("layer")["probe"]:
        assert probes.tolist() == ["dense", "sparse", "sparse", "sparse", "sparse"]
    layer = table[table["layer"] == 2].set_index("k", drop=False)
    dense = layer[layer["probe"] == "dense"].iloc[0]
    first = layer.loc[1.0]
    assert first["latents"] == [PLANTED_LATENT]
    assert first["accuracy"] >= 0.9 and first["accuracy"] >= dense["accuracy"] - 0.02
    assert layer.loc[20.0, "latents"][:1] == [PLANTED_LATENT] and len(layer.loc[20.0, "latents"]) == 20
    assert (table["n_train"] == 160).all() and (table["n_test"] == 80).all()
    assert np.isnan(dense["k"]) and dense["latents"] == []


def test_with_shuffled_labels_every_probe_sits_near_chance(planted_probing):
    model, saes, encodings, labels = planted_probing
    shuffled = np.random.default_rng(0).permutation(labels)
    table = probing_table(model, saes, encodings, shuffled)
    assert table["accuracy"].between(0.3, 0.7).all(), table[["layer", "probe", "k", "accuracy"]]


def test_latents_rank_by_label_information_with_constant_ones_last():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    latents = np.column_stack(
        [
            np.zeros(200),
            rng.normal(size=200),
            labels + 0.5 * rng.normal(size=200),
            labels + 0.01 * rng.normal(size=200),
        ]
    )
    assert rank_latents(latents, labels).tolist() == [3, 2, 1, 0]
