"""Token-level activations of chosen SAE features on probe sentences, computed the paper's way:
tokenise -> hidden state of layer L -> that stage's SAE encoder (the paper's Figures 3-5)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from layershift.models import load_encoder, pick_device
from layershift.shards import ShardReader, activations

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
def layer_states(
    model_dir: str | Path, sentences: list[str], layer: int, max_length: int = 128, device: str = "auto"
):
    """Per sentence: (tokens, hidden states ``[seq, d]`` of ``hidden_states[layer]``)."""
    model, tokenizer = load_encoder(model_dir, pick_device(device))
    out = []
    for sentence in sentences:
        enc = tokenizer(sentence, truncation=True, max_length=max_length, return_tensors="pt").to(
            model.device
        )
        hidden = model(**enc, output_hidden_states=True).hidden_states[layer][0]  # [seq, d]
        out.append((tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist()), hidden.float().cpu()))
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


def probe_table(
    model_dirs: dict, saes: dict, top_features: dict, sentences: list[str], layer: int, max_length: int
) -> pd.DataFrame:
    """Both stages: each stage's own top features on the same probe sentences (raw text, as in the paper)."""
    frames = []
    for stage, model_dir in model_dirs.items():
        states = layer_states(model_dir, sentences, layer, max_length)
        frame = probe_activations(states, saes[stage], top_features[stage], stage)
        frame["text"] = frame["sentence"].map(dict(enumerate(sentences)))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["layer"] = layer
    return table


@torch.inference_mode()
def token_kind_shares(
    sae, shard_dir: str | Path, features: list[int], batch_rows: int = 8192
) -> pd.DataFrame:
    """Over every token row of a layer: the share of each feature's activation on each token kind."""
    reader = ShardReader(shard_dir)
    sums: dict[str, np.ndarray] = {}
    for table in reader.iter_tables(["token", "activation"]):
        x = torch.from_numpy(activations(table))
        acts = sae.encode(x)[:, features].double().numpy()  # [rows, d] -> [rows, k]
        kinds = np.array([token_kind(t) for t in table.column("token").to_pylist()])
        for kind in np.unique(kinds):
            sums[kind] = sums.get(kind, 0) + acts[kinds == kind].sum(0)
    total = sum(sums.values())
    shares = {kind: value / np.where(total > 0, total, np.nan) for kind, value in sums.items()}
    return pd.DataFrame({"feature": features, **{f"share_{k}": v for k, v in sorted(shares.items())}})


def activation_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of each feature's total activation that lands on each token kind."""
    total = frame.groupby(["stage", "feature"])["activation"].transform("sum").replace(0, np.nan)
    frame = frame.assign(share=frame["activation"] / total)
    return frame.pivot_table(
        index=["stage", "feature"], columns="token_kind", values="share", aggfunc="sum", fill_value=0.0
    )
