"""Per-feature causal effects of an SAE on the classifier: what happens to the loss and to each class logit when
one feature alone is taken out of the reconstruction.

The SAE is spliced into ``hidden_states[layer]`` with its error term kept (``reconstruction + (hidden -
reconstruction)``, the clean run up to float rounding), so removing feature ``i`` changes the hidden state by
exactly ``-(decode(f) - decode(f without i))`` and nothing else. Two estimates of the effect:

* **attribution** (gradient × activation): ``-Σ_tokens ∂L/∂f_i · f_i``, the first-order change of the mean
  loss (and of each class's mean logit) when ``f_i`` goes to 0, for every feature from one backward pass per
  quantity;
* **ablation**: the exact change, one forward pass over the texts per feature, for the features with the
  largest |attribution| and any named ones.

:func:`attribution_agreement` says how well the cheap estimate ranks the exact one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

from layershift.analysis.fidelity import (
    RowTransform,
    classifier_logits,
    hidden_state_producer,
    labels_in_batch_order,
    load_judged_sae,
    model_device,
    real_token_transform,
    reconstruction_with_error,
    splice,
    spliced_logits,
)
from layershift.dictionaries.sae.model import SAE
from layershift.models.batches import Batch

PathLike = str | Path


@dataclass
class FeatureAttribution:
    """Gradient × activation estimates for every feature of an SAE, and how often each fires."""

    loss: np.ndarray  # [d_sae] estimated change of the mean cross-entropy when the feature is removed
    logits: np.ndarray  # [d_sae, num_labels] estimated change of each class's mean logit
    firing_count: np.ndarray  # [d_sae] real tokens where the feature is > 0
    activation_sum: np.ndarray  # [d_sae] sum of the feature's activation over real tokens
    n_tokens: int  # real tokens seen


def _codes_with_gradient(sae: SAE, captured: list[torch.Tensor]) -> RowTransform:
    """Rows -> reconstruction + detached error term, through latents that record a gradient (kept in
    ``captured``): the forward value is the clean one, the gradient flows to the latents only."""

    def rows_through_codes(rows: torch.Tensor) -> torch.Tensor:
        codes = sae.encode(rows.detach()).detach().requires_grad_(True)  # [n_tokens, d_sae]
        reconstruction = sae.decode(codes)  # [n_tokens, d]
        captured.append(codes)
        return reconstruction + (rows.detach() - reconstruction.detach())

    return rows_through_codes


def _batch_attribution(
    classifier, batch: Batch, targets: torch.Tensor, n_texts: int, sae: SAE, producer, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents ``[n_tokens, d_sae]``, attribution ``[d_sae, 1 + num_labels]``) of one batch: loss first, then
    each class's logit, each a share of the mean over all ``n_texts`` texts."""
    captured: list[torch.Tensor] = []
    hook = real_token_transform(batch.attention_mask, _codes_with_gradient(sae, captured))
    with torch.enable_grad(), splice(classifier, layer, hook, producer):
        logits = classifier_logits(classifier, batch).double()  # [b, C]
        (codes,) = captured
        quantities = [F.cross_entropy(logits, targets, reduction="sum") / n_texts]
        quantities += [logits[:, label].sum() / n_texts for label in range(logits.shape[1])]
        columns = []
        for position, quantity in enumerate(quantities):
            (gradient,) = torch.autograd.grad(quantity, codes, retain_graph=position < len(quantities) - 1)
            columns.append(-(gradient.double() * codes.detach().double()).sum(dim=0))  # [d_sae]
    return codes.detach(), torch.stack(columns, dim=1)


def attribution_pass(
    classifier: torch.nn.Module,
    batches: Sequence[Batch],
    labels: np.ndarray,
    layer: int,
    sae: SAE,
    producer: torch.nn.Module | None = None,
) -> FeatureAttribution:
    """Gradient × activation of every feature on the mean loss and on each class's mean logit, spliced at
    ``producer`` (default: :func:`hidden_state_producer`)."""
    classifier.eval()
    if producer is None:
        producer = hidden_state_producer(classifier, batches[0], layer)
    device = model_device(classifier)
    targets = labels_in_batch_order(batches, labels).to(device)
    n_texts, d_sae = len(targets), sae.cfg.d_sae
    attribution = torch.zeros(d_sae, 1 + classifier.num_labels, dtype=torch.float64, device=device)
    firing = torch.zeros(d_sae, dtype=torch.float64, device=device)
    activation = torch.zeros(d_sae, dtype=torch.float64, device=device)
    start = 0
    for batch in batches:
        batch = batch.to(device)
        batch_targets = targets[start : start + len(batch.index)]
        start += len(batch.index)
        codes, batch_attribution = _batch_attribution(
            classifier, batch, batch_targets, n_texts, sae, producer, layer
        )
        attribution += batch_attribution
        firing += (codes > 0).sum(dim=0).double()
        activation += codes.double().sum(dim=0)
    return FeatureAttribution(
        loss=attribution[:, 0].cpu().numpy(),
        logits=attribution[:, 1:].cpu().numpy(),
        firing_count=firing.cpu().numpy(),
        activation_sum=activation.cpu().numpy(),
        n_tokens=int(sum(batch.n_tokens for batch in batches)),
    )


def without_feature(sae: SAE, feature: int) -> RowTransform:
    """Rows -> rows minus feature ``feature``'s contribution to the reconstruction (error term kept)."""

    def rows_without(rows: torch.Tensor) -> torch.Tensor:
        codes = sae.encode(rows)  # [n_tokens, d_sae]
        removed = codes.clone()
        removed[:, feature] = 0
        return rows - (sae.decode(codes) - sae.decode(removed))

    return rows_without


def ablation_effects(
    classifier: torch.nn.Module,
    batches: Sequence[Batch],
    labels: np.ndarray,
    layer: int,
    sae: SAE,
    features: Iterable[int],
    producer: torch.nn.Module | None = None,
) -> pd.DataFrame:
    """Exact effect of removing each feature alone: one row per feature with ``ablation_loss_delta`` (change of
    the mean cross-entropy) and ``ablation_logit_delta_{c}`` (change of class ``c``'s mean logit), measured
    against the SAE spliced in with its error term, at ``producer`` (default: :func:`hidden_state_producer`)."""
    classifier.eval()
    if producer is None:
        producer = hidden_state_producer(classifier, batches[0], layer)
    targets = labels_in_batch_order(batches, labels).to(model_device(classifier))
    baseline = spliced_logits(classifier, batches, layer, reconstruction_with_error(sae), producer)
    baseline_loss = float(F.cross_entropy(baseline, targets))
    rows = []
    for feature in features:
        ablated = spliced_logits(classifier, batches, layer, without_feature(sae, int(feature)), producer)
        logit_delta = (ablated - baseline).mean(dim=0).cpu().numpy()  # [C]
        rows.append(
            {
                "feature": int(feature),
                "ablation_loss_delta": float(F.cross_entropy(ablated, targets)) - baseline_loss,
                **{f"ablation_logit_delta_{label}": float(delta) for label, delta in enumerate(logit_delta)},
            }
        )
    return pd.DataFrame(rows, columns=_ablation_columns(classifier.num_labels))


def _ablation_columns(num_labels: int) -> list[str]:
    return [
        "feature",
        "ablation_loss_delta",
        *(f"ablation_logit_delta_{label}" for label in range(num_labels)),
    ]


def feature_effects(
    classifier: torch.nn.Module,
    batches: Sequence[Batch],
    labels: np.ndarray,
    layer: int,
    sae: SAE,
    features: Sequence[int] | None = None,
    top_k: int = 20,
    ablate: Sequence[int] = (),
    rank_by: str = "loss",
    random_features: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Attribution for ``features`` (default: those that fire on at least one real token) and exact ablation
    for the ``top_k`` of them by attribution, the ``ablate`` features and, as a control, ``random_features``
    of the others drawn with ``seed`` (``random_control``: removing one must move the loss far less than
    removing the top one).

    ``rank_by="loss"`` ranks by |attribution_loss|; ``"logits"`` by the largest |attribution_logit_{c}| over
    classes. The logits are often the better guide: near the classifier's optimum the loss is flat to first
    order, so removing a feature the classifier reads raises the loss by a second-order amount that
    gradient × activation does not see, while its first-order change of the logits is exact wherever the rest
    of the network is linear in the feature.

    One row per feature, by decreasing rank score: ``feature``, ``firing_rate`` (share of real tokens where it
    is > 0), ``mean_activation`` (over real tokens), ``attribution_loss``, ``attribution_logit_{c}``,
    ``attribution_rank`` (1 = largest score), ``ablated``, ``ablation_loss_delta`` and
    ``ablation_logit_delta_{c}`` (NaN where not ablated). Class ``c`` is the classifier's label id.
    """
    if rank_by not in ("loss", "logits"):
        raise ValueError(f"rank_by must be 'loss' or 'logits', got {rank_by!r}")
    producer = hidden_state_producer(classifier, batches[0], layer)
    attribution = attribution_pass(classifier, batches, labels, layer, sae, producer)
    chosen = np.flatnonzero(attribution.firing_count > 0) if features is None else np.asarray(features, int)
    chosen = np.union1d(chosen, np.asarray(ablate, dtype=int))  # ablated features get a row too
    table = pd.DataFrame(
        {
            "feature": chosen,
            "firing_rate": attribution.firing_count[chosen] / max(attribution.n_tokens, 1),
            "mean_activation": attribution.activation_sum[chosen] / max(attribution.n_tokens, 1),
            "attribution_loss": attribution.loss[chosen],
            **{
                f"attribution_logit_{label}": attribution.logits[chosen, label]
                for label in range(attribution.logits.shape[1])
            },
        }
    )
    logit_columns = [column for column in table.columns if column.startswith("attribution_logit_")]
    score = table[["attribution_loss"] if rank_by == "loss" else logit_columns].abs().max(axis=1)
    table = table.iloc[np.argsort(-score.to_numpy(), kind="stable")]
    table = table.reset_index(drop=True)
    table["attribution_rank"] = np.arange(1, len(table) + 1)
    chosen_features = list(dict.fromkeys([*table["feature"].head(top_k).tolist(), *map(int, ablate)]))
    control = _random_others(table["feature"].to_numpy(), chosen_features, random_features, seed)
    to_ablate = chosen_features + control
    ablation = ablation_effects(classifier, batches, labels, layer, sae, to_ablate, producer)
    table = table.merge(ablation, on="feature", how="left", sort=False)
    table["ablated"] = table["feature"].isin(to_ablate)
    table["random_control"] = table["feature"].isin(control)
    return table


def _random_others(features: np.ndarray, chosen: Sequence[int], count: int, seed: int) -> list[int]:
    """``count`` of ``features`` outside ``chosen``, drawn with ``seed`` (sorted)."""
    pool = np.setdiff1d(features, np.asarray(chosen, dtype=int))
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(pool, size=min(count, len(pool)), replace=False))


def attribution_agreement(
    effects: pd.DataFrame, attribution: str = "attribution_loss", ablation: str = "ablation_loss_delta"
) -> dict:
    """How well attribution predicts ablation over the ablated features: ``n_features``, ``spearman``,
    ``pearson`` and ``sign_agreement`` (share with the same sign); NaN where undefined (< 3 features or a
    constant column)."""
    both = effects[[attribution, ablation]].dropna()
    estimate, exact = both[attribution].to_numpy(float), both[ablation].to_numpy(float)
    undefined = len(both) < 3 or np.ptp(estimate) == 0 or np.ptp(exact) == 0
    return {
        "n_features": len(both),
        "spearman": float("nan") if undefined else float(stats.spearmanr(estimate, exact).statistic),
        "pearson": float("nan") if undefined else float(stats.pearsonr(estimate, exact).statistic),
        "sign_agreement": float(np.mean(np.sign(estimate) == np.sign(exact))) if len(both) else float("nan"),
    }


def sae_feature_effects(
    classifier: PathLike | torch.nn.Module,
    test_df: pd.DataFrame,
    layer: int,
    sae_dir: PathLike,
    max_length: int = 128,
    batch_size: int = 32,
    device: str = "auto",
    features: Sequence[int] | None = None,
    top_k: int = 20,
    ablate: Sequence[int] = (),
    rank_by: str = "loss",
) -> pd.DataFrame:
    """:func:`feature_effects` of the SAE saved in ``sae_dir`` on a classifier directory or probe module, over
    ``test_df`` tokenised to ``max_length``."""
    model, batches, labels, sae = load_judged_sae(
        classifier, test_df, sae_dir, max_length, batch_size, device
    )
    return feature_effects(model, batches, labels, layer, sae, features, top_k, ablate, rank_by)
