"""Hidden-state extraction: one streamed pass of a dataset through an encoder, every layer at once.

Layer ``L`` is ``hidden_states[L]`` (0 = embedding output, ``L`` = output of block ``L``). For each stage
the pass writes, atomically:

    means.parquet          per layer: dataset-mean token vector (all tokens, the paper's, and content tokens
                           only: the tokenizer's special tokens left out), mean sentence vector, counts and
                           the special-token share
    sentences.parquet      per sentence: its masked-mean vector at every layer (for sentence CKA / cosine)
    token_sample.parquet   a seeded bottom-k sample of token vectors at every layer (for token CKA)
    tokens/layer{L}/       token rows of the SAE layers, as Parquet shards (see shards.py)
    tokens/kinds.parquet   the tokenizer's kind of each of those rows (special / punctuation / word / subword)

Sentence order is a seeded permutation of the split, so the pretrained and fine-tuned passes see the same
sentences in the same order and their token rows line up one to one. Padding never enters any statistic.
Memory is bounded by one batch plus the fixed-size token sample, whatever the dataset size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from layershift.core.device import resolve_device, set_threads
from layershift.core.io import atomic_dir, atomic_path, encode_metadata, vector_compression, write_parquet
from layershift.data.batching import length_grouped_batches
from layershift.data.shards import ARROW_DTYPES, NUMPY_DTYPES, ShardWriter
from layershift.data.tokens import encode_with_kinds, token_strings
from layershift.models.sources import load_encoder


@dataclass
class ExtractConfig:
    batch_size: int = 64  # sentences per forward pass
    max_length: int = 128  # tokens per sentence (longer ones are truncated)
    max_sentences: int = 5000  # sentences passed through the model
    max_tokens: int = 200_000  # token rows written per SAE layer
    token_sample: int = 5000  # token vectors kept per layer for token-level CKA
    dtype: str = "float16"  # storage dtype of token rows
    rows_per_group: int = 4096  # Parquet row-group size of the shards
    groups_per_shard: int = 16  # row groups per shard file
    seed: int = 13  # sentence order and token sample
    threads: int | None = None  # torch CPU threads
    device: str = "auto"  # auto = cuda if available


# Batches are sorted by length within runs of this many, so a prefix of the stream is still a prefix of the
# (seeded, shuffled) sentence order, up to one run.
SORT_RUN_BATCHES = 16


def sentence_order(n_sentences: int, cfg: ExtractConfig) -> np.ndarray:
    """Seeded permutation of sentence indices, capped to ``max_sentences``."""
    return np.random.default_rng(cfg.seed).permutation(n_sentences)[: cfg.max_sentences]


def token_priorities(sentence_ids: np.ndarray, positions: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic pseudo-random priority per (sentence, position), identical across stages."""
    key = (
        (sentence_ids.astype(np.uint64) << np.uint64(20))
        ^ positions.astype(np.uint64)
        ^ np.uint64(seed * 0x9E3779B1)
    )
    key = (key ^ (key >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    key = (key ^ (key >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    return key ^ (key >> np.uint64(33))


class TokenSample:
    """Bottom-k sample of token vectors across all layers, by ``token_priorities`` (fixed memory).

    The vectors live in ``k`` preallocated slots (in ``dtype``, the shards' precision); a batch writes only
    its newly admitted tokens, into the slots of the tokens they evict (no copy of the whole sample per batch).
    """

    def __init__(self, k: int, n_layers: int, d_model: int, dtype=np.float32) -> None:
        self.k = k
        self.priority = np.zeros(0, np.uint64)  # [filled] priorities of the tokens in slots 0..filled-1
        self.ids = np.zeros((0, 2), np.int64)  # [filled, 2] (sentence_id, position)
        self.vectors = np.empty((k, n_layers, d_model), dtype)  # [k, layers, d] slots

    def offer(self, priority: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Merge candidate tokens ``vectors [n, layers, d]`` and keep the k lowest priorities."""
        filled = len(self.priority)
        if filled >= self.k and len(priority):
            keep = priority < self.priority.max()
            priority, ids, vectors = priority[keep], ids[keep], vectors[keep]
        if not len(priority):
            return
        every = np.concatenate([self.priority, priority])  # [filled + n]
        chosen = (
            np.arange(len(every)) if len(every) <= self.k else np.argpartition(every, self.k - 1)[: self.k]
        )
        kept_slots = chosen[chosen < filled]  # old tokens stay in their slots
        admitted = chosen[chosen >= filled] - filled  # rows of this batch that enter the sample
        # slots 0..m-1 are used afterwards; the free ones among them (evicted, then never used) take the newcomers
        m = len(chosen)
        free_slots = np.setdiff1d(np.arange(m), kept_slots)  # len(free_slots) == len(admitted)
        self.vectors[free_slots] = vectors[admitted]
        new_priority, new_ids = np.empty(m, np.uint64), np.empty((m, 2), np.int64)
        new_priority[kept_slots], new_ids[kept_slots] = self.priority[kept_slots], self.ids[kept_slots]
        new_priority[free_slots], new_ids[free_slots] = priority[admitted], ids[admitted]
        self.priority, self.ids = new_priority, new_ids

    def sorted(self):
        n = len(self.priority)
        order = np.lexsort((self.ids[:, 1], self.ids[:, 0]))
        return self.ids[order], self.vectors[:n][order]


def _list_column(vectors: np.ndarray, dtype: str = "float32") -> pa.Array:
    """``[n, d]`` array as a fixed-size-list Arrow column of ``dtype`` (float32 or float16)."""
    flat = np.ascontiguousarray(vectors, dtype=NUMPY_DTYPES[dtype]).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=ARROW_DTYPES[dtype]), vectors.shape[1])


def write_token_sample(ids: np.ndarray, vectors: np.ndarray, path: Path, metadata: dict, dtype: str) -> None:
    """The token sample (ids ``[n, 2]``: sentence, position; vectors ``[n, layers, d]``) as Arrow columns.

    Built column by column (a DataFrame of per-row arrays costs ~1 s per call), no dictionary pages."""
    columns = {"sentence_id": pa.array(ids[:, 0], pa.int64()), "position": pa.array(ids[:, 1], pa.int64())}
    columns |= {f"layer_{layer}": _list_column(vectors[:, layer], dtype) for layer in range(vectors.shape[1])}
    table = pa.table(columns).replace_schema_metadata(encode_metadata({**metadata, "dtype": dtype}))
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(
            table,
            tmp,
            use_dictionary=False,
            write_statistics=[
                "sentence_id",
                "position",
            ],  # statistics on float16 vectors cost ~40 % of a write
            compression=vector_compression(table.schema),
        )


class SentenceWriter:
    """Streams per-sentence mean vectors of every layer into one Parquet file, one row group per batch."""

    def __init__(
        self, path: Path, n_layers: int, d_model: int, metadata: dict, dtype: str = "float32"
    ) -> None:
        fields = [("sentence_id", pa.int32()), ("n_tokens", pa.int32())]
        fields += [(f"layer_{layer}", pa.list_(ARROW_DTYPES[dtype], d_model)) for layer in range(n_layers)]
        self.schema = pa.schema(fields, metadata=encode_metadata({**metadata, "dtype": dtype}))
        self.writer = pq.ParquetWriter(
            path,
            self.schema,
            use_dictionary=False,  # dictionary pages on float16 vectors cost ~2.5x the write time
            write_statistics=["sentence_id", "n_tokens"],
            compression=vector_compression(self.schema),
        )
        self.n_layers, self.dtype = n_layers, dtype

    def write(self, sentence_ids: np.ndarray, n_tokens: np.ndarray, means: np.ndarray) -> None:
        """``means`` is ``[batch, layers, d]``."""
        arrays = [pa.array(sentence_ids, pa.int32()), pa.array(n_tokens, pa.int32())]
        arrays += [_list_column(means[:, layer], self.dtype) for layer in range(self.n_layers)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def summarise_batch(hidden: tuple, mask: torch.Tensor, special: torch.Tensor, dtype: str) -> dict:
    """What one forward pass leaves behind, as NumPy arrays, padding never counted.

    ``hidden`` holds ``layers`` tensors ``[batch, seq, d]``; ``mask`` and ``special`` are ``[batch, seq]``.
    Gathers the real tokens layer by layer (no padded ``[batch, layers, seq, d]`` copy), sums them per
    sentence with one ``index_add_`` and casts to the storage ``dtype`` in torch, several times faster than
    NumPy's float16 cast. Returns ``tokens [tokens, layers, d]`` at ``dtype`` (rows in the mask's
    row-major order); ``sentence_means`` and ``sentence_sums`` ``[batch, layers, d]`` float32
    and ``special_sum [layers, d]`` float64 for the dataset means.
    """
    flat = mask.bool()
    tokens = torch.stack([h[flat].float() for h in hidden], 1)  # [tokens, layers, d], float32
    n, n_layers, d = tokens.shape
    row = torch.arange(len(mask), device=mask.device)[:, None].expand_as(mask)[flat]  # [tokens] sentence row
    flat_sums = torch.zeros(len(mask), n_layers * d, device=tokens.device).index_add_(
        0, row, tokens.view(n, -1)
    )
    sentence_sums = flat_sums.view(-1, n_layers, d)  # [batch, layers * d] -> [batch, layers, d]
    special_sum = tokens[special[flat]].sum(0)  # [layers, d]
    sentence_means = sentence_sums / flat.sum(1)[:, None, None]  # [batch, layers, d]
    return {
        "tokens": tokens.to(TORCH_DTYPES[dtype]).cpu().numpy(),
        "sentence_means": sentence_means.cpu().numpy(),
        "sentence_sums": sentence_sums.cpu().numpy(),
        "special_sum": special_sum.double().cpu().numpy(),
    }


@torch.inference_mode()
def extract_activations(
    model_dir: str | Path,
    texts: list[str],
    sae_layers: list[int],
    out_dir: str | Path,
    cfg: ExtractConfig,
    metadata: dict | None = None,
    progress: bool = True,
) -> dict:
    """Run ``texts`` through the encoder in ``model_dir`` and write the stage's activation artifacts."""
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model, tokenizer = load_encoder(model_dir, device)
    n_layers = model.config.num_hidden_layers + 1
    d_model = model.config.hidden_size
    bad = [layer for layer in sae_layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"SAE layers {bad} out of range 0..{n_layers - 1} for {model_dir}")
    metadata = {**(metadata or {}), "n_layers": n_layers - 1, "d_model": d_model, "model_dir": str(model_dir)}

    order = sentence_order(len(texts), cfg)
    tokenized = encode_with_kinds(tokenizer, [texts[i] for i in order], cfg.max_length)
    encoded, special_masks, token_kinds = tokenized["input_ids"], tokenized["special"], tokenized["kinds"]
    lengths = np.array([len(ids) for ids in encoded])
    batches = length_grouped_batches(lengths, cfg.batch_size, SORT_RUN_BATCHES)

    out_dir = Path(out_dir)
    token_sum = np.zeros((n_layers, d_model), np.float64)
    special_sum = np.zeros((n_layers, d_model), np.float64)  # special tokens only (content = all - special)
    n_special_total = 0
    kinds_written: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
    sentence_sum = np.zeros((n_layers, d_model), np.float64)
    n_tokens_total = 0
    sample = TokenSample(cfg.token_sample, n_layers, d_model, NUMPY_DTYPES[cfg.dtype])
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir / "tokens") as tokens_dir, atomic_path(out_dir / "sentences.parquet") as sent_tmp:
        writers = {
            layer: ShardWriter(
                tokens_dir / f"layer{layer}",
                d_model,
                cfg.dtype,
                cfg.rows_per_group,
                cfg.groups_per_shard,
                {**metadata, "layer": layer},
            )
            for layer in sae_layers
        }
        sentences = SentenceWriter(sent_tmp, n_layers, d_model, metadata, cfg.dtype)
        for batch in tqdm(
            batches, desc=f"extract {metadata.get('stage', '')}", disable=not progress, mininterval=5
        ):
            ids = [encoded[i] for i in batch]
            padded = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
            longest = padded["input_ids"].shape[1]
            special = np.zeros((len(batch), longest), bool)
            for row, i in enumerate(batch):  # same side as the padding, so rows line up with the mask
                n = len(special_masks[i])
                at = slice(0, n) if tokenizer.padding_side == "right" else slice(longest - n, longest)
                special[row, at] = special_masks[i]
            mask = padded["attention_mask"].to(device)
            hidden = model(
                input_ids=padded["input_ids"].to(device), attention_mask=mask, output_hidden_states=True
            ).hidden_states
            kept = summarise_batch(hidden, mask, torch.from_numpy(special).to(device), cfg.dtype)
            tokens = kept["tokens"]  # [tokens, layers, d] at the storage dtype
            token_sum += kept["sentence_sums"].sum(0, dtype=np.float64)
            special_sum += kept["special_sum"]
            n_special_total += int(special.sum())
            sentence_sum += kept["sentence_means"].sum(0, dtype=np.float64)
            n_tokens_total += len(tokens)

            sentence_ids = order[batch].astype(np.int32)
            n_tok = mask.sum(1).cpu().numpy()
            sid = np.repeat(sentence_ids, n_tok)
            pos = np.concatenate([np.arange(n) for n in n_tok]).astype(np.int32)
            token_ids = padded["input_ids"][padded["attention_mask"].bool()].numpy()
            sentences.write(sentence_ids, n_tok, kept["sentence_means"])
            sample.offer(token_priorities(sid, pos, cfg.seed), np.stack([sid, pos], 1), tokens)
            room = cfg.max_tokens - writers[sae_layers[0]].rows_appended if writers else 0
            if room > 0:
                strings = token_strings(tokenizer, token_ids[:room].tolist())
                for layer, writer in writers.items():
                    writer.append(sid[:room], pos[:room], token_ids[:room], strings, tokens[:room, layer])
                kinds = [kind for i in batch for kind in token_kinds[i]][:room]
                kinds_written.append((sid[:room], pos[:room], kinds))
        sentences.close()
        token_rows = {layer: writer.close() for layer, writer in writers.items()}
        if writers:
            import pandas as pd

            kinds_frame = pd.DataFrame(
                {
                    "sentence_id": np.concatenate([k[0] for k in kinds_written] or [np.zeros(0, np.int32)]),
                    "position": np.concatenate([k[1] for k in kinds_written] or [np.zeros(0, np.int32)]),
                    "kind": [kind for k in kinds_written for kind in k[2]],
                }
            )
            write_parquet(kinds_frame, tokens_dir / "kinds.parquet", metadata)
    seconds = time.perf_counter() - started

    n_sentences = len(order)
    means = {
        "layer": np.arange(n_layers),
        "token_mean": list(token_sum / max(n_tokens_total, 1)),
        "content_token_mean": list((token_sum - special_sum) / max(n_tokens_total - n_special_total, 1)),
        "sentence_mean": list(sentence_sum / max(n_sentences, 1)),
        "n_tokens": np.full(n_layers, n_tokens_total),
        "n_sentences": np.full(n_layers, n_sentences),
        "n_special_tokens": np.full(n_layers, n_special_total),
        "special_share": np.full(n_layers, n_special_total / max(n_tokens_total, 1)),
    }
    import pandas as pd

    write_parquet(pd.DataFrame(means), out_dir / "means.parquet", metadata)
    write_token_sample(*sample.sorted(), out_dir / "token_sample.parquet", metadata, cfg.dtype)
    return {
        "n_sentences": n_sentences,
        "n_tokens": n_tokens_total,
        "n_special_tokens": n_special_total,
        "token_rows": token_rows,
        "seconds": seconds,
        "tokens_per_second": n_tokens_total / seconds if seconds else None,
        "device": str(device),
    }
