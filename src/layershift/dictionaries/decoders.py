"""Decoder geometry: a dictionary's decoder rows as float64 numpy and the cosines between two sets of rows."""

from __future__ import annotations

from typing import Any

import numpy as np


def decoder_rows(model: Any) -> np.ndarray:
    """An SAE's decoder ``[n_features, d]`` as float64 numpy (accepts a module with ``W_dec`` or an array)."""
    import torch  # here, not at the top: the cosine helpers serve jobs that never load torch

    weights = getattr(model, "W_dec", model)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().to("cpu", torch.float64).numpy()
    return np.asarray(weights, dtype=np.float64)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def decoder_cosine_matrix(W_dec_a: np.ndarray, W_dec_b: np.ndarray) -> np.ndarray:
    """Cosine between every A and every B decoder row: ``[n_a, d] x [n_b, d] -> [n_a, n_b]``."""
    return unit_rows(W_dec_a) @ unit_rows(W_dec_b).T
