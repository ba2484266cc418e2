"""Where torch runs and how: the device, the CPU thread count, the seeds of every random generator.

Importing this module does not import torch: a job that never uses torch (figures, tables, the report) would
pay seconds for the import just to set its thread count.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by a torch imported later, and by children


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to :class:`torch.device`."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(threads: int | None) -> None:
    """Hold torch to ``threads`` CPU threads for the rest of the process (None/0: leave everything as it is).

    Does not import torch: the environment sets the thread count of a torch imported later (and of child
    processes); one already imported is told directly."""
    if not threads:
        return
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(int(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """:func:`set_threads` for the block only: torch's thread count and the environment are restored after."""
    import torch

    previous_count = torch.get_num_threads()
    previous_environment = {variable: os.environ.get(variable) for variable in THREAD_VARIABLES}
    set_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_count)
        for variable, value in previous_environment.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
