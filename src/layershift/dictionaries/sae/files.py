"""An SAE on disk: a directory with ``cfg.json`` + ``sae_weights.safetensors`` that both :func:`load_sae` and
``sae_lens.SAE.load_from_disk`` read (the layout is :mod:`layershift.dictionaries.interop`'s)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from layershift.core.io import read_json, read_safetensors, write_json, write_safetensors
from layershift.dictionaries.interop import WORKING_WEIGHTS_FILENAME, fold_normalization
from layershift.dictionaries.sae.config import FORMAT_VERSION, SAEConfig
from layershift.dictionaries.sae.model import SAE
from layershift.dictionaries.weights import DTYPES, WEIGHT_NAMES

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"


def save_sae(sae: SAE, directory: str | os.PathLike) -> None:
    """Write an SAE that both :func:`load_sae` and ``sae_lens.SAE.load_from_disk`` read, each file atomically.

    ``sae_weights.safetensors`` holds the weights with the input normalisation folded in (what SAELens runs on
    raw activations); with a normalisation on, ``layershift_weights.safetensors`` holds the working-space
    weights bit for bit. ``cfg.json`` comes last. Files are replaced one by one (not the whole directory), so
    siblings such as ``metrics.json`` survive.
    """
    directory = Path(directory)
    tensors = {name: getattr(sae, name).detach().to("cpu").contiguous() for name in WEIGHT_NAMES}
    mode = sae.cfg.normalize_activations
    folded = fold_normalization(tensors, mode, sae.cfg.activation_scale, sae.activation_mean.detach().cpu())
    write_safetensors(folded, directory / SAE_WEIGHTS_FILENAME, FORMAT_VERSION)
    working = directory / WORKING_WEIGHTS_FILENAME
    if mode == "none":
        working.unlink(missing_ok=True)
    else:
        write_safetensors(tensors, working, FORMAT_VERSION)
    write_json(sae.cfg.to_dict(), directory / SAE_CFG_FILENAME)


def load_sae(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SAE:
    """Read an SAE saved by :func:`save_sae`: class by ``architecture``, every weight shape checked."""
    directory = Path(directory)
    cfg = SAEConfig.from_dict(read_json(directory / SAE_CFG_FILENAME))
    sae = SAE(cfg)
    # format 1 stored working-space weights in sae_weights; format 2 folds them there and keeps them beside
    unfolded = cfg.format_version >= 2 and cfg.normalize_activations != "none"
    state = read_safetensors(
        directory / (WORKING_WEIGHTS_FILENAME if unfolded else SAE_WEIGHTS_FILENAME),
        {name: tuple(getattr(sae, name).shape) for name in WEIGHT_NAMES},
        DTYPES[cfg.dtype],
    )
    sae.load_state_dict(state, strict=True)
    return sae.to(device)
