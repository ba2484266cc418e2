"""What a token is, asked of the tokenizer rather than read from its spelling.

Tokenizers spell things differently: WordPiece marks a continuation with ``##`` and wraps a sentence in
``[CLS]``/``[SEP]``; byte-level BPE (RoBERTa, ModernBERT, GPT-2) marks a word *start* with ``Ġ`` and uses
``<s>``/``</s>`` or ``[CLS]``/``[SEP]``; SentencePiece (DeBERTa-v2/v3, ALBERT) marks a word start with ``▁``.
So every kind here comes from what the (fast) tokenizer reports about its own output:

- ``special``: ``special_tokens_mask`` (tokens the tokenizer added around the text), or an id in
  ``all_special_ids`` other than the unknown token;
- ``punctuation``: the token's characters in the source text (its offsets) hold no letter or digit;
- ``subword``: the token continues the word of the token before it (same ``word_ids``);
- ``word``: the first token of a word.
"""

from __future__ import annotations

KINDS = ("special", "punctuation", "word", "subword")


def require_fast(tokenizer, where: str = "") -> None:
    """Offsets and word ids need a Rust-backed ("fast") tokenizer; say so in one line if it is not."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{where or type(tokenizer).__name__}: a fast (tokenizers-backed) tokenizer is needed for token "
            "kinds and special-token masks; save the model with its tokenizer.json"
        )


def special_ids(tokenizer) -> set[int]:
    """Ids that are special whatever their position (the unknown token is a real word, so not counted)."""
    return set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}


def encode_with_kinds(tokenizer, texts: list[str], max_length: int) -> dict:
    """Tokenise ``texts`` (truncated to ``max_length``): ``input_ids``, ``special`` (0/1 per token) and
    ``kinds`` (one of ``KINDS`` per token), all lists of per-sentence lists."""
    require_fast(tokenizer)
    enc = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_offsets_mapping=True,
        return_token_type_ids=False,
        return_attention_mask=False,
    )
    specials = special_ids(tokenizer)
    out_special, out_kinds = [], []
    for i, text in enumerate(texts):
        ids, mask, offsets = enc["input_ids"][i], enc["special_tokens_mask"][i], enc["offset_mapping"][i]
        words = enc.word_ids(i)
        special = [int(bool(m) or t in specials) for t, m in zip(ids, mask, strict=True)]
        kinds = []
        for j, (start, end) in enumerate(offsets):
            span = text[start:end].strip()
            if special[j]:
                kinds.append("special")
            elif span and not any(c.isalnum() for c in span):
                kinds.append("punctuation")
            elif j > 0 and not special[j - 1] and words[j] is not None and words[j] == words[j - 1]:
                kinds.append("subword")
            else:
                kinds.append("word")
        out_special.append(special)
        out_kinds.append(kinds)
    return {"input_ids": enc["input_ids"], "special": out_special, "kinds": out_kinds}


def lowercases(tokenizer) -> bool:
    """Whether the tokenizer folds case itself (its normalizer, or a slow tokenizer's ``do_lower_case``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is not None:
        return normalizer.normalize_str("AbC") == normalizer.normalize_str("abc")
    return bool(getattr(tokenizer, "do_lower_case", False))


def _byte_symbols() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2's ``bytes_to_unicode``), inverted: printable symbol -> byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, ...) take the
    symbols from U+0100 on, in byte order (space is ``Ġ``, newline ``Ċ``)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {chr(b): b for b in printable}
    shifted = [b for b in range(256) if b not in symbols.values()]
    return symbols | {chr(256 + i): b for i, b in enumerate(shifted)}


BYTE_SYMBOLS = _byte_symbols()
WORD_START = "Ġ"  # byte-level BPE's spelling of a leading space, kept as the word-start mark


def is_byte_level(tokenizer) -> bool:
    """Whether the (fast) tokenizer's vocabulary spells bytes as symbols (its decoder is ``ByteLevel``)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return False
    return (
        b'"type":"ByteLevel"' in decoder.__getstate__()
    )  # the decoder's own JSON (a Sequence lists its steps)


def readable_byte_token(token: str) -> str:
    """A byte-level BPE token as text: its bytes decoded as UTF-8 (``Ã©`` -> ``é``, ``ðŁĶ¥`` -> 🔥), a leading
    space shown as ``Ġ``, and bytes of a character split over several tokens (or control characters) as
    escapes (``\\xf0``). A token with a symbol outside the byte alphabet (an added token) is left as it is."""
    if not token or any(c not in BYTE_SYMBOLS for c in token):
        return token
    raw = bytes(BYTE_SYMBOLS[c] for c in token)
    start = WORD_START if raw.startswith(b" ") else ""
    text = raw.removeprefix(b" ").decode("utf-8", errors="backslashreplace")
    return start + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """The tokens of ``ids`` as tables and figures show them: the vocabulary's own strings (``##ing``,
    ``▁good``, ``[CLS]``), except that a byte-level BPE vocabulary (RoBERTa, ModernBERT, GPT-2), which
    spells every byte as a symbol, is shown as text (:func:`readable_byte_token`); special tokens stay as
    they are. The token ids, stored beside the strings, stay exact."""
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    if not is_byte_level(tokenizer):
        return tokens
    specials = set(tokenizer.all_special_ids)
    return [tok if i in specials else readable_byte_token(tok) for i, tok in zip(ids, tokens, strict=True)]
