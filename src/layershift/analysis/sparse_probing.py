"""Sparse probing: how few SAE latents carry the task.

Per layer, sentences are represented by their mean over real tokens, of the hidden state (the dense probe) or
of the SAE's latents (the sparse probes). The dense probe is the study's linear probe (standardised L2
logistic regression, as :func:`layershift.models.evaluate.evaluate_linear_probe`) on all of the hidden state;
a ``k``-sparse probe is the same probe on the ``k`` latents most predictive of the label, ranked on the train
split only by the ANOVA F statistic of their pooled values (latents constant on train, whose F is undefined,
rank last). Every probe is fitted on train and scored on test. A sparse probe that nearly matches the dense one
at small ``k`` says the task sits in a few features of the dictionary.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from layershift.analysis.layer_codes import layer_codes, mean_over_real_tokens
from layershift.dictionaries.sae.model import SAE
from layershift.models.batches import Batch

SPARSE_PROBING_COLUMNS = ["layer", "probe", "k", "latents", "accuracy", "macro_f1", "n_train", "n_test"]


class PooledStates:
    """One layer's hidden state and SAE latents averaged over each sentence's real tokens, in source-row order,
    filled one batch at a time."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.hidden: np.ndarray | None = None  # [n, d] float64
        self.latents: np.ndarray | None = None  # [n, d_sae] float32

    def update(self, batch: Batch, hidden: torch.Tensor, codes: torch.Tensor) -> None:
        """Add one batch: hidden ``[b, L, d]`` and latents ``[b, L, d_sae]`` of its rows."""
        if self.hidden is None:
            self.hidden = np.zeros((self.n_rows, hidden.shape[-1]))
            self.latents = np.zeros((self.n_rows, codes.shape[-1]), dtype=np.float32)
        self.hidden[batch.index] = mean_over_real_tokens(hidden, batch.attention_mask).cpu().numpy()
        self.latents[batch.index] = mean_over_real_tokens(codes, batch.attention_mask).float().cpu().numpy()


def pooled_states(
    classifier: torch.nn.Module, batches: Sequence[Batch], n_rows: int, saes: Mapping[int, SAE]
) -> dict[int, PooledStates]:
    """``{layer: PooledStates}`` of a split of ``n_rows`` sentences, every layer from one pass of the batches."""
    pooled = {layer: PooledStates(n_rows) for layer in saes}
    for batch, layer, hidden, codes in layer_codes(classifier, batches, saes):
        pooled[layer].update(batch, hidden, codes)
    return pooled


def rank_latents(latents: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Latent ids ``[d_sae]`` by decreasing ANOVA F statistic of ``latents`` ``[n, d_sae]`` against ``labels``
    ``[n]``; latents whose F is undefined (constant ones) last, ties in id order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant latents: sklearn warns and returns NaN
        statistic, _ = f_classif(latents, labels)
    statistic = np.where(np.isfinite(statistic), statistic, -np.inf)
    return np.argsort(-statistic, kind="stable")


def probe_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    seed: int,
    C: float = 1.0,
    max_iter: int = 5000,
) -> dict:
    """``accuracy`` and ``macro_f1`` on test of a standardised L2 logistic regression fitted on train."""
    scaler = StandardScaler().fit(train_features)
    probe = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    probe.fit(scaler.transform(train_features), train_labels)
    predicted = probe.predict(scaler.transform(test_features))
    return {
        "accuracy": float(accuracy_score(test_labels, predicted)),
        "macro_f1": float(f1_score(test_labels, predicted, average="macro", zero_division=0)),
    }


def layer_sparse_probing(
    train: PooledStates,
    train_labels: np.ndarray,
    test: PooledStates,
    test_labels: np.ndarray,
    ks: Iterable[int],
    seed: int,
) -> list[dict]:
    """The dense probe and a ``k``-sparse probe per ``k`` of one layer (``k`` above the dictionary's size uses
    every latent): rows ``probe``, ``k`` (NaN for dense), ``latents``, ``accuracy``, ``macro_f1``, ``n_train``,
    ``n_test``."""
    sizes = {"n_train": len(train_labels), "n_test": len(test_labels)}
    dense = probe_scores(train.hidden, train_labels, test.hidden, test_labels, seed)
    rows = [{"probe": "dense", "k": float("nan"), "latents": [], **dense, **sizes}]
    ranking = rank_latents(train.latents, train_labels)
    for k in ks:
        chosen = ranking[: int(k)]
        scores = probe_scores(
            train.latents[:, chosen], train_labels, test.latents[:, chosen], test_labels, seed
        )
        rows.append({"probe": "sparse", "k": float(k), "latents": chosen.tolist(), **scores, **sizes})
    return rows


def sparse_probing(
    classifier: torch.nn.Module,
    train_batches: Sequence[Batch],
    train_labels: np.ndarray,
    test_batches: Sequence[Batch],
    test_labels: np.ndarray,
    saes: Mapping[int, SAE],
    ks: Iterable[int],
    seed: int,
) -> pd.DataFrame:
    """Dense and ``k``-sparse probes of every layer of ``saes`` (``{layer: SAE}`` on the classifier's device);
    labels are the splits' class ids in source-row order. Columns: ``SPARSE_PROBING_COLUMNS``."""
    train = pooled_states(classifier, train_batches, len(train_labels), saes)
    test = pooled_states(classifier, test_batches, len(test_labels), saes)
    return sparse_probing_table(
        (layer, layer_sparse_probing(train[layer], train_labels, test[layer], test_labels, ks, seed))
        for layer in saes
    )


def sparse_probing_table(layer_rows: Iterable[tuple[int, list[dict]]]) -> pd.DataFrame:
    """One table of ``[(layer, rows of layer_sparse_probing), ...]``, columns ``SPARSE_PROBING_COLUMNS``."""
    rows = [{"layer": layer, **row} for layer, rows_of_layer in layer_rows for row in rows_of_layer]
    return pd.DataFrame(rows, columns=SPARSE_PROBING_COLUMNS)
