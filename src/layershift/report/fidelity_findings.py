"""The claims that read the SAEs through the classifiers: whether the SAEs keep what each classifier uses
(loss recovered against the untrained control), and whether the features the diff calls new (lost) carry more
of the fine-tuned (pretrained) classifier's decision than the retained ones (against random relabellings).

Each is stated only with its control and with an interval over the fine-tuning runs: a cell with one run (the
pretrained stage's fidelity always, any cell of a one-replicate study) is named as not stated.
"""

from __future__ import annotations

import pandas as pd

from layershift.report.feature_roles import role_contrasts
from layershift.report.fidelity_tables import CLASSIFIERS, fidelity_over_runs
from layershift.report.replicate_tables import level
from layershift.report.study_tables import Finding

LISTED = 4  # cells named in a sentence before "and N more"
ROLE_KEYS = ["model", "dataset", "layer"]


def _where(row) -> str:
    return f"{row['model']} / {row['dataset']} / layer {int(row['layer'])}"


def _named(cells: list[str]) -> str:
    shown = "; ".join(cells[:LISTED])
    return shown + (f"; and {len(cells) - LISTED} more" if len(cells) > LISTED else "")


def _cell(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f}" if pd.isna(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def control_finding(fidelity: pd.DataFrame) -> Finding | None:
    """Whether every SAE recovers clearly more of its classifier's loss (mean-ablation baseline) than the
    untrained SAE of the same shape: the interval of the per-run gap over the fine-tuning runs lies above 0.
    Cells with one run are counted as not stated; no cell with an interval: not stated at all."""
    if fidelity.empty:
        return None
    summary = fidelity_over_runs(fidelity)
    stated = summary[summary["control_gap_lo"].notna()]
    clear = stated["control_gap_lo"] > 0
    unstated = summary[summary["control_gap_lo"].isna()]
    trained, control = summary["loss_recovered_mean_mean"], summary["untrained_loss_recovered_mean_mean"]
    sentence = (
        f"Loss recovered by the SAE spliced into its run's classifier (mean-ablation baseline; pretrained: "
        f"{CLASSIFIERS['pretrained']}, fine-tuned: {CLASSIFIERS['finetuned']}): {trained.min():.3f} to "
        f"{trained.max():.3f}, its untrained control's {control.min():.3f} to {control.max():.3f}."
    )
    if len(stated):
        sentence += (
            f" Clearly more than the control (interval of the gap over the runs above 0) in {int(clear.sum())} "
            f"of {len(stated)} layer x stage cells with replicates."
        )
        missing = [
            f"{_where(row)} {row['stage']}: gap "
            f"{_cell(row['control_gap_mean'], row['control_gap_lo'], row['control_gap_hi'])}"
            for _, row in stated[~clear].iterrows()
        ]
        if missing:
            sentence += f" Not clearly more: {_named(missing)}."
    if len(unstated):
        sentence += f" Not stated for {len(unstated)} cells with one run (no interval; the pretrained stage has one run)."
    return Finding(bool(clear.all()) if len(stated) else None, sentence)


ROLE_TEXT = {
    "new": ("New", "fine-tuned SAE", "fine-tuned classifier's"),
    "lost": ("Lost", "pretrained SAE", "pretrained linear probe's"),
}


def _role_layers(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Per model x dataset x layer: the contrast's mean and interval over the comparisons (one per fine-tuning
    run), the relabelling null's mean, and the ablation medians' means."""
    from layershift.analysis.replicates import mean_interval

    rows = []
    for key, group in contrasts.groupby(ROLE_KEYS, sort=True):
        interval = mean_interval(group["difference"], level())
        rows.append(
            dict(zip(ROLE_KEYS, key, strict=True))
            | {
                "n": interval.n,
                "difference": interval.mean,
                "lo": interval.lo,
                "hi": interval.hi,
                "null_hi": float(group["null_hi"].mean()),
                "mean_label": float(group["mean_label"].mean()),
                "mean_baseline": float(group["mean_baseline"].mean()),
                "ablation_label": float(group["ablation_label_median"].mean()),
                "ablation_random": float(group["ablation_random_median"].mean()),
            }
        )
    return pd.DataFrame(rows)


def role_finding(roles: pd.DataFrame, side: str, label: str) -> Finding | None:
    """Whether ``label`` features of ``side``'s SAE carry more of its classifier's decision than the retained
    ones: the interval over the fine-tuning runs of the difference in mean decision weight lies above 0 and the
    mean beyond the random relabellings' 95th percentile, in more than half of the layers with replicates."""
    contrasts = role_contrasts(roles, side, label)
    if contrasts.empty or contrasts["difference"].isna().all():
        return None
    layers = _role_layers(contrasts)
    layers = layers[layers["difference"].notna()]
    stated = layers[layers["lo"].notna()]
    clear = (stated["lo"] > 0) & (stated["difference"] > stated["null_hi"])
    name, sae, classifier = ROLE_TEXT[label]
    sentence = (
        f"{name} features of the {sae} against its retained ones, by their weight in the {classifier} decision "
        "(largest |attribution to a class logit|, in units of the SAE's live-feature mean; control: the same "
        "stable features relabelled at random, 95th percentile of the difference): "
    )
    cells = [
        f"{_where(row)}: {label} {row['mean_label']:.2f} vs retained {row['mean_baseline']:.2f}, difference "
        f"{_cell(row['difference'], row['lo'], row['hi'])} (random relabelling up to {row['null_hi']:.2f})"
        for _, row in layers.iterrows()
    ]
    sentence += _named(cells) + "."
    ablated = layers[layers["ablation_label"].notna()]
    if len(ablated):
        sentence += (
            f" Exact ablation where measured: {label} features' median |loss change| "
            f"{ablated['ablation_label'].mean():.4f} vs random live features' {ablated['ablation_random'].mean():.4f}."
        )
    if not len(stated):
        return Finding(None, sentence + " Not stated: one fine-tuning run, no interval.")
    sentence += f" Clearly more in {int(clear.sum())} of {len(stated)} layers with replicates."
    return Finding(bool(clear.mean() > 0.5), sentence)
