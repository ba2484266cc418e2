"""The sparse-probing table a reader sees: one row per layer and stage, the dense probe first, k ascending,
fine-tuned runs summarised with an interval and a single pretrained run as its value alone."""

from __future__ import annotations

import pandas as pd

from layershift.report.sparse_probing_tables import sparse_probing_cells


def probing_rows(stage: str, run: str, dense: float, sparse: dict[int, float]) -> list[dict]:
    keys = {"model": "m", "dataset": "d", "layer": 2, "stage": stage, "run": run}
    rows = [{**keys, "probe": "dense", "k": float("nan"), "accuracy": dense}]
    return rows + [
        {**keys, "probe": "sparse", "k": float(k), "accuracy": value} for k, value in sparse.items()
    ]


def test_cells_order_the_probes_and_give_replicates_an_interval():
    rows = probing_rows("pretrained", "pretrained", 0.70, {20: 0.69, 2: 0.61})
    for seed, shift in ((1, 0.0), (2, 0.02), (3, 0.04)):
        rows += probing_rows("finetuned", f"finetuned-s{seed}", 0.80 + shift, {20: 0.79 + shift, 2: 0.75})
    cells = sparse_probing_cells(pd.DataFrame(rows))
    assert list(cells.columns) == ["model", "dataset", "layer", "stage", "n", "dense", "k=2", "k=20"]
    assert list(cells["stage"]) == ["pretrained", "finetuned"] and list(cells["n"]) == [1, 3]
    pretrained, finetuned = cells.iloc[0], cells.iloc[1]
    assert pretrained["dense"] == "0.700"  # one run: the value alone
    assert finetuned["dense"].startswith("0.820 [") and finetuned["k=2"] == "0.750 [0.750, 0.750]"
    assert sparse_probing_cells(pd.DataFrame()).empty
