"""The claims that fine-tuning changes a layer, checked against the run-to-run baseline: a change is stated
only where the pretrained-vs-fine-tuned number over the replicates lies beyond the same number between two
fine-tuning runs (:data:`BETWEEN_RUN_TEST` for similarity, :data:`DIFF_BETWEEN_RUN_TEST` for the feature
diff). Without that baseline (one fine-tuning run, or no pair of runs compared) the finding says so and claims
nothing."""

from __future__ import annotations

import pandas as pd

from layershift.analysis.replicates import BETWEEN_RUN_TEST, CHANGED, NO_BASELINE
from layershift.report.study_tables import Finding

DIFF_BETWEEN_RUN_TEST = (
    "A feature-diff fraction counts as changed by fine-tuning when its Student-t interval over the replicates "
    "lies wholly beyond the same fraction between two fine-tuning runs: lost or new above the highest "
    "between-run value, retained below the lowest; only layers whose diff is conclusive in every replicate."
)
NO_BASELINE_TEXT = (
    "no between-run baseline (one fine-tuning run, or no two fine-tuning runs compared): no change by "
    "fine-tuning is stated beyond what one run shows"
)
PAIR = ["model", "dataset"]


def between_run_tests() -> str:
    """Both tests in one paragraph: what a finding below calls a change beyond the between-run baseline."""
    return f"Between-run test (similarity): {BETWEEN_RUN_TEST} Between-run test (feature diff): {DIFF_BETWEEN_RUN_TEST}"


def _layers_by_pair(cells: pd.DataFrame) -> str:
    """``m / d: layers 3, 4; m / e: layer 4`` for the cells given; ``none`` without any."""
    parts = []
    for (model, dataset), group in cells.groupby(PAIR, sort=True):
        layers = sorted(int(layer) for layer in group["layer"])
        noun = "layer" if len(layers) == 1 else "layers"
        parts.append(f"{model} / {dataset}: {noun} {', '.join(map(str, layers))}")
    return "; ".join(parts) or "none"


def _last_layer_text(row: pd.Series) -> str:
    """A last layer's numbers: pre-vs-ft mean [lo, hi] against the lowest between-run value."""
    return (
        f"{row['model']} / {row['dataset']} layer {int(row['layer'])}: pretrained vs fine-tuned "
        f"{row['pre_vs_ft_mean']:.3f} [{row['pre_vs_ft_lo']:.3f}, {row['pre_vs_ft_hi']:.3f}] over "
        f"{int(row['n_replicates'])} runs, between runs {row['between_runs_min']:.3f}-{row['between_runs_max']:.3f}"
    )


def similarity_change_finding(replicates: pd.DataFrame, measure: str) -> Finding | None:
    """Whether fine-tuning moves ``measure`` beyond the run-to-run baseline at each model x dataset's last
    layer (it holds in more than half of the pairs with a baseline), with every layer where it does; not
    stated without a baseline. ``replicates``: the similarity-over-replicates table (one row per layer and
    measure with its ``verdict``)."""
    if replicates.empty or "measure" not in replicates:
        return None
    rows = replicates[replicates["measure"] == measure]
    if rows.empty or rows["pre_vs_ft_mean"].isna().all():
        return None
    tested = rows[rows["verdict"] != NO_BASELINE]
    if tested.empty:
        return Finding(None, f"{measure}: {NO_BASELINE_TEXT}.")
    last = tested.loc[tested.groupby(PAIR)["layer"].idxmax()]
    last_changed = last[last["verdict"] == CHANGED]
    untested = len(rows) - len(tested)
    sentence = (
        f"{measure}: beyond the between-run baseline (pretrained vs fine-tuned interval below every "
        f"between-run value) in {int((tested['verdict'] == CHANGED).sum())} of {len(tested)} model x dataset x "
        f"layer cells ({_layers_by_pair(tested[tested['verdict'] == CHANGED])}); at the last layer in "
        f"{len(last_changed)} of {len(last)} pairs ({_last_layer_text(last.loc[last['pre_vs_ft_mean'].idxmin()])})"
        f"; within run-to-run variation elsewhere, where no change is stated"
    )
    if untested:
        sentence += f"; {untested} cells without a between-run baseline, nothing stated there"
    return Finding(bool(len(last_changed) > len(last) / 2), sentence + ".")


def _conclusive_in_every_replicate(replicates: pd.DataFrame) -> pd.DataFrame:
    """The layers whose diff is conclusive in every replicate (every layer of a table without verdicts)."""
    if "conclusive_replicates" not in replicates:
        return replicates
    return replicates[replicates["conclusive_replicates"] == 1]


def _flagged(cells: pd.DataFrame, flag: str) -> pd.DataFrame:
    return cells[cells[flag].fillna(False).astype(bool)]


def feature_change_finding(replicates: pd.DataFrame) -> Finding | None:
    """Whether fine-tuning loses SAE features beyond the run-to-run baseline (the lost fraction's interval
    over replicates above every between-run value) at each model x dataset's last tested SAE layer (it holds
    in more than half of the pairs), with every layer where lost or new lie above and retained below that
    baseline; layers conclusive in every replicate only, not stated without a baseline. ``replicates``: the
    diff-over-replicates table."""
    if replicates.empty or "lost_beyond_between_runs" not in replicates:
        return None
    cells = _conclusive_in_every_replicate(replicates)
    tested = cells[cells["lost_beyond_between_runs"].notna()]
    if tested.empty:
        if cells.empty:
            return Finding(None, "Feature diff conclusive in no layer in every replicate: no change stated.")
        return Finding(None, f"Feature diff: {NO_BASELINE_TEXT}.")
    lost = _flagged(tested, "lost_beyond_between_runs")
    new = _flagged(tested, "new_beyond_between_runs")
    retained = _flagged(tested, "retained_below_between_runs")
    last = _flagged(tested.loc[tested.groupby(PAIR)["layer"].idxmax()], "lost_beyond_between_runs")
    pairs = tested.groupby(PAIR).ngroups
    sentence = (
        f"Lost SAE features beyond the between-run baseline in {len(lost)} of {len(tested)} layers conclusive "
        f"in every replicate ({_layers_by_pair(lost)}), at the last such layer in {len(last)} of {pairs} "
        f"pairs; new features beyond it in {len(new)} ({_layers_by_pair(new)}); retained below it in "
        f"{len(retained)} ({_layers_by_pair(retained)}); within run-to-run variation elsewhere, where no "
        "change is stated."
    )
    return Finding(bool(len(last) > pairs / 2), sentence)
