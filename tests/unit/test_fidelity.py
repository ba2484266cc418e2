"""Spliced fidelity and per-feature causal effects of SAEs on the classifier, on tiny models built from a config.

Controls: an identity splice changes no logit bit on every encoder family; an SAE that reconstructs exactly
recovers the whole loss, and so does any SAE with its error term added back; an SAE with random weights
recovers about nothing. Planted truth: a classifier that reads one known direction of the layer, and an SAE
whose decoder holds that direction as one feature: that feature carries the whole effect, by attribution and by
ablation, and an SAE without it recovers nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.analysis.feature_effects import attribution_agreement, feature_effects, sae_feature_effects
from layershift.analysis.fidelity import (
    LinearProbeClassifier,
    classifier_logits,
    encoder_blocks,
    hidden_state_producer,
    probe_classifier,
    real_token_transform,
    sae_fidelity,
    splice,
    spliced_fidelity,
    spliced_logits,
)
from layershift.dictionaries.sae.config import SAEConfig
from layershift.dictionaries.sae.model import SAE
from layershift.models.batches import Encodings, make_batches

HIDDEN = 16
VOCAB = 60
FAMILIES = ("bert", "distilbert", "roberta", "deberta-v2", "modernbert")


def tiny_config(family: str, num_labels: int = 2, n_layers: int = 2):
    """A tiny config of ``family``: 2 blocks of width 16 (DeBERTa-v2 with its convolution after block 1)."""
    from transformers import AutoConfig

    common = {"vocab_size": VOCAB, "pad_token_id": 0, "num_labels": num_labels}
    sizes = {
        "num_hidden_layers": n_layers,
        "hidden_size": HIDDEN,
        "num_attention_heads": 2,
        "intermediate_size": 2 * HIDDEN,
        "max_position_embeddings": 64,
    }
    if family == "distilbert":
        sizes = {"n_layers": n_layers, "dim": HIDDEN, "n_heads": 2, "hidden_dim": 2 * HIDDEN}
    elif family == "deberta-v2":
        sizes |= {"conv_kernel_size": 3}
    elif family == "modernbert":
        sizes |= {"global_attn_every_n_layers": 2, "local_attention": 8}
        common |= {"cls_token_id": 1, "sep_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}
    return AutoConfig.for_model(family, **sizes, **common)


def tiny_classifier(family: str = "bert", seed: int = 0, head_gain: float = 1.0):
    """A randomly initialised sequence classifier of ``family``; ``head_gain`` scales the last linear layer
    (a random head has tiny logit margins)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family)).eval()
    with torch.no_grad():
        [*_, last] = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
        last.weight.mul_(head_gain)
    return model


def tiny_encoder(seed: int = 0):
    from transformers import AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_config("bert")).eval()


def random_batches(n: int = 24, seed: int = 0, batch_size: int = 8, labels=None):
    """Batches of ``n`` random texts of 3..12 tokens, right-padded (so the splice must skip padding)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, size=n)
    ids = np.zeros((n, lengths.max()), dtype=np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, VOCAB, size=length)
    label_array = rng.integers(0, 2, size=n) if labels is None else np.asarray(labels)
    return make_batches(Encodings(ids, lengths, label_array, 0), batch_size)


def hand_built_sae(decoder: torch.Tensor, b_dec: torch.Tensor | None = None) -> SAE:
    """A ReLU SAE with decoder rows ``decoder`` ``[d_sae, d]``, tied encoder, no encoder bias, no normalisation."""
    d_sae, d_in = decoder.shape
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="relu", normalize_activations="none"))
    with torch.no_grad():
        sae.W_dec.copy_(decoder)
        sae.W_enc.copy_(decoder.T)
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.zeros(d_in) if b_dec is None else b_dec)
    return sae.eval()


def orthonormal_basis(d: int, seed: int = 0, first: torch.Tensor | None = None) -> torch.Tensor:
    """``[d, d]`` orthonormal rows (the first one is ``first`` when given)."""
    generator = torch.Generator().manual_seed(seed)
    columns = torch.randn(d, d, generator=generator, dtype=torch.float64)
    if first is not None:
        columns[:, 0] = first.double()
    basis, _ = torch.linalg.qr(columns)
    if first is not None:
        basis[:, 0] *= torch.sign(basis[:, 0] @ first.double())
    return basis.T.float()


def exact_sae(basis: torch.Tensor) -> SAE:
    """ReLU features ``+b`` and ``-b`` for every basis row: reconstructs any input exactly
    (``x = Σ_b (ReLU(x·b) - ReLU(-x·b)) b``)."""
    return hand_built_sae(torch.cat([basis, -basis]))


def random_sae(d: int, d_sae: int, seed: int = 0) -> SAE:
    """An untrained SAE: random unit decoder rows and an independent random encoder."""
    sae = SAE(SAEConfig(d_in=d, d_sae=d_sae, architecture="relu", normalize_activations="none"), seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, d_sae, generator=generator) / d**0.5)
    return sae.eval()


# --- splicing --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_identity_splice_leaves_every_logit_bit_equal(family):
    model = tiny_classifier(family)
    batches = random_batches(12)
    clean = spliced_logits(model, batches, 1)
    for layer in (1, 2):
        assert torch.equal(spliced_logits(model, batches, layer, lambda rows: rows), clean)
        with splice(model, layer, lambda hidden: hidden):
            assert torch.equal(classifier_logits(model, batches[0]), classifier_logits(model, batches[0]))
        with splice(model, layer, lambda hidden: hidden):
            assert torch.equal(classifier_logits(model, batches[0]).double(), clean[: len(batches[0].index)])
    with splice(model, 1, torch.zeros_like):  # the hook is live: a zeroed layer moves the logits
        assert not torch.equal(classifier_logits(model, batches[0]).double(), clean[: len(batches[0].index)])


@pytest.mark.parametrize("family", FAMILIES)
def test_splice_sees_exactly_the_reported_hidden_state(family):
    """What the hook hands the transform is ``hidden_states[layer]``, also where the model post-processes a
    block's output (DeBERTa-v2's convolution after block 1, ModernBERT's final norm after the last)."""
    model = tiny_classifier(family)
    batch = random_batches(6)[0]
    reported = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
    ).hidden_states
    assert len(encoder_blocks(model)) == 2
    for layer in (1, 2):
        seen: list[torch.Tensor] = []

        def record(hidden, seen=seen):
            seen.append(hidden)
            return hidden

        with splice(model, layer, record, hidden_state_producer(model, batch, layer)):
            classifier_logits(model, batch)
        assert torch.equal(seen[0], reported[layer])


def test_splice_rejects_shared_blocks_and_layers_out_of_range():
    model = tiny_classifier("bert")
    with pytest.raises(ValueError, match="1..2"), splice(model, 3, lambda hidden: hidden):
        pass
    from transformers import AlbertConfig, AlbertForSequenceClassification

    albert = AlbertForSequenceClassification(
        AlbertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match="shared"):
        encoder_blocks(albert)


def test_real_token_transform_leaves_padding_alone():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = real_token_transform(mask, torch.zeros_like)(hidden)
    assert torch.equal(out[1, 2:], hidden[1, 2:])
    assert not out[mask.bool()].any()


# --- fidelity --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def confident_classifier():
    """A random BERT classifier with a strong head centred on these texts (so both classes occur), and the texts
    labelled with its own clean predictions."""
    model = tiny_classifier("bert", seed=3, head_gain=600.0)
    unlabelled = random_batches(32, seed=1)
    logits = spliced_logits(model, unlabelled, 1)
    with torch.no_grad():
        model.classifier.bias[1] -= float((logits[:, 1] - logits[:, 0]).quantile(0.5))
    predictions = spliced_logits(model, unlabelled, 1).argmax(-1).numpy()
    labels = np.empty(32, dtype=np.int64)
    labels[np.concatenate([batch.index for batch in unlabelled])] = predictions
    return model, random_batches(32, seed=1, labels=labels), labels


def test_exact_sae_recovers_everything_and_the_error_term_is_the_clean_run(confident_classifier):
    model, batches, labels = confident_classifier
    result = spliced_fidelity(model, batches, labels, 1, exact_sae(orthonormal_basis(HIDDEN)))
    assert result["loss_zero_ablated"] > result["loss_clean"] + 0.1  # the layer matters
    assert result["loss_recovered_zero"] == pytest.approx(1.0, abs=1e-4)
    assert result["loss_recovered_mean"] == pytest.approx(1.0, abs=1e-4)
    assert result["kl_clean_spliced"] < 1e-8
    assert result["accuracy_spliced"] == result["accuracy_clean"] == 1.0
    assert result["loss_error_term"] == pytest.approx(result["loss_clean"], abs=1e-6)
    assert result["max_logit_diff_error_term"] < 1e-4
    assert result["n_texts"] == 32


def test_random_sae_recovers_nothing_but_its_error_term_restores_the_clean_run(confident_classifier):
    model, batches, labels = confident_classifier
    result = spliced_fidelity(model, batches, labels, 1, random_sae(HIDDEN, 4 * HIDDEN))
    assert result["loss_recovered_zero"] < 0.2
    assert result["loss_recovered_mean"] < 0.2
    assert result["kl_clean_spliced"] > 0.1
    # SAE()'s own initialisation (encoder = decoder transposed) is a rough scaled identity: it keeps some of
    # the layer, yet does worse than putting the mean there
    tied = SAE(SAEConfig(d_in=HIDDEN, d_sae=4 * HIDDEN, architecture="relu", normalize_activations="none"))
    assert spliced_fidelity(model, batches, labels, 1, tied.eval())["loss_recovered_mean"] < 0.2
    assert result["loss_error_term"] == pytest.approx(result["loss_clean"], abs=1e-5)
    assert result["max_logit_diff_error_term"] < 1e-3


# --- planted truth ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted():
    """A linear probe on a tiny encoder's last layer that reads one direction ``u``, texts labelled by it, and
    SAEs of that layer: ``with_u`` holds ``u`` as feature 0 (always on: offset ``c`` in ``b_dec``) and the
    rest of the space as ±basis features; ``without_u`` holds only the rest."""
    encoder = tiny_encoder(seed=5)
    u = torch.nn.functional.normalize(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(7)), dim=0)
    reader = LinearProbeClassifier(
        encoder,
        torch.zeros(HIDDEN),
        torch.ones(HIDDEN),
        torch.stack([torch.zeros(HIDDEN), u]),
        torch.zeros(2),
    )
    batches = random_batches(40, seed=2)
    projection = spliced_logits(reader, batches, 2)[:, 1]  # pooled · u, batch order
    gain = 4.0 / float(projection.std())
    centre = float(projection.median())
    classifier = LinearProbeClassifier(
        encoder,
        torch.zeros(HIDDEN),
        torch.ones(HIDDEN),
        torch.stack([torch.zeros(HIDDEN), gain * u]),
        torch.tensor([0.0, -gain * centre]),
    )
    labels = np.empty(40, dtype=np.int64)
    labels[np.concatenate([batch.index for batch in batches])] = (projection > centre).long().numpy()
    rest = orthonormal_basis(HIDDEN, seed=8, first=u)[1:]  # [d - 1, d], orthogonal to u
    offset = 100.0
    with_u = hand_built_sae(torch.cat([u[None], rest, -rest]), b_dec=-offset * u)
    return classifier, batches, labels, with_u, hand_built_sae(torch.cat([rest, -rest]))


def test_planted_direction_sae_recovers_everything_and_without_it_nothing(planted):
    classifier, batches, labels, with_u, without_u = planted
    kept = spliced_fidelity(classifier, batches, labels, 2, with_u)
    assert kept["loss_recovered_zero"] == pytest.approx(1.0, abs=1e-3)
    assert kept["accuracy_clean"] > 0.9
    lost = spliced_fidelity(classifier, batches, labels, 2, without_u)
    assert lost["loss_recovered_zero"] < 0.1
    assert lost["accuracy_spliced"] < 0.7


def test_planted_feature_has_the_largest_effect_by_attribution_and_ablation(planted):
    classifier, batches, labels, with_u, _ = planted
    effects = feature_effects(classifier, batches, labels, 2, with_u, top_k=5, ablate=[3])
    assert effects.loc[0, "feature"] == 0  # rank 1 by |attribution_loss|
    assert effects.loc[0, "attribution_rank"] == 1
    ablated = effects[effects["ablated"]].set_index("feature")
    assert len(ablated) == 6 and 3 in ablated.index
    assert ablated["ablation_loss_delta"].abs().idxmax() == 0
    assert ablated.loc[0, "ablation_loss_delta"] > 1.0
    others = ablated.drop(index=0)
    assert (others["ablation_loss_delta"].abs() < 1e-4).all()  # directions the classifier does not read
    assert (effects["attribution_loss"].iloc[1:].abs() < 1e-4).all()
    # the read-out is linear in the feature, so attribution of the logits is exact
    planted_row = effects.set_index("feature").loc[0]
    assert planted_row["ablation_logit_delta_1"] == pytest.approx(
        planted_row["attribution_logit_1"], rel=1e-4
    )
    assert planted_row["ablation_logit_delta_1"] < 0
    assert planted_row["ablation_logit_delta_0"] == planted_row["attribution_logit_0"] == 0


def test_top_attributed_feature_moves_the_loss_far_more_than_random_live_ones(confident_classifier):
    model, batches, labels = confident_classifier
    sae = exact_sae(orthonormal_basis(HIDDEN, seed=4))
    rng = np.random.default_rng(0)
    effects = feature_effects(model, batches, labels, 1, sae, top_k=8)
    random_live = rng.choice(effects["feature"].to_numpy(), size=6, replace=False).tolist()
    effects = feature_effects(model, batches, labels, 1, sae, top_k=1, ablate=random_live)
    ablated = effects[effects["ablated"]].set_index("feature")
    top = abs(ablated.loc[effects.loc[0, "feature"], "ablation_loss_delta"])
    random_effects = ablated.loc[random_live, "ablation_loss_delta"].abs()
    assert top > 3 * random_effects.median()


def test_attribution_predicts_ablation_exactly_where_the_read_out_is_linear(planted):
    """Behind the layer sit only mean pooling and a linear probe, so each feature's effect on the logits is
    linear in it: gradient × activation equals the exact ablation, for every feature of an SAE whose features
    are not aligned with the read direction."""
    classifier, batches, labels, _, _ = planted
    sae = exact_sae(orthonormal_basis(HIDDEN, seed=11))
    effects = feature_effects(classifier, batches, labels, 2, sae, top_k=2 * HIDDEN, rank_by="logits")
    assert effects["ablated"].all()
    assert np.allclose(
        effects["attribution_logit_1"], effects["ablation_logit_delta_1"], rtol=1e-4, atol=1e-5
    )
    agreement = attribution_agreement(effects, "attribution_logit_1", "ablation_logit_delta_1")
    assert agreement["n_features"] == len(effects)
    assert agreement["pearson"] > 0.9999 and agreement["spearman"] > 0.999
    assert agreement["sign_agreement"] == 1.0
    top = effects.loc[0, "feature"]  # the largest logit effect is among the largest loss effects
    assert (
        effects.set_index("feature").loc[top, "ablation_loss_delta"]
        >= effects["ablation_loss_delta"].median()
    )


def test_attribution_agreement_is_undefined_on_too_few_features():
    table = pd.DataFrame({"attribution_loss": [0.1, 0.2, np.nan], "ablation_loss_delta": [0.1, 0.3, np.nan]})
    result = attribution_agreement(table)
    assert result["n_features"] == 2 and np.isnan(result["spearman"])


# --- from files ------------------------------------------------------------------------------------------------
def save_tiny_classifier(root):
    """A tiny BERT encoder under ``root/encoder`` and a classifier made from it (seeded random head, its
    tokenizer beside it) under ``root/classifier``; returns ``root``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests.support.models import make_tiny_bert

    encoder_dir = make_tiny_bert(root / "encoder", hidden=HIDDEN)
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(encoder_dir, num_labels=2)
    classifier.save_pretrained(root / "classifier")
    AutoTokenizer.from_pretrained(encoder_dir).save_pretrained(root / "classifier")
    return root


def labelled_split(n: int) -> pd.DataFrame:
    """``n`` tiny sentences labelled by the parity of their word count."""
    from tests.support.models import tiny_sentences

    texts = tiny_sentences(n, seed=3)
    return pd.DataFrame({"text": texts, "label": [len(text.split()) % 2 for text in texts]})


@pytest.fixture(scope="module")
def saved_study(tmp_path_factory):
    """A saved tiny BERT encoder, a classifier fine-tuned from it (random head), an exact SAE of its layer 1,
    and a labelled split."""
    from layershift.dictionaries.sae.files import save_sae

    root = save_tiny_classifier(tmp_path_factory.mktemp("fidelity"))
    save_sae(exact_sae(orthonormal_basis(HIDDEN, seed=2)), root / "sae")
    return root, labelled_split(30)


def test_fidelity_and_effects_from_saved_classifier_and_sae(saved_study):
    root, split = saved_study
    result = sae_fidelity(
        root / "classifier", split, 1, root / "sae", max_length=16, batch_size=8, device="cpu"
    )
    assert result["n_texts"] == 30
    assert result["kl_clean_spliced"] < 1e-8
    assert result["max_logit_diff_error_term"] < 1e-4
    effects = sae_feature_effects(
        root / "classifier", split, 1, root / "sae", max_length=16, batch_size=8, device="cpu", top_k=3
    )
    assert effects["ablated"].sum() == 3
    assert {"attribution_logit_1", "ablation_logit_delta_1", "firing_rate"} <= set(effects.columns)


def test_probe_classifier_is_the_sklearn_probe_and_splices_like_a_classifier(saved_study):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from transformers import AutoModel, AutoTokenizer

    from layershift.models.batches import encode_split
    from layershift.models.evaluate import mean_pooled_features

    root, split = saved_study
    encoder = AutoModel.from_pretrained(root / "encoder")
    encodings = encode_split(AutoTokenizer.from_pretrained(root / "encoder"), split, 2, 16)
    batches = make_batches(encodings, 8)
    features = mean_pooled_features(encoder, batches, "cpu")
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression(C=10.0, max_iter=5000).fit(scaler.transform(features), encodings.labels)
    module = probe_classifier(encoder, probe, scaler)
    logits = spliced_logits(module, batches, 2)  # batch order
    order = np.concatenate([batch.index for batch in batches])
    expected = probe.predict_proba(scaler.transform(features))[order]
    assert np.allclose(torch.softmax(logits, -1).numpy(), expected, atol=1e-5)
    result = sae_fidelity(module, split, 2, root / "sae", max_length=16, batch_size=8, device="cpu")
    assert result["loss_recovered_zero"] == pytest.approx(1.0, abs=1e-3)
    assert result["accuracy_clean"] == result["accuracy_spliced"]


def test_fitted_probe_classifier_scores_like_the_study_linear_probe(saved_study):
    from layershift.analysis.fidelity import fit_probe_classifier, load_spliceable_classifier, split_batches
    from layershift.models.evaluate import evaluate_linear_probe

    root, split = saved_study
    train, test = split.iloc[:20], split.iloc[20:]
    study_row = evaluate_linear_probe(
        root / "encoder", train, test, ["a", "b"], seed=0, max_length=16, device="cpu"
    )
    module, tokenizer = load_spliceable_classifier(
        fit_probe_classifier(root / "encoder", train, 2, seed=0, max_length=16, device="cpu"), "cpu"
    )
    batches, labels = split_batches(module, tokenizer, test, 16, 8)
    order = np.concatenate([batch.index for batch in batches])
    predictions = spliced_logits(module, batches, 2).argmax(-1).numpy()
    assert np.mean(predictions == labels[order]) == pytest.approx(study_row["accuracy"])


def test_a_constant_probe_feature_does_not_turn_a_small_splice_into_a_huge_logit():
    """A mean-pooled dimension the encoder holds fixed up to float noise gets a tiny scale from the scaler
    (1e-12 here; ~1e-33 in MiniLM's last layer); standardised, a reconstruction error of 1e-3 there would move
    the logits by ~1e9. Left unscaled, the clean logits are the same and the splice stays small."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    features = rng.standard_normal((40, HIDDEN))
    features[:, 0] = 0.25 + 1e-12 * rng.standard_normal(40)  # constant up to float noise
    assert StandardScaler().fit(features).scale_[0] < 1e-11  # the scaler does not call it constant
    labels = (features[:, 1] > 0).astype(int)
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression().fit(scaler.transform(features), labels)
    module = probe_classifier(tiny_encoder(), probe, scaler)
    assert (
        module.feature_scale[0] == 1.0
        and (module.feature_scale[1:] == torch.as_tensor(scaler.scale_[1:]).float()).all()
    )
    batches = random_batches()
    clean = spliced_logits(module, batches, 2)
    nudged = spliced_logits(module, batches, 2, lambda rows: rows + 1e-3)
    assert torch.isfinite(nudged).all() and (nudged - clean).abs().max() < 1.0
