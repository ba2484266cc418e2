"""Token-level activations of chosen SAE features on probe sentences, computed the paper's way:
tokenise -> hidden state of layer L -> that stage's SAE encoder (the paper's Figures 3-5)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from layershift.models import load_encoder, pick_device
from layershift.shards import token_activations

SPECIAL = re.compile(r"^\[(CLS|SEP|PAD|UNK|MASK)\]$|^<.*>$")
PUNCT = re.compile(r"^[^\w]+$")


def token_kind(token: str) -> str:
    """'special' ([CLS], [SEP], ...), 'punctuation', 'subword' (##...), or 'word'."""
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
        model, tokenizer = load_encoder(model_dir, pick_device(device))
        for s, sentence in enumerate(sentences):
            enc = tokenizer(sentence, truncation=True, max_length=max_length, return_tensors="pt").to(
                model.device
            )
            hidden = model(**enc, output_hidden_states=True).hidden_states  # (n_layers + 1) x [1, seq, d]
            tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
            frame = pd.DataFrame(
                {
                    "stage": stage,
                    "sentence": s,
                    "position": range(len(tokens)),
                    "token": tokens,
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


@torch.inference_mode()
def probe_activations(states, sae, features: list[int], stage: str, clean: bool = True) -> pd.DataFrame:
    """Long table: one row per (sentence, token, feature) with the feature's activation."""
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
                        token_kind(token),
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
        frame = probe_activations(stage_states(states, stage, layer), sae, top_features[stage], stage)
        frame["text"] = frame["sentence"].map(texts)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["layer"] = layer
    return table


@torch.inference_mode()
def token_kind_shares(
    sae, shard_dir: str | Path, features: list[int], batch_rows: int = 8192
) -> pd.DataFrame:
    """Over every token row of a layer: the share of each feature's activation on each token kind."""
    sums: dict[str, np.ndarray] = {}
    for tokens, x in token_activations(shard_dir):
        acts = sae.encode(torch.from_numpy(x))[:, features].double().numpy()  # [rows, d] -> [rows, k]
        kinds = np.array([token_kind(t) for t in tokens])
        for kind in np.unique(kinds):
            sums[kind] = sums.get(kind, 0) + acts[kinds == kind].sum(0)
    total = sum(sums.values())
    shares = {kind: value / np.where(total > 0, total, np.nan) for kind, value in sums.items()}
    return pd.DataFrame({"feature": features, **{f"share_{k}": v for k, v in sorted(shares.items())}})
