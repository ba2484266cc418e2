"""The whole tiny study, through Snakemake and into the report, with one tiny random model per encoder family
(each with its own trained tokenizer) in a single run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support.models import FAMILIES, make_tiny_family
from tests.support.study import MOOD_WORDS, make_corpus, run_snakemake, tiny_config

# The one-run Snakemake study: these families by default (each model costs ~100 s of CPU,
# ~20 jobs, mostly interpreter start-up and imports); LAYERSHIFT_TEST_FAMILIES=all (or a comma list) runs more.
REQUIRED_FAMILIES = ["bert", "roberta", "distilbert", "electra", "deberta-v2", "modernbert"]
_chosen = os.environ.get("LAYERSHIFT_TEST_FAMILIES", "")
STUDY_FAMILIES = list(FAMILIES) if _chosen == "all" else _chosen.split(",") if _chosen else REQUIRED_FAMILIES


def build_family_study(workdir: Path, families=STUDY_FAMILIES) -> Path:
    """One tiny study with a model per family (2 layers, hidden 32) on one cased, punctuated corpus."""
    workdir.mkdir(parents=True, exist_ok=True)
    models = {}
    for seed, family in enumerate(families):
        name = family.replace("-", "")
        make_tiny_family(workdir / "models" / name, family, seed=seed)
        models[name] = {"source": f"path:models/{name}", "sae_layers": [2]}
    corpus = make_corpus(workdir / "data/mood.csv", MOOD_WORDS, 100, seed=1)
    lines = corpus.read_text().splitlines()  # case and punctuation that only `cleaning: none` keeps
    corpus.write_text(
        "\n".join([lines[0], *(f'"{t.capitalize()}!",{y}' for t, y in (r.rsplit(",", 1) for r in lines[1:]))])
        + "\n"
    )
    datasets = {
        "mood": {
            "source": "data/mood.csv",
            "text": "text",
            "label": "label",
            "cleaning": "none",
            "probes": ["I love this movie!", "The plot was bad, really."],
        }
    }
    config = tiny_config(models, datasets)
    config["finetune"]["epochs"] = 1
    config["sae"]["epochs"] = 1
    config["crosscoder"]["epochs"] = 1
    config["sae"]["null_seeds"] = 1
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_tiny_study_runs_on_every_family(tmp_path):
    """Fine-tune -> extract -> similarity -> SAEs -> diff -> report for every family in one Snakemake run."""
    build_family_study(tmp_path)
    run_snakemake(tmp_path, "--cores", "2", timeout=1500)
    results = tmp_path / "results"
    html = (results / "report/index.html").read_text()
    similarity = pd.read_parquet(results / "tables/similarity.parquet")
    for family in STUDY_FAMILIES:
        name = family.replace("-", "")
        assert name in html
        rows = similarity[similarity["model"] == name]
        assert sorted(rows["layer"]) == [0, 1, 2], family
        assert rows["cosine_of_content_means"].notna().all(), family
        share = rows["special_share"].iloc[0]
        assert (share == 0) if family == "gpt2" else (0 < share < 1), (family, share)
        if family == "gpt2":  # no special tokens: the two measures are the same numbers
            np.testing.assert_allclose(rows["cosine_of_means"], rows["cosine_of_content_means"], atol=1e-6)
        assert (results / f"diff/{name}/mood/pretrained_vs_finetuned-s3/layer2.json").is_file(), family
        probes = pd.read_parquet(results / f"probes/{name}/mood/layer2.parquet")
        assert set(probes["text"]) == {"I love this movie!", "The plot was bad, really."}  # cleaning: none
        kinds = probes.drop_duplicates(["stage", "sentence", "position"])
        assert "punctuation" in set(kinds["token_kind"]), family
        assert ("special" in set(kinds["token_kind"])) is (family != "gpt2"), family
    train = pd.read_parquet(results / "data/mood/train.parquet")
    assert train["text"].str.contains("!").all() and train["text"].str[0].str.isupper().all()
    card = json.loads((results / "data/mood/card.json").read_text())
    assert card["settings"]["cleaning"] == "none"
