"""What every workflow script does first: log to the rule's log file, stay offline, report errors in one line."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import traceback

from layershift.core.device import set_threads
from layershift.core.errors import LayershiftError

# glibc's mallopt parameters (malloc.h) and what keep_freed_memory sets them to
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED_BYTES = 1 << 30  # allocations below this come from the heap; free heap top kept up to this
HEAP_GROWTH_PAD_BYTES = 64 << 20  # extra heap asked of the kernel each time it grows (address space only)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for the next allocation instead of handing it back to the
    kernel; returns whether it took (False off glibc, or with ``LAYERSHIFT_MALLOC=default``).

    By default glibc serves each allocation above a threshold (128 kB, rising to at most 32 MB as blocks
    are freed) with a fresh ``mmap``, unmaps it on ``free``, and trims the heap's free top. A training or
    inference loop frees and reallocates the same large tensors every step (activations, gradients, a
    BERT's 47 MB word-embedding gradient), so each step faults every page of them in again, zero-filled by
    the kernel: 5.4 million page faults and a fifth of the CPU time of a MiniLM fine-tuning job
    (CHANGELOG.md, 2026-12-03). Kept, the memory is reused: the peak resident size stays
    what the largest step needs, and results are bit-identical."""
    if os.environ.get("LAYERSHIFT_MALLOC", "").lower() == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError, TypeError):  # no C library to ask, or not glibc's
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, KEEP_FREED_BYTES),
        (M_TRIM_THRESHOLD, KEEP_FREED_BYTES),
        (M_TOP_PAD, HEAP_GROWTH_PAD_BYTES),
    )
    return all([mallopt(param, value) == 1 for param, value in settings])  # a list: every one is set


@contextlib.contextmanager
def script_context(snakemake, offline: bool = True):
    """Send stdout/stderr to ``snakemake.log[0]``, set threads, keep the hub offline, keep freed memory
    (:func:`keep_freed_memory`), one-line errors."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    handle = open(log_path, "w", buffering=1) if log_path else None  # noqa: SIM115 - closed below
    if handle:
        sys.stdout = sys.stderr = handle
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr, force=True
    )
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_threads(getattr(snakemake, "threads", None))
    keep_freed_memory()
    started = time.perf_counter()
    rule = getattr(snakemake, "rule", "job")
    previous_handler = _exit_on_sigterm()
    try:
        yield snakemake
        logging.info("%s finished in %.1f s", rule, time.perf_counter() - started)
    except LayershiftError as err:
        message = f"layershift: {err}"
        print(message, file=sys.__stderr__)
        print(message, file=sys.stderr)
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=sys.stderr)  # into the rule's log, not only the console
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if handle:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            handle.close()


def _exit_on_sigterm():
    """Make SIGTERM (Snakemake stopping a job, SLURM at a time limit or preemption) unwind the job like an
    error, so that atomic writers remove their temporary files (a job's ``.tokens.*.tmp`` can be as large
    as the layer's shards) instead of leaving them behind. Returns the previous handler (None off the main
    thread, where Python cannot set one)."""

    def terminated(signum, frame):
        logging.error("terminated by signal %d: removing temporary files", signum)
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread
        return None
