"""Texts as model input: tokenised once into a right-padded id matrix, then cut into batches padded only to
their own longest row (length-grouped by :mod:`layershift.data.batching`). Shared by fine-tuning, evaluation
and the throughput benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from layershift.core.errors import DataError
from layershift.data.batching import length_grouped_batches, shuffled_length_grouped_batches


@dataclass(frozen=True)
class Encodings:
    """Texts tokenised once: a right-padded id matrix plus the true length of every row."""

    input_ids: np.ndarray  # [n, longest] int64 token ids, right-padded with pad_id
    lengths: np.ndarray  # [n] int64 real tokens per row ([CLS] and [SEP] included)
    labels: np.ndarray | None  # [n] int64 class ids, or None for unlabelled texts
    pad_id: int  # the tokenizer's padding id

    def __len__(self) -> int:
        return len(self.lengths)


class Batch(NamedTuple):
    """One padded batch; ``index`` maps its rows back to rows of the Encodings it came from."""

    input_ids: torch.Tensor  # [b, L] int64, L = longest row in this batch
    attention_mask: torch.Tensor  # [b, L] int64, 1 on real tokens
    labels: torch.Tensor | None  # [b] int64
    index: np.ndarray  # [b] rows of the source Encodings
    n_tokens: int  # real (non-pad) tokens in the batch

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device`` (asynchronous copies when the tensors are pinned)."""
        if device.type == "cpu":
            return self
        ids, mask = (t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask))
        labels = None if self.labels is None else self.labels.to(device, non_blocking=True)
        return self._replace(input_ids=ids, attention_mask=mask, labels=labels)


def encode_texts(
    tokenizer, texts: Sequence[str], max_length: int, labels: Sequence[int] | None = None
) -> Encodings:
    """Tokenise ``texts`` once (truncated to ``max_length``) into a right-padded id matrix."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no padding token")
    rows = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.full((len(rows), int(lengths.max(initial=1))), tokenizer.pad_token_id, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    label_array = None if labels is None else np.asarray(labels, dtype=np.int64)
    if label_array is not None and label_array.shape != lengths.shape:
        raise ValueError(f"{len(label_array)} labels for {len(lengths)} texts")
    return Encodings(ids, lengths, label_array, int(tokenizer.pad_token_id))


def encode_split(
    tokenizer, df: pd.DataFrame, n_classes: int, max_length: int, what: str = "split"
) -> Encodings:
    """Tokenise a labelled split (columns ``text``, ``label``) after checking it."""
    texts, labels = split_texts_and_labels(df, n_classes, what)
    return encode_texts(tokenizer, texts, max_length, labels)


def split_texts_and_labels(
    df: pd.DataFrame, n_classes: int, what: str = "split"
) -> tuple[list[str], np.ndarray]:
    """The ``text`` and ``label`` columns of a split, checked: non-empty, labels in 0..n_classes-1."""
    missing = {"text", "label"} - set(df.columns)
    if missing:
        raise DataError(f"{what} lacks column(s) {sorted(missing)}")
    if len(df) == 0:
        raise DataError(f"{what} has no rows")
    labels = df["label"].to_numpy().astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(f"{what} has labels outside 0..{n_classes - 1}")
    return df["text"].astype(str).tolist(), labels


def collate(enc: Encodings, index: np.ndarray, pin_memory: bool = False) -> Batch:
    """Rows ``index`` of ``enc`` padded to their own longest row."""
    lengths = enc.lengths[index]
    width = int(lengths.max())
    ids = torch.from_numpy(np.ascontiguousarray(enc.input_ids[index, :width]))  # [b, L]
    mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]).long()  # [b, L]
    labels = None if enc.labels is None else torch.from_numpy(enc.labels[index])
    if pin_memory:
        ids, mask = ids.pin_memory(), mask.pin_memory()
        labels = None if labels is None else labels.pin_memory()
    return Batch(ids, mask, labels, index, int(lengths.sum()))


def make_batches(
    enc: Encodings,
    batch_size: int,
    seed: int | None = None,
    epoch: int = 0,
    megabatch_mult: int = 50,
    pin_memory: bool = False,
) -> list[Batch]:
    """The batches of one epoch: length-grouped and shuffled from (seed, epoch), or length-sorted if seed is None.

    The same arguments always give the same batches, so a benchmark can replay exactly what training saw.
    """
    if seed is None:
        groups = length_grouped_batches(enc.lengths, batch_size, longest_first=True)
    else:
        rng = np.random.default_rng([seed, epoch])
        groups = shuffled_length_grouped_batches(enc.lengths, batch_size, rng, megabatch_mult)
    return [collate(enc, g, pin_memory) for g in groups]
