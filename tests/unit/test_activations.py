"""Hidden-state extraction on a tiny BERT: exact masked means, shard contents, caps, cross-stage alignment."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from layershift.core.io import read_metadata
from layershift.data.shards import ShardReader, activations
from layershift.models.extract import ExtractConfig, TokenSample, extract_activations, token_priorities
from tests.support.models import make_tiny_bert, perturbed_copy, tiny_sentences

N_LAYERS, HIDDEN = 2, 32
SAE_LAYERS = [0, 2]
CFG = ExtractConfig(
    batch_size=4, max_length=10, max_sentences=1000, max_tokens=10_000, token_sample=30, dtype="float32",
    rows_per_group=16, groups_per_shard=2, seed=5, threads=1, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return tiny_sentences(20, seed=0)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    pretrained = make_tiny_bert(root / "pre", n_layers=N_LAYERS, hidden=HIDDEN, heads=2, seed=0)
    return {"pre": pretrained, "ft": perturbed_copy(pretrained, root / "ft", scale=0.05, seed=1)}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, models, texts) -> dict:
    """Both models' extraction outputs (same config), plus a run of the first with a small token cap."""
    root = tmp_path_factory.mktemp("acts")
    out = {}
    for name, model_dir in models.items():
        out[name] = root / name
        out[name + "_info"] = extract_activations(
            model_dir, texts, SAE_LAYERS, out[name], CFG, {"stage": name}, progress=False
        )
    out["capped"] = root / "capped"
    out["capped_info"] = extract_activations(
        models["pre"],
        texts,
        SAE_LAYERS,
        out["capped"],
        replace(CFG, max_tokens=100),
        {"stage": "pre"},
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def reference(models, texts) -> dict:
    """Direct ``output_hidden_states=True`` forward pass of the whole set (no streaming, no sorting)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["pre"], local_files_only=True)
    model = AutoModel.from_pretrained(models["pre"], local_files_only=True).eval()
    batch = tokenizer(texts, truncation=True, max_length=CFG.max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    states = torch.stack(hidden, 1).numpy().astype(np.float64)  # [sentences, layers, seq, d]
    mask = batch["attention_mask"].numpy().astype(bool)  # [sentences, seq]
    assert (~mask).any(), "the reference batch must contain padding"
    return {"states": states, "mask": mask, "input_ids": batch["input_ids"].numpy()}


def test_token_and_sentence_means_match_a_direct_forward_pass(extracted, reference):
    states, mask = reference["states"], reference["mask"]
    token_mean = states.transpose(0, 2, 1, 3)[mask].mean(0)  # [tokens, layers, d] -> [layers, d]
    sentence_vectors = (states * mask[:, None, :, None]).sum(2) / mask.sum(1)[
        :, None, None
    ]  # [sent, layers, d]
    means = pd.read_parquet(extracted["pre"] / "means.parquet")
    assert means["layer"].tolist() == list(range(N_LAYERS + 1))
    np.testing.assert_allclose(np.stack(means["token_mean"]), token_mean, atol=1e-5)
    np.testing.assert_allclose(np.stack(means["sentence_mean"]), sentence_vectors.mean(0), atol=1e-5)
    assert (means["n_tokens"] == mask.sum()).all() and (means["n_sentences"] == len(mask)).all()
    meta = read_metadata(extracted["pre"] / "means.parquet")
    assert meta["n_layers"] == N_LAYERS and meta["d_model"] == HIDDEN and meta["stage"] == "pre"


def test_sentence_vectors_match_the_reference(extracted, reference):
    states, mask = reference["states"], reference["mask"]
    expected = (states * mask[:, None, :, None]).sum(2) / mask.sum(1)[:, None, None]
    table = pq.read_table(extracted["pre"] / "sentences.parquet")
    ids = table.column("sentence_id").to_numpy()
    assert sorted(ids) == list(range(len(mask)))
    np.testing.assert_array_equal(table.column("n_tokens").to_numpy(), mask.sum(1)[ids])
    for layer in range(N_LAYERS + 1):
        got = np.stack(table.column(f"layer_{layer}").to_pylist())
        np.testing.assert_allclose(got, expected[ids, layer], atol=1e-5)


def test_shards_hold_every_non_pad_token_with_its_hidden_state(extracted, reference):
    states, mask, input_ids = reference["states"], reference["mask"], reference["input_ids"]
    assert extracted["pre_info"]["token_rows"] == {layer: int(mask.sum()) for layer in SAE_LAYERS}
    for layer in SAE_LAYERS:
        reader = ShardReader(extracted["pre"] / "tokens" / f"layer{layer}")
        assert reader.n_rows == mask.sum() and reader.d_model == HIDDEN
        assert len(reader.paths) > 1 and reader.metadata["layer"] == layer
        table = reader.read_all()
        sid, pos = table.column("sentence_id").to_numpy(), table.column("position").to_numpy()
        assert len(set(zip(sid.tolist(), pos.tolist(), strict=True))) == len(sid), "each token once"
        assert mask[sid, pos].all(), "no padding position"
        np.testing.assert_array_equal(table.column("token_id").to_numpy(), input_ids[sid, pos])
        np.testing.assert_allclose(activations(table), states[sid, layer, pos], atol=1e-5)
    assert not (extracted["pre"] / "tokens" / "layer1").exists(), "only the SAE layers get shards"


def test_token_cap_is_exact_and_a_prefix_of_the_full_stream(extracted):
    assert extracted["capped_info"]["token_rows"] == {layer: 100 for layer in SAE_LAYERS}
    for layer in SAE_LAYERS:
        capped = ShardReader(extracted["capped"] / "tokens" / f"layer{layer}").read_all()
        full = ShardReader(extracted["pre"] / "tokens" / f"layer{layer}").read_all()
        assert capped.num_rows == 100
        assert capped.drop(["activation"]).equals(full.slice(0, 100).drop(["activation"]))
    # the cap limits token rows only: the means still see every token
    full_means = pd.read_parquet(extracted["pre"] / "means.parquet")
    capped_means = pd.read_parquet(extracted["capped"] / "means.parquet")
    np.testing.assert_allclose(
        np.stack(capped_means["token_mean"]), np.stack(full_means["token_mean"]), atol=1e-6
    )


def test_two_models_give_row_aligned_outputs(extracted):
    for layer in SAE_LAYERS:
        pre = ShardReader(extracted["pre"] / "tokens" / f"layer{layer}")
        ft = ShardReader(extracted["ft"] / "tokens" / f"layer{layer}")
        assert [n for *_, n in pre.groups] == [n for *_, n in ft.groups]
        keys = ["sentence_id", "position", "token_id", "token"]
        assert pre.read_all(keys).equals(ft.read_all(keys))
        assert not np.allclose(activations(pre.read_all()), activations(ft.read_all())), "the models differ"
    pre_s = pq.ParquetFile(extracted["pre"] / "sentences.parquet")
    ft_s = pq.ParquetFile(extracted["ft"] / "sentences.parquet")
    assert pre_s.num_row_groups == ft_s.num_row_groups == 5  # 20 sentences / batch_size 4
    for group in range(pre_s.num_row_groups):
        a = pre_s.read_row_group(group, columns=["sentence_id", "n_tokens"])
        assert a.equals(ft_s.read_row_group(group, columns=["sentence_id", "n_tokens"]))


def test_token_sample_is_the_seeded_bottom_k_and_shared_by_both_models(extracted, reference):
    pre = pd.read_parquet(extracted["pre"] / "token_sample.parquet")
    ft = pd.read_parquet(extracted["ft"] / "token_sample.parquet")
    assert len(pre) == CFG.token_sample
    assert pre[["sentence_id", "position"]].equals(ft[["sentence_id", "position"]])
    sid, pos = np.nonzero(reference["mask"])
    priority = token_priorities(sid, pos, CFG.seed)
    lowest = np.argsort(priority)[: CFG.token_sample]
    assert set(zip(pre["sentence_id"], pre["position"], strict=True)) == set(
        zip(sid[lowest], pos[lowest], strict=True)
    )
    states = reference["states"]
    for layer in range(N_LAYERS + 1):
        np.testing.assert_allclose(
            np.stack(pre[f"layer_{layer}"]), states[pre["sentence_id"], layer, pre["position"]], atol=1e-5
        )


def test_max_sentences_and_float16_storage(tmp_path, models, texts):
    cfg = replace(CFG, max_sentences=7, dtype="float16", token_sample=1000)
    info = extract_activations(models["pre"], texts, [1], tmp_path / "out", cfg, progress=False)
    assert info["n_sentences"] == 7
    sentences = pd.read_parquet(tmp_path / "out" / "sentences.parquet")
    assert len(sentences) == 7 and sentences["sentence_id"].is_unique
    reader = ShardReader(tmp_path / "out" / "tokens" / "layer1")
    assert (
        reader.metadata["dtype"] == "float16"
        and reader.n_rows == sentences["n_tokens"].sum() == info["n_tokens"]
    )
    assert set(reader.read_all(["sentence_id"]).column("sentence_id").to_pylist()) == set(
        sentences["sentence_id"]
    )
    sample = pq.read_table(tmp_path / "out" / "token_sample.parquet")
    assert len(sample) == info["n_tokens"]
    for name in ("token_sample.parquet", "sentences.parquet"):  # stored at the shards' precision
        assert pq.read_schema(tmp_path / "out" / name).field("layer_1").type.value_type == pa.float16()
        assert read_metadata(tmp_path / "out" / name)["dtype"] == "float16"


def test_out_of_range_sae_layer_is_refused(tmp_path, models, texts):
    with pytest.raises(ValueError, match=r"SAE layers \[3\] out of range 0..2"):
        extract_activations(models["pre"], texts, [1, 3], tmp_path / "out", CFG, progress=False)


@pytest.mark.parametrize("k", [1, 7, 50, 500])
def test_token_sample_keeps_the_bottom_k_across_batches_of_any_size(k):
    rng = np.random.default_rng(k)
    sizes = [0, 3, 1, 40, 2, 120, 5, 0, 9]  # smaller and larger than k, empty batches
    sample = TokenSample(k, n_layers=2, d_model=3, dtype=np.float16)
    seen_priority, seen_ids, seen_vectors = [], [], []
    start = 0
    for size in sizes:
        priority = rng.integers(0, 2**40, size, dtype=np.uint64)
        ids = np.stack([np.arange(start, start + size), np.zeros(size, np.int64)], 1)
        vectors = rng.normal(size=(size, 2, 3))
        sample.offer(priority, ids, vectors)
        seen_priority.append(priority), seen_ids.append(ids), seen_vectors.append(vectors)
        start += size
    priority, ids, vectors = map(np.concatenate, (seen_priority, seen_ids, seen_vectors))
    lowest = np.sort(np.argsort(priority, kind="stable")[:k])  # ids are in arrival order, so sorted = by id
    got_ids, got_vectors = sample.sorted()
    np.testing.assert_array_equal(got_ids, ids[lowest])
    assert got_vectors.dtype == np.float16
    np.testing.assert_array_equal(got_vectors, vectors[lowest].astype(np.float16))
