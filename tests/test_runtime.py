"""What every workflow script does first: thread limits without importing torch where it is not used."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    env = {"PATH": "/usr/bin:/bin"}  # no inherited OMP_NUM_THREADS / MKL_NUM_THREADS
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return proc.stdout.strip()


def test_threads_apply_to_a_torch_imported_later():
    """(torch caps a thread count from the environment at the machine's cores, so 1 is what can be checked.)"""
    threads = 1
    out = _run(
        "import sys\n"
        "from layershift.runtime import set_threads\n"
        f"set_threads({threads})\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    assert out.split() == ["False", str(threads)]


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_apply_to_a_torch_already_imported(threads):
    out = _run(
        f"import torch\nfrom layershift.runtime import set_threads\nset_threads({threads})\nprint(torch.get_num_threads())\n"
    )
    assert out == str(threads)


def test_no_threads_changes_nothing():
    out = _run(
        "import os, sys\n"
        "from layershift.runtime import set_threads\n"
        "set_threads(None)\n"
        "print('torch' in sys.modules, 'OMP_NUM_THREADS' in os.environ)\n"
    )
    assert out == "False False"
