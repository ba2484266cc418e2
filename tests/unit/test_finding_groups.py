"""The findings side by side on real and synthetic corpora: planted tables in a fake ``results/tables/`` where a
claim holds on the real dataset only, on the synthetic ones only, on both, on neither, or is not stated on one
group; the study config's ``datasets.<name>.synthetic`` decides the columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from layershift.cli import main
from layershift.core.errors import ConfigError
from layershift.report.finding_groups import dataset_groups, synthetic_datasets
from layershift.report.results_page import results_page
from layershift.report.study_tables import StudyTables
from layershift.report.tables import ROWS

REPO = Path(__file__).resolve().parents[2]
REAL, SYNTHETIC = ["tweets"], ["movies", "news"]
ACCURACY_CLAIM = "Fine-tuning lifts test accuracy over the random head"
COSINE_CLAIM = "cosine_of_means starts near 1 and falls with depth"
CKA_CLAIM = "cka_sentences starts near 1 and falls with depth"
SIZE_CLAIM = "Smaller models stay more similar at their last layer"
RETAINED_CLAIM = "Retained SAE features fall with depth"
LOST_CLAIM = "Fine-tuning loses features beyond the seed null"
CONCLUSIVE_CLAIM = "The feature diff is conclusive in every layer"
SAE_CLAIM = "Every SAE explains at least 0.6 of its layer's variance"

# per layer: on the real corpus the cosine rises with depth and the deep model ends the more similar; on the
# synthetic ones it falls and the shallow model ends the more similar. CKA falls on both.
COSINE = {
    "real": {"small": [0.5, 0.7, 0.9], "big": [0.5, 0.6, 0.7, 0.8, 0.95]},
    "synthetic": {"small": [1.0, 0.95, 0.8], "big": [1.0, 0.9, 0.7, 0.5, 0.2]},
}
# test accuracy of the random head, the linear probe and the fine-tuned model: fine-tuning helps on the real
# corpus and hurts on the synthetic ones
ACCURACY = {"real": (0.4, 0.6, 0.8), "synthetic": (0.6, 0.7, 0.5)}


def group_of(dataset: str) -> str:
    return "real" if dataset in REAL else "synthetic"


def planted_tables(root: Path) -> Path:
    """results/tables/ of two models x three datasets; the diff covers the synthetic datasets only."""
    tables = root / "results/tables"
    tables.mkdir(parents=True)
    accuracy = [
        {"model": model, "dataset": dataset, "row": row, "accuracy": value}
        for model in ("small", "big")
        for dataset in REAL + SYNTHETIC
        for row, value in zip(ROWS, ACCURACY[group_of(dataset)], strict=True)
    ]
    pd.DataFrame(accuracy).to_csv(tables / "accuracy.csv", index=False)
    similarity = [
        {"model": model, "dataset": dataset, "layer": layer, "cosine_of_means": cosine}
        | {"cka_sentences": 1.0 - 0.1 * layer, "cka_tokens": 0.5, "mean_sentence_cosine": 0.4}
        for dataset in REAL + SYNTHETIC
        for model, per_layer in COSINE[group_of(dataset)].items()
        for layer, cosine in enumerate(per_layer)
    ]
    pd.DataFrame(similarity).to_parquet(tables / "similarity.parquet")
    diff = [
        {"model": "big", "dataset": dataset, "layer": layer, "verdict": "conclusive"}
        | {"retained_fraction": retained, "lost_fraction": 0.3, "baseline_lost_fraction": 0.1}
        for dataset in SYNTHETIC
        for layer, retained in ((1, 0.9), (2, 0.6), (4, 0.3))
    ]
    pd.DataFrame(diff).to_parquet(tables / "diff_summary.parquet")
    return root / "results"


def write_config(path: Path, synthetic: dict[str, bool | None]) -> Path:
    """A study config naming the datasets; a flag of None leaves the key out (a config written before it)."""
    datasets = {
        name: {"source": f"{name}.csv", "text": "text", "label": "label"}
        | ({"synthetic": flag} if flag is not None else {})
        for name, flag in synthetic.items()
    }
    path.write_text(yaml.safe_dump({"models": {}, "datasets": datasets}))
    return path


def findings_table(page: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (claim -> other cells) of the page's findings table."""
    section = page.split("## Findings", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    header, body = rows[0], rows[2:]  # rows[1]: the separator
    return header, {row[0]: row[1:] for row in body}


def test_each_finding_says_whether_it_holds_on_real_synthetic_or_both(tmp_path):
    config = write_config(tmp_path / "config.yaml", {"tweets": None, "movies": True, "news": True})
    page = results_page(planted_tables(tmp_path), "layershift summary --markdown", config_path=config)
    header, rows = findings_table(page)
    assert header == ["finding", "real", "synthetic", "holds on"]
    real, synthetic, holds_on = rows[ACCURACY_CLAIM]  # holds on the real corpus only
    assert real.startswith("✓ Fine-tuning lifts test accuracy") and "in 2 of 2 model x dataset pairs" in real
    assert synthetic.startswith("✗ ") and "in 0 of 4 model x dataset pairs (mean -10.0 points" in synthetic
    assert holds_on == "real"
    real, synthetic, holds_on = rows[COSINE_CLAIM]  # on the synthetic corpora only
    assert real.startswith("✗ cosine_of_means") and "falls with depth in 0 of 2" in real
    assert synthetic.startswith("✓ cosine_of_means") and "falls with depth in 4 of 4" in synthetic
    assert holds_on == "synthetic"
    assert [cell[0] for cell in rows[CKA_CLAIM][:2]] == ["✓", "✓"] and rows[CKA_CLAIM][2] == "both"
    real, synthetic, holds_on = rows[SIZE_CLAIM]
    assert real.startswith(
        "✗ Smaller models stay more similar at their last layer: no (small, 2 layers: 0.900"
    )
    assert synthetic.startswith("✓ Smaller models stay more similar at their last layer: yes")
    for claim in (RETAINED_CLAIM, LOST_CLAIM, CONCLUSIVE_CLAIM):  # the real corpus has no diff: not stated
        real, synthetic, holds_on = rows[claim]
        assert real == "–" and synthetic.startswith("✓ ") and holds_on == "synthetic", (claim, rows[claim])
    assert "movies / layer 1" not in rows[RETAINED_CLAIM][1] and "tweets" not in rows[LOST_CLAIM][1]
    assert rows[SAE_CLAIM] == ["–", "–", "not stated"]  # no SAE metrics at all: a claim the data left open
    assert "real: tweets; synthetic: movies, news." in page


def test_a_claim_false_on_both_groups_holds_on_neither(tmp_path):
    config = write_config(tmp_path / "config.yaml", {"tweets": False, "movies": True, "news": True})
    results = planted_tables(tmp_path)
    accuracy = pd.read_csv(results / "tables/accuracy.csv")
    accuracy.loc[accuracy["row"] == "finetuned", "accuracy"] = 0.1  # fine-tuning hurts everywhere
    accuracy.to_csv(results / "tables/accuracy.csv", index=False)
    _, rows = findings_table(results_page(results, "x", config_path=config))
    assert [cell[0] for cell in rows[ACCURACY_CLAIM][:2]] == ["✗", "✗"]
    assert rows[ACCURACY_CLAIM][2] == "neither"


def test_a_study_of_one_group_shows_only_its_column(tmp_path):
    config = write_config(tmp_path / "config.yaml", {"tweets": True, "movies": True, "news": True})
    header, rows = findings_table(results_page(planted_tables(tmp_path), "x", config_path=config))
    assert header == ["finding", "synthetic"]  # no empty real column, no "holds on"
    assert (
        rows[ACCURACY_CLAIM][0].startswith("✗ ")
        and "in 2 of 6 model x dataset pairs" in rows[ACCURACY_CLAIM][0]
    )


def test_a_config_without_the_key_counts_every_dataset_as_real(tmp_path):
    config = write_config(tmp_path / "config.yaml", {"tweets": None, "movies": None, "news": None})
    page = results_page(planted_tables(tmp_path), "x", config_path=config)
    header, rows = findings_table(page)
    assert header == ["finding", "real"]
    assert "in 2 of 6 model x dataset pairs" in rows[ACCURACY_CLAIM][0]  # every dataset in the one column
    assert "real: movies, news, tweets." in page


def test_datasets_the_config_does_not_name_count_as_real_and_are_named(tmp_path):
    config = write_config(tmp_path / "config.yaml", {"movies": True, "news": True})
    page = results_page(planted_tables(tmp_path), "x", config_path=config)
    header, _ = findings_table(page)
    assert header == ["finding", "real", "synthetic", "holds on"]
    assert f"Not in `{config}`, counted as real: tweets." in page


def test_summary_markdown_reads_the_config_given(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config.yaml here: without --config every dataset is real
    results = planted_tables(tmp_path)
    assert main(["summary", "--markdown", str(results)]) == 0
    header, _ = findings_table(capsys.readouterr().out)
    assert header == ["finding", "real"]
    config = write_config(tmp_path / "study.yaml", {"tweets": False, "movies": True, "news": True})
    assert main(["summary", "--markdown", str(results), "--config", str(config)]) == 0
    page = capsys.readouterr().out
    assert findings_table(page)[0] == ["finding", "real", "synthetic", "holds on"]
    assert f"`layershift summary --markdown {results} --config {config}`" in page  # how to regenerate it
    write_config(tmp_path / "config.yaml", {"tweets": False, "movies": True, "news": True})
    assert main(["summary", "--markdown", str(results)]) == 0  # config.yaml by default, where there is one
    assert findings_table(capsys.readouterr().out)[0][1:3] == ["real", "synthetic"]
    assert main(["summary", "--markdown", str(results), "--config", "absent.yaml"]) == 1
    assert "absent.yaml: config file does not exist" in capsys.readouterr().err


def test_the_report_shows_the_same_columns(tmp_path):
    from layershift.report.html import findings_blocks
    from layershift.report.results_page import read_accuracy, read_diff, read_similarity

    results = planted_tables(tmp_path)
    tables = StudyTables(read_accuracy(results), read_similarity(results), pd.DataFrame(), read_diff(results))
    config = yaml.safe_load(
        write_config(tmp_path / "c.yaml", {"tweets": False, "movies": True, "news": True}).read_text()
    )
    note, test, table = findings_blocks(tables, config, "c.yaml")
    assert "synthetic key in c.yaml" in note["text"] and "`" not in note["text"]
    assert test["text"].startswith("Between-run test (similarity)")  # stated once, above the findings
    assert "<th>real</th>" in table["html"] and "<th>synthetic</th>" in table["html"]
    assert "<td>✗ Fine-tuning lifts test accuracy" in table["html"] and "<td>real</td>" in table["html"]


def test_synthetic_flags_come_from_the_config():
    assert synthetic_datasets(
        {"datasets": {"a": {"synthetic": True}, "b": {}, "c": {"synthetic": False}}}
    ) == {"a"}
    with pytest.raises(ConfigError, match=r"c.yaml: datasets.a.synthetic: expected true or false"):
        synthetic_datasets({"datasets": {"a": {"synthetic": "yes"}}}, "c.yaml")
    assert dataset_groups(["a", "b"], {"a"}) == {"real": ["b"], "synthetic": ["a"]}
    assert dataset_groups(["a"], set()) == {"real": ["a"]}


def test_the_demo_corpora_are_marked_synthetic_and_the_papers_are_not():
    from layershift.study.schema import load_yaml, validate_schema

    assert synthetic_datasets(load_yaml(REPO / "config.yaml")) == set()  # the real tweets only
    assert synthetic_datasets(load_yaml(REPO / "configs/breadth.yaml")) == {"movies", "news"}
    paper = load_yaml(REPO / "configs/paper.yaml")
    assert synthetic_datasets(paper) == set()
    filled = validate_schema(paper, "configs/paper.yaml")  # the schema's default: real text
    assert all(entry["synthetic"] is False for entry in filled["datasets"].values())
    with pytest.raises(ConfigError, match="synthetic"):
        validate_schema(
            {
                "models": {"m": {"source": "path:m", "sae_layers": [1]}},
                "datasets": {"d": {"source": "d.csv", "text": "t", "label": "l", "synthetic": "yes"}},
            },
            "c.yaml",
        )
