"""Every input problem the workflow detects stops the run before any job, with one line naming file and key.

The first table of docs/reliability.md lists the same cases; each row here feeds one to `snakemake -n` on
the tiny study and checks the message and that nothing was built.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.support.study import ROOT, build_tiny_study, run_snakemake

pytestmark = pytest.mark.slow


def _set(path: str, value):
    def mutate(config: dict, workdir):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _delete(path: str):
    def mutate(config: dict, workdir):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _rename(path: str, new: str):
    def mutate(config: dict, workdir):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[new] = node.pop(last)

    return mutate


def _write_data(text: bytes):
    def mutate(config: dict, workdir):
        (workdir / "data/mood.csv").write_bytes(text)

    return mutate


def _all(*mutations):
    def mutate(config: dict, workdir):
        for each in mutations:
            each(config, workdir)

    return mutate


CASES = {
    "unknown key, near miss": (
        _rename("models.tiny2.sae_layers", "sae_layer"),
        ["models.tiny2.sae_layer", "did you mean 'sae_layers'"],
    ),
    "unknown nested key": (
        _set("finetune.learning_rate", 1e-3),
        ["finetune.learning_rate", "did you mean 'lr'"],
    ),
    "wrong type": (_set("finetune.epochs", "three"), ["finetune.epochs", "expected integer"]),
    "negative learning rate": (_set("finetune.lr", -1e-5), ["finetune.lr", "out of range"]),
    "zero epochs": (_set("finetune.epochs", 0), ["finetune.epochs", "out of range"]),
    "SAE layer beyond depth": (
        _set("models.tiny2.sae_layers", [1, 5]),
        ["models.tiny2.sae_layers[1]", "beyond the model's depth"],
    ),
    "empty layer list": (
        _set("models.tiny2.sae_layers", []),
        ["models.tiny2.sae_layers", "must not be empty"],
    ),
    "d_sae < 1": (_set("sae.d_sae", 0), ["sae.d_sae", "out of range"]),
    "split fractions": (
        _set("data.split", {"train": 0.8, "validation": 0.1, "test": 0.2}),
        ["data.split", "sum to 1"],
    ),
    "missing file": (
        _set("datasets.mood.source", "data/nope.csv"),
        ["datasets.mood.source", "does not exist"],
    ),
    "missing text column": (
        _set("datasets.mood.text", "txt"),
        ["datasets.mood.text", "'txt'", "did you mean 'text'"],
    ),
    "missing label column": (
        _set("datasets.mood.label", "sentiment"),
        ["datasets.mood.label", "'sentiment'"],
    ),
    "non-UTF-8 text": (_write_data(b"text,label\ncaf\xe9 good,positive\n"), ["datasets.mood", "UTF-8"]),
    "single class": (
        _write_data(b"text,label\n" + b"".join(b"good film %d,positive\n" % i for i in range(30))),
        ["datasets.mood", "single class"],
    ),
    "no usable rows": (
        _write_data(b"text,label\n  ,positive\n!!!,negative\n,\n"),
        ["datasets.mood", "no usable rows"],
    ),
    "split leaves a part empty": (  # was a sklearn traceback from the row check (capped) or the prepare job
        _all(
            _set("data.max_rows", 10), _set("data.split", {"train": 0.98, "validation": 0.01, "test": 0.01})
        ),
        ["datasets.mood", "data.split", "the validation split empty at 10 rows"],
    ),
    "unknown data package": (
        _set("datasets.mood.source", "package-file:no-such-data-package/data/mood.csv"),
        ["datasets.mood.source", "'no-such-data-package' is not installed", "'data/mood.csv'"],
    ),
    "missing quality column": (
        _set("datasets.mood.min_quality", {"column": "agreement", "at_least": 0.9}),
        ["datasets.mood.min_quality.column", "'agreement'", "data/mood.csv"],
    ),
    "empty probe list": (_set("datasets.mood.probes", []), ["datasets.mood.probes", "must not be empty"]),
    "unknown model package": (
        _set("models.tiny2.source", "package:no-such-model-package"),
        ["models.tiny2.source", "not installed"],
    ),
    "hub id offline": (
        _set("models.tiny2.source", "hub:someone/not-cached-bert"),
        ["models.tiny2.source", "offline", "path:"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_stops_before_any_job(case, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    build_tiny_study(tmp_path)
    config_path = tmp_path / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    mutate, expected = CASES[case]
    mutate(config, tmp_path)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("layershift: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "config.yaml" in lines[0]
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists(), "a job ran despite bad input"


def test_malformed_yaml(tmp_path):
    build_tiny_study(tmp_path)
    (tmp_path / "config.yaml").write_text("models:\n  tiny2: {source: path:models/tiny2\n")
    proc = run_snakemake(
        tmp_path, "--cores", "1", check=False, configfile=False
    )  # the Snakefile's default config.yaml
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("layershift: ")]
    assert len(lines) == 1 and "config.yaml: malformed YAML at line 3" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_malformed_configfile_study(tmp_path):
    """A study file passed as `make study CONFIGFILE=...` (Snakemake's --configfile) gets the same one line.

    Plain `snakemake --configfile` cannot: Snakemake parses that file in its CLI before any Snakefile code runs
    (ConfigSettings in snakemake/settings/types.py), so `make study` checks it first.
    """
    study = tmp_path / "my study.yaml"
    study.write_text("models:\n  tiny2: {source: path:models/tiny2\n")
    proc = subprocess.run(  # -o: never (re)build .venv from a test; the suite already runs inside it
        ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed-stamp", "study", f"CONFIGFILE={study}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("layershift: ")]
    assert len(lines) == 1 and f"{study}: malformed YAML at line 3" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "snakemake" not in proc.stdout
