"""What every dictionary's weights are called and which dtypes they may have.

SAEs and crosscoders store the same four tensors under SAELens's names (shapes differ: see their ``model``
modules), written and read through :func:`layershift.core.io.write_safetensors` / ``read_safetensors``.
"""

from __future__ import annotations

import torch

WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
