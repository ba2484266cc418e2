"""Layer-wise similarity of pretrained vs fine-tuned representations.

The paper's measure is the cosine of the two dataset-mean activation vectors per layer, averaged over all
non-padding tokens, the tokenizer's special tokens ([CLS]/[SEP], <s>/</s>) included. Their share of the
tokens depends on sentence length, and they can change more than the words do, so the same cosine over
content tokens only (``cosine_of_content_means``) and the special-token share (``special_share``) stand
beside it. The cosine of means is blind to anything but the mean, so beside it too: linear CKA (Kornblith et al. 2019) on paired sentence vectors and on
a paired token sample, and the mean per-sentence cosine. CKA is computed from streamed cross-products,
so no layer's sentence matrix is held in memory. The sentence-level measures get a percentile interval from
a seeded bootstrap over the sentences (``similarity_interval``), in ``{measure}_lo`` / ``{measure}_hi``
columns beside them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from layershift.analysis.similarity_interval import (
    BootstrapSettings,
    place_beside_points,
    similarity_intervals,
)
from layershift.core.io import read_metadata, read_table


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of paired rows ``x [n, d1]`` and ``y [n, d2]`` (reference implementation); NaN where it is
    undefined (fewer than two rows, or a side without variance: both Gram matrices must be non-zero)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(x.T @ y) ** 2
    return _cka_ratio(cross, np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y), len(x))


def _cka_ratio(cross: float, norms: float, n: int) -> float:
    """``cross / norms``, NaN for fewer than two rows or a zero-variance side (it read 0.0: no similarity)."""
    if n < 2 or not norms > 0:
        return float("nan")
    return float(cross / norms)


class StreamingCKA:
    """Linear CKA accumulated batch by batch from sums and cross-products, in float64."""

    def __init__(self, d_x: int, d_y: int) -> None:
        self.n = 0
        self.sum_x, self.sum_y = np.zeros(d_x), np.zeros(d_y)
        self.xx, self.yy, self.xy = np.zeros((d_x, d_x)), np.zeros((d_y, d_y)), np.zeros((d_x, d_y))

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = x.astype(np.float64), y.astype(np.float64)
        self.n += len(x)
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xx += x.T @ x
        self.yy += y.T @ y
        self.xy += x.T @ y

    def value(self) -> float:
        mx, my = self.sum_x / self.n, self.sum_y / self.n
        xx = self.xx - self.n * np.outer(mx, mx)  # centred X^T X
        yy = self.yy - self.n * np.outer(my, my)
        xy = self.xy - self.n * np.outer(mx, my)
        return _cka_ratio(np.sum(xy**2), np.linalg.norm(xx) * np.linalg.norm(yy), self.n)


def _vectors(table, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float64)


def sentence_measures(pre_path: str | Path, ft_path: str | Path) -> pd.DataFrame:
    """Per layer: linear CKA and mean per-sentence cosine of paired sentence vectors (streamed)."""
    pre, ft = pq.ParquetFile(pre_path), pq.ParquetFile(ft_path)
    layers = [name for name in pre.schema_arrow.names if name.startswith("layer_")]
    d = pre.schema_arrow.field(layers[0]).type.list_size
    ckas = {name: StreamingCKA(d, d) for name in layers}
    cos_sum = dict.fromkeys(layers, 0.0)
    n = 0
    for group in range(pre.num_row_groups):
        group_pre, group_ft = pre.read_row_group(group), ft.read_row_group(group)
        ids_pre, ids_ft = (table.column("sentence_id").to_numpy() for table in (group_pre, group_ft))
        if not np.array_equal(ids_pre, ids_ft):
            raise ValueError(f"{pre_path} and {ft_path} do not hold the same sentences in the same order")
        for name in layers:
            x, y = _vectors(group_pre, name), _vectors(group_ft, name)  # [sentences, d] each
            ckas[name].update(x, y)
            cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
            cos_sum[name] += float(cos.sum())
        n += group_pre.num_rows
    return pd.DataFrame(
        {
            "layer": [int(name.split("_")[1]) for name in layers],
            "cka_sentences": [ckas[name].value() for name in layers],
            "mean_sentence_cosine": [cos_sum[name] / n for name in layers],
            "n_sentences": n,
        }
    )


def token_measures(pre_path: str | Path, ft_path: str | Path) -> pd.DataFrame:
    """Per layer: linear CKA of the paired token sample (same (sentence, position) keys on both sides)."""
    pre, ft = read_table(pre_path), read_table(ft_path)
    merged = pre.merge(ft, on=["sentence_id", "position"], suffixes=("_pre", "_ft"))
    layers = sorted(int(c.split("_")[1]) for c in pre.columns if c.startswith("layer_"))
    rows = []
    for layer in layers:
        x = np.stack(merged[f"layer_{layer}_pre"].to_numpy()).astype(np.float64)  # stored at shard precision
        y = np.stack(merged[f"layer_{layer}_ft"].to_numpy()).astype(np.float64)
        rows.append({"layer": layer, "cka_tokens": linear_cka(x, y), "n_token_sample": len(merged)})
    return pd.DataFrame(rows)


def paired_cosines(pretrained: pd.DataFrame, finetuned: pd.DataFrame, column: str) -> list[float]:
    """Per layer (row), the cosine of the two stages' vectors in ``column``."""
    return [
        cosine(np.asarray(vector_pretrained), np.asarray(vector_finetuned))
        for vector_pretrained, vector_finetuned in zip(pretrained[column], finetuned[column], strict=True)
    ]


def mean_measures(pre_path: str | Path, ft_path: str | Path) -> pd.DataFrame:
    """Per layer: the paper's cosine of dataset-mean token vectors, the same over content tokens only
    (specials excluded) with the special-token share, and the cosine of mean sentence vectors."""
    pre, ft = read_table(pre_path), read_table(ft_path)
    table = pd.DataFrame(
        {
            "layer": pre["layer"],
            "cosine_of_means": paired_cosines(pre, ft, "token_mean"),
            "cosine_of_sentence_means": paired_cosines(pre, ft, "sentence_mean"),
            "n_tokens": pre["n_tokens"],
        }
    )
    if (
        "content_token_mean" in pre.columns and "content_token_mean" in ft.columns
    ):  # older extractions lack it
        table.insert(2, "cosine_of_content_means", paired_cosines(pre, ft, "content_token_mean"))
        table.insert(3, "special_share", pre["special_share"].to_numpy())
    return table


def layer_similarity(
    pre_dir: str | Path,
    ft_dir: str | Path,
    model: str,
    dataset: str,
    bootstrap: BootstrapSettings | None = None,
) -> pd.DataFrame:
    """All measures per layer for one model x dataset, from the two stages' extraction outputs, with the
    sentence bootstrap's ``{measure}_lo`` / ``{measure}_hi`` beside the measures it covers (none for
    ``bootstrap.bootstrap == 0``; ``None``: the schema's settings)."""
    pre_dir, ft_dir = Path(pre_dir), Path(ft_dir)
    bootstrap = bootstrap or BootstrapSettings()
    table = mean_measures(pre_dir / "means.parquet", ft_dir / "means.parquet")
    table = table.merge(
        sentence_measures(pre_dir / "sentences.parquet", ft_dir / "sentences.parquet"), on="layer"
    )
    table = table.merge(
        token_measures(pre_dir / "token_sample.parquet", ft_dir / "token_sample.parquet"), on="layer"
    )
    if bootstrap.bootstrap:
        intervals = similarity_intervals(
            pre_dir / "sentences.parquet", ft_dir / "sentences.parquet", bootstrap
        )
        table = place_beside_points(table.merge(intervals, on="layer"))
    n_layers = int(read_metadata(pre_dir / "means.parquet").get("n_layers", table["layer"].max()))
    table.insert(0, "dataset", dataset)
    table.insert(0, "model", model)
    table.insert(3, "relative_depth", table["layer"] / n_layers)
    return table


MEASURES = {
    "cosine_of_means": "cosine of mean token vectors (the paper's measure)",
    "cosine_of_content_means": "cosine of mean content-token vectors (specials excluded)",
    "cka_sentences": "linear CKA of sentence vectors",
    "cka_tokens": "linear CKA of a paired token sample",
    "mean_sentence_cosine": "mean per-sentence cosine",
}
