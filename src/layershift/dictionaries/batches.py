"""What a two-model dictionary reads: paired batches, the activations of both models on the same tokens."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PairedBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (x_a [b, d_a], x_b [b, d_b]) for the same b tokens
