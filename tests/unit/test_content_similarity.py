"""Cosine of means over all tokens (the paper's) vs over content tokens only, with controls: a fine-tune that
changes only the special tokens (the two must differ, content must stay 1 at the embeddings), one that
changes only content tokens' embeddings identically for both, and a family with no special tokens at all
(the two must be the same numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.analysis.similarity import layer_similarity
from layershift.models.extract import ExtractConfig, extract_activations
from tests.support.models import make_tiny_family, tiny_sentences

CFG = ExtractConfig(
    batch_size=4, max_length=16, max_sentences=100, max_tokens=1000, token_sample=30, dtype="float32",
    rows_per_group=16, groups_per_shard=2, seed=5, threads=1, device="cpu",
)  # fmt: skip


def edited_copy(source, target, rows: list[int], scale: float = 3.0):
    """A copy whose input-embedding rows ``rows`` get seeded noise; everything else unchanged."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source, local_files_only=True)
    emb = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        emb[rows] += torch.randn(len(rows), emb.shape[1], generator=generator) * scale
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(target)
    return target


def similarity_of(tmp_path, family: str, edit) -> pd.DataFrame:
    from transformers import AutoTokenizer

    pre = make_tiny_family(tmp_path / "pre", family, seed=0)
    tok = AutoTokenizer.from_pretrained(pre, local_files_only=True)
    ft = edited_copy(pre, tmp_path / "ft", edit(tok))
    texts = tiny_sentences(12, seed=1, max_words=6)
    for name, model in (("pre", pre), ("ft", ft)):
        extract_activations(model, texts, [1], tmp_path / name / "acts", CFG, {"stage": name}, progress=False)
    return layer_similarity(tmp_path / "pre/acts", tmp_path / "ft/acts", family, "d")


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_only_special_tokens_changed_shows_in_all_tokens_not_content(tmp_path, family):
    table = similarity_of(tmp_path, family, lambda tok: [tok.cls_token_id, tok.sep_token_id])
    layer0 = table[table["layer"] == 0].iloc[0]
    assert layer0["cosine_of_content_means"] == pytest.approx(1.0, abs=1e-6)  # content embeddings untouched
    assert layer0["cosine_of_means"] < 0.99
    share = table["special_share"].iloc[0]
    n_tokens = table["n_tokens"].iloc[0]
    assert share == pytest.approx(2 * 12 / n_tokens)  # two specials per sentence


def test_no_special_tokens_the_two_measures_agree(tmp_path):
    """Control: GPT-2's tokenizer adds nothing, so a change anywhere moves both measures the same."""
    table = similarity_of(tmp_path, "gpt2", lambda tok: list(range(10, 60)))
    assert (table["special_share"] == 0).all()
    np.testing.assert_allclose(table["cosine_of_means"], table["cosine_of_content_means"], atol=1e-9)
    assert table["cosine_of_means"].min() < 0.999  # the edit did change something


def test_content_mean_is_the_mean_over_non_special_tokens(tmp_path):
    """The stored content mean equals a direct computation with the tokenizer's special_tokens_mask."""
    from transformers import AutoModel, AutoTokenizer

    model_dir = make_tiny_family(tmp_path / "m", "deberta-v2", seed=0)
    texts = tiny_sentences(6, seed=2, max_words=5)
    extract_activations(model_dir, texts, [1], tmp_path / "acts", CFG, {}, progress=False)
    means = pd.read_parquet(tmp_path / "acts/means.parquet")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tok(
                text, return_special_tokens_mask=True, return_tensors="pt", max_length=16, truncation=True
            )
            keep = enc.pop("special_tokens_mask")[0] == 0
            hidden = model(**enc, output_hidden_states=True).hidden_states[2][0]
            rows.append(hidden[keep])
    expected = torch.cat(rows).mean(0).numpy()
    np.testing.assert_allclose(np.asarray(means.loc[2, "content_token_mean"]), expected, atol=1e-5)
    assert 0 < means.loc[0, "special_share"] < 1


def _table(all_tokens, content, shares=(0.2, 0.1)):
    rows = []
    for d, (dataset, share) in enumerate(zip(("news", "movies"), shares, strict=True)):
        for layer in range(3):
            rows.append(
                {
                    "model": "m",
                    "dataset": dataset,
                    "layer": layer,
                    "cosine_of_means": all_tokens[d][layer],
                    "cosine_of_content_means": content[d][layer],
                    "special_share": share,
                }
            )
    return pd.DataFrame(rows)


def test_report_line_where_the_measures_disagree():
    from layershift.report.findings import content_token_finding

    table = _table(all_tokens=[[1, 0.9, -0.03], [1, 0.9, 0.3]], content=[[1, 0.9, 0.5], [1, 0.9, 0.3]])
    finding = content_token_finding(table)
    assert finding.holds is False
    assert (
        "disagree by more than 0.1 in 1 of 6" in finding.sentence and "m / news / layer 2" in finding.sentence
    )
    assert "news 20.0%" in finding.sentence
    assert "least similar dataset at the last layer is news over all tokens but movies" in finding.sentence


def test_report_line_where_the_measures_agree():
    from layershift.report.findings import content_token_finding

    table = _table(all_tokens=[[1, 0.9, 0.2], [1, 0.9, 0.3]], content=[[1, 0.92, 0.22], [1, 0.9, 0.31]])
    finding = content_token_finding(table)
    assert finding.holds is True and finding.sentence.startswith("The cosine of means")
    assert "agree within 0.1 everywhere" in finding.sentence and "least similar" not in finding.sentence
    assert content_token_finding(table.drop(columns=["cosine_of_content_means"])) is None  # old tables


def test_shard_token_kinds_are_the_tokenizers(tmp_path):
    """Extraction writes the tokenizer's kind of every shard row; feature shares over the shards use them,
    so RoBERTa's <s>/</s> count as special and its Ġ-less continuations as subwords."""
    from transformers import AutoTokenizer

    from layershift.data.tokens import encode_with_kinds
    from layershift.models.probes import token_kind_shares

    model_dir = make_tiny_family(tmp_path / "m", "roberta", seed=0)
    texts = ["This movie, unbelievablefun!", "Great story."]
    extract_activations(model_dir, texts, [1], tmp_path / "acts", CFG, {}, progress=False)
    kinds = pd.read_parquet(tmp_path / "acts/tokens/kinds.parquet")
    tok = AutoTokenizer.from_pretrained(model_dir)
    expected = encode_with_kinds(tok, texts, CFG.max_length)["kinds"]
    for sentence, position, kind in kinds[["sentence_id", "position", "kind"]].itertuples(index=False):
        assert expected[sentence][position] == kind
    assert {"special", "punctuation", "word", "subword"} <= set(kinds["kind"])

    class Identity:
        def encode(self, x):
            return x.abs()  # positive everywhere, so every share is defined

    shares = token_kind_shares(Identity(), tmp_path / "acts/tokens/layer1", [0, 1])
    assert {"share_special", "share_subword", "share_punctuation", "share_word"} <= set(shares.columns)
    np.testing.assert_allclose(shares.filter(like="share_").sum(1), 1.0)
