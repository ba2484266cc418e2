"""The paper's claims, each checked against this study's tables: one step per kind of finding.

Every step reads only the numbers it is given (nothing here is hard-coded) and returns the sentences it can
state; a step with nothing to say (too few models, an undefined measure, no diff) returns none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TREND_MEASURES = ("cosine_of_means", "cka_sentences")


def _trend(values: np.ndarray) -> float:
    """Spearman correlation of values with their order (negative = falls with depth)."""
    if len(values) < 3:
        return float(np.sign(values[-1] - values[0])) if len(values) == 2 else 0.0
    ranks = pd.Series(values).rank().to_numpy()
    return float(np.corrcoef(np.arange(len(values)), ranks)[0, 1])


def _first_block_drop(group: pd.DataFrame, measure: str) -> float:
    """Similarity after the first block minus similarity at the last layer."""
    ordered = group.sort_values("layer")[measure]
    return float(ordered.iloc[min(1, len(ordered) - 1)] - ordered.iloc[-1])


def _last_layers(similarity: pd.DataFrame) -> pd.DataFrame:
    """The row of each model x dataset's last layer."""
    return similarity.loc[similarity.groupby(["model", "dataset"])["layer"].idxmax()]


def accuracy_findings(accuracy: pd.DataFrame) -> list[str]:
    """How much fine-tuning lifts test accuracy over the random head and over the linear probe."""
    pivot = accuracy.pivot_table(index=["model", "dataset"], columns="row", values="accuracy")
    gain = (pivot["finetuned"] - pivot["pretrained"]) * 100
    probe_gap = (pivot["finetuned"] - pivot["linear_probe"]) * 100
    return [
        f"Fine-tuning lifts test accuracy over the pretrained encoder with a random head in "
        f"{int((gain > 0).sum())} of {len(gain)} model x dataset pairs (mean +{gain.mean():.1f} points, "
        f"range {gain.min():+.1f} to {gain.max():+.1f}); over a linear probe on frozen features by "
        f"{probe_gap.mean():+.1f} points on average."
    ]


def depth_trend_finding(similarity: pd.DataFrame, measure: str) -> str:
    """Whether ``measure`` starts near 1 and falls with depth (the paper's shape), or that it is undefined."""
    if similarity[measure].isna().all():  # e.g. CKA of one sentence: no claim either way
        return f"{measure}: undefined in every cell (fewer than two rows to compare), no trend stated."
    first = similarity[similarity["layer"] == 1][measure]
    trends = similarity.groupby(["model", "dataset"])[measure].apply(lambda s: _trend(s.to_numpy()))
    drop = similarity.groupby(["model", "dataset"]).apply(
        lambda g, m=measure: _first_block_drop(g, m), include_groups=False
    )
    holds = (trends < 0).mean() > 0.5
    return (
        f"{measure}: about {first.mean():.3f} after the first block (paper: ~1.0 early); falls with depth in "
        f"{int((trends < 0).sum())} of {len(trends)} model x dataset pairs (mean drop first to last block "
        f"{drop.mean():.3f}) - {'yes' if holds else 'no'}, the paper's shape "
        f"{'holds' if holds else 'does not hold'} here."
    )


def content_token_findings(similarity: pd.DataFrame, tolerance: float = 0.1) -> list[str]:
    """Where the paper's cosine of means (all tokens) and the same over content tokens disagree: by more
    than ``tolerance`` at some layer, or in which dataset ends least similar at each model's last layer."""
    if "cosine_of_content_means" not in similarity or similarity["cosine_of_content_means"].isna().all():
        return []
    gap = similarity["cosine_of_content_means"] - similarity["cosine_of_means"]
    shares = similarity.groupby("dataset")["special_share"].mean()
    share_text = ", ".join(f"{d} {v:.1%}" for d, v in shares.items())
    out = []
    if gap.abs().max() > tolerance:
        worst = similarity.loc[gap.abs().idxmax()]
        out.append(
            f"The cosine of means over all tokens and over content tokens only (special tokens excluded; "
            f"their share, mean over models: {share_text}) disagree by more than {tolerance} in "
            f"{int((gap.abs() > tolerance).sum())} of {len(gap)} model x dataset x layer cells; most at "
            f"{worst['model']} / {worst['dataset']} / layer {int(worst['layer'])}: "
            f"{worst['cosine_of_means']:.3f} with the specials, {worst['cosine_of_content_means']:.3f} without."
        )
    else:
        out.append(
            f"The cosine of means over all tokens and over content tokens only agree within {tolerance} "
            f"everywhere (largest gap {gap.abs().max():.3f}; special-token share, mean over models: "
            f"{share_text})."
        )
    for model, group in _last_layers(similarity).groupby("model"):
        if len(group) < 2:
            continue
        steepest_all = group.loc[group["cosine_of_means"].idxmin(), "dataset"]
        steepest_content = group.loc[group["cosine_of_content_means"].idxmin(), "dataset"]
        if steepest_all != steepest_content:
            out.append(
                f"{model}: the least similar dataset at the last layer is {steepest_all} over all tokens but "
                f"{steepest_content} over content tokens: part of that ranking is the special tokens' share."
            )
    return out


def model_size_findings(similarity: pd.DataFrame) -> list[str]:
    """Whether the shallowest model ends more similar than the deepest (cosine of means, last layer)."""
    by_model = _last_layers(similarity).groupby("model")["cosine_of_means"].mean()
    depth = similarity.groupby("model")["layer"].max()
    if len(by_model) < 2:
        return []
    shallow, deep = depth.idxmin(), depth.idxmax()
    verdict = "yes" if by_model[shallow] > by_model[deep] else "no"
    return [
        f"Smaller models stay more similar at their last layer: {verdict} ({shallow}, {depth[shallow]} "
        f"layers: {by_model[shallow]:.3f} vs {deep}, {depth[deep]} layers: {by_model[deep]:.3f}, cosine of "
        "means)."
    ]


def sae_quality_findings(sae: pd.DataFrame) -> list[str]:
    """The range of the SAEs' explained variance (counting those without one), mean L0 and dead fraction."""
    if sae.empty:
        return []
    explained = pd.to_numeric(sae["explained_variance"], errors="coerce")  # null in metrics.json: undefined
    defined = explained.dropna()
    spread = (
        f"explained variance {defined.min():.3f}-{defined.max():.3f} (median {defined.median():.3f})"
        if len(defined)
        else "explained variance undefined"
    )
    if explained.isna().any():
        spread += (
            f" ({int(explained.isna().sum())} of {len(explained)} SAEs without one: fewer than two "
            "evaluation rows)"
        )
    return [
        f"SAE quality: {spread}, mean L0 {sae['l0'].mean():.1f}, dead fraction up to "
        f"{sae['dead_fraction'].max():.2f}."
    ]


def inconclusive_findings(diff: pd.DataFrame) -> list[str]:
    """How many diff cells are inconclusive (no change is stated for those)."""
    inconclusive = diff[diff["verdict"] != "conclusive"]
    if not len(inconclusive):
        return []
    return [
        f"Feature diff inconclusive for {len(inconclusive)} of {len(diff)} model x dataset x layer cells "
        "(too few SAE features reproduced by their seed nulls above chance); no retained / lost change "
        "is stated for them."
    ]


def retained_findings(diff: pd.DataFrame) -> list[str]:
    """Whether retained SAE features fall with depth, and the mean retained fraction per model and layer."""
    trend = diff.groupby(["model", "dataset"]).apply(
        lambda g: _trend(g.sort_values("layer")["retained_fraction"].to_numpy()), include_groups=False
    )
    retained = diff.groupby(["model", "layer"])["retained_fraction"].mean()  # over datasets
    per_model = "; ".join(
        f"{model} " + ", ".join(f"layer {int(layer)}: {v:.2f}" for layer, v in retained[model].items())
        for model in retained.index.unique("model")
    )
    return [
        f"Retained SAE features fall with depth (the paper's hypothesis) in {int((trend < 0).sum())} of "
        f"{len(trend)} model x dataset pairs; mean retained fraction over datasets per layer: {per_model}."
    ]


def lost_beyond_null_findings(diff: pd.DataFrame) -> list[str]:
    """Lost features minus the seed null's lost fraction: change beyond retraining with another seed."""
    if "baseline_lost_fraction" not in diff:
        return []
    excess = diff["lost_fraction"] - diff["baseline_lost_fraction"]
    worst = diff.loc[excess.idxmax()]
    return [
        f"Lost features beyond the seed null (lost minus the null's lost fraction): mean {excess.mean():+.3f}, "
        f"largest {excess.max():+.3f} ({worst['model']} / {worst['dataset']} / layer {int(worst['layer'])}); "
        "positive = change beyond what retraining with another seed produces."
    ]


def diff_findings(diff: pd.DataFrame) -> list[str]:
    """The feature diff's findings, stated for conclusive cells only (an inconclusive one supports none)."""
    out = []
    if not diff.empty and "verdict" in diff:
        out += inconclusive_findings(diff)
        diff = diff[diff["verdict"] == "conclusive"]
    if not diff.empty and "retained_fraction" in diff:
        out += retained_findings(diff) + lost_beyond_null_findings(diff)
    return out


def findings(
    accuracy: pd.DataFrame, similarity: pd.DataFrame, sae: pd.DataFrame, diff: pd.DataFrame
) -> list[str]:
    """The paper's claims, each checked against this study's numbers, in the order a reader meets them."""
    out = accuracy_findings(accuracy)
    out += [depth_trend_finding(similarity, measure) for measure in TREND_MEASURES]
    out += content_token_findings(similarity)
    out += model_size_findings(similarity)
    out += sae_quality_findings(sae)
    return out + diff_findings(diff)
