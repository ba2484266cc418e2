"""How well a crosscoder reconstructs both models' activations: explained variance per model, MSE, L0, dead."""

from __future__ import annotations

from typing import Any

import torch

from layershift.core.training import explained_variance
from layershift.dictionaries.batches import PairedBatches
from layershift.dictionaries.crosscoder.model import Crosscoder


@torch.no_grad()
def evaluate_crosscoder(crosscoder: Crosscoder, paired_batches: PairedBatches) -> dict[str, Any]:
    """Explained variance per model, MSE, L0 and dead fraction over raw paired batches (inference mode)."""
    device = crosscoder.W_enc.device
    sse = torch.zeros(2, dtype=torch.float64, device=device)
    x_sum = torch.zeros(2, crosscoder.cfg.d_in, dtype=torch.float64, device=device)
    x_sq = torch.zeros(2, dtype=torch.float64, device=device)
    active = 0.0
    fired = torch.zeros(crosscoder.cfg.d_latent, dtype=torch.bool, device=device)
    n = 0
    for x_a, x_b in paired_batches:
        x = crosscoder.scale_inputs(x_a, x_b)  # [b, 2, d]
        f = crosscoder.encode_scaled(x)  # [b, 2, d] -> [b, d_latent]
        sse += (crosscoder.decode_scaled(f) - x).double().pow(2).sum(dim=(0, 2))
        x_sum += x.double().sum(dim=0)
        x_sq += x.double().pow(2).sum(dim=(0, 2))
        active += float((f > 0).sum())
        fired |= (f > 0).any(dim=0)
        n += len(x)
    if n == 0:
        raise ValueError("evaluate_crosscoder got no rows")
    explained = explained_variance(sse, x_sq, x_sum, n).tolist()  # NaN: undefined (< 2 rows)
    return {
        "explained_variance_a": explained[0],
        "explained_variance_b": explained[1],
        "mse": float(sse.sum() / (2 * n * crosscoder.cfg.d_in)),
        "l0": active / n,
        "dead_fraction": 1.0 - float(fired.double().mean()),
        "n_rows": n,
    }
