"""Tiny models for tests: BERT encoders with a WordPiece tokenizer, a model of each encoder family with its
own trained tokenizer, and seeded sentences over their vocabulary.

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


# --- tiny models of other encoder families ------------------------------------------------------------

# Per family: the tokenizer it is built with (WordPiece / byte-level BPE / Unigram, as the real family
# ships), whether that tokenizer lowercases, and its special tokens (the real family's spellings).
FAMILIES = {
    "bert": {"algo": "wordpiece", "lower": True},
    "distilbert": {"algo": "wordpiece", "lower": True},
    "electra": {"algo": "wordpiece", "lower": True},
    "roberta": {"algo": "bpe", "lower": False},
    "modernbert": {"algo": "bpe", "lower": False},
    "deberta-v2": {"algo": "unigram", "lower": False},
    "albert": {"algo": "unigram", "lower": True},
    "gpt2": {"algo": "bpe", "lower": False},
}
_SPECIALS = {
    "bert-like": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "roberta": {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
    "albert": {"pad": "<pad>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "gpt2": {"pad": "<|endoftext|>", "unk": "<|endoftext|>"},
}


def family_specials(family: str) -> dict:
    if family in ("roberta", "gpt2", "albert"):
        return _SPECIALS[family]
    return _SPECIALS["bert-like"]


def family_corpus() -> list[str]:
    """A few hundred cased, punctuated sentences to train the tiny tokenizers on."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = [*DEFAULT_WORDS, "The", "This", "Great", "Movie", "unbelievable", "reviewing", "updates", "don't"]
    return [
        " ".join(rng.choice(words, size=int(rng.integers(3, 12)))).capitalize() + rng.choice([".", "!", "?"])
        for _ in range(400)
    ]


def train_family_tokenizer(family: str, corpus: list[str] | None = None, vocab_size: int = 200):
    """A ``PreTrainedTokenizerFast`` of the family's kind, trained with ``tokenizers`` on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec, specials = FAMILIES[family], family_specials(family)
    corpus = corpus or family_corpus()
    special_list = list(dict.fromkeys(specials.values()))
    if spec["algo"] == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials["unk"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=spec["lower"])
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special_list)
    elif spec["algo"] == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size + 256,
            special_tokens=special_list,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        tok = Tokenizer(models.Unigram())
        steps = [normalizers.Lowercase()] if spec["lower"] else []
        tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace("``", '"')])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_list, unk_token=specials["unk"]
        )
    tok.train_from_iterator(corpus, trainer)
    if "cls" in specials:
        cls, sep = specials["cls"], specials["sep"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B {sep}",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
    names = {f"{key}_token": value for key, value in specials.items()}
    if family == "gpt2":
        names |= {"bos_token": specials["pad"], "eos_token": specials["pad"]}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def make_tiny_family(
    directory: str | Path, family: str, n_layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0
) -> Path:
    """A randomly initialised tiny model of ``family`` (AutoConfig.for_model) with its own trained tokenizer,
    saved with ``save_pretrained`` into ``directory``. Returns ``directory``."""
    import torch
    from transformers import AutoConfig, AutoModel

    directory = Path(directory)
    tokenizer = train_family_tokenizer(family)
    common = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    sizes = {
        "num_hidden_layers": n_layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": hidden * 2,
        "max_position_embeddings": 64,
    }
    if family == "distilbert":
        sizes = {
            "n_layers": n_layers,
            "dim": hidden,
            "n_heads": heads,
            "hidden_dim": hidden * 2,
            "max_position_embeddings": 64,
        }
    elif family == "gpt2":
        sizes = {"n_layer": n_layers, "n_embd": hidden, "n_head": heads, "n_positions": 64}
        common |= {"bos_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.pad_token_id}
    elif family == "electra":
        sizes |= {"embedding_size": hidden // 2}  # ELECTRA's embeddings are narrower than its blocks
    elif family == "albert":
        sizes |= {"embedding_size": hidden // 2, "num_hidden_groups": 1}  # one block shared by all layers
    elif family == "modernbert":
        sizes |= {"global_attn_every_n_layers": 2, "local_attention": 8}
        common |= {
            "cls_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        }
    config = AutoConfig.for_model(family, **sizes, **common)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
