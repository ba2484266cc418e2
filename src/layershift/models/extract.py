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
from layershift.study.schema import schema_default


@dataclass
class ExtractConfig:
    batch_size: int = schema_default("activations", "batch_size")  # sentences per forward pass
    max_length: int = 128  # tokens per sentence (longer ones are truncated)
    max_sentences: int = schema_default("activations", "max_sentences")  # sentences passed through the model
    max_tokens: int = schema_default("activations", "max_tokens")  # token rows written per SAE layer
    token_sample: int = 5000  # token vectors kept per layer for token-level CKA
    dtype: str = schema_default("activations", "dtype")  # storage dtype of token rows
    # Parquet row-group size of the shards
    rows_per_group: int = schema_default("activations", "rows_per_group")
    groups_per_shard: int = schema_default("activations", "groups_per_shard")  # row groups per shard file
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


@dataclass
class TokenizedSentences:
    """The sentences of one pass in stream order, tokenised once (lists of per-sentence lists)."""

    order: np.ndarray  # [n] index into the dataset's texts of each sentence (sentence_id)
    input_ids: list[list[int]]
    special: list[list[int]]  # 1 on the tokenizer's special tokens
    kinds: list[list[str]]  # special / punctuation / word / subword per token

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """Length-grouped batches of positions into the stream (:data:`SORT_RUN_BATCHES` batches a run)."""
        lengths = np.array([len(ids) for ids in self.input_ids])
        return length_grouped_batches(lengths, batch_size, SORT_RUN_BATCHES)


def tokenize_in_order(tokenizer, texts: list[str], cfg: ExtractConfig) -> TokenizedSentences:
    """The seeded :func:`sentence_order` of ``texts``, tokenised with the tokenizer's own token kinds."""
    order = sentence_order(len(texts), cfg)
    tokenized = encode_with_kinds(tokenizer, [texts[i] for i in order], cfg.max_length)
    return TokenizedSentences(order, tokenized["input_ids"], tokenized["special"], tokenized["kinds"])


def pad_batch(tokenizer, sentences: TokenizedSentences, batch: np.ndarray) -> tuple[dict, np.ndarray]:
    """The batch's ids padded the tokenizer's way (``input_ids``, ``attention_mask`` ``[batch, seq]``) and its
    special-token mask ``[batch, seq]``, padded on the same side so its rows line up with the attention mask."""
    padded = tokenizer.pad({"input_ids": [sentences.input_ids[i] for i in batch]}, return_tensors="pt")
    longest = padded["input_ids"].shape[1]
    special = np.zeros((len(batch), longest), bool)
    for row, i in enumerate(batch):
        n = len(sentences.special[i])
        at = slice(0, n) if tokenizer.padding_side == "right" else slice(longest - n, longest)
        special[row, at] = sentences.special[i]
    return padded, special


@dataclass
class DatasetSums:
    """Float64 sums over every batch of a pass, for the dataset means of ``means.parquet``."""

    token_sum: np.ndarray  # [layers, d] every real token
    special_sum: np.ndarray  # [layers, d] special tokens only (content = all - special)
    sentence_sum: np.ndarray  # [layers, d] sentence mean vectors
    n_tokens: int = 0
    n_special: int = 0

    @classmethod
    def zeros(cls, n_layers: int, d_model: int) -> DatasetSums:
        return cls(*(np.zeros((n_layers, d_model), np.float64) for _ in range(3)))

    def add(self, kept: dict, special: np.ndarray) -> None:
        """One batch's :func:`summarise_batch` output and its special-token mask ``[batch, seq]``."""
        self.token_sum += kept["sentence_sums"].sum(0, dtype=np.float64)
        self.special_sum += kept["special_sum"]
        self.n_special += int(special.sum())
        self.sentence_sum += kept["sentence_means"].sum(0, dtype=np.float64)
        self.n_tokens += len(kept["tokens"])

    def means_frame(self, n_sentences: int):
        """One row per layer: token, content-token and sentence means, the counts and the special share."""
        import pandas as pd

        n_layers = len(self.token_sum)
        content_tokens = max(self.n_tokens - self.n_special, 1)
        means = {
            "layer": np.arange(n_layers),
            "token_mean": list(self.token_sum / max(self.n_tokens, 1)),
            "content_token_mean": list((self.token_sum - self.special_sum) / content_tokens),
            "sentence_mean": list(self.sentence_sum / max(n_sentences, 1)),
            "n_tokens": np.full(n_layers, self.n_tokens),
            "n_sentences": np.full(n_layers, n_sentences),
            "n_special_tokens": np.full(n_layers, self.n_special),
            "special_share": np.full(n_layers, self.n_special / max(self.n_tokens, 1)),
        }
        return pd.DataFrame(means)


class TokenRowWriter:
    """Token rows of the SAE layers (one shard directory per layer) and the kind of each row, written until
    ``max_tokens`` rows are in."""

    def __init__(
        self, tokens_dir: Path, sae_layers: list[int], d_model: int, cfg: ExtractConfig, metadata: dict
    ):
        self.writers = {
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
        self.kinds_path, self.metadata, self.max_tokens = (
            tokens_dir / "kinds.parquet",
            metadata,
            cfg.max_tokens,
        )
        self.kinds_written: list[tuple[np.ndarray, np.ndarray, list[str]]] = []

    def append(self, tokenizer, sid, pos, token_ids, tokens: np.ndarray, kinds: list[list[str]]) -> None:
        """The batch's tokens (``tokens [tokens, layers, d]``, ids and coordinates ``[tokens]``, ``kinds`` per
        sentence), cut to the rows still wanted."""
        room = self.max_tokens - next(iter(self.writers.values())).rows_appended if self.writers else 0
        if room <= 0:
            return
        strings = token_strings(tokenizer, token_ids[:room].tolist())
        for layer, writer in self.writers.items():
            writer.append(sid[:room], pos[:room], token_ids[:room], strings, tokens[:room, layer])
        self.kinds_written.append((sid[:room], pos[:room], [kind for row in kinds for kind in row][:room]))

    def close(self) -> dict[int, int]:
        """Finish the shards and write ``kinds.parquet``; returns the rows written per layer."""
        token_rows = {layer: writer.close() for layer, writer in self.writers.items()}
        if self.writers:
            import pandas as pd

            written = self.kinds_written
            kinds_frame = pd.DataFrame(
                {
                    "sentence_id": np.concatenate([k[0] for k in written] or [np.zeros(0, np.int32)]),
                    "position": np.concatenate([k[1] for k in written] or [np.zeros(0, np.int32)]),
                    "kind": [kind for k in written for kind in k[2]],
                }
            )
            write_parquet(kinds_frame, self.kinds_path, self.metadata)
        return token_rows


def token_coordinates(sentence_ids: np.ndarray, n_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sentence_id, position) of every real token of a batch, in the mask's row-major order: ``[tokens]``
    each, from the batch's ``sentence_ids`` and real-token counts ``n_tokens`` ``[batch]``."""
    sid = np.repeat(sentence_ids, n_tokens)
    pos = np.concatenate([np.arange(n) for n in n_tokens]).astype(np.int32)
    return sid, pos


@dataclass
class StageWriters:
    """Where a pass writes each batch: the dataset sums, the token sample, the sentence rows, the token rows."""

    sums: DatasetSums
    sample: TokenSample
    sentences: SentenceWriter
    token_rows: TokenRowWriter


def extract_batch(
    model, tokenizer, device, sentences: TokenizedSentences, batch, cfg, out: StageWriters
) -> None:
    """One forward pass over ``batch`` (positions into the stream) with every hidden state, into ``out``."""
    padded, special = pad_batch(tokenizer, sentences, batch)
    mask = padded["attention_mask"].to(device)  # [batch, seq]
    hidden = model(
        input_ids=padded["input_ids"].to(device), attention_mask=mask, output_hidden_states=True
    ).hidden_states  # layers x [batch, seq, d]
    kept = summarise_batch(hidden, mask, torch.from_numpy(special).to(device), cfg.dtype)
    tokens = kept["tokens"]  # [tokens, layers, d] at the storage dtype
    out.sums.add(kept, special)

    sentence_ids = sentences.order[batch].astype(np.int32)
    n_tok = mask.sum(1).cpu().numpy()
    sid, pos = token_coordinates(sentence_ids, n_tok)
    token_ids = padded["input_ids"][padded["attention_mask"].bool()].numpy()  # [tokens]
    out.sentences.write(sentence_ids, n_tok, kept["sentence_means"])
    out.sample.offer(token_priorities(sid, pos, cfg.seed), np.stack([sid, pos], 1), tokens)
    out.token_rows.append(tokenizer, sid, pos, token_ids, tokens, [sentences.kinds[i] for i in batch])


def check_sae_layers(sae_layers: list[int], n_layers: int, model_dir) -> None:
    """Fail unless every SAE layer is a hidden state of the model (0 = embeddings .. ``n_layers - 1``)."""
    bad = [layer for layer in sae_layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"SAE layers {bad} out of range 0..{n_layers - 1} for {model_dir}")


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
    check_sae_layers(sae_layers, n_layers, model_dir)
    metadata = {**(metadata or {}), "n_layers": n_layers - 1, "d_model": d_model, "model_dir": str(model_dir)}
    sentences = tokenize_in_order(tokenizer, texts, cfg)

    out_dir = Path(out_dir)
    sums = DatasetSums.zeros(n_layers, d_model)
    sample = TokenSample(cfg.token_sample, n_layers, d_model, NUMPY_DTYPES[cfg.dtype])
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir / "tokens") as tokens_dir, atomic_path(out_dir / "sentences.parquet") as sent_tmp:
        token_rows = TokenRowWriter(tokens_dir, sae_layers, d_model, cfg, metadata)
        out = StageWriters(
            sums, sample, SentenceWriter(sent_tmp, n_layers, d_model, metadata, cfg.dtype), token_rows
        )
        description = f"extract {metadata.get('stage', '')}"
        for batch in tqdm(
            sentences.batches(cfg.batch_size), desc=description, disable=not progress, mininterval=5
        ):
            extract_batch(model, tokenizer, device, sentences, batch, cfg, out)
        out.sentences.close()
        rows_written = token_rows.close()
    seconds = time.perf_counter() - started

    n_sentences = len(sentences.order)
    write_parquet(sums.means_frame(n_sentences), out_dir / "means.parquet", metadata)
    write_token_sample(*sample.sorted(), out_dir / "token_sample.parquet", metadata, cfg.dtype)
    return {
        "n_sentences": n_sentences,
        "n_tokens": sums.n_tokens,
        "n_special_tokens": sums.n_special,
        "token_rows": rows_written,
        "seconds": seconds,
        "tokens_per_second": sums.n_tokens / seconds if seconds else None,
        "device": str(device),
    }
