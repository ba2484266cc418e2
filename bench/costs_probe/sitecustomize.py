"""Per-job CPU time and peak memory for bench/bench_costs.py, measured by each job's own process.

Snakemake's benchmark files sample a job every second for 30 s, then every 30 s, so the CPU time of a job's
last seconds (all of it for short jobs that exit between samples) is missing from their ``cpu_time``. With
this directory on PYTHONPATH and ``LAYERSHIFT_COSTS_PROBE`` set, every Python process that ran a Snakemake
``script:`` writes, at exit, its rule, wildcards, CPU time (user + system, its own and its waited-for
children's, from process start) and peak RSS into that folder.
"""

import atexit
import json
import os
import resource
import sys
import time

_DIR = os.environ.get("LAYERSHIFT_COSTS_PROBE")


def _vm_hwm_kb() -> int:
    """This process's own peak RSS (ru_maxrss would carry the forking parent's peak across exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _record() -> None:
    sm = getattr(sys.modules.get("__main__"), "snakemake", None)
    if sm is None or not hasattr(sm, "rule"):
        return
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "rule": sm.rule,
        "wildcards": dict(sm.wildcards.items()),
        "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        "max_rss_mb": max(_vm_hwm_kb(), children.ru_maxrss) / 1024,
        "end": time.time(),
    }
    with open(os.path.join(_DIR, f"{os.getpid()}-{time.time_ns()}.json"), "w") as handle:
        json.dump(record, handle)


if _DIR:
    atexit.register(_record)
