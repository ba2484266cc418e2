"""Shared builders for tests: tiny BERT encoders with a WordPiece tokenizer, and tiny labelled corpora.

Everything is made locally with ``save_pretrained``; nothing touches the network.
"""

from __future__ import annotations

from pathlib import Path

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


def write_bert_config(
    directory: str | Path, n_layers: int = 2, hidden: int = 32, heads: int = 2, vocab_size: int = 64
) -> Path:
    """Only the ``config.json`` of a tiny BERT (enough for depth checks; no torch import, no weights)."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "num_hidden_layers": n_layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": hidden * 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": 64,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def perturbed_copy(
    source_dir: str | Path, target_dir: str | Path, scale: float = 0.05, seed: int = 1
) -> Path:
    """A copy of a saved model with seeded Gaussian noise added to every weight (a stand-in fine-tune)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source_dir, local_files_only=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    target_dir = Path(target_dir)
    model.save_pretrained(target_dir)
    AutoTokenizer.from_pretrained(source_dir, local_files_only=True).save_pretrained(target_dir)
    return target_dir


def tiny_sentences(
    n: int = 20, seed: int = 0, words=DEFAULT_WORDS, min_words: int = 2, max_words: int = 12
) -> list[str]:
    """``n`` seeded sentences of varying length over ``words`` (so batches need padding)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    return [" ".join(rng.choice(words, size=int(k))) for k in lengths]


def unit(m):
    """Rows of ``m`` scaled to unit length."""
    import numpy as np

    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def incoherent_atoms(rng, n: int, d: int, max_cos: float = 0.3):
    """``n`` random unit vectors in R^d with pairwise |cos| < ``max_cos`` (rejection sampling)."""
    import numpy as np

    atoms: list = []
    while len(atoms) < n:
        v = unit(rng.normal(size=d))
        if not atoms or np.abs(np.array(atoms) @ v).max() < max_cos:
            atoms.append(v)
    return np.array(atoms)
