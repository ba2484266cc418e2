"""Extraction throughput and memory: the project's ``extract_activations`` against the bare forward pass.

Variants, timed interleaved on the same sentences and thread count:

    a  project   ``extract_activations``: tokenise, length-grouped batches, forward with every hidden state,
                 per-sentence means, token sample, float16 token shards for 3 SAE layers (whole call, model
                 load included; its own loop timer is reported too)
    b  bare      batched ``torch.inference_mode()`` forward with ``output_hidden_states=True`` over the very
                 same padded batches, nothing kept: the limit
    c  naive     one sentence at a time: tokenise, forward with hidden states

Targets: tokens/s a/b >= 0.9 and a/c >= 5. Peak RSS of (a) at 1x and 4x the sentences, each in a fresh
child process (``ru_maxrss``): 4x/1x <= 1.2 (memory must not grow with the dataset); not with --quick.

    python bench/bench_extraction.py [--quick] [--out DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common

NAME = "extraction"


def sizes(quick: bool) -> dict:
    """Inputs: full = real MiniLM-L6 on 512 realistic sentences; quick = tiny BERT on 48 short ones."""
    if quick:
        return {
            "sentences": 48,
            "min_words": 4,
            "max_words": 20,
            "max_length": 32,
            "batch_size": 16,
            "layers": [1, 2],
        }
    return {
        "sentences": 512,
        "min_words": 8,
        "max_words": 40,
        "max_length": 128,
        "batch_size": 64,
        "layers": [1, 3, 6],
    }


def extract_config(size: dict, threads: int):
    from layershift.models.extract import ExtractConfig

    return ExtractConfig(
        batch_size=size["batch_size"],
        max_length=size["max_length"],
        max_sentences=10**9,  # every sentence, also at 4x
        max_tokens=10**9,  # every token row, so the shards grow with the input
        threads=threads,
        device="cpu",
    )


def padded_batches(tokenizer, texts: list[str], cfg) -> tuple[list[dict], int]:
    """Exactly the batches ``extract_activations`` forms: seeded order, length-grouped, padded per batch."""
    import numpy as np

    from layershift.data.batching import length_grouped_batches
    from layershift.models.extract import SORT_RUN_BATCHES, sentence_order

    order = sentence_order(len(texts), cfg)
    encoded = tokenizer([texts[i] for i in order], truncation=True, max_length=cfg.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    batches = []
    for batch in length_grouped_batches(np.array(lengths), cfg.batch_size, SORT_RUN_BATCHES):
        batches.append(dict(tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")))
    return batches, int(sum(lengths))


def bare_forward(model, batches: list[dict]) -> dict:
    """The limit: forward passes with all hidden states over ready-made batches; returns the clocks."""
    import torch

    with common.Clock() as clock, torch.inference_mode():
        for batch in batches:
            model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=True,
            )
    return clock.as_dict()


def naive_loop(model, tokenizer, texts: list[str], max_length: int) -> dict:
    """The naive way: tokenise and run one sentence at a time; returns seconds and tokens."""
    import torch

    tokens = 0
    with common.Clock() as clock, torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            model(**enc, output_hidden_states=True)
            tokens += int(enc["input_ids"].shape[1])
    return {**clock.as_dict(), "tokens": tokens}


def project_extract(model_dir: Path, texts: list[str], layers: list[int], cfg, out_dir: Path) -> dict:
    """One full ``extract_activations`` call into a fresh directory; the old one is removed untimed."""
    from layershift.models.extract import extract_activations

    shutil.rmtree(out_dir, ignore_errors=True)
    with common.Clock() as clock:
        info = extract_activations(
            model_dir, texts, layers, out_dir, cfg, metadata={"stage": "bench"}, progress=False
        )
    return {**clock.as_dict(), "loop_seconds": info["seconds"], "tokens": info["n_tokens"]}


# --- peak memory in a fresh process ----------------------------------------------------------------------
def peak_rss_child(args) -> None:
    """Child mode: extract ``args.rss_child`` sentences; print peak RSS (MiB) after imports and at the end.

    ``ru_maxrss`` is the brief's measure; ``VmHWM`` (the high-water mark of this process's own address space,
    from /proc) is printed beside it as a cross-check, since Linux carries a parent's peak into
    ``ru_maxrss`` across fork + exec (so the parent starts these children before it loads anything big).
    """
    import torch  # noqa: F401 - imported before the "before" reading, like the libraries extraction needs
    import transformers  # noqa: F401

    from layershift.core.device import set_threads

    set_threads(args.threads)
    size = json.loads(args.size)
    texts = common.realistic_sentences(
        args.rss_child, seed=1, min_words=size["min_words"], max_words=size["max_words"]
    )
    before = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vmhwm": vm_hwm_mib()}
    info = project_extract(
        Path(args.model_dir), texts, size["layers"], extract_config(size, args.threads), Path(args.workdir)
    )
    after = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vmhwm": vm_hwm_mib()}
    print(json.dumps({
        "sentences": args.rss_child, "tokens": info["tokens"], "seconds": info["seconds"],
        "peak_rss_mib": after["ru_maxrss"], "rss_after_imports_mib": before["ru_maxrss"],
        "vmhwm_mib": after["vmhwm"], "vmhwm_after_imports_mib": before["vmhwm"],
    }))  # fmt: skip


def vm_hwm_mib() -> float | None:
    """Peak resident set of this process's address space (Linux /proc), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_peak_rss(n_sentences: int, model_dir: Path, size: dict, threads: int, workdir: Path) -> dict:
    cmd = [
        sys.executable, __file__, "--rss-child", str(n_sentences), "--model-dir", str(model_dir),
        "--size", json.dumps(size), "--workdir", str(workdir), "--threads", str(threads),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- main ------------------------------------------------------------------------------------------------
def run(args) -> None:
    from layershift.core.device import set_threads
    from layershift.models.sources import load_encoder

    set_threads(args.threads)
    size = sizes(args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        model_dir = common.tiny_bert_dir(tmp / "tiny-bert") if args.quick else common.minilm_dir()
        # Memory first, in fresh children, while this process is still small (see peak_rss_child). Each
        # child pays a fresh torch + transformers import (10 s on a loaded machine): not in --quick.
        rss = (
            None
            if args.quick
            else {
                "1x": measure_peak_rss(size["sentences"], model_dir, size, args.threads, tmp / "rss1"),
                "4x": measure_peak_rss(4 * size["sentences"], model_dir, size, args.threads, tmp / "rss4"),
            }
        )
        texts = common.realistic_sentences(
            size["sentences"], seed=1, min_words=size["min_words"], max_words=size["max_words"]
        )
        cfg = extract_config(size, args.threads)
        model, tokenizer = load_encoder(model_dir, "cpu")
        batches, n_tokens = padded_batches(tokenizer, texts, cfg)

        variants = {
            "a_project": lambda: project_extract(model_dir, texts, size["layers"], cfg, tmp / "extract"),
            "b_bare": lambda: bare_forward(model, batches),
            "c_naive": lambda: naive_loop(model, tokenizer, texts, cfg.max_length),
        }
        few = max(len(texts) // 8, 2)
        warm = {  # a slice of each: allocator, oneDNN kernels, file cache, without a full extra round
            "a_project": lambda: project_extract(
                model_dir, texts[:few], size["layers"], cfg, tmp / "extract"
            ),
            "b_bare": lambda: bare_forward(model, batches[:2]),
            "c_naive": lambda: naive_loop(model, tokenizer, texts[: few // 4], cfg.max_length),
        }
        samples = common.interleaved(variants, args.repeats, warmup=warm)
        for name in ("a_project", "c_naive"):
            counted = {s["tokens"] for s in samples[name]}
            assert counted == {n_tokens}, f"{name} saw {counted} tokens, expected {n_tokens}"
        clock = common.primary_clock(args.threads)
        raw, tps = common.throughput(samples, n_tokens, clock)
        loop = common.rates(samples["a_project"], n_tokens, key="loop_seconds")  # wall clock only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    both = common.ratios_on_both_clocks(
        raw, {"a_over_b": ("a_project", "b_bare"), "a_over_c": ("a_project", "c_naive")}
    )
    ratios = {
        "a_over_b": tps["a_project"] / tps["b_bare"],
        "a_loop_over_b_wall": loop["median_per_second"] / raw["b_bare"]["wall"]["median_per_second"],
        "a_over_c": tps["a_project"] / tps["c_naive"],
        "rss_4x_over_1x": rss["4x"]["peak_rss_mib"] / rss["1x"]["peak_rss_mib"] if rss else None,
    }
    if rss and rss["1x"]["vmhwm_mib"] and rss["4x"]["vmhwm_mib"]:
        ratios["vmhwm_4x_over_1x"] = rss["4x"]["vmhwm_mib"] / rss["1x"]["vmhwm_mib"]
    targets = {
        "a_over_b": common.target(
            ratios["a_over_b"], ">=", 0.9, "project tokens/s over bare batched forward"
        ),
        "a_over_c": common.target(
            ratios["a_over_c"], ">=", 5, "project tokens/s over one-sentence-at-a-time"
        ),
        "rss_4x_over_1x": common.target(ratios["rss_4x_over_1x"], "<=", 1.2, "peak RSS at 4x rows over 1x"),
    }
    payload = {
        "inputs": {
            "model": "tiny-bert (quick)" if args.quick else common.MINILM_PACKAGE,
            "sentences": size["sentences"],
            "tokens": n_tokens,
            "words_per_sentence": [size["min_words"], size["max_words"]],
            "sae_layers": size["layers"],
            "batch_size": cfg.batch_size,
            "max_length": cfg.max_length,
            "dtype": cfg.dtype,
        },
        "clock": clock,
        "raw": {**raw, "a_project_loop_wall": loop},
        "tokens_per_second": tps,
        "ratios_by_clock": both,
        "peak_rss": rss if rss else "skipped: --quick",
        "ratios": ratios,
        "targets": targets,
    }
    summary = f"tokens/s a={tps['a_project']:.0f} b={tps['b_bare']:.0f} c={tps['c_naive']:.0f}; {common.fmt_targets(targets)}"
    common.finish(NAME, args, payload, summary)


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)


if __name__ == "__main__":
    arguments = common.parse_args(__doc__.splitlines()[0], extra_args)
    if arguments.rss_child:
        peak_rss_child(arguments)
    else:
        run(arguments)
