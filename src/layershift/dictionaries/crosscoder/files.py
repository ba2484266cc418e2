"""A crosscoder on disk: ``cfg.json`` + ``crosscoder_weights.safetensors`` (``W_enc [2, d, d_latent]``,
``b_enc``, ``W_dec [d_latent, 2, d]``, ``b_dec [2, d]``), each written atomically, with ``format_version``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from layershift.core.io import read_json, read_safetensors, write_json, write_safetensors
from layershift.dictionaries.crosscoder.config import FORMAT_VERSION, CrosscoderConfig
from layershift.dictionaries.crosscoder.model import Crosscoder
from layershift.dictionaries.weights import DTYPES, WEIGHT_NAMES

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "crosscoder_weights.safetensors"


def save_crosscoder(crosscoder: Crosscoder, directory: str | os.PathLike) -> None:
    """Write ``crosscoder_weights.safetensors`` then ``cfg.json`` into ``directory``, each atomically."""
    directory = Path(directory)
    tensors = {
        "W_enc": crosscoder.W_enc,  # [2, d, d_latent]
        "b_enc": crosscoder.b_enc,  # [d_latent]
        "W_dec": crosscoder.W_dec,  # [d_latent, 2, d]
        "b_dec": crosscoder.b_dec,  # [2, d]
    }
    write_safetensors(tensors, directory / WEIGHTS_FILENAME, FORMAT_VERSION)
    write_json(crosscoder.cfg.to_dict(), directory / CFG_FILENAME)


def load_crosscoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Crosscoder:
    """Read a crosscoder saved by :func:`save_crosscoder`, checking every shape and the tied decoder rows."""
    directory = Path(directory)
    crosscoder = Crosscoder(CrosscoderConfig.from_dict(read_json(directory / CFG_FILENAME)))
    shapes = {name: tuple(getattr(crosscoder, name).shape) for name in WEIGHT_NAMES}
    state = read_safetensors(directory / WEIGHTS_FILENAME, shapes, DTYPES[crosscoder.cfg.dtype])
    n_shared = crosscoder.cfg.n_shared
    if not torch.equal(state["W_dec"][:n_shared, 0], state["W_dec"][:n_shared, 1]):
        raise ValueError(f"{directory}: the {n_shared} designated shared latents have untied decoders")
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "b_dec"):
            getattr(crosscoder, name).copy_(state[name])
        crosscoder.W_dec_tied.copy_(state["W_dec"][:n_shared, 0])
        crosscoder.W_dec_free.copy_(state["W_dec"][n_shared:])
    return crosscoder.to(device)
