"""What every workflow script does first: thread limits without importing torch where it is not used."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest


def _run(code: str, *args: str, **env: str) -> str:
    env = {"PATH": "/usr/bin:/bin", **env}  # no inherited OMP_NUM_THREADS / MKL_NUM_THREADS
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip()


def test_threads_apply_to_a_torch_imported_later():
    """(torch caps a thread count from the environment at the machine's cores, so 1 is what can be checked.)"""
    threads = 1
    out = _run(
        "import sys\n"
        "from layershift.core.device import set_threads\n"
        f"set_threads({threads})\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    assert out.split() == ["False", str(threads)]


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_apply_to_a_torch_already_imported(threads):
    out = _run(
        f"import torch\nfrom layershift.core.device import set_threads\nset_threads({threads})\nprint(torch.get_num_threads())\n"
    )
    assert out == str(threads)


def test_no_threads_changes_nothing():
    out = _run(
        "import os, sys\n"
        "from layershift.core.device import set_threads\n"
        "set_threads(None)\n"
        "print('torch' in sys.modules, 'OMP_NUM_THREADS' in os.environ)\n"
    )
    assert out == "False False"


def test_threads_for_a_block_are_restored_after_it():
    out = _run(
        "import os, torch\n"
        "from layershift.core.device import torch_threads\n"
        "torch.set_num_threads(2)\n"
        "with torch_threads(1):\n"
        "    print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])\n"
        "print(torch.get_num_threads(), 'OMP_NUM_THREADS' in os.environ)\n"
    )
    assert out.split() == ["1", "1", "2", "False"]


HEAP_AFTER_A_FREED_BLOCK = """
import ctypes, sys
from layershift.core.runtime import keep_freed_memory

class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
block = ctypes.c_void_p()
libc.posix_memalign(ctypes.byref(block), 64, 48 << 20)  # as torch allocates a 48 MB tensor
mmapped = libc.mallinfo2().hblkhd
libc.free(block)
print(kept, mmapped >> 20, libc.mallinfo2().fordblks >> 20)
"""


def _has_mallinfo2() -> bool:
    """glibc 2.33 or newer: ``mallopt`` to set and ``mallinfo2`` to read the heap back."""
    libc, version = platform.libc_ver()
    return libc == "glibc" and tuple(int(part) for part in version.split(".")[:2]) >= (2, 33)


MALLINFO2 = pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallopt, mallinfo2)")


def _heap_after_a_freed_block(mode: str, **env: str) -> tuple[str, int, int]:
    """(keep_freed_memory's answer, MB of the 48 MB block served by mmap, MB free in the heap after free)."""
    kept, mmapped, free_in_heap = _run(HEAP_AFTER_A_FREED_BLOCK, mode, **env).split()
    return kept, int(mmapped), int(free_in_heap)


@MALLINFO2
def test_freed_memory_stays_in_the_heap_for_the_next_step():
    """By default glibc serves a 48 MB block (a BERT word-embedding gradient) with its own mmap and unmaps
    it on free, so the next step faults all its pages in again; kept, it comes from the heap and stays."""
    kept, mmapped, free_in_heap = _heap_after_a_freed_block("keep")
    assert (kept, mmapped) == ("True", 0)
    assert free_in_heap >= 48
    _, mmapped_default, free_default = _heap_after_a_freed_block("default")
    assert mmapped_default >= 48 and free_default < 48


@MALLINFO2
def test_the_default_allocator_can_be_kept():
    kept, mmapped, _ = _heap_after_a_freed_block("keep", LAYERSHIFT_MALLOC="default")
    assert (kept, mmapped) == ("False", 48)


def test_workflow_scripts_keep_freed_memory(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from layershift.core import runtime

    called = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: called.append(True))
    job = SimpleNamespace(log=[str(tmp_path / "job.log")], threads=None, rule="job")
    with runtime.script_context(job):
        pass
    assert called == [True]


def test_sigterm_unwinds_a_job_and_its_temporary_files(tmp_path):
    """SIGTERM (Snakemake stopping a job, SLURM's time limit) killed the job where it stood and left the hidden
    temporary files of its atomic writes behind; it now unwinds like an error and they are removed."""
    import signal
    import subprocess
    import sys
    import time

    job = f"""
import time
from pathlib import Path
from types import SimpleNamespace
from layershift.core.io import atomic_dir
from layershift.core.runtime import script_context
job = SimpleNamespace(log=[{str(tmp_path / "job.log")!r}], threads=None, rule="job")
with script_context(job), atomic_dir({str(tmp_path / "tokens")!r}) as tmp:
    (tmp / "part-00000.parquet").write_bytes(b"x" * 1000)
    Path({str(tmp_path / "ready")!r}).touch()
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", job])
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert any(p.name.startswith(".tokens.") for p in tmp_path.iterdir())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.log", "ready"]
    assert "terminated by signal 15" in (tmp_path / "job.log").read_text()
