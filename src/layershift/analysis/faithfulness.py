"""One run's SAEs judged by its classifier, with the controls that could falsify the judgement.

For each SAE layer of a run: the spliced fidelity of the run's SAE (:func:`fidelity.spliced_fidelity`) beside
that of an untrained SAE of the same shape and seed (which must recover about nothing), and the causal effect
of its features on the classifier (:func:`feature_effects.feature_effects`): attribution for every live
feature, exact ablation for the top ones by attribution and, as a control, for randomly drawn live features
(removing one of them must move the loss far less than removing the top one).

The classifier of the fine-tuned stage is the fine-tuned model; the pretrained stage's classifier is the
linear probe on the frozen encoder, fitted as the study's evaluation fits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from layershift.analysis.feature_effects import ablation_effects, attribution_agreement, feature_effects
from layershift.analysis.fidelity import (
    fit_probe_classifier,
    load_spliceable_classifier,
    model_device,
    spliced_fidelity,
    split_batches,
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
    seed: int = 0  # the study seed (a rule param)


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
    """An SAE of the same settings and shape as ``sae``, initialised with ``seed`` and never trained."""
    return SAE(sae.cfg, seed=seed).to(model_device(sae)).eval()


def _random_live_features(effects: pd.DataFrame, count: int, seed: int) -> list[int]:
    """``count`` live features drawn with ``seed`` from those outside the top-ablated set."""
    pool = effects.loc[~effects["ablated"], "feature"].to_numpy()
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=min(count, len(pool)), replace=False).tolist())


def layer_faithfulness(classifier, batches, labels, layer: int, sae: SAE, settings: FaithfulnessSettings):
    """(fidelity rows of the SAE and its untrained control, the SAE's feature effects) of one layer."""
    control = untrained_like(sae, settings.seed + CONTROL_SEED_OFFSET)
    rows = [
        {"sae": "trained", **spliced_fidelity(classifier, batches, labels, layer, sae)},
        {"sae": "untrained", **spliced_fidelity(classifier, batches, labels, layer, control)},
    ]
    effects = feature_effects(
        classifier, batches, labels, layer, sae, top_k=settings.top_k, rank_by=settings.rank_by
    )
    control_features = _random_live_features(effects, settings.random_features, settings.seed + layer)
    effects["random_control"] = effects["feature"].isin(control_features)
    if control_features:
        ablated = ablation_effects(classifier, batches, labels, layer, sae, control_features).set_index(
            "feature"
        )
        for column in ablated.columns:
            effects.loc[effects["random_control"], column] = effects["feature"].map(ablated[column])
    effects["ablated"] = effects["ablated"] | effects["random_control"]
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


def run_faithfulness(
    stage: str,
    model_dir: PathLike,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    n_classes: int,
    sae_dirs: Sequence[tuple[int, PathLike]],
    settings: FaithfulnessSettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fidelity table, feature-effects table) of one run's SAEs, ``sae_dirs`` = ``[(layer, directory), ...]``."""
    torch.manual_seed(settings.seed)
    classifier, tokenizer = run_classifier(stage, model_dir, train_df, n_classes, settings)
    batches, labels = split_batches(classifier, tokenizer, test_df, settings.max_length, settings.batch_size)
    fidelity, effects = [], []
    for layer, directory in sae_dirs:
        sae = load_sae(directory, model_device(classifier)).eval()
        rows, layer_effects = layer_faithfulness(classifier, batches, labels, int(layer), sae, settings)
        fidelity += rows
        effects.append(layer_effects)
    return pd.DataFrame(fidelity), pd.concat(effects, ignore_index=True)
