"""The SAEs judged by each run's classifier, as a reader sees it: per model x dataset x layer x stage the loss
the spliced-in reconstruction recovers (mean- and zero-ablation baselines), the KL to the clean prediction and
the spliced against the clean accuracy, beside the untrained control SAE's loss recovered; each a mean over the
stage's runs with its interval (``layershift.analysis.replicates.mean_interval``).

The pretrained stage has one run and its classifier is the linear probe fitted on the frozen encoder; the
fine-tuned stage's classifier is each replicate's fine-tuned model, so its cells are means over the replicates.
"""

from __future__ import annotations

import pandas as pd

from layershift.report.intervals import interval_cell
from layershift.report.replicate_tables import level
from layershift.study.targets import STAGES, stage_of

KEYS = ["model", "dataset", "layer", "stage"]
TRAINED_MEASURES = (
    "loss_recovered_mean",
    "loss_recovered_zero",
    "kl_clean_spliced",
    "accuracy_clean",
    "accuracy_spliced",
)
CONTROL_MEASURES = ("loss_recovered_mean", "loss_recovered_zero")  # the untrained control's, shown beside
CLASSIFIERS = {
    "pretrained": "linear probe on the frozen pretrained encoder",
    "finetuned": "the fine-tuned model (encoder and head) of each run",
}
FIDELITY_NOTE = (
    "each SAE's reconstruction spliced into its run's classifier on the test split: loss recovered = "
    "(ablated loss - spliced loss) / (ablated loss - clean loss), 1 = the classifier loses nothing, 0 = as bad "
    "as replacing the layer by its mean (mean abl.) or by zeros (zero abl.); untrained = an SAE of the same "
    "shape never trained, the control that must recover about nothing; KL = mean KL(clean || spliced) of the "
    "predicted class distributions. Classifier: pretrained stage = "
    f"{CLASSIFIERS['pretrained']}; fine-tuned stage = {CLASSIFIERS['finetuned']}"
)
COLUMN_HEADINGS = {
    "loss_recovered_mean": "loss recovered (mean abl.)",
    "untrained_loss_recovered_mean": "untrained control (mean abl.)",
    "loss_recovered_zero": "loss recovered (zero abl.)",
    "untrained_loss_recovered_zero": "untrained control (zero abl.)",
    "kl_clean_spliced": "KL clean to spliced",
    "accuracy_clean": "accuracy clean",
    "accuracy_spliced": "accuracy spliced",
}


def with_stage(fidelity: pd.DataFrame) -> pd.DataFrame:
    """``fidelity`` with a ``stage`` column read from its ``run`` where the table has none."""
    if "stage" in fidelity or fidelity.empty:
        return fidelity
    return fidelity.assign(stage=fidelity["run"].map(stage_of))


def _per_run(fidelity: pd.DataFrame) -> pd.DataFrame:
    """One row per run and layer: the trained SAE's measures, the untrained control's (``untrained_*``) and the
    gap between their mean-ablation loss recovered."""
    fidelity = with_stage(fidelity)
    keys = [*KEYS, "run"]
    trained = fidelity[fidelity["sae"] == "trained"].set_index(keys)[list(TRAINED_MEASURES)]
    control = fidelity[fidelity["sae"] == "untrained"].set_index(keys)[list(CONTROL_MEASURES)]
    runs = trained.join(control.add_prefix("untrained_"), how="left")
    runs["control_gap"] = runs["loss_recovered_mean"] - runs["untrained_loss_recovered_mean"]
    return runs.reset_index()


def fidelity_over_runs(fidelity: pd.DataFrame, coverage: float | None = None) -> pd.DataFrame:
    """Per model x dataset x layer x stage: ``n_runs``, the classifier, and for each trained measure, each
    control measure (``untrained_*``) and ``control_gap`` (trained minus untrained mean-ablation loss recovered,
    per run) the ``_mean``, ``_lo`` and ``_hi`` over the stage's runs (no interval with one run)."""
    from layershift.analysis.replicates import mean_interval

    coverage = level() if coverage is None else coverage
    runs = _per_run(fidelity)
    measures = [
        *TRAINED_MEASURES,
        *(f"untrained_{measure}" for measure in CONTROL_MEASURES),
        "control_gap",
    ]
    rows = []
    for key, group in runs.groupby(KEYS, sort=True):
        row = dict(zip(KEYS, key, strict=True))
        row |= {"classifier": CLASSIFIERS.get(row["stage"], "-"), "n_runs": int(group["run"].nunique())}
        for measure in measures:
            interval = mean_interval(group[measure], coverage)
            row |= {
                f"{measure}_mean": interval.mean,
                f"{measure}_lo": interval.lo,
                f"{measure}_hi": interval.hi,
            }
        rows.append(row)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    order = summary["stage"].map({stage: index for index, stage in enumerate(STAGES)})  # pretrained first
    return (
        summary.assign(order=order).sort_values(["model", "dataset", "layer", "order"]).drop(columns="order")
    )


def fidelity_cells(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table a reader sees: one row per model x dataset x layer x stage, the classifier, n runs and each
    measure as ``mean [lo, hi]`` (the value alone for one run)."""
    frame = summary[KEYS].copy()
    frame["classifier"] = summary["stage"].map(
        {"pretrained": "linear probe", "finetuned": "fine-tuned model"}
    )
    frame["n"] = summary["n_runs"]
    for column, heading in COLUMN_HEADINGS.items():
        frame[heading] = [
            interval_cell(row[f"{column}_mean"], row[f"{column}_lo"], row[f"{column}_hi"], digits, "-")
            for _, row in summary.iterrows()
        ]
    return frame.reset_index(drop=True)
