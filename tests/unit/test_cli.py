"""The command line on unusual input: one line naming the file or argument, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from layershift.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_costs_without_cluster_nodes_prints_no_cluster_line(capsys):
    assert main(["costs", str(REPO / "configs/paper.yaml"), "--gpu-nodes", "0", "--cores", "1"]) == 0
    out = capsys.readouterr().out
    assert "- local, 1 cores" in out and "GPU node(s)" not in out and "disk:" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cores", "0"], "--cores: must be at least 1, got 0"),
        (["--cores", "-2"], "--cores: must be at least 1, got -2"),
        (["--gpu-nodes", "-1"], "--gpu-nodes: must be at least 0, got -1"),
    ],
)
def test_costs_refuses_impossible_counts_as_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["costs", str(REPO / "config.yaml"), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def _tables(tmp_path: Path, accuracy: str) -> Path:
    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    (tables / "accuracy.csv").write_text(accuracy)
    similarity = pd.DataFrame(
        {
            "model": ["m"],
            "dataset": ["d"],
            "layer": [1],
            "cosine_of_means": [0.9],
            "cka_sentences": [0.8],
            "cka_tokens": [0.7],
            "mean_sentence_cosine": [0.6],
        }
    )
    similarity.to_parquet(tables / "similarity.parquet")
    return tmp_path / "results"


HEADER = "model,dataset,row,accuracy,macro_f1,n_test\n"


@pytest.mark.parametrize(
    "accuracy, message",
    [
        ("", "accuracy.csv: cannot be read (No columns to parse from file)"),
        (HEADER, "accuracy.csv: no pretrained, linear_probe, finetuned rows"),
        (
            HEADER + "m,d,pretrained,0.5,0.4,10\nm,d,linear_probe,0.8,0.8,10\n",
            "accuracy.csv: no finetuned rows",
        ),
        ("model,dataset\nm,d\n", "accuracy.csv: no column row, accuracy"),
    ],
)
def test_summary_of_a_damaged_accuracy_table_is_one_line(tmp_path, capsys, accuracy, message):
    results = _tables(tmp_path, accuracy)
    assert main(["summary", "--results", str(results)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_summary_of_intact_tables_prints_them(tmp_path, capsys):
    rows = "".join(f"m,d,{row},0.5,0.4,10\n" for row in ("pretrained", "linear_probe", "finetuned"))
    assert main(["summary", "--results", str(_tables(tmp_path, HEADER + rows))]) == 0
    assert "| m       | d         |" in capsys.readouterr().out


def test_summary_into_a_pipe_closed_early_is_quiet(tmp_path):
    """`layershift summary | head -1` ended in a BrokenPipeError traceback once head stopped reading."""
    import subprocess
    import sys

    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    rows = [
        {"model": f"m{i}", "dataset": "d", "row": row, "accuracy": 0.5, "macro_f1": 0.5}
        for i in range(2000)
        for row in ("pretrained", "linear_probe", "finetuned")
    ]
    pd.DataFrame(rows).to_csv(tables / "accuracy.csv", index=False)
    cols = ["cosine_of_means", "cka_sentences", "cka_tokens", "mean_sentence_cosine"]
    pd.DataFrame([{"model": "m0", "dataset": "d", "layer": 0, **dict.fromkeys(cols, 1.0)}]).to_parquet(
        tables / "similarity.parquet"
    )
    command = f"{sys.executable} -m layershift.cli summary --results {tmp_path / 'results'} | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("**Accuracy"), done.stdout
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_summary_markdown_writes_the_results_page_from_the_tables(tmp_path, capsys):
    rows = "".join(
        f"m,d,{row},{accuracy},0.4,10\n"
        for row, accuracy in (("pretrained", 0.25), ("linear_probe", 0.625), ("finetuned", 0.875))
    )
    results = _tables(tmp_path, HEADER + rows)
    page = tmp_path / "docs/results.md"
    assert main(["summary", "--markdown", str(results), "--output", str(page)]) == 0
    assert capsys.readouterr().out == ""  # the page goes to the file, not to stdout
    text = page.read_text()
    assert f"`layershift summary --markdown {results} --output {page}`" in text  # how to regenerate it
    assert "| m       | d         |   1 |        0.250 |          0.625 |       0.875 |" in text  # one run
    assert (
        "| m       | d         |       1 | pretrained  | finetuned  |             0.900 |" in text
    )  # layer 1
    assert "one fine-tuning run: no interval" in text
    assert main(["summary", "--markdown", str(results)]) == 0  # to stdout: the same page
    assert capsys.readouterr().out == text.replace(f" --output {page}", "")


def test_summary_takes_the_results_directory_as_an_argument(tmp_path, capsys):
    rows = "".join(f"m,d,{row},0.5,0.4,10\n" for row in ("pretrained", "linear_probe", "finetuned"))
    results = _tables(tmp_path, HEADER + rows)
    assert main(["summary", str(results)]) == 0
    assert capsys.readouterr().out.startswith(
        "**Accuracy on the test split** (one fine-tuning run: no interval; each value is that run's) "
        "(Table 2 rebuilt)\n\n|"
    )
    assert main(["summary", str(results), "--results", str(tmp_path)]) == 1
    assert "two results directories given" in capsys.readouterr().err


def test_summary_shows_the_diff_verdict_with_its_share_and_the_fractions_with_intervals(tmp_path, capsys):
    rows = "".join(f"m,d,{row},0.5,0.4,10\n" for row in ("pretrained", "linear_probe", "finetuned"))
    results = _tables(tmp_path, HEADER + rows)
    diff = pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "layer": [1, 2],
            "verdict": ["borderline", "inconclusive"],
            "conclusive_share": [0.48, 0.01],
            "retained_fraction": [0.62, 0.3],
            "retained_fraction_lo": [0.55, None],  # an inconclusive layer has no interval
            "retained_fraction_hi": [0.69, None],
        }
    )
    diff.to_parquet(results / "tables/diff_summary.parquet")
    assert main(["summary", str(results)]) == 0
    out = capsys.readouterr().out
    row = "| m       | d         |       1 | pretrained  | finetuned  | borderline   |               0.48 | 0.62 [0.55, 0.69]"
    assert row in out
    assert "| finetuned  | inconclusive |               0.01 | 0.30 " in out
    assert "| 0 of 1 conclusive |" in out  # the replicates' verdicts over the runs
