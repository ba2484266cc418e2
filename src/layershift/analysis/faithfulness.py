"""One run's SAEs judged by its classifier, with the controls that could falsify the judgement.

For each SAE layer of a run: the spliced fidelity of the run's SAE (:func:`fidelity.spliced_fidelity`) beside
that of an untrained SAE of the same shape and seed (which must recover about nothing), and the causal effect
of its features on the classifier (:func:`feature_effects.feature_effects`): attribution for every live
feature, exact ablation for the top ones by attribution and, as a control, for randomly drawn live features
(removing one of them must move the loss far less than removing the top one).

Beside them, from one pass of the test split and one of the train split through the classifier: each live
feature's profile (:mod:`feature_profiles`: firing rate, mean activation per class, the sentences it fires on
most) and sparse probing (:mod:`sparse_probing`: the dense probe of the layer beside probes on its ``k`` most
label-predictive latents).

The classifier of the fine-tuned stage is the fine-tuned model; the pretrained stage's classifier is the
linear probe on the frozen encoder, fitted as the study's evaluation fits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from layershift.analysis.feature_effects import attribution_agreement, feature_effects
from layershift.analysis.feature_profiles import FeatureProfiles, feature_profile_table
from layershift.analysis.fidelity import (
    fit_probe_classifier,
    layer_baseline,
    load_spliceable_classifier,
    model_device,
    spliced_fidelity,
    split_batches,
)
from layershift.analysis.layer_codes import layer_codes
from layershift.analysis.sparse_probing import (
    PooledStates,
    layer_sparse_probing,
    pooled_states,
    sparse_probing_table,
)
from layershift.dictionaries.sae.files import load_sae
from layershift.dictionaries.sae.model import SAE
from layershift.study.schema import schema_default

PathLike = str | Path
CONTROL_SEED_OFFSET = 7919  # the untrained control SAE's seed: the study's SAE seed plus this


@dataclass(frozen=True)
class FaithfulnessSettings:
    """How the run's SAEs are judged (the config's ``faithfulness`` section)."""

    max_length: int = schema_default("finetune", "max_length")
    batch_size: int = schema_default("faithfulness", "batch_size")
    top_k: int = schema_default("faithfulness", "top_k")  # features ablated exactly, by attribution
    random_features: int = schema_default("faithfulness", "random_features")  # ablated as the control
    rank_by: str = schema_default("faithfulness", "rank_by")  # "logits" or "loss"
    sparse_k: tuple[int, ...] = tuple(schema_default("faithfulness", "sparse_k"))  # latents per sparse probe
    contexts: int = schema_default("faithfulness", "contexts")  # top sentences kept per feature
    context_tokens: int = schema_default("faithfulness", "context_tokens")  # tokens around the firing token
    seed: int = 0  # the study seed (a rule param)


class FaithfulnessTables(NamedTuple):
    """The tables of one run's SAEs (see :func:`run_faithfulness`)."""

    fidelity: pd.DataFrame
    effects: pd.DataFrame
    profiles: pd.DataFrame
    sparse_probing: pd.DataFrame


def run_classifier(
    stage: str, model_dir: PathLike, train_df: pd.DataFrame, n_classes: int, settings: FaithfulnessSettings
):
    """(classifier module, tokenizer) of a run: the fine-tuned model, or the pretrained encoder's linear probe."""
    if stage == "pretrained":
        probe = fit_probe_classifier(
            model_dir, train_df, n_classes, settings.seed, max_length=settings.max_length
        )
        return load_spliceable_classifier(probe)
    return load_spliceable_classifier(model_dir)


def untrained_like(sae: SAE, seed: int) -> SAE:
    """An SAE of the same settings and shape as ``sae``, never trained, with its encoder and decoder drawn
    independently from ``seed`` (unit-norm rows). The SAE's own tied initialisation (encoder = decoder
    transposed) would not do: ReLU over more random directions than dimensions keeps about half of any vector,
    so it is close to a scaled identity and would reconstruct the layer without having learned anything."""
    control = SAE(sae.cfg, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    encoder = torch.randn(
        sae.cfg.d_sae, sae.cfg.d_in, generator=generator, dtype=torch.float64
    )  # [d_sae, d_in]
    encoder /= encoder.norm(dim=1, keepdim=True)
    with torch.no_grad():
        control.W_enc.copy_(encoder.T.to(control.W_enc.dtype))  # [d_in, d_sae]
    return control.to(model_device(sae)).eval()


def layer_faithfulness(classifier, batches, labels, layer: int, sae: SAE, settings: FaithfulnessSettings):
    """(fidelity rows of the SAE and its untrained control, the SAE's feature effects) of one layer. The two
    SAEs share the clean and ablated runs; the control skips the error-term check (a property of the splice,
    checked on the trained SAE)."""
    control = untrained_like(sae, settings.seed + CONTROL_SEED_OFFSET)
    baseline = layer_baseline(classifier, batches, labels, layer)
    rows = [
        {"sae": "trained", **spliced_fidelity(classifier, batches, labels, layer, sae, baseline=baseline)},
        {
            "sae": "untrained",
            **spliced_fidelity(
                classifier, batches, labels, layer, control, baseline=baseline, error_check=False
            ),
        },
    ]
    effects = feature_effects(
        classifier,
        batches,
        labels,
        layer,
        sae,
        top_k=settings.top_k,
        rank_by=settings.rank_by,
        random_features=settings.random_features,
        seed=settings.seed + layer,
    )
    rows[0] |= _effect_summary(effects)
    return rows, effects.assign(layer=layer)


def _effect_summary(effects: pd.DataFrame) -> dict:
    """How concentrated the classifier's use of the SAE is: the top-attributed feature's ablation effect, the
    random live features' median, and how well attribution predicts ablation over the ablated features."""
    top = effects.loc[effects["attribution_rank"] == 1, "ablation_loss_delta"]
    random = effects.loc[effects["random_control"], "ablation_loss_delta"].abs()
    agreement = attribution_agreement(
        effects[~effects["random_control"]], "attribution_loss", "ablation_loss_delta"
    )
    return {
        "top_feature_ablation_loss_delta": float(top.iloc[0]) if len(top) else float("nan"),
        "random_feature_ablation_loss_delta_median": float(random.median()) if len(random) else float("nan"),
        "attribution_spearman": agreement["spearman"],
        "n_live_features": int(len(effects)),
    }


def feature_tables(
    classifier: torch.nn.Module,
    tokenizer,
    test: tuple[Sequence, np.ndarray],
    train: tuple[Sequence, np.ndarray],
    saes: Mapping[int, SAE],
    n_classes: int,
    settings: FaithfulnessSettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(feature profiles on test, sparse probing fitted on train and scored on test) of every layer of ``saes``
    (``{layer: SAE}`` on the classifier's device); ``test`` and ``train`` are ``(batches, labels [n])``."""
    (test_batches, test_labels), (train_batches, train_labels) = test, train
    profiles = {
        layer: FeatureProfiles(
            sae.cfg.d_sae, n_classes, test_labels, settings.contexts, settings.context_tokens
        )
        for layer, sae in saes.items()
    }
    pooled_test = {layer: PooledStates(len(test_labels)) for layer in saes}
    for batch, layer, hidden, codes in layer_codes(classifier, test_batches, saes):
        profiles[layer].update(batch, codes)
        pooled_test[layer].update(batch, hidden, codes)
    pooled_train = pooled_states(classifier, train_batches, len(train_labels), saes)
    probes = {
        layer: layer_sparse_probing(
            pooled_train[layer],
            train_labels,
            pooled_test[layer],
            test_labels,
            settings.sparse_k,
            settings.seed,
        )
        for layer in saes
    }
    profile_table = feature_profile_table(list(profiles.items()), tokenizer, n_classes)
    return profile_table, sparse_probing_table(probes.items())


def run_faithfulness(
    stage: str,
    model_dir: PathLike,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    n_classes: int,
    sae_dirs: Sequence[tuple[int, PathLike]],
    settings: FaithfulnessSettings,
) -> FaithfulnessTables:
    """The fidelity, feature-effects, feature-profiles and sparse-probing tables of one run's SAEs,
    ``sae_dirs`` = ``[(layer, directory), ...]``."""
    torch.manual_seed(settings.seed)
    classifier, tokenizer = run_classifier(stage, model_dir, train_df, n_classes, settings)
    batches, labels = split_batches(classifier, tokenizer, test_df, settings.max_length, settings.batch_size)
    saes = {int(layer): load_sae(directory, model_device(classifier)).eval() for layer, directory in sae_dirs}
    fidelity, effects = [], []
    for layer, sae in saes.items():
        rows, layer_effects = layer_faithfulness(classifier, batches, labels, layer, sae, settings)
        fidelity += rows
        effects.append(layer_effects)
    train = split_batches(classifier, tokenizer, train_df, settings.max_length, settings.batch_size)
    profiles, probing = feature_tables(
        classifier, tokenizer, (batches, labels), train, saes, n_classes, settings
    )
    return FaithfulnessTables(
        pd.DataFrame(fidelity), pd.concat(effects, ignore_index=True), profiles, probing
    )
