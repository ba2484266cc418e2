"""Files other libraries read: SAELens's SAE layout (with input normalisation folded into the weights).

**SAEs.** :func:`layershift.dictionaries.sae.files.save_sae` writes a directory that ``sae_lens.SAE.load_from_disk`` loads as it
is (checked against sae-lens 6.54.12 in ``tests/workflow/test_saelens_interop.py``):

* ``cfg.json`` in SAELens 6's layout: ``architecture`` is SAELens's name (``standard`` for our ``relu``,
  ``topk``), ``metadata`` carries ``sae_lens_version`` (the SAELens config layout the file follows, without
  which SAELens treats the file as pre-6.0 and drops the metadata) plus our provenance (model, dataset, stage,
  layer, seed, ...). Our own fields live under ``"layershift"`` (SAELens ignores unknown keys).
* ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
  ``b_dec [d_in]`` with the input normalisation **folded in**, so SAELens's plain
  ``f = act((x - b_dec) @ W_enc + b_enc)``, ``x̂ = f @ W_dec + b_dec`` on *raw* activations equals ours;
  SAELens's own ``normalize_activations`` is therefore ``"none"``. With a working-space input
  ``z = s·(x - m)`` (``m = 0`` unless ``center_and_scale``)::

      W_enc' = s·W_enc     b_enc' = b_enc     W_dec' = W_dec / s     b_dec' = m + b_dec / s

  Decoder rows keep their directions (scaled by ``1/s > 0``), so decoder cosines are unchanged.
* ``layershift_weights.safetensors`` (only when a normalisation is on): the unfolded working-space weights,
  bit for bit, which :func:`layershift.dictionaries.sae.files.load_sae` reads so that training resumes exactly and ``encode`` is
  unchanged. Without normalisation folding is the identity and this file is not written.
"""

from __future__ import annotations

from typing import Any

import torch

# SAELens's names for our architectures (sae_lens.registry), and back.
SAELENS_ARCHITECTURES = {"relu": "standard", "topk": "topk"}
FROM_SAELENS_ARCHITECTURES = {v: k for k, v in SAELENS_ARCHITECTURES.items()}
# The SAELens release whose config layout cfg.json follows (metadata.sae_lens_version; >= 6.0 is what makes
# SAELens keep the metadata block). It is the version the interop test pins (envs/saelens.txt).
SAELENS_LAYOUT_VERSION = "6.54.12"
# Keys SAELens adds to metadata that are not our provenance.
SAELENS_METADATA_KEYS = ("sae_lens_version", "sae_lens_training_version", "hook_name")
WORKING_WEIGHTS_FILENAME = "layershift_weights.safetensors"


@torch.no_grad()
def fold_normalization(
    weights: dict[str, torch.Tensor], mode: str, scale: float, mean: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Working-space weights -> weights that take raw activations (see the module docstring).

    Computed in float64 and cast back to each tensor's dtype, so the folded SAE matches the original to
    float32 rounding. ``mode="none"`` returns the tensors unchanged.
    """
    if mode == "none":
        return dict(weights)
    dtype = weights["W_enc"].dtype
    w = {k: v.to(torch.float64) for k, v in weights.items()}
    s = float(scale)
    b_dec = w["b_dec"] / s
    if mode == "center_and_scale":
        if mean is None:
            raise ValueError("center_and_scale needs the activation mean")
        b_dec = b_dec + mean.to(torch.float64)
    elif mode != "expected_average_only_in":
        raise ValueError(f"unknown normalisation {mode!r}")
    folded = {"W_enc": w["W_enc"] * s, "b_enc": w["b_enc"], "W_dec": w["W_dec"] / s, "b_dec": b_dec}
    return {k: v.to(dtype).contiguous() for k, v in folded.items()}


def saelens_cfg(ours: dict[str, Any]) -> dict[str, Any]:
    """Our config fields (``dataclasses.asdict(SAEConfig)``) -> a SAELens 6 ``cfg.json`` with ours under "layershift"."""
    metadata = {
        "sae_lens_version": SAELENS_LAYOUT_VERSION,
        "sae_lens_training_version": None,  # not trained by SAELens
        "hook_name": ours["hook_name"],
        **ours["metadata"],
    }
    cfg: dict[str, Any] = {
        "architecture": SAELENS_ARCHITECTURES[ours["architecture"]],
        "d_in": ours["d_in"],
        "d_sae": ours["d_sae"],
        "dtype": ours["dtype"],
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",  # ours is folded into the weights
        "reshape_activations": "none",
        "metadata": metadata,
        "format_version": ours["format_version"],
    }
    if ours["architecture"] == "topk":
        cfg |= {"k": ours["k"], "rescale_acts_by_decoder_norm": False}
    own = (
        "architecture",
        "k",
        "l1_coefficient",
        "normalize_activations",
        "activation_scale",
        "activation_mean",
    )
    cfg["layershift"] = {key: ours[key] for key in own}
    return cfg


def cfg_from_saelens(cfg: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`saelens_cfg`: the keyword arguments of our ``SAEConfig``."""
    own = cfg.get("layershift")
    if own is None:
        raise ValueError("cfg.json has no 'layershift' block: not written by layershift's save_sae")
    metadata = dict(cfg.get("metadata", {}))
    hook_name = metadata.get("hook_name") or ""
    for key in SAELENS_METADATA_KEYS:
        metadata.pop(key, None)
    return {
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "dtype": cfg["dtype"],
        "hook_name": hook_name,
        "metadata": metadata,
        "format_version": cfg["format_version"],
        **own,
    }
