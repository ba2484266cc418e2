"""SAE feature statistics over a layer's token shards (paper §3.2.4): variance ranking and top tokens.

The paper ranks an SAE's latents ("features") by the variance of their activations over samples and reads
the most variable ones through the tokens that activate them most. Both passes here stream the shards one row
group at a time, so they never hold the ``[rows, d_sae]`` feature matrix in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from layershift.data.shards import ShardReader, activations
from layershift.dictionaries.codes import FiringCount, encode_batch, encoded_batches
from layershift.dictionaries.sae.model import SAE

TOP_TOKEN_COLUMNS = ["feature", "rank", "sentence_id", "position", "token", "activation", "context"]


@torch.no_grad()
def feature_statistics(sae: SAE, shard_dir: str | os.PathLike, batch_size: int = 4096) -> pd.DataFrame:
    """One streamed pass: per feature ``mean``, ``variance``, ``firing_rate``, ``max_activation`` and ``rank``.

    ``variance`` is the population variance (ddof=0) over all token rows, merged batch by batch with Chan et
    al.'s parallel update in float64 (no sum-of-squares cancellation). ``firing_rate`` is the fraction of rows
    where the feature is > 0. ``rank`` 1 is the highest variance (ties: lower feature index first). Rows are in
    feature order.
    """
    device = sae.W_enc.device
    d_sae = sae.cfg.d_sae
    firing = FiringCount(d_sae, device)
    mean = torch.zeros(d_sae, dtype=torch.float64, device=device)
    m2 = torch.zeros(d_sae, dtype=torch.float64, device=device)  # sum of squared deviations from the mean
    peak = torch.full((d_sae,), -torch.inf, dtype=torch.float64, device=device)
    for codes in encoded_batches(sae, ShardReader(shard_dir).iter_batches(batch_size)):
        codes = codes.double()  # [b, d_sae]
        seen, batch_rows = firing.rows, len(codes)
        batch_mean = codes.mean(dim=0)
        delta = batch_mean - mean
        total = seen + batch_rows
        mean += delta * (batch_rows / total)
        m2 += (codes - batch_mean).pow(2).sum(dim=0) + delta.pow(2) * (seen * batch_rows / total)
        firing.add(codes)
        peak = torch.maximum(peak, codes.max(dim=0).values)
    if firing.rows == 0:
        raise ValueError(f"{shard_dir}: no rows")
    variance = (m2 / firing.rows).cpu().numpy()
    return pd.DataFrame(
        {
            "feature": np.arange(d_sae),
            "mean": mean.cpu().numpy(),
            "variance": variance,
            "firing_rate": firing.rates(),
            "max_activation": peak.cpu().numpy(),
            "rank": variance_rank(variance),
        }
    )


def variance_rank(variance: np.ndarray) -> np.ndarray:
    """1-based rank by descending variance; equal variances keep feature order."""
    order = np.argsort(-variance, kind="stable")
    rank = np.empty(len(variance), dtype=np.int64)
    rank[order] = np.arange(1, len(variance) + 1)
    return rank


@torch.no_grad()
def top_activating_tokens(
    sae: SAE,
    shard_dir: str | os.PathLike,
    features: Sequence[int],
    n_tokens: int = 10,
    context: int = 5,
) -> pd.DataFrame:
    """For each feature in ``features`` the ``n_tokens`` token rows where it is largest (and > 0).

    Columns: feature, rank (1 = strongest), sentence_id, position, token, activation, context. ``context``
    holds the tokens ``position - context .. position + context`` of the same sentence, separated by spaces,
    with the token itself marked ``**like this**``. Features that never fire contribute no rows. Two streamed
    passes: one keeps a running top-n per feature, one collects the tokens of the winning sentences.
    """
    features = [int(f) for f in features]
    if any(not 0 <= f < sae.cfg.d_sae for f in features):
        raise ValueError(f"features must be in [0, {sae.cfg.d_sae}), got {features}")
    if not features:
        return pd.DataFrame(columns=TOP_TOKEN_COLUMNS)
    reader = ShardReader(shard_dir)
    values, sentence_ids, positions = running_top_rows(sae, reader, features, n_tokens)
    winners = pd.DataFrame(
        {
            "feature": np.repeat(np.asarray(features), values.shape[0]),
            "rank": np.tile(np.arange(1, values.shape[0] + 1), len(features)),
            "sentence_id": sentence_ids.T.reshape(-1),
            "position": positions.T.reshape(-1),
            "activation": values.T.reshape(-1),
        }
    )
    winners = winners[winners["activation"] > 0].reset_index(drop=True)
    tokens = sentence_tokens(reader, set(winners["sentence_id"].tolist()))
    places = list(zip(winners["sentence_id"], winners["position"], strict=True))
    winners["token"] = [tokens[sentence][position] for sentence, position in places]
    winners["context"] = [
        context_string(tokens[sentence], position, context) for sentence, position in places
    ]
    return winners[TOP_TOKEN_COLUMNS]


def running_top_rows(
    sae: SAE, reader: ShardReader, features: list[int], n_tokens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stream ``reader``; return ``[n, F]`` arrays (activation, sentence_id, position) of each feature's top rows."""
    device = sae.W_enc.device
    index = torch.tensor(features, device=device)
    best_value = torch.empty(0, len(features), dtype=torch.float32, device=device)
    best_sentence = torch.empty(0, len(features), dtype=torch.int64, device=device)
    best_position = torch.empty(0, len(features), dtype=torch.int64, device=device)
    for table in reader.iter_tables(["sentence_id", "position", "activation"]):
        if not table.num_rows:
            continue
        codes = encode_batch(sae, activations(table))[:, index]  # [rows, d_in] -> [rows, F]
        sentence = torch.from_numpy(table.column("sentence_id").to_numpy().astype(np.int64)).to(device)
        position = torch.from_numpy(table.column("position").to_numpy().astype(np.int64)).to(device)
        value = torch.cat([best_value, codes.float()])  # [n + rows, F]
        sentence = torch.cat([best_sentence, sentence[:, None].expand_as(codes)])
        position = torch.cat([best_position, position[:, None].expand_as(codes)])
        best_value, order = value.topk(min(n_tokens, len(value)), dim=0)  # [n, F]
        best_sentence, best_position = sentence.gather(0, order), position.gather(0, order)
    return best_value.cpu().numpy(), best_sentence.cpu().numpy(), best_position.cpu().numpy()


def sentence_tokens(reader: ShardReader, sentence_ids: set[int]) -> dict[int, dict[int, str]]:
    """``{sentence_id: {position: token}}`` for the requested sentences (one streamed pass, no activations)."""
    found: dict[int, dict[int, str]] = {s: {} for s in sentence_ids}
    if not sentence_ids:
        return found
    wanted = np.fromiter(sentence_ids, dtype=np.int64)
    for table in reader.iter_tables(["sentence_id", "position", "token"]):
        sentence = table.column("sentence_id").to_numpy().astype(np.int64)
        rows = np.flatnonzero(np.isin(sentence, wanted))
        if not len(rows):
            continue
        position = table.column("position").to_numpy()[rows]
        token = table.column("token").take(rows).to_pylist()
        for sentence_id, place, text in zip(sentence[rows].tolist(), position.tolist(), token, strict=True):
            found[sentence_id][place] = text
    return found


def context_string(tokens: dict[int, str], position: int, width: int) -> str:
    """Tokens ``position ± width`` of one sentence, space-separated, the centre one marked ``**token**``."""
    words = [
        f"**{tokens[place]}**" if place == position else tokens[place]
        for place in range(position - width, position + width + 1)
        if place in tokens
    ]
    return " ".join(words)


def top_token_lists(
    sae: SAE, shard_dir: str | os.PathLike, features: Sequence[int], n_tokens: int = 5
) -> dict[int, list[str]]:
    """``{feature: its strongest distinct tokens}`` (strongest first), for labelling features in tables."""
    rows = top_activating_tokens(sae, shard_dir, features, n_tokens=n_tokens * 3, context=0)
    lists = {int(f): [] for f in features}
    for feature, token in zip(rows["feature"], rows["token"], strict=True):
        tokens = lists[int(feature)]
        if token not in tokens and len(tokens) < n_tokens:
            tokens.append(token)
    return lists


def attach_top_tokens(labels: pd.DataFrame, saes: dict, shard_dirs: dict, n_tokens: int = 5) -> pd.DataFrame:
    """Add a ``top_tokens`` column to a per-feature table with ``side`` and ``feature`` columns."""
    labels = labels.copy()
    labels["top_tokens"] = [[] for _ in range(len(labels))]
    for side, sae in saes.items():
        mask = (labels["side"] == side) & (labels["label"] != "dead")
        lists = top_token_lists(
            sae, shard_dirs[side], labels.loc[mask, "feature"].astype(int).tolist(), n_tokens
        )
        labels.loc[mask, "top_tokens"] = pd.Series(
            [lists[int(f)] for f in labels.loc[mask, "feature"]], index=labels.index[mask]
        )
    return labels
