"""Planted ground truth for dictionary tests: unit-length rows and nearly orthogonal random atoms."""

from __future__ import annotations


def unit(m):
    """Rows of ``m`` scaled to unit length."""
    import numpy as np

    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def incoherent_atoms(rng, n: int, d: int, max_cos: float = 0.3):
    """``n`` random unit vectors in R^d with pairwise |cos| < ``max_cos`` (rejection sampling)."""
    import numpy as np

    atoms: list = []
    while len(atoms) < n:
        v = unit(rng.normal(size=d))
        if not atoms or np.abs(np.array(atoms) @ v).max() < max_cos:
            atoms.append(v)
    return np.array(atoms)
