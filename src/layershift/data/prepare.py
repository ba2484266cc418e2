"""Dataset preparation: load a labelled text source, clean it the paper's way, cap, split 80/10/10.

The same source and settings always give byte-identical Parquet splits.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from layershift.core.errors import DataError
from layershift.core.io import read_table, write_json, write_parquet

SPLITS = ("train", "validation", "test")
FILE_READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}

_APOSTROPHES = re.compile(r"['’`]")
_NON_WORD = re.compile(r"(?:[^\w\s]|_)+")  # runs of punctuation, symbols, '_' and combining marks
_SPACES = re.compile(r"\s+")


@dataclass
class PrepareConfig:
    max_rows: int = 25000  # stratified cap on rows after cleaning
    split: dict = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    max_chars: int = 5000  # texts longer than this are truncated (and counted)
    seed: int = 13
    cleaning: str = "paper"  # one of CLEANINGS


CLEANINGS = {
    "paper": "lowercase, drop apostrophes, punctuation to spaces (the paper's, for an uncased BERT)",
    "lowercase": "lowercase only; punctuation kept",
    "none": "text as written (runs of whitespace collapsed)",
}


def clean_text(text: str, cleaning: str = "paper") -> str:
    """Clean one text the way ``cleaning`` (a key of ``CLEANINGS``) says; every mode collapses whitespace.

    ``paper``: lowercase, drop apostrophes, turn punctuation and special characters into spaces.
    ``lowercase``: lowercase only. ``none``: keep case and punctuation (for cased tokenizers)."""
    if cleaning not in CLEANINGS:
        raise ValueError(f"cleaning must be one of {sorted(CLEANINGS)}, got {cleaning!r}")
    text = str(text)
    if cleaning == "paper":
        text = _APOSTROPHES.sub("", text.lower())
        text = _NON_WORD.sub(lambda run: _word_marks(run, text), text)
    elif cleaning == "lowercase":
        text = text.lower()
    return _SPACES.sub(" ", text).strip()


def _word_marks(run: re.Match, text: str) -> str:
    """What replaces a ``_NON_WORD`` run: a space, except that the combining marks (vowel signs, viramas,
    accents of decomposed text) opening a run right after a letter or digit stay, as part of that word (\\w
    does not match them: without this, Devanagari, Tamil or vowelled Arabic fall apart into consonants)."""
    chars = run.group()
    n_marks = 0
    if run.start() > 0 and text[run.start() - 1].isalnum():
        while n_marks < len(chars) and unicodedata.category(chars[n_marks]).startswith("M"):
            n_marks += 1
    return chars[:n_marks] + (" " if n_marks < len(chars) else "")


def is_hub_source(source: str) -> bool:
    """True for 'hub:<id>' or a bare id that is not an existing file and has no file suffix."""
    if source.startswith("hub:"):
        return True
    return Path(source).suffix.lower() not in FILE_READERS and not Path(source).exists()


def read_source(
    source: str, text: str, label: str, hub_config: str | None = None, hub_split: str = "train"
) -> pd.DataFrame:
    """Read a dataset source into a DataFrame with the raw ``text`` and ``label`` columns."""
    if is_hub_source(source):
        frame = _read_hub(source.removeprefix("hub:"), hub_config, hub_split)
        origin = f"hub dataset {source.removeprefix('hub:')}"
    else:
        frame = read_file(source)
        origin = source
    return select_columns(frame, text, label, origin)


def read_file(path: str | Path) -> pd.DataFrame:
    """Read a local CSV / TSV / Parquet / JSONL file, with one-line errors for missing or non-UTF-8 files."""
    path = Path(path)
    kind = FILE_READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r} (expected one of {sorted(FILE_READERS)})"
        )
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    try:
        if kind == "csv":
            return pd.read_csv(
                path,
                sep="\t" if path.suffix.lower() == ".tsv" else ",",
                encoding="utf-8",
                encoding_errors="strict",
                keep_default_na=False,
                na_values=[""],
                dtype=str,
            )
        if kind == "parquet":
            return pd.read_parquet(path)
        # utf-8-sig: a byte-order mark (Windows editors write one) is not JSON; a .json file may be one array
        lines = path.suffix.lower() == ".jsonl" or _first_char(path) != "["
        return pd.read_json(path, lines=lines, encoding="utf-8-sig", encoding_errors="strict", dtype=False)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not valid UTF-8 text (byte {err.start}: {err.reason}); re-encode the file as UTF-8"
        ) from None
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be parsed as {kind}: {str(err).splitlines()[0]}") from None


def _first_char(path: Path) -> str:
    """The first character of a UTF-8 text file that is not whitespace or a byte-order mark ('' if none)."""
    with path.open("rb") as handle:
        head = handle.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def _read_hub(dataset_id: str, hub_config: str | None, hub_split: str) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, hub_config, split=hub_split)
    except Exception as err:  # noqa: BLE001 - the hub raises many types; one line is what the user needs
        raise DataError(
            f"hub dataset {dataset_id!r} (split {hub_split!r}) could not be loaded: {str(err).splitlines()[0]}. "
            "Offline? Run this dataset's prepare job where there is internet (it caches the download in HF_HOME) "
            "or point source at a local file."
        ) from None
    return dataset_to_frame(ds)


def dataset_to_frame(ds) -> pd.DataFrame:
    """An in-memory ``datasets.Dataset`` as a DataFrame, with ClassLabel ids turned into their names."""
    frame = ds.to_pandas()
    for name, feature in ds.features.items():
        names = getattr(feature, "names", None)
        if names:
            frame[name] = [names[i] if 0 <= int(i) < len(names) else None for i in frame[name]]
    return frame


def select_columns(frame: pd.DataFrame, text: str, label: str, origin: str) -> pd.DataFrame:
    for role, column in (("text", text), ("label", label)):
        if column not in frame.columns:
            raise DataError(
                f"{origin}: {role} column {column!r} not found (columns: {', '.join(map(str, frame.columns))})"
            )
    return pd.DataFrame({"text": frame[text], "label": frame[label]})


def clean_frame(
    raw: pd.DataFrame, max_chars: int, keep_labels: list | None = None, cleaning: str = "paper"
) -> tuple[pd.DataFrame, dict]:
    """Clean texts, normalise labels, drop unusable rows; return the rows and the count dropped per reason."""
    dropped = {}
    labels = raw["label"].map(_label_string)
    frame = pd.DataFrame({"text": raw["text"], "label": labels})
    dropped["unlabelled"] = int(frame["label"].isna().sum())
    frame = frame[frame["label"].notna()]
    if keep_labels:
        keep = frame["label"].isin({_label_string(v) for v in keep_labels})
        dropped["label_not_kept"] = int((~keep).sum())
        frame = frame[keep]
    text = frame["text"].map(lambda t: "" if _missing(t) else str(t))
    too_long = text.str.len() > max_chars
    text = text.where(~too_long, text.str.slice(0, max_chars))
    frame = frame.assign(text=text.map(lambda t: clean_text(t, cleaning)))
    empty = frame["text"].str.len() == 0
    dropped["empty_text"] = int(empty.sum())
    frame, too_long = frame[~empty], too_long[~empty]
    duplicate = frame.duplicated(subset=["text"], keep="first")
    dropped["duplicate_text"] = int(duplicate.sum())
    frame, too_long = frame[~duplicate].reset_index(drop=True), too_long[~duplicate]
    return frame, {**dropped, "truncated_kept": int(too_long.sum())}  # truncated rows that survived


def _label_string(value) -> str | None:
    """Labels as strings ('5' for 5, 5.0 and the text '5.0'); None for missing or blank."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if _INTEGRAL_FLOAT.fullmatch(text):  # a CSV's 5.0 (how pandas writes a float column) is the number 5
        text = str(int(float(text)))
    return text or None


_INTEGRAL_FLOAT = re.compile(r"[+-]?\d+\.0*")


def _missing(value) -> bool:
    """None, NaN, pd.NA (nullable Int64 / boolean / string columns) or NaT: no value."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def label_map(labels: pd.Series) -> list[str]:
    """Stable label order: numeric labels sorted as numbers, others as strings."""
    unique = labels.unique().tolist()
    try:
        numbers = [float(label) for label in unique]
    except ValueError:
        return sorted(unique)
    if not all(math.isfinite(x) for x in numbers):  # 'nan' / 'inf' labels would make the order arbitrary
        return sorted(unique)
    return [label for _, label in sorted(zip(numbers, unique, strict=True))]


def cap_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Stratified sample of at most ``max_rows`` rows (order kept stable)."""
    if len(frame) <= max_rows:
        return frame
    kept, _ = _two_way_split(frame, n_second=len(frame) - max_rows, seed=seed)
    return kept.sort_index()


def split_sizes(n_rows: int, fractions: dict) -> dict[str, int]:
    """Rows of each split that ``split_frame`` makes of ``n_rows`` rows (validation and test rounded up)."""
    rest_fraction = fractions["validation"] + fractions["test"]
    rest = math.ceil(rest_fraction * n_rows)
    test = math.ceil(fractions["test"] / rest_fraction * rest)
    return {"train": n_rows - rest, "validation": rest - test, "test": test}


def split_frame(frame: pd.DataFrame, fractions: dict, seed: int) -> dict[str, pd.DataFrame]:
    """Stratified train / validation / test split with the given fractions."""
    sizes = split_sizes(len(frame), fractions)
    train, rest = _two_way_split(frame, sizes["validation"] + sizes["test"], seed)
    validation, test = _two_way_split(rest, sizes["test"], seed)
    return {"train": train.sort_index(), "validation": validation.sort_index(), "test": test.sort_index()}


def _two_way_split(frame: pd.DataFrame, n_second: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``n_second`` rows, stratified by label where that is possible."""
    from sklearn.model_selection import train_test_split  # here: importing sklearn costs ~2 s per process

    stratify = _stratify(frame, len(frame) - n_second, n_second)
    return train_test_split(frame, test_size=n_second, stratify=stratify, random_state=seed)


def _stratify(frame: pd.DataFrame, *part_sizes: int) -> pd.Series | None:
    """Strata for a split: the label, except that classes with a single row share one stratum (a lone such
    row joins the largest class), so one rare class does not leave every other class unstratified; None
    (unstratified) when a part is smaller than the number of strata. With every class at two rows or more
    the strata are the labels."""
    counts = frame["label"].value_counts()
    single = counts.index[counts < 2]
    strata = frame["label"].where(~frame["label"].isin(single), -1)  # label ids are >= 0
    if len(single) == 1:
        strata = strata.replace(-1, counts.idxmax())
    feasible = all(size >= strata.nunique() for size in part_sizes)
    return strata if feasible else None


def prepare_frame(raw: pd.DataFrame, cfg: PrepareConfig, origin: str, keep_labels: list | None = None):
    """Clean, map labels, cap and split; return (splits, label_names, dropped counts)."""
    frame, names, dropped = labelled_frame(raw, cfg, origin, keep_labels)
    frame = cap_rows(frame, cfg.max_rows, cfg.seed)
    return split_frame(frame, cfg.split, cfg.seed), names, dropped


def labelled_frame(raw: pd.DataFrame, cfg: PrepareConfig, origin: str, keep_labels: list | None = None):
    """Clean and map labels to ids; raise DataError if the rows cannot make a split classification dataset.

    Everything that can make preparation fail happens here (capping and splitting cannot fail after it),
    so the config check runs exactly this. Returns (frame, label_names, dropped counts)."""
    if keep_labels:
        present = set(raw["label"].map(_label_string).dropna())
        missing = [v for v in keep_labels if _label_string(v) not in present]
        if missing:
            shown = ", ".join(repr(v) for v in sorted(present)[:12]) + (", ..." if len(present) > 12 else "")
            raise DataError(f"{origin}: keep_labels {missing} match no row's label (labels: {shown})")
    frame, dropped = clean_frame(raw, cfg.max_chars, keep_labels, cfg.cleaning)
    if frame.empty:
        raise DataError(f"{origin}: no usable rows after cleaning (dropped: {_describe(dropped)})")
    names = label_map(frame["label"])
    if len(names) < 2:
        raise DataError(
            f"{origin}: label column has a single class ({names[0]!r}); classification needs at least two"
        )
    n_min = frame["label"].value_counts().min()
    if len(frame) < 10 or n_min < 3:
        raise DataError(
            f"{origin}: too few rows to split 80/10/10 ({len(frame)} rows, smallest class {n_min}); need ≥ 10 rows and ≥ 3 per class"
        )
    frame = frame.assign(label=frame["label"].map({name: i for i, name in enumerate(names)}).astype("int64"))
    n_rows = min(len(frame), cfg.max_rows)
    sizes = split_sizes(n_rows, cfg.split)
    empty = [split for split in SPLITS if sizes[split] < 1]
    if empty:
        raise DataError(
            f"{origin}: data.split {cfg.split} leaves the {' and '.join(empty)} split empty at {n_rows} rows "
            f"({', '.join(f'{k} {v}' for k, v in sizes.items())}); give it a larger fraction or use more rows"
        )
    capped = len(frame) > cfg.max_rows
    # the stratified cap keeps each class's share of the rows: a rare class can lose every row; a train split
    # no larger than the largest class can hold that class alone (else it holds two, and sklearn need not run)
    if capped or sizes["train"] <= frame["label"].value_counts().max():
        train = split_frame(cap_rows(frame, cfg.max_rows, cfg.seed), cfg.split, cfg.seed)["train"]
        if train["label"].nunique() < 2:  # fine-tuning and the linear probe need two classes to train on
            only = names[train["label"].iloc[0]]
            if capped:
                raise DataError(
                    f"{origin}: data.max_rows={cfg.max_rows} leaves one class ({only!r}) in the train split (the "
                    f"cap keeps each class's share of {len(frame)} rows; smallest class {n_min}); "
                    "raise data.max_rows or choose classes with keep_labels"
                )
            raise DataError(
                f"{origin}: data.split {cfg.split} leaves one class ({only!r}) in the train split "
                f"({sizes['train']} of {n_rows} rows); raise data.split.train"
            )
    return frame, names, dropped


def _describe(dropped: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in dropped.items() if v) or "nothing"


def prepare_dataset(
    source: str,
    text: str,
    label: str,
    out_dir: str | Path,
    cfg: PrepareConfig,
    name: str,
    keep_labels: list | None = None,
    hub_config: str | None = None,
    hub_split: str = "train",
) -> dict:
    """Prepare one dataset: write ``{train,validation,test}.parquet`` and ``card.json`` into ``out_dir``."""
    raw = read_source(source, text, label, hub_config, hub_split)
    splits, names, dropped = prepare_frame(raw, cfg, origin=source, keep_labels=keep_labels)
    out_dir = Path(out_dir)
    hashes = {}
    for split, frame in splits.items():
        table = frame.reset_index(names="row").assign(
            label_name=lambda f: f["label"].map(dict(enumerate(names)))
        )
        table = table[["row", "text", "label", "label_name"]]
        write_parquet(
            table, out_dir / f"{split}.parquet", metadata={"dataset": name, "split": split, "labels": names}
        )
        hashes[split] = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()
    card = {
        "dataset": name,
        "source": source,
        "source_sha256": _file_sha256(source),
        "text_column": text,
        "label_column": label,
        "rows_read": len(raw),
        "rows_kept": int(sum(len(f) for f in splits.values())),
        "dropped": dropped,
        "label_names": names,
        "label_map": {n: i for i, n in enumerate(names)},
        "counts": {
            s: {names[k]: int(v) for k, v in sorted(f["label"].value_counts().items())}
            for s, f in splits.items()
        },
        "split_sha256": hashes,
        "settings": {
            "max_rows": cfg.max_rows,
            "split": cfg.split,
            "max_chars": cfg.max_chars,
            "seed": cfg.seed,
            "cleaning": cfg.cleaning,
        },
    }
    write_json(card, out_dir / "card.json")
    return card


def _file_sha256(source: str) -> str | None:
    path = Path(source)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_split(path: str | Path) -> pd.DataFrame:
    """A prepared split (columns row, text, label, label_name)."""
    return read_table(path)


def load_label_names(card_path: str | Path) -> list[str]:
    return json.loads(Path(card_path).read_text())["label_names"]
