"""How well an SAE reconstructs activations it streams through: MSE, explained variance, L0, dead latents."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from layershift.core.training import explained_variance, to_tensor
from layershift.dictionaries.codes import FiringCount
from layershift.dictionaries.sae.model import SAE


@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Iterable[np.ndarray]) -> dict:
    """Stream raw batches through ``sae``: mse (working space), mse_raw, explained_variance, l0, dead_fraction.

    Sums are kept in float64 and the explained variance is ``1 - SSE / SST`` over all rows (SST around the
    overall mean), so the numbers do not depend on how the rows are batched beyond float32 rounding.
    """
    device = sae.W_enc.device
    d_in = sae.cfg.d_in
    sse = torch.zeros((), dtype=torch.float64, device=device)
    x_sum = torch.zeros(d_in, dtype=torch.float64, device=device)
    x_sq = torch.zeros((), dtype=torch.float64, device=device)
    firing = FiringCount(sae.cfg.d_sae, device)
    for batch in batches:
        x = sae.normalize(to_tensor(batch, device).to(sae.W_enc.dtype))
        f = sae.encode_normalized(x)  # [b, d_in] -> [b, d_sae]
        recon = sae.decode_normalized(f)  # [b, d_sae] -> [b, d_in]
        sse += (recon - x).double().pow(2).sum()
        firing.add(f)
        x64 = x.double()
        x_sum += x64.sum(dim=0)
        x_sq += x64.pow(2).sum()
    n = firing.rows
    if n == 0:
        raise ValueError("evaluate_sae got no rows")
    mse = (sse / (n * d_in)).item()
    return {
        "mse": mse,
        "mse_raw": mse / sae.cfg.activation_scale**2,
        "explained_variance": explained_variance(sse, x_sq, x_sum, n).item(),  # NaN: undefined (< 2 rows)
        "l0": (firing.fired.sum() / n).item(),  # whole counts in float64: exact
        "dead_fraction": 1.0 - (firing.fired > 0).double().mean().item(),
        "n_rows": n,
    }
