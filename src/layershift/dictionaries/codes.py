"""Sparse codes of raw activation batches: encode them with an SAE, count on how many rows each latent fires.

The diff's firing rates, the settings sweep's, the feature statistics and the SAE evaluation all stream a
layer's batches through ``sae.encode`` and count firing (code > 0). :func:`encode_batch` is the one encoding
step and :class:`FiringCount` the one count: whole numbers held in float64 (exact), divided by the rows on the
device the counts live on, in the order the batches come. ``sae`` is any module with ``W_enc`` and ``encode``
(raw activations in, codes out), so this module needs no SAE class.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from layershift.core.training import to_tensor


@torch.no_grad()
def encode_batch(sae: torch.nn.Module, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``sae.encode`` of one raw batch ``[b, d_in] -> [b, d_sae]``, on the SAE's device and in its dtype."""
    return sae.encode(to_tensor(batch, sae.W_enc.device))


def encoded_batches(sae: torch.nn.Module, batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
    """:func:`encode_batch` of every batch, in order: ``[b, d_in] -> [b, d_sae]`` each."""
    for batch in batches:
        yield encode_batch(sae, batch)


class FiringCount:
    """Rows seen and, per latent, on how many of them it fired (code > 0)."""

    def __init__(self, n_latents: int, device: torch.device | str = "cpu") -> None:
        self.rows = 0
        self.fired = torch.zeros(n_latents, dtype=torch.float64, device=device)  # [n_latents], whole numbers

    def add(self, codes: torch.Tensor) -> None:
        """Count one batch of codes ``[b, n_latents]`` (moved to the counts' device first)."""
        self.fired += (codes.to(self.fired.device) > 0).sum(dim=0)
        self.rows += len(codes)

    def rates(self) -> np.ndarray:
        """Fraction of the counted rows on which each latent fired ``[n_latents]`` (float64 numpy)."""
        if self.rows == 0:
            raise ValueError("no rows were counted")
        return (self.fired / self.rows).cpu().numpy()


def firing_rates(sae: torch.nn.Module, batches: Iterable[np.ndarray]) -> np.ndarray:
    """One streamed pass: the fraction of rows of ``batches`` on which each latent of ``sae`` fires ``[d_sae]``."""
    count = FiringCount(sae.W_enc.shape[1], sae.W_enc.device)
    for codes in encoded_batches(sae, batches):
        count.add(codes)
    return count.rates()
