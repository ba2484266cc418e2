"""The paper's claims, each checked against this study's tables: one check per claim.

Every check reads only the numbers it is given (nothing here is hard-coded) and returns a :class:`Finding`:
whether the claim holds on those numbers and the sentence that says so, or None where it has nothing to say
(too few models, no diff, no rows). The checks run on any subset of the datasets
(:meth:`StudyTables.of_datasets`), so one claim can be checked on the real and on the synthetic corpora apart
(``layershift.report.finding_groups``). The checks written for one pretrained-vs-fine-tuned pair read the
primary comparison (``layershift.report.comparisons``); whether a change exceeds the run-to-run baseline of
the fine-tuning replicates is checked in ``layershift.report.replicate_findings``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from layershift.report.comparisons import primary_comparison
from layershift.report.fidelity_findings import control_finding, role_finding
from layershift.report.replicate_findings import feature_change_finding, similarity_change_finding
from layershift.report.study_tables import Finding, StudyTables
from layershift.study.acceptance import MIN_EXPLAINED_VARIANCE

TREND_MEASURES = ("cosine_of_means", "cka_sentences")
CONTENT_TOKEN_TOLERANCE = 0.1  # largest gap between the all-token and content-token cosine called agreement


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


def accuracy_finding(accuracy: pd.DataFrame) -> Finding | None:
    """How much fine-tuning lifts test accuracy over the random head and over the linear probe (each the mean
    over the runs); it holds where fine-tuning beats the random head in more than half of the model x dataset
    pairs."""
    if accuracy.empty:
        return None
    pivot = accuracy.pivot_table(index=["model", "dataset"], columns="row", values="accuracy")  # run mean
    gain = (pivot["finetuned"] - pivot["pretrained"]) * 100
    probe_gap = (pivot["finetuned"] - pivot["linear_probe"]) * 100
    sentence = (
        f"Fine-tuning lifts test accuracy over the pretrained encoder with a random head in "
        f"{int((gain > 0).sum())} of {len(gain)} model x dataset pairs (mean {gain.mean():+.1f} points, "
        f"range {gain.min():+.1f} to {gain.max():+.1f}); over a linear probe on frozen features by "
        f"{probe_gap.mean():+.1f} points on average."
    )
    runs = accuracy.groupby(["model", "dataset"])["run"].nunique().max() if "run" in accuracy else 1
    if runs > 1:
        sentence += f" Accuracies are means over up to {runs} fine-tuning runs."
    return Finding(bool((gain > 0).mean() > 0.5), sentence)


def depth_trend_finding(similarity: pd.DataFrame, measure: str) -> Finding | None:
    """Whether ``measure`` starts near 1 and falls with depth (the paper's shape), or that it is undefined."""
    if similarity.empty or measure not in similarity:
        return None
    if similarity[measure].isna().all():  # e.g. CKA of one sentence: no claim either way
        return Finding(
            None, f"{measure}: undefined in every cell (fewer than two rows to compare), no trend stated."
        )
    first = similarity[similarity["layer"] == 1][measure]
    trends = similarity.groupby(["model", "dataset"])[measure].apply(lambda s: _trend(s.to_numpy()))
    drop = similarity.groupby(["model", "dataset"]).apply(
        lambda g, m=measure: _first_block_drop(g, m), include_groups=False
    )
    holds = bool((trends < 0).mean() > 0.5)
    sentence = (
        f"{measure}: about {first.mean():.3f} after the first block (paper: ~1.0 early); falls with depth in "
        f"{int((trends < 0).sum())} of {len(trends)} model x dataset pairs (mean drop first to last block "
        f"{drop.mean():.3f}) - {'yes' if holds else 'no'}, the paper's shape "
        f"{'holds' if holds else 'does not hold'} here."
    )
    return Finding(holds, sentence)


def content_token_sentences(similarity: pd.DataFrame, tolerance: float) -> list[str]:
    """Where the paper's cosine of means (all tokens) and the same over content tokens disagree: by more
    than ``tolerance`` at some layer, or in which dataset ends least similar at each model's last layer."""
    gap = similarity["cosine_of_content_means"] - similarity["cosine_of_means"]
    shares = similarity.groupby("dataset")["special_share"].mean()
    share_text = ", ".join(f"{d} {v:.1%}" for d, v in shares.items())
    if gap.abs().max() > tolerance:
        worst = similarity.loc[gap.abs().idxmax()]
        out = [
            f"The cosine of means over all tokens and over content tokens only (special tokens excluded; "
            f"their share, mean over models: {share_text}) disagree by more than {tolerance} in "
            f"{int((gap.abs() > tolerance).sum())} of {len(gap)} model x dataset x layer cells; most at "
            f"{worst['model']} / {worst['dataset']} / layer {int(worst['layer'])}: "
            f"{worst['cosine_of_means']:.3f} with the specials, {worst['cosine_of_content_means']:.3f} without."
        ]
    else:
        out = [
            f"The cosine of means over all tokens and over content tokens only agree within {tolerance} "
            f"everywhere (largest gap {gap.abs().max():.3f}; special-token share, mean over models: "
            f"{share_text})."
        ]
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


def content_token_finding(
    similarity: pd.DataFrame, tolerance: float = CONTENT_TOKEN_TOLERANCE
) -> Finding | None:
    """Whether the cosine of means over all tokens and over content tokens agree within ``tolerance``
    everywhere (the special tokens do not drive the paper's measure); None for tables without the latter."""
    if "cosine_of_content_means" not in similarity or similarity["cosine_of_content_means"].isna().all():
        return None
    gap = similarity["cosine_of_content_means"] - similarity["cosine_of_means"]
    return Finding(
        bool(gap.abs().max() <= tolerance), " ".join(content_token_sentences(similarity, tolerance))
    )


def model_size_finding(similarity: pd.DataFrame) -> Finding | None:
    """Whether the shallowest model ends more similar than the deepest (cosine of means, last layer)."""
    if similarity.empty:
        return None
    by_model = _last_layers(similarity).groupby("model")["cosine_of_means"].mean()
    depth = similarity.groupby("model")["layer"].max()
    if len(by_model) < 2:
        return None
    shallow, deep = depth.idxmin(), depth.idxmax()
    holds = bool(by_model[shallow] > by_model[deep])
    sentence = (
        f"Smaller models stay more similar at their last layer: {'yes' if holds else 'no'} ({shallow}, "
        f"{depth[shallow]} layers: {by_model[shallow]:.3f} vs {deep}, {depth[deep]} layers: "
        f"{by_model[deep]:.3f}, cosine of means)."
    )
    return Finding(holds, sentence)


def sae_quality_finding(sae: pd.DataFrame) -> Finding | None:
    """The range of the SAEs' explained variance (counting those without one), mean L0 and dead fraction;
    it holds where every SAE with an explained variance reaches ``MIN_EXPLAINED_VARIANCE``."""
    if sae.empty:
        return None
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
    sentence = (
        f"SAE quality: {spread}, mean L0 {sae['l0'].mean():.1f}, dead fraction up to "
        f"{sae['dead_fraction'].max():.2f}."
    )
    holds = bool((defined >= MIN_EXPLAINED_VARIANCE).all()) if len(defined) else None
    return Finding(holds, sentence)


def _conclusive(diff: pd.DataFrame) -> pd.DataFrame:
    """The diff's conclusive cells (every cell of a table without verdicts): a borderline or inconclusive one
    supports no retained / lost finding."""
    return diff[diff["verdict"] == "conclusive"] if "verdict" in diff else diff


def conclusive_finding(diff: pd.DataFrame) -> Finding | None:
    """Whether every diff cell is conclusive; the inconclusive and the borderline ones (on the verdict's bar)
    are counted apart, and no change is stated for either."""
    if diff.empty or "verdict" not in diff:
        return None
    cells = f"{len(diff)} model x dataset x layer cells"
    borderline = int((diff["verdict"] == "borderline").sum())
    inconclusive = int((~diff["verdict"].isin(["conclusive", "borderline"])).sum())
    if not inconclusive and not borderline:
        return Finding(True, f"Feature diff conclusive in all {cells}.")
    why_inconclusive = "too few SAE features reproduced by their seed nulls above chance"
    why_borderline = "on the bar: feature resamples meet it in between 5 % and 95 % of draws"
    if not borderline:
        counted = f"inconclusive for {inconclusive} of {cells} ({why_inconclusive})"
    elif not inconclusive:
        counted = f"borderline for {borderline} of {cells} ({why_borderline})"
    else:
        counted = (
            f"inconclusive for {inconclusive} of {cells} ({why_inconclusive}) and {borderline} borderline "
            f"({why_borderline})"
        )
    return Finding(False, f"Feature diff {counted}; no retained / lost change is stated for them.")


def retained_finding(diff: pd.DataFrame) -> Finding | None:
    """Whether retained SAE features fall with depth (in more than half of the model x dataset pairs that have
    two or more conclusive layers; not stated without such a pair), and the mean retained fraction per model
    and layer; conclusive cells only."""
    diff = _conclusive(diff)
    if diff.empty or "retained_fraction" not in diff:
        return None
    # a trend over depth needs two conclusive layers of one model x dataset pair at least
    layers = diff.groupby(["model", "dataset"])["layer"].transform("nunique")
    if not (layers >= 2).any():
        return None
    trend = (
        diff[layers >= 2]
        .groupby(["model", "dataset"])
        .apply(lambda g: _trend(g.sort_values("layer")["retained_fraction"].to_numpy()), include_groups=False)
    )
    retained = diff.groupby(["model", "layer"])["retained_fraction"].mean()  # over datasets
    per_model = "; ".join(
        f"{model} " + ", ".join(f"layer {int(layer)}: {v:.2f}" for layer, v in retained[model].items())
        for model in retained.index.unique("model")
    )
    sentence = (
        f"Retained SAE features fall with depth (the paper's hypothesis) in {int((trend < 0).sum())} of "
        f"{len(trend)} model x dataset pairs with two or more conclusive layers; mean retained fraction over "
        f"datasets per conclusive layer: {per_model}."
    )
    return Finding(bool((trend < 0).mean() > 0.5), sentence)


def lost_beyond_null_finding(diff: pd.DataFrame) -> Finding | None:
    """Lost features minus the seed null's lost fraction: change beyond retraining with another seed; it
    holds where the mean excess is positive. Conclusive cells only."""
    diff = _conclusive(diff)
    if diff.empty or "baseline_lost_fraction" not in diff or "lost_fraction" not in diff:
        return None
    excess = diff["lost_fraction"] - diff["baseline_lost_fraction"]
    worst = diff.loc[excess.idxmax()]
    sentence = (
        f"Lost features beyond the seed null (lost minus the null's lost fraction): mean {excess.mean():+.3f}, "
        f"largest {excess.max():+.3f} ({worst['model']} / {worst['dataset']} / layer {int(worst['layer'])}); "
        "positive = change beyond what retraining the SAEs with another seed produces (pretrained vs the "
        "first fine-tuning run; the run-to-run baseline is checked apart)."
    )
    return Finding(bool(excess.mean() > 0), sentence)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a reader meets it (``statement``) and the check that tests it on tables."""

    statement: str
    check: Callable[[StudyTables], Finding | None]


def _on_accuracy(tables: StudyTables) -> Finding | None:
    return accuracy_finding(tables.accuracy)


def _on_depth_trend(tables: StudyTables, measure: str) -> Finding | None:
    return depth_trend_finding(primary_comparison(tables.similarity), measure)


def _on_similarity_change(tables: StudyTables, measure: str) -> Finding | None:
    return similarity_change_finding(tables.similarity_replicates, measure)


def _on_content_tokens(tables: StudyTables) -> Finding | None:
    return content_token_finding(primary_comparison(tables.similarity))


def _on_model_size(tables: StudyTables) -> Finding | None:
    return model_size_finding(primary_comparison(tables.similarity))


def _on_sae_quality(tables: StudyTables) -> Finding | None:
    return sae_quality_finding(tables.sae)


def _on_conclusive(tables: StudyTables) -> Finding | None:
    return conclusive_finding(primary_comparison(tables.diff))


def _on_retained(tables: StudyTables) -> Finding | None:
    return retained_finding(primary_comparison(tables.diff))


def _on_lost_beyond_null(tables: StudyTables) -> Finding | None:
    return lost_beyond_null_finding(primary_comparison(tables.diff))


def _on_feature_change(tables: StudyTables) -> Finding | None:
    return feature_change_finding(tables.diff_replicates)


def _on_fidelity_control(tables: StudyTables) -> Finding | None:
    return control_finding(tables.fidelity)


def _on_role(tables: StudyTables, side: str, label: str) -> Finding | None:
    return role_finding(tables.feature_roles, side, label)


CLAIMS = (  # in the order a reader meets them
    Claim("Fine-tuning lifts test accuracy over the random head", _on_accuracy),
    *(
        Claim(f"{measure} starts near 1 and falls with depth", partial(_on_depth_trend, measure=measure))
        for measure in TREND_MEASURES
    ),
    *(
        Claim(
            f"Fine-tuning changes {measure} beyond the run-to-run baseline at the last layer",
            partial(_on_similarity_change, measure=measure),
        )
        for measure in TREND_MEASURES
    ),
    Claim(
        f"The cosine of means agrees over all tokens and content tokens (within {CONTENT_TOKEN_TOLERANCE})",
        _on_content_tokens,
    ),
    Claim("Smaller models stay more similar at their last layer", _on_model_size),
    Claim(f"Every SAE explains at least {MIN_EXPLAINED_VARIANCE} of its layer's variance", _on_sae_quality),
    Claim("The SAEs keep what the classifier uses (beyond an untrained SAE)", _on_fidelity_control),
    Claim("The feature diff is conclusive in every layer", _on_conclusive),
    Claim("Retained SAE features fall with depth", _on_retained),
    Claim("Fine-tuning loses features beyond the seed null", _on_lost_beyond_null),
    Claim(
        "Fine-tuning loses SAE features beyond the run-to-run baseline at the last layer", _on_feature_change
    ),
    Claim(
        "New features carry more of the fine-tuned classifier's decision than retained ones",
        partial(_on_role, side="finetuned", label="new"),
    ),
    Claim(
        "Lost features were ones the pretrained probe relied on more than the retained ones",
        partial(_on_role, side="pretrained", label="lost"),
    ),
)


def check_claims(tables: StudyTables) -> dict[str, Finding]:
    """Every claim with something to say on these tables, by statement, in the order a reader meets them."""
    checked = {claim.statement: claim.check(tables) for claim in CLAIMS}
    return {statement: finding for statement, finding in checked.items() if finding is not None}
