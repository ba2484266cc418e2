"""The report's findings are computed from the tables: checked on constructed numbers with known answers."""

from __future__ import annotations

import pandas as pd

from layershift.report import findings


def study_tables(retained_deep_last: float):
    """Two models (2 and 4 layers), one dataset; similarity falls with depth, the deep model falls further."""
    accuracy = pd.DataFrame(
        [
            {"model": m, "dataset": "d", "row": row, "accuracy": acc}
            for m in ("small", "big")
            for row, acc in (("pretrained", 0.5), ("linear_probe", 0.8), ("finetuned", 0.9))
        ]
    )
    similarity = pd.DataFrame(
        [
            {"model": "small", "dataset": "d", "layer": layer, "cosine_of_means": c, "cka_sentences": c}
            for layer, c in enumerate([1.0, 0.95, 0.8])
        ]
        + [
            {"model": "big", "dataset": "d", "layer": layer, "cosine_of_means": c, "cka_sentences": c}
            for layer, c in enumerate([1.0, 0.9, 0.7, 0.5, 0.2])
        ]
    )
    sae = pd.DataFrame({"explained_variance": [0.8, 0.9], "l0": [10.0, 20.0], "dead_fraction": [0.0, 0.1]})
    diff = pd.DataFrame(
        [
            {"model": "small", "dataset": "d", "layer": 1, "retained_fraction": 0.8, "lost_fraction": 0.05},
            {"model": "small", "dataset": "d", "layer": 2, "retained_fraction": 0.7, "lost_fraction": 0.05},
            {"model": "big", "dataset": "d", "layer": 1, "retained_fraction": 0.8, "lost_fraction": 0.05},
            {
                "model": "big",
                "dataset": "d",
                "layer": 4,
                "retained_fraction": retained_deep_last,
                "lost_fraction": 0.5,
            },
        ]
    ).assign(baseline_lost_fraction=0.04)
    return accuracy, similarity, sae, diff


def test_findings_state_the_measured_numbers_per_model():
    text = "\n".join(findings(*study_tables(retained_deep_last=0.2)))
    assert "in 2 of 2 model x dataset pairs (mean +40.0 points" in text
    assert "Smaller models stay more similar at their last layer: yes" in text
    assert "big layer 1: 0.80, layer 4: 0.20; small layer 1: 0.80, layer 2: 0.70" in text
    assert "largest +0.460 (big / d / layer 4)" in text


def test_findings_follow_the_numbers_not_a_script():
    rising = findings(*study_tables(retained_deep_last=0.9))
    retained = next(line for line in rising if line.startswith("Retained SAE features"))
    assert "in 1 of 2 model x dataset pairs" in retained  # the big model's retained fraction now rises


def test_findings_state_no_change_for_inconclusive_layers():
    accuracy, similarity, sae, diff = study_tables(retained_deep_last=0.2)
    diff["verdict"] = ["conclusive", "conclusive", "conclusive", "inconclusive"]
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "Feature diff inconclusive for 1 of 4" in text
    assert "layer 4" not in text.split("Retained SAE features")[1]  # the inconclusive cell states nothing
    diff["verdict"] = "inconclusive"
    text = "\n".join(findings(accuracy, similarity, sae, diff))
    assert "Retained SAE features" not in text and "Lost features beyond" not in text


def test_figure_module_loads_seaborn_without_scipy_and_leaves_scipy_importable():
    """Figure jobs start a fresh process each: layershift.plots keeps scipy (half their import time) out."""
    import subprocess
    import sys

    code = (
        "import sys, layershift.plots as p; assert 'scipy' not in sys.modules, 'scipy loaded';"
        "import scipy.stats; p.plot_depth  # scipy is importable afterwards"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
