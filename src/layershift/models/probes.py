"""Token-level activations of chosen SAE features on probe sentences, computed the paper's way:
tokenise -> hidden state of layer L -> that stage's SAE encoder (the paper's Figures 3-5)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from layershift.core.device import resolve_device
from layershift.core.io import read_table
from layershift.data.shards import token_activations
from layershift.data.tokens import encode_with_kinds, token_strings
from layershift.models.sources import load_encoder

SPECIAL = re.compile(r"^\[(CLS|SEP|PAD|UNK|MASK)\]$|^<.*>$")
PUNCT = re.compile(r"^[^\w]+$")


def token_kind(token: str) -> str:
    """A WordPiece-only guess from the spelling: 'special' ([CLS], <s>, ...), 'punctuation', 'subword'
    (##...), or 'word'. Only for tables written before kinds came from the tokenizer
    (``layershift.data.tokens``); it misreads BPE (Ġ) and SentencePiece (▁) word starts."""
    if SPECIAL.match(token):
        return "special"
    if PUNCT.match(token):
        return "punctuation"
    if token.startswith("##"):
        return "subword"
    return "word"


@torch.inference_mode()
def probe_states(
    model_dirs: dict[str, str | Path],
    sentences: list[str],
    layers: list[int],
    max_length: int = 128,
    device: str = "auto",
) -> pd.DataFrame:
    """The probe sentences through each stage's encoder: one row per (stage, sentence, token) with the
    token, the sentence's text and, per layer ``L`` in ``layers``, its hidden state in column ``layerL``
    (``hidden_states[L]``, float32). One forward pass per sentence and stage, the raw text tokenised
    the way the paper does it; the SAEs are applied later (``probe_table``), so the models are loaded
    once per model x dataset instead of once per layer."""
    frames = []
    for stage, model_dir in model_dirs.items():
        model, tokenizer = load_encoder(model_dir, resolve_device(device))
        encoded = encode_with_kinds(tokenizer, sentences, max_length)  # kinds from the tokenizer itself
        for s, sentence in enumerate(sentences):
            ids = torch.tensor([encoded["input_ids"][s]], device=model.device)
            hidden = model(
                input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True
            ).hidden_states  # (n_layers + 1) x [1, seq, d]
            tokens = token_strings(tokenizer, encoded["input_ids"][s])
            frame = pd.DataFrame(
                {
                    "stage": stage,
                    "sentence": s,
                    "position": range(len(tokens)),
                    "token": tokens,
                    "token_kind": encoded["kinds"][s],
                    "text": sentence,
                }
            )
            for layer in layers:
                frame[f"layer{layer}"] = list(hidden[layer][0].float().cpu().numpy())  # [seq, d] -> seq rows
            frames.append(frame)
        del model
    return pd.concat(frames, ignore_index=True)


def stage_states(states: pd.DataFrame, stage: str, layer: int) -> list[tuple[list[str], torch.Tensor]]:
    """Per probe sentence of ``stage``: (tokens, hidden states ``[seq, d]`` of ``layer``) from a
    ``probe_states`` table."""
    column = f"layer{layer}"
    if column not in states.columns:
        raise KeyError(f"the probe states hold no layer {layer} (they have {sorted(states.columns)})")
    out = []
    for _, rows in states[states["stage"] == stage].groupby("sentence", sort=True):
        rows = rows.sort_values("position")
        hidden = torch.from_numpy(np.stack(rows[column].to_numpy()).astype(np.float32))  # [seq, d]
        out.append((rows["token"].tolist(), hidden))
    return out


def stage_kinds(states: pd.DataFrame, stage: str) -> list[list[str]] | None:
    """Per probe sentence of ``stage``: the tokenizer's token kinds (None for tables without them)."""
    if "token_kind" not in states.columns:
        return None
    rows = states[states["stage"] == stage].sort_values(["sentence", "position"])
    return [group["token_kind"].tolist() for _, group in rows.groupby("sentence", sort=True)]


@torch.inference_mode()
def probe_activations(
    states, sae, features: list[int], stage: str, clean: bool = True, kinds: list[list[str]] | None = None
) -> pd.DataFrame:
    """Long table: one row per (sentence, token, feature) with the feature's activation. ``kinds``: the
    tokenizer's kind of each token (``stage_kinds``); without it the kind is guessed from the spelling."""
    rows = []
    for s, (tokens, hidden) in enumerate(states):
        acts = (
            sae.encode(hidden.to(next(sae.parameters()).device))[:, features].cpu().numpy()
        )  # [seq, d] -> [seq, k]
        for position, token in enumerate(tokens):
            for j, feature in enumerate(features):
                rows.append(
                    (
                        stage,
                        s,
                        position,
                        token,
                        kinds[s][position] if kinds is not None else token_kind(token),
                        int(feature),
                        j + 1,
                        float(acts[position, j]),
                    )
                )
    columns = [
        "stage",
        "sentence",
        "position",
        "token",
        "token_kind",
        "feature",
        "feature_rank",
        "activation",
    ]
    return pd.DataFrame(rows, columns=columns)


def probe_table(states: pd.DataFrame, saes: dict, top_features: dict, layer: int) -> pd.DataFrame:
    """Both stages: each stage's own top features on the same probe sentences (raw text, as in the paper),
    from the hidden states of ``probe_states``."""
    texts = states.drop_duplicates("sentence").set_index("sentence")["text"]
    frames = []
    for stage, sae in saes.items():
        frame = probe_activations(
            stage_states(states, stage, layer),
            sae,
            top_features[stage],
            stage,
            kinds=stage_kinds(states, stage),
        )
        frame["text"] = frame["sentence"].map(texts)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["layer"] = layer
    return table


@torch.inference_mode()
def token_kind_shares(
    sae, shard_dir: str | Path, features: list[int], batch_rows: int = 8192
) -> pd.DataFrame:
    """Over every token row of a layer: the share of each feature's activation on each token kind.

    The kinds are the tokenizer's, written by extraction beside the layers (``tokens/kinds.parquet``);
    shards without that file fall back to guessing from the spelling."""
    kinds_path = Path(shard_dir).parent / "kinds.parquet"
    lookup = None
    if kinds_path.is_file():
        known = read_table(kinds_path)
        keys = zip(known["sentence_id"], known["position"], strict=True)
        lookup = dict(zip(keys, known["kind"], strict=True))
    sums: dict[str, np.ndarray] = {}
    for rows, x in token_activations(shard_dir, ("sentence_id", "position", "token")):
        x = np.array(x, dtype=np.float32)  # a writable float32 copy of the (read-only, float16) shard rows
        acts = sae.encode(torch.from_numpy(x))[:, features].double().numpy()  # [rows, d] -> [rows, k]
        if lookup is not None:
            keys = zip(rows["sentence_id"], rows["position"], strict=True)
            kinds = np.array([lookup.get(key, "word") for key in keys])
        else:
            kinds = np.array([token_kind(t) for t in rows["token"]])
        for kind in np.unique(kinds):
            sums[kind] = sums.get(kind, 0) + acts[kinds == kind].sum(0)
    total = sum(sums.values())
    shares = {kind: value / np.where(total > 0, total, np.nan) for kind, value in sums.items()}
    return pd.DataFrame({"feature": features, **{f"share_{k}": v for k, v in sorted(shares.items())}})
