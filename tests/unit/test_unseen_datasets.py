"""Corpora the project has never seen: nullable columns, CSV-written float labels, BOMs, JSON arrays,
scripts with combining marks, split fractions that leave a part empty, classes missing from a split."""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import pytest

from layershift.core.errors import DataError
from layershift.data.cleaning import clean_text
from layershift.data.prepare import PrepareConfig, labelled_frame, prepare_frame
from layershift.data.sources import read_file, read_source
from layershift.models.metrics import classification_metrics, score_logits

N = 30


def texts(n: int = N) -> list[str]:
    return [f"review number {i} was good" for i in range(n)]


@pytest.mark.parametrize(
    "dtype, values",
    [("Int64", [1, 2, None]), ("boolean", [True, False, None]), ("string", ["pos", "neg", None])],
)
def test_missing_values_of_nullable_columns_are_missing(tmp_path, dtype, values):
    """pd.NA (a Parquet written from a nullable Int64 / boolean / string column) is a missing label, and a
    missing text is an empty one: it used to become the class '<NA>' and the text 'na'."""
    path = tmp_path / "d.parquet"
    frame = pd.DataFrame(
        {
            "text": pd.array([t if i % 5 else None for i, t in enumerate(texts())], dtype="string"),
            "label": pd.array([values[i % 3] for i in range(N)], dtype=dtype),
        }
    )
    frame.to_parquet(path)
    raw = read_source(str(path), "text", "label")
    prepared, names, dropped = labelled_frame(raw, PrepareConfig(), str(path))
    assert "<NA>" not in names and len(names) == 2
    assert dropped["unlabelled"] == N // 3
    assert dropped["empty_text"] > 0 and "na" not in set(prepared["text"])


def test_csv_float_labels_are_the_numbers_other_formats_read(tmp_path):
    """pandas writes a float label column (a score with missing values) as '1.0', '2.0', '' in a CSV: the same
    labels as the Parquet / JSONL file of that frame ('1', '2'), one class per number, and keep_labels [1, 2]
    finds them."""
    frame = pd.DataFrame({"text": texts(), "label": [[1.0, 2.0, np.nan][i % 3] for i in range(N)]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    for suffix in ("csv", "parquet", "jsonl"):
        raw = read_source(str(tmp_path / f"d.{suffix}"), "text", "label")
        _, names, _ = labelled_frame(raw, PrepareConfig(), suffix, keep_labels=[1, 2])
        assert names == ["1", "2"], suffix
    mixed = pd.DataFrame({"text": texts(), "label": [["1", "1.0", "2", "2.00"][i % 4] for i in range(N)]})
    assert labelled_frame(mixed, PrepareConfig(), "mixed")[1] == ["1", "2"]
    kept = pd.DataFrame({"text": texts(), "label": [["01", "1", "1.5", "1.50"][i % 4] for i in range(N)]})
    assert labelled_frame(kept, PrepareConfig(), "kept")[1] == ["01", "1", "1.5", "1.50"]  # only N.0 is N


def test_json_files_with_a_byte_order_mark_or_one_array(tmp_path):
    """A UTF-8 BOM (as a CSV may have) and a .json file holding one array of records read like JSON lines:
    the array used to read as one row whose columns were the record numbers."""
    frame = pd.DataFrame({"text": texts(), "label": ["pos", "neg"] * (N // 2)})
    lines = frame.to_json(orient="records", lines=True, force_ascii=False)
    (tmp_path / "bom.jsonl").write_text("\ufeff" + lines, encoding="utf-8")
    (tmp_path / "array.json").write_text("\ufeff\n  " + frame.to_json(orient="records"), encoding="utf-8")
    (tmp_path / "lines.json").write_text(lines, encoding="utf-8")
    for name in ("bom.jsonl", "array.json", "lines.json"):
        read = read_file(tmp_path / name)
        pd.testing.assert_frame_equal(read[["text", "label"]], frame, obj=name)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("हिन्दी फ़िल्म बहुत अच्छी थी!", "हिन्दी फ़िल्म बहुत अच्छी थी"),  # vowel signs and viramas
        ("படம் நன்றாக இருந்தது", "படம் நன்றாக இருந்தது"),  # Tamil
        ("فيلم مُمْتَاز.", "فيلم مُمْتَاز"),  # vowelled Arabic
        (unicodedata.normalize("NFD", "Café naïve!"), unicodedata.normalize("NFD", "café naïve")),
        ("I ❤️ it 😀!", "i it"),  # the variation selector after a symbol is not a word's
        ("x \u0301y", "x y"),  # nor is a mark after a space
    ],
)
def test_paper_cleaning_keeps_the_combining_marks_of_words(raw, clean):
    """Combining marks are not \\w: the paper's cleaning turned them into spaces and broke every word of
    Devanagari, Tamil or vowelled Arabic (and decomposed Latin accents) into loose consonants."""
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    "n_rows, split, empty",
    [
        (10, {"train": 0.98, "validation": 0.01, "test": 0.01}, "validation"),
        (10, {"train": 0.02, "validation": 0.49, "test": 0.49}, "train"),
        (200, {"train": 0.998, "validation": 0.001, "test": 0.001}, "validation"),
    ],
)
def test_split_fractions_that_leave_a_part_empty_fail_in_the_check(n_rows, split, empty):
    """The config check (labelled_frame) passed these and the prepare job crashed in sklearn's
    train_test_split with a traceback; a cap to data.max_rows crashed the check itself."""
    raw = pd.DataFrame({"text": texts(n_rows), "label": ["a", "b"] * (n_rows // 2)})
    for max_rows in (25000, 10):
        with pytest.raises(DataError) as info:
            labelled_frame(raw, PrepareConfig(split=split, max_rows=max_rows), "d.csv")
        message = str(info.value)
        assert message.startswith("d.csv: data.split") and f"the {empty} split empty" in message, message
        assert "\n" not in message


def test_split_leaving_one_class_to_train_on_fails_in_the_check():
    raw = pd.DataFrame({"text": texts(10), "label": ["a", "b"] * 5})
    split = {"train": 0.1, "validation": 0.45, "test": 0.45}  # one train row: one class
    with pytest.raises(DataError, match=r"^d.csv: data.split .* leaves one class \('.'\) in the train split"):
        labelled_frame(raw, PrepareConfig(split=split), "d.csv")
    splits, _, _ = prepare_frame(raw, PrepareConfig(), "d.csv")  # 80/10/10 of the same rows is fine
    assert splits["train"]["label"].nunique() == 2


def test_macro_f1_leaves_out_a_class_the_split_has_no_row_of():
    """A 3-row class can land wholly in train (the stratified split rounds its 0.6 rows of validation + test to
    0): a perfect classifier then scored macro-F1 0.75 on four classes, the absent one counting as 0."""
    y = np.array([0, 0, 1, 1, 2, 2])
    assert classification_metrics(y, y, ["a", "b", "c", "rare"])["macro_f1"] == 1.0
    assert score_logits(np.eye(4, dtype=np.float32)[y], y)["macro_f1"] == 1.0
    wrong = np.array([0, 0, 1, 1, 3, 2])  # predicting the absent class is still an error
    assert classification_metrics(y, wrong, ["a", "b", "c", "rare"])["macro_f1"] == pytest.approx(2 / 3)
