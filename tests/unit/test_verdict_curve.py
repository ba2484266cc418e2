"""The verdict curve on a planted-truth layer: more rows, more stable features, until the verdict turns
conclusive; tiny or structureless data stays inconclusive. Rows are the layer's first ones, read in place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.analysis.diff.settings import DiffConfig
from layershift.analysis.verdict_curve import (
    CURVE_COLUMNS,
    CurveLayer,
    diff_on_rows,
    fraction_rows,
    rows_and_tokens,
    train_point_saes,
    verdict_curve,
)
from layershift.core.io import write_parquet
from layershift.data.shards import ShardReader, ShardWriter
from layershift.dictionaries.sae.config import SAEConfig, SAETrainConfig
from layershift.dictionaries.sae.train import train_sae_on_shards
from layershift.study.schema import section_defaults
from tests.support.vectors import incoherent_atoms

torch.set_num_threads(1)

STAGES = ("pretrained", "finetuned")
TOKENS_PER_SENTENCE = 8
# tiny SAEs with the study's mechanics: TopK, 32 latents for 28 planted atoms a stage, a fixed step budget
SAE_SECTION = section_defaults("sae") | {
    "architecture": "topk",
    "d_sae": 32,
    "k": 4,
    "lr": 3e-3,
    "batch_size": 128,
    "training_tokens": 40_000,
    "init_rows": 1000,
}


def planted_activations(seed: int = 0, d: int = 32, n_tokens: int = 4000, noise: float = 0.02):
    """Two stages' activations of the same tokens: 20 shared atoms with the same codes in both, 8 atoms only
    the pretrained stage has (lost) and 8 only the fine-tuned stage has (new); each atom fires on 8 % of tokens."""
    rng = np.random.default_rng(seed)
    n_shared, n_own = 20, 8
    atoms = incoherent_atoms(rng, n_shared + 2 * n_own, d)
    dictionaries = (atoms[: n_shared + n_own], np.concatenate([atoms[:n_shared], atoms[n_shared + n_own :]]))

    def codes(n: int) -> np.ndarray:  # [tokens, n]
        return (rng.random((n_tokens, n)) < 0.08) * rng.uniform(0.5, 1.5, (n_tokens, n))

    shared = codes(n_shared)
    stage_codes = (np.concatenate([shared, codes(n_own)], 1), np.concatenate([shared, codes(n_own)], 1))
    return [
        (code @ dictionary + noise * rng.normal(size=(n_tokens, d))).astype(np.float32)
        for code, dictionary in zip(stage_codes, dictionaries, strict=True)
    ]


def write_layer(root: Path, stage_activations) -> CurveLayer:
    """Both stages' shards of one layer (8 tokens a sentence, several row groups) and the curve's settings."""
    for stage, acts in zip(STAGES, stage_activations, strict=True):
        n = len(acts)
        positions = np.arange(n, dtype=np.int32)
        with ShardWriter(root / stage, d_model=acts.shape[1], dtype="float32", rows_per_group=256) as writer:
            sentences = positions // TOKENS_PER_SENTENCE
            writer.append(sentences, positions % TOKENS_PER_SENTENCE, np.zeros(n, np.int32), ["t"] * n, acts)
    return CurveLayer(
        shard_dirs={stage: str(root / stage) for stage in STAGES},
        sae_section=SAE_SECTION,
        diff_cfg=DiffConfig(min_stable_features=10),
        stage_seeds={"pretrained": 0, "finetuned": 1},  # the study's pairing: each null differs only in data
        null_seeds={"pretrained": 1, "finetuned": 0},
        split_seed=3,
        layer=1,
        metadata={"model": "planted", "dataset": "toy"},
        threads=1,
    )


@pytest.fixture(scope="module")
def planted_layer(tmp_path_factory) -> CurveLayer:
    return write_layer(tmp_path_factory.mktemp("planted"), planted_activations())


def full_diff(layer: CurveLayer) -> dict:
    """What the study's diff of the layer says: the four SAEs on every row, diffed on every row."""
    n_rows = ShardReader(layer.shard_dirs["pretrained"]).n_rows
    return diff_on_rows(layer, train_point_saes(layer, n_rows), n_rows)


def test_stable_share_rises_with_rows_until_the_verdict_is_conclusive(planted_layer):
    curve = verdict_curve(planted_layer, [0.01, 0.1], full_diff(planted_layer))
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve["fraction"].tolist() == [0.01, 0.1, 1.0]
    assert curve["source"].tolist() == ["retrained", "retrained", "study diff"]
    assert curve["tokens"].tolist() == [40, 400, 4000]
    assert curve["rows"].tolist() == [5, 50, 500]  # sentences with a token among those rows
    # training_tokens fixes the steps: fewer rows, more passes over them
    passes = curve["passes"].tolist()
    assert passes[0] > passes[1] > passes[2] and (curve["train_tokens"] * curve["passes"] >= 40_000).all()
    for stage in STAGES:
        share = curve[f"stable_fraction_{stage}"]
        assert share.is_monotonic_increasing, (stage, share.tolist())
        assert share.iloc[-1] - share.iloc[0] >= 0.4
        assert curve[f"null_median_cosine_{stage}"].is_monotonic_increasing
    # tiny data: the SAEs memorise 40 rows, their seed nulls reproduce nothing, and no label is claimed
    assert curve["verdict"].iloc[0] == "inconclusive" and curve["n_stable_pretrained"].iloc[0] <= 2
    assert "stable" in curve["verdict_reason"].iloc[0] and np.isnan(curve["lost_fraction"].iloc[0])
    assert curve["verdict"].iloc[-1] == "conclusive", curve["verdict_reason"].iloc[-1]
    assert curve["lost_fraction"].iloc[-1] == pytest.approx(8 / 28, abs=0.1)  # 8 of 28 planted atoms


def test_structureless_activations_stay_inconclusive_however_many_rows(tmp_path):
    """Gaussian noise has no features to find: the seed nulls reproduce nothing beyond chance at any fraction."""
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(2000, 32)).astype(np.float32)
    layer = write_layer(tmp_path, [noise, noise + 0.05 * rng.normal(size=noise.shape).astype(np.float32)])
    curve = verdict_curve(layer, [0.1, 1.0])  # 1 is the study's diff: without its summary only 0.1 is run
    assert curve["fraction"].tolist() == [0.1]
    assert curve["verdict"].tolist() == ["inconclusive"]
    assert (
        curve["stable_fraction_pretrained"].iloc[0] < 0.5 and curve["stable_fraction_finetuned"].iloc[0] < 0.5
    )


def test_every_row_trains_the_study_sae(planted_layer):
    """A row limit at the layer's size changes nothing: the curve's SAE on all rows is the study's."""
    shard_dir = planted_layer.shard_dirs["pretrained"]
    cfg = SAEConfig(d_in=32, d_sae=16, architecture="topk", k=4)
    train = SAETrainConfig(lr=3e-3, epochs=1, batch_size=256, seed=0, split_seed=3, threads=1)
    study, study_metrics = train_sae_on_shards(shard_dir, cfg, train, progress=False)
    limited, limited_metrics = train_sae_on_shards(shard_dir, cfg, train, progress=False, max_rows=10**9)
    for name, weight in study.state_dict().items():
        torch.testing.assert_close(limited.state_dict()[name], weight, rtol=0, atol=0)
    assert limited_metrics["n_train_rows"] == study_metrics["n_train_rows"]
    head, _ = train_sae_on_shards(shard_dir, cfg, train, progress=False, max_rows=1000)
    assert not torch.equal(head.state_dict()["W_dec"], study.state_dict()["W_dec"])


def test_fraction_rows_and_the_rows_they_cover(planted_layer):
    assert fraction_rows(4000, 0.25) == 1000 and fraction_rows(4000, 1.0) == 4000
    assert fraction_rows(4000, 1e-6) == 2  # a held-out row and a training row
    assert fraction_rows(1001, 0.5) == 501  # rounded up
    assert fraction_rows(100, 0.07) == 7  # 0.07 x 100 is 7.000000000000001 in floats: not 8
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            fraction_rows(4000, bad)
    assert rows_and_tokens(planted_layer.shard_dirs["pretrained"], 12) == (2, 12)  # a sentence and a half
    assert rows_and_tokens(planted_layer.shard_dirs["finetuned"]) == (500, 4000)


def test_checkpoints_are_written_under_the_root_and_removed(planted_layer, tmp_path):
    fast = dataclasses.replace(planted_layer, sae_section=SAE_SECTION | {"training_tokens": 2000})
    saes = train_point_saes(fast, 1000, checkpoint_root=tmp_path / "checkpoints")
    assert sorted(saes) == ["finetuned", "finetuned_seed_null", "pretrained", "pretrained_seed_null"]
    assert (
        saes["finetuned_seed_null"].cfg.metadata["seed"] == 0
    )  # the fine-tuned stage's null: the study seed
    assert not (tmp_path / "checkpoints").exists()  # each SAE's checkpoints go once it is trained


def curve_tables(directory: Path) -> list[str]:
    """Two layers' curve tables as the rule writes them (the verdict's bar in the metadata)."""
    paths = []
    for layer, shares in ((1, [0.1, 0.4, 0.7]), (3, [0.05, 0.2, 0.45])):
        curve = pd.DataFrame(
            {
                "fraction": [0.25, 0.5, 1.0],
                "rows": [300, 600, 1200],
                "tokens": [10_000, 20_000, 40_000],
                "train_tokens": [9_000, 18_000, 36_000],
                "passes": [34, 17, 9],
                "source": ["retrained", "retrained", "study diff"],
                "verdict": [
                    "inconclusive",
                    "inconclusive",
                    "conclusive" if shares[-1] >= 0.5 else "inconclusive",
                ],
                "stable_fraction_pretrained": shares,
                "stable_fraction_finetuned": [share * 0.9 for share in shares],
                "n_stable_pretrained": [int(512 * share) for share in shares],
                "n_stable_finetuned": [int(460 * share) for share in shares],
            }
        )
        path = directory / f"layer{layer}.parquet"
        write_parquet(curve, path, {"model": "m", "dataset": "d", "layer": layer, "min_stable_share": 0.5})
        paths.append(str(path))
    return paths


def test_figure_and_report_section_read_the_curve_tables(tmp_path, monkeypatch):
    from layershift.report.figures import draw
    from layershift.report.html import verdict_curve_blocks

    monkeypatch.chdir(tmp_path)
    tables = curve_tables(tmp_path)
    png = Path("results/figures/verdict_curve/m_d.png")
    draw("fig_verdict_curve", tables, {"model": "m", "dataset": "d"}, {}, str(png), dpi=50)
    assert png.stat().st_size > 0 and png.with_suffix(".svg").stat().st_size > 0
    blocks = verdict_curve_blocks(tables, [str(png)])
    assert [block["kind"] for block in blocks] == ["text", "html", "figure"]
    assert "stable share, fine-tuned" in blocks[1]["html"] and "token rows" in blocks[1]["html"]
    assert blocks[1]["html"].count("<tr>") == 6  # three fractions of two layers (the heading row is styled)
