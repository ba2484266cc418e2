"""Fine-tuning throughput: the project's ``finetune`` loop against a bare fwd + bwd + Adam loop.

Both variants train MiniLM-L6 with a fresh classification head for one epoch over exactly the same batches
(``make_batches`` with the run's seed and epoch 0), same thread count, interleaved:

    a  project   ``finetune`` for 1 epoch: tokens/s of its training pass as its log reports it (optimiser
                 steps only: model load, tokenisation, validation and saving are outside that clock)
    b  bare      forward, cross-entropy, backward, Adam step, zero grad: nothing else

Target: tokens/s a/b >= 0.85. Real (non-padding) tokens are counted for both.

    python bench/bench_finetune.py [--quick] [--out DIR] [--threads N]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import common

NAME = "finetune"
POSITIVE = set(common.ADJECTIVES[::2])  # labels follow the words, so the task is learnable


def sizes(quick: bool) -> dict:
    """Full: MiniLM-L6 on 256 short texts (6-24 words), the default study's batch 16 / max_length 64."""
    if quick:
        return {"train": 48, "val": 16, "min_words": 3, "max_words": 10, "batch_size": 16, "max_length": 32}
    return {"train": 256, "val": 32, "min_words": 6, "max_words": 24, "batch_size": 16, "max_length": 64}


def labelled_texts(n: int, size: dict, seed: int, quick: bool):
    """A DataFrame (text, label): label 1 when the text holds more 'positive' adjectives than others."""
    import pandas as pd

    if quick:
        from tiny import tiny_sentences

        texts = tiny_sentences(n, seed=seed, min_words=size["min_words"], max_words=size["max_words"])
        labels = [int("good" in t or "great" in t) for t in texts]
    else:
        texts = common.realistic_sentences(
            n, seed=seed, min_words=size["min_words"], max_words=size["max_words"]
        )
        labels = [int(sum(w in POSITIVE for w in t.lower().split()) >= 1) for t in texts]
    return pd.DataFrame({"text": texts, "label": labels})


def finetune_config(size: dict, threads: int):
    from layershift.models.finetune import FinetuneConfig

    # the default study's optimiser settings (Adam, warm-up 0.1, grad-norm clip 1.0), one epoch
    return FinetuneConfig(
        lr=1e-4, epochs=1, batch_size=size["batch_size"], max_length=size["max_length"], warmup_ratio=0.1,
        seed=0, threads=threads, device="cpu",
    )  # fmt: skip


def run_project(model_dir: Path, train_df, val_df, cfg, out_dir: Path) -> dict:
    """One ``finetune`` call. The log's tokens_per_second covers its training pass (``_train_pass``) on the
    wall clock; the same span is clocked here (wall + CPU) by wrapping that function."""
    import layershift.models.finetune

    shutil.rmtree(out_dir, ignore_errors=True)
    with common.clocked(layershift.models.finetune, "_train_pass", []) as clock:
        log = layershift.models.finetune.finetune(
            model_dir, train_df, val_df, ["neg", "pos"], cfg, out_dir, progress=False
        )
    log_tps = float(log["tokens_per_second"].iloc[0])
    return {**clock[-1], "log_tokens_per_second": log_tps, "epoch_seconds": float(log["seconds"].iloc[0])}


def run_bare(model_dir: Path, batches, lr: float, n_batches: int | None = None) -> dict:
    """A fresh classifier (load untimed), then fwd + cross-entropy + bwd + Adam over ``batches``."""
    import torch
    import torch.nn.functional as F

    from layershift.models.classifier import load_classifier

    model = load_classifier(model_dir, ["neg", "pos"], seed=0)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches = batches[:n_batches] if n_batches else batches
    with common.Clock() as clock:
        for b in batches:
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits  # [b, C]
            loss = F.cross_entropy(logits, b.labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return clock.as_dict()


def run(args) -> None:
    from layershift.core.device import set_threads
    from layershift.models.batches import encode_split, make_batches
    from layershift.models.classifier import load_tokenizer

    set_threads(args.threads)
    size = sizes(args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    try:
        model_dir = common.tiny_bert_dir(tmp / "tiny-bert") if args.quick else common.minilm_dir()
        train_df = labelled_texts(size["train"], size, seed=1, quick=args.quick)
        val_df = labelled_texts(size["val"], size, seed=2, quick=args.quick)
        cfg = finetune_config(size, args.threads)
        enc = encode_split(load_tokenizer(model_dir), train_df, 2, cfg.max_length, "train")
        batches = make_batches(
            enc, cfg.batch_size, cfg.seed, 0, cfg.megabatch_mult
        )  # what finetune's epoch 1 sees
        n_tokens = int(sum(b.n_tokens for b in batches))

        variants = {
            "a_project": lambda: run_project(model_dir, train_df, val_df, cfg, tmp / "model"),
            "b_bare": lambda: run_bare(model_dir, batches, cfg.lr),
        }
        warm = {
            "a_project": lambda: run_project(model_dir, train_df[:32], val_df[:8], cfg, tmp / "model"),
            "b_bare": lambda: run_bare(model_dir, batches, cfg.lr, n_batches=2),
        }
        samples = common.interleaved(variants, args.repeats, warmup=warm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    clock = common.primary_clock(args.threads)
    raw, tps = common.throughput(samples, n_tokens, clock)
    log_tps = common.median([s["log_tokens_per_second"] for s in samples["a_project"]])
    ratios = {
        "a_over_b": tps["a_project"] / tps["b_bare"],
        "a_log_over_b_wall": log_tps / raw["b_bare"]["wall"]["median_per_second"],
    }
    targets = {
        "a_over_b": common.target(ratios["a_over_b"], ">=", 0.85, "finetune tokens/s over bare fwd+bwd+Adam")
    }
    payload = {
        "inputs": {
            "model": "tiny-bert (quick)" if args.quick else common.MINILM_PACKAGE,
            "train_texts": size["train"],
            "val_texts": size["val"],
            "tokens_per_epoch": n_tokens,
            "batches": len(batches),
            "batch_size": cfg.batch_size,
            "max_length": cfg.max_length,
            "optimizer": cfg.optimizer,
            "max_grad_norm": cfg.max_grad_norm,
            "warmup_ratio": cfg.warmup_ratio,
        },
        "clock": clock,
        "raw": raw,
        "tokens_per_second": tps,
        "ratios_by_clock": common.ratios_on_both_clocks(raw, {"a_over_b": ("a_project", "b_bare")}),
        "ratios": ratios,
        "targets": targets,
    }
    summary = f"tokens/s a={tps['a_project']:.0f} b={tps['b_bare']:.0f}; {common.fmt_targets(targets)}"
    common.finish(NAME, args, payload, summary)


if __name__ == "__main__":
    run(common.parse_args(__doc__.splitlines()[0]))
