"""Probe sentences: hidden states stored per model x dataset, SAE activations computed from them later.

The stored states must be exactly what a forward pass of each stage's model gives, so the token figures
(the paper's Figures 3-5) are the same as if the SAE had been run on the model directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layershift.dictionaries.sae.config import SAEConfig
from layershift.dictionaries.sae.model import SAE
from layershift.models.probes import probe_states, probe_table, stage_states, token_kind
from layershift.models.sources import load_encoder
from tests.support.models import make_tiny_bert, perturbed_copy

SENTENCES = ["the movie was good", "bad plot , bad acting !"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-models")
    pretrained = make_tiny_bert(root / "pretrained", n_layers=2, hidden=32, heads=2, seed=0)
    finetuned = perturbed_copy(pretrained, root / "finetuned", scale=0.1, seed=3)
    return {"pretrained": pretrained, "finetuned": finetuned}


@pytest.fixture(scope="module")
def states(models):
    return probe_states(models, SENTENCES, layers=[1, 2], max_length=16, device="cpu")


def test_states_equal_a_direct_forward_pass(models, states):
    for stage, model_dir in models.items():
        model, tokenizer = load_encoder(model_dir)
        for layer in (1, 2):
            stored = stage_states(states, stage, layer)
            assert len(stored) == len(SENTENCES)
            for sentence, (tokens, hidden) in zip(SENTENCES, stored, strict=True):
                enc = tokenizer(sentence, return_tensors="pt")
                with torch.inference_mode():
                    expected = model(**enc, output_hidden_states=True).hidden_states[layer][0]  # [seq, d]
                assert tokens == tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
                assert hidden.shape == expected.shape and hidden.dtype == torch.float32
                torch.testing.assert_close(hidden, expected, rtol=0, atol=0)
    # the two stages really differ (the perturbed copy is another model)
    pre = stage_states(states, "pretrained", 2)[0][1]
    fine = stage_states(states, "finetuned", 2)[0][1]
    assert not torch.allclose(pre, fine)


def test_states_keep_text_and_positions(states):
    assert set(states["stage"]) == {"pretrained", "finetuned"}
    assert {"layer1", "layer2"} <= set(states.columns) and "layer0" not in states.columns
    for (_, s), rows in states.groupby(["stage", "sentence"]):
        assert rows["position"].tolist() == list(range(len(rows)))
        assert rows["text"].unique().tolist() == [SENTENCES[s]]
        assert rows["token"].iloc[0] == "[CLS]" and rows["token"].iloc[-1] == "[SEP]"


def test_unknown_layer_is_named(states):
    with pytest.raises(KeyError, match="no layer 3"):
        stage_states(states, "pretrained", 3)


def test_probe_table_applies_each_stage_sae_to_its_own_states(states):
    saes = {stage: SAE(SAEConfig(32, 20), seed=i) for i, stage in enumerate(("pretrained", "finetuned"))}
    top = {"pretrained": [3, 0], "finetuned": [7, 5]}
    table = probe_table(states, saes, top, layer=2)
    assert set(table.columns) >= {"stage", "sentence", "position", "token", "feature", "activation", "text"}
    assert (table["layer"] == 2).all()
    for stage, sae in saes.items():
        for s, (tokens, hidden) in enumerate(stage_states(states, stage, 2)):
            with torch.inference_mode():
                expected = sae.encode(hidden)[:, top[stage]].numpy()  # [seq, d] -> [seq, k]
            part = table[(table["stage"] == stage) & (table["sentence"] == s)]
            assert part["text"].unique().tolist() == [SENTENCES[s]]
            got = part.pivot(index="position", columns="feature_rank", values="activation").to_numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
            kinds = part.drop_duplicates("position")["token_kind"].tolist()
            assert kinds == [token_kind(t) for t in tokens]
