"""Encoder families beyond BERT: tiny random models of each family with their own trained tokenizers.

These tests check what the study derives from the tokenizer (special tokens, word / subword / punctuation
kinds, case folding) on every family; tests/workflow/test_encoder_families_study.py runs the whole tiny
study, through Snakemake and into the report, with one model per family in a single run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layershift.data.tokens import BYTE_SYMBOLS, is_byte_level, readable_byte_token, token_strings
from tests.support.models import FAMILIES, family_corpus, make_tiny_family, train_family_tokenizer
from tests.support.study import MOOD_WORDS, make_corpus, tiny_config


@pytest.fixture(scope="module")
def tokenizers():
    return {family: train_family_tokenizer(family) for family in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_specials_come_from_the_tokenizer(tokenizers, family):
    from layershift.data.tokens import encode_with_kinds

    tok = tokenizers[family]
    enc = encode_with_kinds(tok, ["This movie, really great!"], 32)
    ids, kinds, special = enc["input_ids"][0], enc["kinds"][0], enc["special"][0]
    added = {tok.cls_token_id, tok.sep_token_id} - {None}
    assert [k == "special" for k in kinds] == [bool(s) for s in special]
    assert [i for i, s in zip(ids, special, strict=True) if s] == [i for i in ids if i in added]
    if family == "gpt2":
        assert not any(special)  # a decoder-only tokenizer adds nothing around the text
    else:
        assert kinds[0] == kinds[-1] == "special" and sum(special) == 2
    tokens = tok.convert_ids_to_tokens(ids)
    assert [t for t, k in zip(tokens, kinds, strict=True) if k == "punctuation"] == [",", "!"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_word_starts_and_subwords_come_from_the_tokenizer(tokenizers, family):
    """An unseen compound splits into pieces: its first piece is a word start, the rest subwords, however
    the family spells them (##, a missing Ġ, a missing ▁); the spelling rule gets BPE / SentencePiece wrong."""
    from layershift.data.tokens import encode_with_kinds
    from layershift.models.probes import token_kind

    tok = tokenizers[family]
    text = "This movie is moviefunbook"
    start = text.index("moviefunbook")
    enc = encode_with_kinds(tok, [text], 32)
    offsets = tok([text], return_offsets_mapping=True)["offset_mapping"][0]
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    content = [  # the compound's pieces (a leading-space piece of byte-level BPE counts too)
        (t, k)
        for t, k, (a, b) in zip(tokens, enc["kinds"][0], offsets, strict=True)
        if b > start and k != "special"
    ]
    assert len(content) >= 2 and content[0][1] == "word", content
    assert all(k == "subword" for _, k in content[1:]), content
    by_spelling = [token_kind(t) for t, _ in content]
    if FAMILIES[family]["algo"] == "wordpiece":
        assert by_spelling == [k for _, k in content]  # the old rule was right only for WordPiece
    else:
        assert by_spelling != [k for _, k in content]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_case_folding_is_read_from_the_tokenizer(tokenizers, family):
    from layershift.data.tokens import lowercases

    assert lowercases(tokenizers[family]) is FAMILIES[family]["lower"]


@pytest.mark.parametrize(
    ("cleaning", "expected"),
    [
        ("paper", "this movie isnt great really"),
        ("lowercase", "this movie isn't great, really!"),
        ("none", "This Movie isn't great, really!"),
    ],
)
def test_cleaning_modes(cleaning, expected):
    from layershift.data.cleaning import clean_text

    assert clean_text("This  Movie isn't great, really!", cleaning) == expected


def test_unknown_cleaning_is_refused():
    from layershift.data.cleaning import clean_text

    with pytest.raises(ValueError, match="cleaning must be one of"):
        clean_text("x", "stem")


def _family_config(tmp_path: Path, model_dir: Path, **dataset) -> dict:
    make_corpus(tmp_path / "data/mood.csv", MOOD_WORDS, 40, seed=1)
    datasets = {"mood": {"source": "data/mood.csv", "text": "text", "label": "label", **dataset}}
    return tiny_config({"m": {"source": f"path:{model_dir}", "sae_layers": [1]}}, datasets)


def _config_error(config: dict, base_dir: Path) -> str:
    from layershift.config import validate_config
    from layershift.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        validate_config(config, "config.yaml", base_dir)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("family", ["distilbert", "gpt2"])
def test_families_spelling_depth_differently_validate(tmp_path, family):
    """DistilBERT (n_layers / dim) and GPT-2 (n_layer / n_embd) config.json keys are read at config time."""
    from layershift.config import validate_config

    model_dir = make_tiny_family(tmp_path / "m", family)
    config = _family_config(tmp_path, model_dir)
    config["models"]["m"]["sae_layers"] = [2]
    validate_config(config, "config.yaml", tmp_path)
    config["models"]["m"]["sae_layers"] = [3]
    assert "beyond the model's depth (2 layers" in _config_error(config, tmp_path)


def test_encoder_decoder_fails_at_config_time(tmp_path):
    model_dir = tmp_path / "t5"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        json.dumps({"model_type": "t5", "is_encoder_decoder": True, "num_layers": 2, "d_model": 32})
    )
    assert "t5 is an encoder-decoder model" in _config_error(_family_config(tmp_path, model_dir), tmp_path)


def test_decoder_without_pad_token_fails_at_config_time(tmp_path):
    """GPT-2 as published has no padding token: one line at config time, not a failure in finetune."""
    model_dir = make_tiny_family(tmp_path / "gpt2", "gpt2")
    config_json = json.loads((model_dir / "config.json").read_text())
    config_json.pop("pad_token_id", None)
    (model_dir / "config.json").write_text(json.dumps(config_json))
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    tok_cfg.pop("pad_token", None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    message = _config_error(_family_config(tmp_path, model_dir), tmp_path)
    assert "tokenizer has no padding token" in message, message


def test_tokenizer_without_pad_token_fails_when_the_model_is_resolved(tmp_path):
    """config.json names a pad_token_id (as every BertConfig does) but the tokenizer has no padding token:
    the config check, which reads the tokenizer files only without a pad_token_id, let it through and
    finetune / extract failed on their first batch; resolve_model (the first job of a model) now stops it."""
    from layershift.core.errors import ModelSourceError
    from layershift.models.sources import resolve_pretrained

    model_dir = make_tiny_family(tmp_path / "rob", "roberta")
    assert json.loads((model_dir / "config.json").read_text())["pad_token_id"] is not None
    resolve_pretrained(f"path:{model_dir}")  # with its padding token: fine
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = model_dir / name
        if path.is_file():
            settings = json.loads(path.read_text())
            settings.pop("pad_token", None)
            path.write_text(json.dumps(settings))
    with pytest.raises(ModelSourceError, match="has no padding token") as info:
        resolve_pretrained(f"path:{model_dir}")
    assert "\n" not in str(info.value)


def test_cleaning_key_is_validated(tmp_path):
    from tests.support.models import write_bert_config

    config = _family_config(tmp_path, write_bert_config(tmp_path / "b"), cleaning="stem")
    assert "cleaning" in _config_error(config, tmp_path)


def test_byte_level_tokens_are_shown_as_text_and_others_as_the_vocabulary_spells_them():
    """Byte-level BPE spells each byte as a symbol ('café' is 'ĠcafÃ©', an emoji 'ĠðŁĶ¥'): tables and figures
    show the text, with the word-start mark kept; WordPiece and SentencePiece tokens are left as they are."""
    corpus = family_corpus() + ["un café très bon 🔥 vraiment"] * 200
    text = "un café très bon 🔥 good"
    for family in ("roberta", "modernbert", "gpt2"):
        tokenizer = train_family_tokenizer(family, corpus)
        ids = tokenizer(text)["input_ids"]
        assert is_byte_level(tokenizer) and "ĠcafÃ©" in tokenizer.convert_ids_to_tokens(ids)
        shown = token_strings(tokenizer, ids)
        assert {"Ġcafé", "Ġtrès", "Ġ🔥", "Ġgood"} <= set(shown), shown
        specials = set(tokenizer.all_special_tokens)
        assert [t for t in shown if t in specials] == [
            t for t in tokenizer.convert_ids_to_tokens(ids) if t in specials
        ]
    for family in ("bert", "deberta-v2"):
        tokenizer = train_family_tokenizer(family, corpus)
        ids = tokenizer(text)["input_ids"]
        assert not is_byte_level(tokenizer)
        assert token_strings(tokenizer, ids) == tokenizer.convert_ids_to_tokens(ids)


def test_byte_tokens_of_a_split_character_and_controls_show_as_escapes():
    assert readable_byte_token("ðŁ") == "\\xf0\\x9f"  # the first two bytes of a 4-byte emoji
    assert readable_byte_token("Ċ") == "\\n" and readable_byte_token("Ġ") == "Ġ"
    assert readable_byte_token("<mask>") == "<mask>" and readable_byte_token("▁x") == "▁x"  # not byte symbols
    assert sorted(BYTE_SYMBOLS.values()) == list(range(256))
