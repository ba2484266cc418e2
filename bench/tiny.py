"""Tiny inputs of the ``--quick`` runs: a seeded tiny BERT with its WordPiece tokenizer, seeded sentences
over its vocabulary, and a tiny study (tiny BERTs, tiny labelled corpora, a small config.yaml).

The test suite builds the same tiny study for its own runs (tests/support); the benchmarks keep their own
copy so that neither tree imports the other.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# fmt: off
DEFAULT_WORDS = [
    "the", "a", "an", "this", "that", "is", "was", "and", "or", "but", "not", "very", "good", "bad",
    "great", "terrible", "movie", "film", "plot", "acting", "love", "hate", "app", "update", "news",
    "sport", "health", "music", "book", "story", "i", "you", "it", "of", "to", "in", "on", "for",
    "with", "like", "really", "quite", "so", "too", "boring", "fun", "happy", "sad", "fast", "slow",
    "easy", "hard", "!", "?", ".", ",",
]
# fmt: on

MOOD_WORDS = {
    "positive": ["good", "great", "love", "fun", "happy", "easy", "really"],
    "negative": ["bad", "terrible", "hate", "boring", "sad", "hard", "slow"],
}
TOPIC_WORDS = {
    "film": ["movie", "film", "plot", "acting", "story"],
    "app": ["app", "update", "music", "fast", "slow"],
    "sport": ["sport", "news", "health", "book", "fun"],
}
FILLER = [
    "the",
    "a",
    "this",
    "that",
    "is",
    "was",
    "and",
    "very",
    "so",
    "i",
    "it",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
]


def write_vocab(directory: str | Path, words=DEFAULT_WORDS) -> Path:
    """A WordPiece ``vocab.txt``: the BERT special tokens, then ``words`` (deduplicated, order kept)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *words]))
    path = directory / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def make_tiny_bert(
    directory: str | Path,
    n_layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    vocab_words=DEFAULT_WORDS,
    seed: int = 0,
    max_position: int = 64,
) -> Path:
    """Write a randomly initialised tiny ``BertModel`` + ``BertTokenizerFast`` into ``directory``.

    The tokenizer is uncased WordPiece over [PAD] [UNK] [CLS] [SEP] [MASK] + ``vocab_words``; the model is
    seeded, so the same arguments give the same weights. Returns ``directory``.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = Path(directory)
    vocab_path = write_vocab(directory, vocab_words)
    vocab = vocab_path.read_text(encoding="utf-8").split()
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_sentences(
    n: int = 20, seed: int = 0, words=DEFAULT_WORDS, min_words: int = 2, max_words: int = 12
) -> list[str]:
    """``n`` seeded sentences of varying length over ``words`` (so batches need padding)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    return [" ".join(rng.choice(words, size=int(k))) for k in lengths]


def make_corpus(path: Path, classes: dict[str, list[str]], n_rows: int, seed: int) -> Path:
    """A tiny labelled CSV: each text mixes filler words with two words of its class."""
    rng = random.Random(seed)
    labels = sorted(classes)
    rows = ["text,label"]
    for i in range(n_rows):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 4) + rng.sample(classes[label], 2)
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_config(models: dict, datasets: dict) -> dict:
    return {
        "seed": 3,
        "models": models,
        "datasets": datasets,
        "data": {"max_rows": 120},
        "finetune": {"lr": 1.0e-3, "epochs": 2, "batch_size": 16, "max_length": 24},
        "activations": {
            "max_sentences": 64,
            "max_tokens": 512,
            "batch_size": 16,
            "rows_per_group": 128,
            "groups_per_shard": 2,
        },
        "similarity": {"token_sample": 200},
        "sae": {"d_sae": 32, "lr": 1.0e-2, "epochs": 2, "batch_size": 64},
        "crosscoder": {"d_latent": 32, "k": 4, "n_shared": 2, "lr": 1.0e-2, "epochs": 2, "batch_size": 64},
        "features": {"top_k": 2, "top_tokens": 3},
        "resources": {"threads": 1},
    }


def build_tiny_study(workdir: Path, n_models: int = 1, n_datasets: int = 1) -> Path:
    """Write tiny models, corpora and config.yaml into ``workdir``; return the config path."""
    workdir.mkdir(parents=True, exist_ok=True)
    models = {"tiny2": {"source": "path:models/tiny2", "sae_layers": [1, 2]}}
    make_tiny_bert(workdir / "models/tiny2", n_layers=2, hidden=32, heads=2, seed=0)
    if n_models > 1:
        models["tiny1"] = {"source": "path:models/tiny1", "sae_layers": [1]}
        make_tiny_bert(workdir / "models/tiny1", n_layers=1, hidden=32, heads=2, seed=1)
    datasets = {
        "mood": {
            "source": "data/mood.csv",
            "text": "text",
            "label": "label",
            "probes": ["i love this movie", "the plot was bad !"],
        },
    }
    make_corpus(workdir / "data/mood.csv", MOOD_WORDS, 100, seed=1)
    if n_datasets > 1:
        datasets["topic"] = {"source": "data/topic.csv", "text": "text", "label": "label"}
        make_corpus(workdir / "data/topic.csv", TOPIC_WORDS, 105, seed=2)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(models, datasets), sort_keys=False))
    return config
