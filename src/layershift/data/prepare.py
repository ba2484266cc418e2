"""Dataset preparation: read a labelled text source, keep the rows of good enough quality, clean them,
cap, split 80/10/10, and write the splits with a dataset card (provenance, counts, settings).

The same source and settings always give byte-identical Parquet splits.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from layershift.core.errors import DataError
from layershift.core.io import read_table, write_json, write_parquet
from layershift.data.cleaning import SOCIAL_CHANGES, clean_social, clean_text
from layershift.data.sources import read_source, source_provenance
from layershift.study.schema import schema_default

SPLITS = ("train", "validation", "test")
CHANGE_COLUMN = "changed_{}"  # per-row counts of what the social cleaning changed (not written to the splits)


@dataclass
class PrepareConfig:
    max_rows: int = schema_default("data", "max_rows")  # stratified cap on rows after cleaning
    split: dict = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    max_chars: int = schema_default("data", "max_chars")  # texts longer than this are truncated (and counted)
    seed: int = 13
    cleaning: str = "paper"  # one of cleaning.CLEANINGS
    # {column, at_least}: rows whose quality value is below at_least are dropped
    min_quality: dict | None = None


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
    frame = frame.assign(**_cleaned_columns(text, cleaning))
    empty = frame["text"].str.len() == 0
    dropped["empty_text"] = int(empty.sum())
    frame, too_long = frame[~empty], too_long[~empty]
    duplicate = frame.duplicated(subset=["text"], keep="first")
    dropped["duplicate_text"] = int(duplicate.sum())
    frame, too_long = frame[~duplicate].reset_index(drop=True), too_long[~duplicate]
    return frame, {**dropped, "truncated_kept": int(too_long.sum())}  # truncated rows that survived


def _cleaned_columns(text: pd.Series, cleaning: str) -> dict[str, pd.Series]:
    """The cleaned ``text`` column; for the social cleaning also one ``changed_<change>`` column per change it
    counts, which follow the rows through the cap and split so the card counts what the kept rows had."""
    if cleaning != "social":
        return {"text": text.map(lambda t: clean_text(t, cleaning))}
    cleaned = [clean_social(t) for t in text]
    columns = {"text": pd.Series([words for words, _ in cleaned], index=text.index, dtype=object)}
    for change in SOCIAL_CHANGES:
        counts = [changes[change] for _, changes in cleaned]
        columns[CHANGE_COLUMN.format(change)] = pd.Series(counts, index=text.index, dtype="int64")
    return columns


def keep_quality(raw: pd.DataFrame, min_quality: dict, origin: str) -> tuple[pd.DataFrame, dict]:
    """Rows whose ``quality`` value (a number, e.g. annotator agreement) is at least ``min_quality['at_least']``,
    and the count dropped for a low value and for a missing or non-numeric one."""
    column = min_quality["column"]
    if "quality" not in raw.columns:
        raise DataError(f"{origin}: min_quality column {column!r} was not read")
    quality = pd.to_numeric(raw["quality"], errors="coerce")
    if quality.notna().sum() == 0:
        shown = ", ".join(repr(v) for v in raw["quality"].dropna().unique()[:5])
        raise DataError(
            f"{origin}: min_quality column {column!r} holds no numbers (values: {shown or 'none'})"
        )
    keep = quality >= min_quality["at_least"]
    dropped = {"below_min_quality": int((quality < min_quality["at_least"]).sum())}
    dropped["no_quality_value"] = int(quality.isna().sum())
    return raw[keep], dropped


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
    so the config check runs exactly this. The quality filter (``cfg.min_quality``) comes first, before
    labels are checked and rows cleaned. Returns (frame, label_names, dropped counts)."""
    quality_dropped = {}
    if cfg.min_quality is not None:
        raw, quality_dropped = keep_quality(raw, cfg.min_quality, origin)
    if keep_labels:
        _check_keep_labels(raw, keep_labels, origin)
    frame, dropped = clean_frame(raw, cfg.max_chars, keep_labels, cfg.cleaning)
    dropped = {**quality_dropped, **dropped}
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


def _check_keep_labels(raw: pd.DataFrame, keep_labels: list, origin: str) -> None:
    present = set(raw["label"].map(_label_string).dropna())
    missing = [v for v in keep_labels if _label_string(v) not in present]
    if missing:
        shown = ", ".join(repr(v) for v in sorted(present)[:12]) + (", ..." if len(present) > 12 else "")
        raise DataError(f"{origin}: keep_labels {missing} match no row's label (labels: {shown})")


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
    encoding_errors: str = "strict",
) -> dict:
    """Prepare one dataset: write ``{train,validation,test}.parquet`` and ``card.json`` into ``out_dir``."""
    quality_column = cfg.min_quality["column"] if cfg.min_quality else None
    raw = read_source(source, text, label, hub_config, hub_split, quality_column, encoding_errors)
    splits, names, dropped = prepare_frame(raw, cfg, origin=source, keep_labels=keep_labels)
    hashes = write_splits(splits, names, Path(out_dir), name)
    card = {
        "dataset": name,
        "source": source,
        **source_provenance(source),
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
        "settings": _card_settings(cfg),
        **_cleaning_changes(splits),
    }
    if encoding_errors != "strict":
        card["encoding_errors"] = encoding_errors
    write_json(card, Path(out_dir) / "card.json")
    return card


def write_splits(
    splits: dict[str, pd.DataFrame], names: list[str], out_dir: Path, name: str
) -> dict[str, str]:
    """Write each split as Parquet (columns row, text, label, label_name); return each table's sha256."""
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
    return hashes


def _card_settings(cfg: PrepareConfig) -> dict:
    settings = {
        "max_rows": cfg.max_rows,
        "split": cfg.split,
        "max_chars": cfg.max_chars,
        "seed": cfg.seed,
        "cleaning": cfg.cleaning,
    }
    if cfg.min_quality is not None:
        settings["min_quality"] = cfg.min_quality
    return settings


def _cleaning_changes(splits: dict[str, pd.DataFrame]) -> dict:
    """``{"cleaning_changes": ...}`` for a social-cleaned dataset: over the kept rows, how many URLs and
    mentions were replaced and RT markers dropped, and how many rows had HTML entities or mis-decoded bytes
    fixed; ``{}`` for the other cleanings."""
    columns = [CHANGE_COLUMN.format(change) for change in SOCIAL_CHANGES]
    if not all(column in frame for frame in splits.values() for column in columns):
        return {}
    totals = {
        change: int(sum(frame[CHANGE_COLUMN.format(change)].sum() for frame in splits.values()))
        for change in SOCIAL_CHANGES
    }
    return {
        "cleaning_changes": {
            "urls_replaced": totals["urls"],
            "mentions_replaced": totals["mentions"],
            "retweet_markers_dropped": totals["retweet_markers"],
            "rows_with_html_entities_decoded": totals["html_entities"],
            "rows_with_misdecoded_bytes_fixed": totals["misdecoded_bytes"],
        }
    }


def load_split(path: str | Path) -> pd.DataFrame:
    """A prepared split (columns row, text, label, label_name)."""
    return read_table(path)


def load_label_names(card_path: str | Path) -> list[str]:
    return json.loads(Path(card_path).read_text())["label_names"]
