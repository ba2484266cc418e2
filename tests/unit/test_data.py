"""Dataset preparation: cleaning, label maps, drop counts, stratified cap and split, determinism, formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from layershift.core.errors import DataError
from layershift.data.cleaning import clean_text
from layershift.data.prepare import (
    SPLITS,
    PrepareConfig,
    clean_frame,
    label_map,
    load_label_names,
    load_split,
    prepare_dataset,
    prepare_frame,
)
from layershift.data.sources import dataset_to_frame, read_file

LABELS = ("neg", "neutral", "pos")


def corpus(sizes: dict, seed: int = 0) -> pd.DataFrame:
    """Distinct texts per label: ``{label: n_rows}`` -> a shuffled DataFrame with text / label columns."""
    rows = [
        {"text": f"Sample {label} text number {i}!", "label": label}
        for label, n in sizes.items()
        for i in range(n)
    ]
    frame = pd.DataFrame(rows)
    return frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- cleaning --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Hello,   World!!", "hello world"),
        ("Don't stop — it’s `rock`", "dont stop its rock"),
        ("snake_case & co. (v2.0)", "snake case co v2 0"),
        ("tabs\tand\nnew  lines\r\n", "tabs and new lines"),
        ("100% sure #1 @home", "100 sure 1 home"),
        ("Café NAÏVE Ωmega 你好，世界", "café naïve ωmega 你好 世界"),
        ("I ❤️ it 😀!", "i it"),
        ("   ", ""),
        ("?!...", ""),
        (5, "5"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_label_map_orders_numbers_numerically_and_strings_alphabetically():
    assert label_map(pd.Series(["10", "9", "2", "1", "9"])) == ["1", "2", "9", "10"]
    assert label_map(pd.Series(["-1", "0.5", "1"])) == ["-1", "0.5", "1"]
    assert label_map(pd.Series(["sport", "health", "arts", "health"])) == ["arts", "health", "sport"]
    assert label_map(pd.Series(["2", "b", "10", "a"])) == ["10", "2", "a", "b"]


@pytest.mark.parametrize("labels", [["10", "9", "nan", "1"], ["b", "a", "c"], ["10", "2", "1", "3"]])
def test_label_map_is_independent_of_row_order(labels):
    series = pd.Series(labels * 3)
    expected = label_map(series)
    for seed in range(5):
        shuffled = series.iloc[np.random.default_rng(seed).permutation(len(series))]
        assert label_map(shuffled) == expected


def test_prepared_labels_are_numeric_ids_of_sorted_names_whatever_the_row_order():
    raw = pd.DataFrame(
        {"text": [f"review {i}" for i in range(60)], "label": [[1, 5, 10, 2][i % 4] for i in range(60)]}
    )
    cards = []
    for seed in (0, 1):
        shuffled = raw.iloc[np.random.default_rng(seed).permutation(len(raw))].reset_index(drop=True)
        splits, names, _ = prepare_frame(shuffled, PrepareConfig(), "raw")
        assert names == ["1", "2", "5", "10"]
        merged = pd.concat(splits.values())
        truth = dict(zip(shuffled["text"], shuffled["label"], strict=True))
        assert all(
            names[label] == str(truth[text])
            for text, label in zip(merged["text"], merged["label"], strict=True)
        )
        cards.append(sorted(merged["label"].value_counts().items()))
    assert cards[0] == cards[1]


def test_float_labels_with_missing_values_become_integer_names():
    raw = pd.DataFrame({"text": [f"t {i}" for i in range(13)], "label": [1.0, 2.0] * 6 + [np.nan]})
    frame, dropped = clean_frame(raw, max_chars=100)
    assert sorted(frame["label"].unique()) == ["1", "2"] and dropped["unlabelled"] == 1


def test_dropped_and_truncated_rows_are_counted(tmp_path):
    good = [(f"good text {i}", "pos" if i % 2 else "neg") for i in range(12)]
    rows = good + [
        ("", "pos"),  # empty
        ("   \t ", "neg"),  # whitespace only
        ("?!", "neg"),  # only punctuation: empty after cleaning
        ("no label here", None),  # unlabelled
        ("blank label", "  "),  # unlabelled
        ("good text 3", "pos"),  # exact duplicate
        ("GOOD text, 4!", "neg"),  # duplicate after cleaning
        ("other one", "other"),  # not in keep_labels
        ("other two", "other"),
        ("other three", "other"),
        ("long " + "a" * 60, "pos"),  # truncated, kept
        ("long " + "b" * 60, "neg"),  # truncated, kept
        ("long " + "a" * 70, "neg"),  # truncated, then a duplicate of the first long text
    ]
    raw = pd.DataFrame(rows, columns=["body", "target"])
    raw.to_csv(tmp_path / "raw.csv", index=False)
    card = prepare_dataset(
        str(tmp_path / "raw.csv"),
        "body",
        "target",
        tmp_path / "out",
        PrepareConfig(max_chars=40),
        "d",
        keep_labels=["neg", "pos"],
    )
    assert card["dropped"] == {
        "unlabelled": 2,
        "label_not_kept": 3,
        "empty_text": 3,
        "duplicate_text": 3,
        "truncated_kept": 2,
    }
    assert card["rows_read"] == len(rows) and card["rows_kept"] == 14
    texts = pd.concat(load_split(tmp_path / "out" / f"{s}.parquet") for s in SPLITS)["text"]
    assert texts.str.len().max() <= 40 and texts.is_unique
    assert card["label_names"] == ["neg", "pos"] and card["label_map"] == {"neg": 0, "pos": 1}


# --- cap and split ---------------------------------------------------------------------------------


def test_stratified_split_proportions():
    sizes = {"neg": 60, "neutral": 30, "pos": 20}
    splits, names, _ = prepare_frame(corpus(sizes), PrepareConfig(), "raw")
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert sum(len(f) for f in splits.values()) == 110
    for split, frame in splits.items():
        counts = frame["label"].value_counts()
        for i, name in enumerate(names):
            assert abs(counts.get(i, 0) - sizes[name] * fractions[split]) <= 1, (
                split,
                name,
                counts.to_dict(),
            )
    all_rows = pd.concat(splits.values())
    assert all_rows.index.is_unique, "splits must not overlap"


def test_custom_split_fractions():
    splits, _, _ = prepare_frame(
        corpus({"a": 50, "b": 50}), PrepareConfig(split={"train": 0.6, "validation": 0.2, "test": 0.2}), "raw"
    )
    assert {s: len(f) for s, f in splits.items()} == {"train": 60, "validation": 20, "test": 20}


def test_row_cap_is_stratified():
    sizes = {"neg": 300, "neutral": 150, "pos": 50}
    splits, names, _ = prepare_frame(corpus(sizes), PrepareConfig(max_rows=100), "raw")
    kept = pd.concat(splits.values())["label"].value_counts()
    assert kept.sum() == 100
    for i, name in enumerate(names):
        assert abs(kept[i] - sizes[name] / 5) <= 1


@pytest.mark.parametrize(("n_classes", "per_class", "max_rows"), [(5, 3, 1000), (20, 20, 10)])
def test_splits_with_more_classes_than_rows_in_a_part_do_not_crash(n_classes, per_class, max_rows):
    """15 rows of 5 classes leave 3 rows for validation+test; a cap of 10 cannot hold 20 classes."""
    raw = pd.DataFrame(
        {
            "text": [f"row {i}" for i in range(n_classes * per_class)],
            "label": [i % n_classes for i in range(n_classes * per_class)],
        }
    )
    splits, _, _ = prepare_frame(raw, PrepareConfig(max_rows=max_rows), "raw")
    assert all(len(f) for f in splits.values())
    assert sum(len(f) for f in splits.values()) == min(max_rows, len(raw))


def test_prepare_dataset_is_byte_for_byte_deterministic(tmp_path):
    corpus({"neg": 40, "pos": 30, "neutral": 20}).to_csv(tmp_path / "raw.csv", index=False)
    cfg = PrepareConfig(max_rows=60, seed=7)
    for out in ("a", "b"):
        prepare_dataset(str(tmp_path / "raw.csv"), "text", "label", tmp_path / out, cfg, "d")
    for name in [f"{s}.parquet" for s in SPLITS] + ["card.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert card["rows_kept"] == 60 and card["settings"]["seed"] == 7
    assert load_label_names(tmp_path / "a" / "card.json") == ["neg", "neutral", "pos"]
    other = prepare_dataset(
        str(tmp_path / "raw.csv"), "text", "label", tmp_path / "c", PrepareConfig(max_rows=60, seed=8), "d"
    )
    assert other["split_sha256"] != card["split_sha256"], "the seed must matter"
    assert not list(tmp_path.glob("*/.*tmp")), "no temporary files left"


def test_prepared_split_columns_and_metadata(tmp_path):
    corpus({"neg": 10, "pos": 10}).to_csv(tmp_path / "raw.csv", index=False)
    card = prepare_dataset(
        str(tmp_path / "raw.csv"), "text", "label", tmp_path / "out", PrepareConfig(), "movies"
    )
    train = load_split(tmp_path / "out" / "train.parquet")
    assert list(train.columns) == ["row", "text", "label", "label_name"]
    assert (train["label_name"] == train["label"].map({0: "neg", 1: "pos"})).all()
    assert card["counts"]["train"] == train["label_name"].value_counts().sort_index().to_dict()
    from layershift.core.io import read_metadata

    assert read_metadata(tmp_path / "out" / "test.parquet") == {
        "dataset": "movies",
        "split": "test",
        "labels": ["neg", "pos"],
    }


# --- sources ---------------------------------------------------------------------------------------


def messy_corpus() -> pd.DataFrame:
    """Texts with unicode, punctuation, a duplicate and a blank, over three string labels."""
    frame = corpus({"neg": 14, "neutral": 10, "pos": 12})
    extra = pd.DataFrame(
        {
            "text": ["Ça va très bien, merci!", "ça va TRÈS bien merci", "   ", "Sample pos text number 1!"],
            "label": ["pos", "pos", "neg", "pos"],
        }
    )
    return pd.concat([frame, extra], ignore_index=True).rename(columns={"text": "review", "label": "mood"})


def test_all_sources_give_the_same_prepared_splits(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    raw = messy_corpus()
    raw.to_csv(tmp_path / "d.csv", index=False)
    raw.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    raw.to_parquet(tmp_path / "d.parquet", index=False)
    raw.to_json(tmp_path / "d.jsonl", orient="records", lines=True, force_ascii=False)
    cfg = PrepareConfig(seed=3)
    prepared = {}
    for suffix in ("csv", "tsv", "parquet", "jsonl"):
        card = prepare_dataset(str(tmp_path / f"d.{suffix}"), "review", "mood", tmp_path / suffix, cfg, "d")
        splits = {s: load_split(tmp_path / suffix / f"{s}.parquet") for s in SPLITS}
        prepared[suffix] = (card["label_names"], card["dropped"], splits)

    names = ["pos", "neg", "neutral"]  # ClassLabel ids in a different order than the sorted names
    features = Features({"review": Value("string"), "mood": ClassLabel(names=names)})
    ds = Dataset.from_dict(
        {"review": raw["review"].tolist(), "mood": [names.index(m) for m in raw["mood"]]}, features=features
    )
    frame = dataset_to_frame(ds)
    assert frame["mood"].tolist() == raw["mood"].tolist()
    splits, label_names, dropped = prepare_frame(
        frame.rename(columns={"review": "text", "mood": "label"}), cfg, "ds"
    )
    as_tables = {
        s: f.reset_index(names="row").assign(
            label_name=lambda f: f["label"].map(dict(enumerate(label_names)))
        )
        for s, f in splits.items()
    }
    prepared["dataset"] = (label_names, dropped, as_tables)

    ref_names, ref_dropped, ref_splits = prepared["csv"]
    assert (
        ref_names == ["neg", "neutral", "pos"]
        and ref_dropped["duplicate_text"] == 2
        and ref_dropped["empty_text"] == 1
    )
    for source, (label_names, dropped, splits) in prepared.items():
        assert label_names == ref_names and dropped == ref_dropped, source
        for s in SPLITS:
            pd.testing.assert_frame_equal(
                splits[s][["row", "text", "label", "label_name"]].reset_index(drop=True),
                ref_splits[s].reset_index(drop=True),
                check_dtype=False,
                obj=f"{source} {s}",
            )


def test_classlabel_missing_id_becomes_unlabelled():
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    ds = Dataset.from_dict({"text": ["x", "y", "z"], "label": [0, 1, -1]}, features=features)
    frame = dataset_to_frame(ds)
    assert frame["label"].tolist()[:2] == ["a", "b"] and pd.isna(frame["label"].iloc[2])
    _, dropped = clean_frame(frame, max_chars=100)
    assert dropped["unlabelled"] == 1


# --- errors ----------------------------------------------------------------------------------------


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé au lait,a\nthé,b\n".encode("latin-1"))
    message = one_line_error(
        prepare_dataset, str(path), "text", "label", tmp_path / "out", PrepareConfig(), "d"
    )
    assert str(path) in message and "UTF-8" in message
    assert not (tmp_path / "out").exists()


def test_single_class(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": [f"t {i}" for i in range(20)], "label": ["only"] * 20}).to_csv(path, index=False)
    message = one_line_error(
        prepare_dataset, str(path), "text", "label", tmp_path / "out", PrepareConfig(), "d"
    )
    assert str(path) in message and "single class" in message and "'only'" in message


def test_no_rows_after_cleaning(tmp_path):
    path = tmp_path / "empty.csv"
    pd.DataFrame({"text": ["!!", "  ", "...", "x"], "label": ["a", "b", "a", None]}).to_csv(path, index=False)
    message = one_line_error(
        prepare_dataset, str(path), "text", "label", tmp_path / "out", PrepareConfig(), "d"
    )
    assert str(path) in message and "no usable rows after cleaning" in message
    assert "empty_text=3" in message and "unlabelled=1" in message


def test_too_few_rows_per_class(tmp_path):
    raw = pd.DataFrame({"text": [f"t {i}" for i in range(12)], "label": ["a"] * 10 + ["b"] * 2})
    message = one_line_error(prepare_frame, raw, PrepareConfig(), "tiny.csv")
    assert message.startswith("tiny.csv: too few rows") and "smallest class 2" in message


@pytest.mark.parametrize(
    ("text", "label", "missing"),
    [("body", "label", "text column 'body'"), ("text", "stars", "label column 'stars'")],
)
def test_missing_column(tmp_path, text, label, missing):
    path = tmp_path / "d.csv"
    corpus({"a": 5, "b": 5}).to_csv(path, index=False)
    message = one_line_error(prepare_dataset, str(path), text, label, tmp_path / "out", PrepareConfig(), "d")
    assert message.startswith(f"{path}: {missing} not found") and "columns: text, label" in message


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    assert "unsupported file type '.xlsx'" in one_line_error(read_file, tmp_path / "d.xlsx")
    assert "file does not exist" in one_line_error(read_file, tmp_path / "nope.csv")


def test_unparseable_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": \n')
    message = one_line_error(read_file, path)
    assert str(path) in message and "cannot be parsed as jsonl" in message


def test_row_cap_leaving_one_class_fails_before_any_job():
    """1,000 rows of 'A' and 3 of 'B' capped at 10 keep no 'B' row (the cap is stratified): preparation used to
    succeed and the evaluate job crashed in the linear probe ('This solver needs samples of at least 2
    classes in the data')."""
    raw = pd.DataFrame({"text": [f"row {i}" for i in range(1003)], "label": ["A"] * 1000 + ["B"] * 3})
    message = one_line_error(prepare_frame, raw, PrepareConfig(max_rows=10), "big.csv")
    assert message.startswith("big.csv: data.max_rows=10 leaves one class ('A') in the train split")
    splits, names, _ = prepare_frame(raw, PrepareConfig(max_rows=2000), "big.csv")  # no cap: B is in train
    assert splits["train"]["label"].nunique() == 2


def test_one_rare_class_does_not_unstratify_the_others():
    """40 + 40 rows and a 3-row class: the validation + test part holds ~1 row of the rare class, which cannot
    be stratified; the two large classes still are (before, that split went unstratified: up to 4 rows
    apart in a 8-row part)."""
    raw = pd.DataFrame(
        {"text": [f"row number {i}" for i in range(83)], "label": ["A"] * 40 + ["B"] * 40 + ["C"] * 3}
    )
    for seed in range(10):
        splits, names, _ = prepare_frame(raw, PrepareConfig(seed=seed), "rare.csv")
        for part in ("validation", "test"):
            counts = splits[part]["label"].value_counts()
            assert abs(counts.get(0, 0) - counts.get(1, 0)) <= 1, (seed, part, counts.to_dict())
        assert sum(len(split) for split in splits.values()) == 83


def test_keep_labels_naming_no_label_says_so():
    raw = pd.DataFrame({"text": [f"row {i}" for i in range(20)], "label": ["pos", "neg"] * 10})
    cfg = PrepareConfig()
    message = one_line_error(prepare_frame, raw, cfg, "d.csv", keep_labels=["pos", "neutral"])
    assert message == "d.csv: keep_labels ['neutral'] match no row's label (labels: 'neg', 'pos')"
