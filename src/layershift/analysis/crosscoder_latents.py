"""What a trained crosscoder says about its latents: which model each belongs to, and whether that holds up.

* **Relative decoder norm** r_i = ‖d_b,i‖ / (‖d_a,i‖ + ‖d_b,i‖): ``pretrained-only`` below ``pretrained_only_below``,
  ``finetuned-only`` above ``finetuned_only_above``, ``shared`` between, ``tied`` for designated shared latents,
  ``dead`` for latents that never fire.
* **Latent Scaling** (Minder et al. 2025). For an exclusive latent j with own-model decoder u = d_own,j, fit
  the closed-form least-squares scale β = Σ_t f_j ⟨u, y_t⟩ / (‖u‖² Σ_t f_j²) of f_j·u against, per model m,
  the error with j removed (ε = x_m − x̂_m + f_j d_m,j) and the bias-free reconstruction (r = x̂_m − b_dec,m).
  ν^ε = β^ε_other / β^ε_own large: the other model still holds the direction in its *error*, so its decoder
  was shrunk away (Complete Shrinkage); ν^r = β^r_other / β^r_own large: other latents reconstruct it in the
  other model (Latent Decoupling). Either flags the latent: its exclusivity is a sparsity artefact, not data.
* **Agreement with the SAE diff** (:func:`crosscoder_sae_agreement`): whether crosscoder-exclusive latents and
  the SAE diff's lost/new features name the same directions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from layershift.analysis.diff.match import COMPARED_SIDE, REFERENCE_SIDE
from layershift.core.io import write_json, write_parquet
from layershift.data.shards import paired_batches
from layershift.dictionaries.batches import PairedBatches
from layershift.dictionaries.crosscoder.config import CrosscoderConfig, CrosscoderTrainConfig
from layershift.dictionaries.crosscoder.files import save_crosscoder
from layershift.dictionaries.crosscoder.model import Crosscoder
from layershift.dictionaries.crosscoder.train import train_crosscoder_on_shards
from layershift.dictionaries.decoders import decoder_cosine_matrix, decoder_rows


@dataclass
class LatentTableConfig:
    """How latents are classified by relative decoder norm and vetted by latent scaling."""

    pretrained_only_below: float = 0.1  # r = ‖d_b‖/(‖d_a‖+‖d_b‖) below this: pretrained-only
    finetuned_only_above: float = 0.9  # r above this: fine-tuned-only
    # A latent called exclusive is flagged when the other model carries at least this share of its direction
    # (ν = β_other / β_own): in its reconstruction error (Complete Shrinkage), or rebuilt by other latents
    # (Latent Decoupling); 0.5 = the other model holds at least half of what the own model does.
    max_nu_error: float = 0.5  # ν^ε above this flags Complete Shrinkage
    max_nu_reconstruction: float = 0.5  # ν^r above this flags Latent Decoupling
    min_firing_rate: float = 1e-5  # latents firing on a smaller fraction of tokens are "dead"


def relative_norms(crosscoder: Crosscoder) -> np.ndarray:
    """``[d_latent]`` r_i = ‖d_b,i‖ / (‖d_a,i‖ + ‖d_b,i‖) (0.5 where both norms are 0)."""
    norms = crosscoder.decoder_norms().detach().to("cpu", torch.float64).numpy()
    total = norms.sum(axis=1)
    return np.where(total > 0, norms[:, 1] / np.where(total > 0, total, 1.0), 0.5)


def norm_classes(crosscoder: Crosscoder, cfg: LatentTableConfig) -> np.ndarray:
    """Class per latent from its relative norm (designated shared latents: ``tied``); dead not yet known."""
    r = relative_norms(crosscoder)
    classes = np.where(
        r < cfg.pretrained_only_below,
        "pretrained-only",
        np.where(r > cfg.finetuned_only_above, "finetuned-only", "shared"),
    ).astype(object)
    classes[: crosscoder.cfg.n_shared] = "tied"
    return classes


@torch.no_grad()
def latent_scaling_sums(
    crosscoder: Crosscoder, paired_batches: PairedBatches, latents: np.ndarray, own: np.ndarray
) -> dict[str, np.ndarray]:
    """Streamed float64 sums for the β's of ``latents`` (own model index per latent) and firing counts.

    Returns ``n``, ``fired`` ``[d_latent]``, ``ff`` ``[J]`` = Σ f_j², ``error`` / ``reconstruction`` ``[2, J]``
    = Σ f_j ⟨u_j, ε_m⟩ and Σ f_j ⟨u_j, r_m⟩ with u_j the own-model decoder row.
    """
    device = crosscoder.W_enc.device
    idx = torch.as_tensor(latents, dtype=torch.long, device=device)
    W_dec = crosscoder.W_dec  # [d_latent, 2, d]
    U = W_dec[idx, torch.as_tensor(own, dtype=torch.long, device=device)]  # [J, d]
    self_overlap = torch.einsum("jd,jmd->mj", U, W_dec[idx])  # [2, J]: ⟨u_j, d_m,j⟩
    sums = {
        "ff": torch.zeros(len(idx), dtype=torch.float64, device=device),
        "error": torch.zeros(2, len(idx), dtype=torch.float64, device=device),
        "reconstruction": torch.zeros(2, len(idx), dtype=torch.float64, device=device),
        "fired": torch.zeros(crosscoder.cfg.d_latent, dtype=torch.float64, device=device),
    }
    n = 0
    for x_a, x_b in paired_batches:
        x = crosscoder.scale_inputs(x_a, x_b)  # [b, 2, d]
        f = crosscoder.encode_scaled(x)  # [b, d_latent]
        recon = crosscoder.decode_scaled(f)  # [b, 2, d]
        fj = f[:, idx]  # [b, J]
        error_proj = torch.einsum("bmd,jd->mbj", x - recon, U)  # [2, b, J]
        recon_proj = torch.einsum("bmd,jd->mbj", recon - crosscoder.b_dec, U)  # [2, b, J]
        sums["ff"] += fj.double().pow(2).sum(dim=0)
        sums["error"] += (fj * error_proj).double().sum(dim=1) + self_overlap.double() * fj.double().pow(
            2
        ).sum(0)
        sums["reconstruction"] += (fj * recon_proj).double().sum(dim=1)
        sums["fired"] += (f > 0).double().sum(dim=0)
        n += len(x)
    out = {key: value.cpu().numpy() for key, value in sums.items()}
    out["u_norm_sq"] = U.double().pow(2).sum(dim=1).cpu().numpy()
    out["n"] = n
    return out


def latent_table(
    crosscoder: Crosscoder, paired_batches: PairedBatches, cfg: LatentTableConfig | None = None
) -> pd.DataFrame:
    """Per latent: decoder norms, relative norm, class, firing rate, and latent scaling for exclusive latents.

    Columns: ``latent, class, relative_norm, norm_pretrained, norm_finetuned, decoder_cosine, firing_rate,
    beta_error_own, beta_error_other, beta_reconstruction_own, beta_reconstruction_other, nu_error,
    nu_reconstruction, shrinkage, decoupling, flagged`` (β/ν NaN and flags False for non-exclusive latents;
    an exclusive latent whose ν cannot be computed is flagged, since nothing vouches for it).
    """
    cfg = cfg or LatentTableConfig()
    classes = norm_classes(crosscoder, cfg)
    exclusive = np.flatnonzero(np.isin(classes, ["pretrained-only", "finetuned-only"]))
    own = (classes[exclusive] == "finetuned-only").astype(np.int64)  # 0 = pretrained, 1 = fine-tuned
    sums = latent_scaling_sums(crosscoder, paired_batches, exclusive, own)
    n = max(sums["n"], 1)
    firing = sums["fired"] / n
    denom = sums["u_norm_sq"] * sums["ff"]  # [J]
    with np.errstate(invalid="ignore", divide="ignore"):
        beta_error = np.where(denom > 0, sums["error"] / denom, np.nan)  # [2, J]
        beta_recon = np.where(denom > 0, sums["reconstruction"] / denom, np.nan)
    cols = np.arange(len(exclusive))
    be_own, be_other = beta_error[own, cols], beta_error[1 - own, cols]
    br_own, br_other = beta_recon[own, cols], beta_recon[1 - own, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        nu_error = np.where(be_own > 0, be_other / be_own, np.nan)
        nu_recon = np.where(br_own > 0, br_other / br_own, np.nan)
    norms = crosscoder.decoder_norms().detach().to("cpu", torch.float64).numpy()
    W_dec = crosscoder.W_dec.detach().to("cpu", torch.float64).numpy()
    df = pd.DataFrame(
        {
            "latent": np.arange(crosscoder.cfg.d_latent),
            "class": np.where(firing < max(cfg.min_firing_rate, np.finfo(float).tiny), "dead", classes),
            "relative_norm": relative_norms(crosscoder),
            "norm_pretrained": norms[:, 0],
            "norm_finetuned": norms[:, 1],
            "decoder_cosine": _row_cosines(W_dec[:, 0], W_dec[:, 1]),
            "firing_rate": firing,
        }
    )
    for name, values in {
        "beta_error_own": be_own,
        "beta_error_other": be_other,
        "beta_reconstruction_own": br_own,
        "beta_reconstruction_other": br_other,
        "nu_error": nu_error,
        "nu_reconstruction": nu_recon,
    }.items():
        df[name] = np.nan
        df.loc[exclusive, name] = values
    vetted = df["class"].isin(["pretrained-only", "finetuned-only"])
    df["shrinkage"] = vetted & ~(df["nu_error"] <= cfg.max_nu_error)
    df["decoupling"] = vetted & ~(df["nu_reconstruction"] <= cfg.max_nu_reconstruction)
    df["flagged"] = df["shrinkage"] | df["decoupling"]
    return df


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.nan)


# --- agreement with the SAE diff --------------------------------------------------------------------------
def crosscoder_sae_agreement(
    latents_df: pd.DataFrame,
    sae_labels_df: pd.DataFrame,
    crosscoder: Crosscoder,
    sae_a: Any,
    sae_b: Any,
    cosine_threshold: float = 0.7,
    include_flagged: bool = False,
) -> dict[str, Any]:
    """How often crosscoder-exclusive latents and SAE-diff lost/new features name the same directions.

    A fine-tuned-only latent *agrees* when the live B feature closest to its fine-tuned decoder (cosine ≥
    ``cosine_threshold``) is labelled ``new``; a pretrained-only latent when the closest live A feature to its
    pretrained decoder is ``lost``. The reverse rates say how many new/lost SAE features have such a latent.
    Flagged latents (latent scaling) are left out unless ``include_flagged``.
    """
    W_dec = crosscoder.W_dec.detach().to("cpu", torch.float64).numpy()  # [d_latent, 2, d]
    out: dict[str, Any] = {}
    for model, (cls, side, label, sae) in enumerate(
        (("pretrained-only", REFERENCE_SIDE, "lost", sae_a), ("finetuned-only", COMPARED_SIDE, "new", sae_b))
    ):
        chosen = latents_df["class"] == cls
        if not include_flagged:
            chosen &= ~latents_df["flagged"]
        latents = latents_df.loc[chosen, "latent"].to_numpy()
        features = sae_labels_df[(sae_labels_df["side"] == side) & (sae_labels_df["label"] != "dead")]
        feature_idx = features["feature"].to_numpy()
        cosine = decoder_cosine_matrix(W_dec[latents, model], decoder_rows(sae)[feature_idx])  # [L, F]
        feature_is_label = (features["label"] == label).to_numpy()
        if cosine.size:
            best = cosine.argmax(axis=1)
            agree = (cosine.max(axis=1) >= cosine_threshold) & feature_is_label[best]
            covered = ((cosine >= cosine_threshold).any(axis=0)) & feature_is_label
        else:
            agree, covered = np.zeros(len(latents), bool), np.zeros(len(feature_idx), bool)
        key = cls.replace("-", "_")
        out[f"n_{key}_latents"] = len(latents)
        out[f"{key}_to_{label}"] = float(agree.mean()) if len(latents) else math.nan
        out[f"n_{label}_features"] = int(feature_is_label.sum())
        out[f"{label}_to_{key}"] = (
            float(covered.sum() / feature_is_label.sum()) if feature_is_label.any() else math.nan
        )
    out["cosine_threshold"] = cosine_threshold
    return out


def fit_and_save_crosscoder(
    dir_a: str | os.PathLike,
    dir_b: str | os.PathLike,
    cfg: CrosscoderConfig,
    train: CrosscoderTrainConfig,
    out_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
) -> tuple[Crosscoder, pd.DataFrame]:
    """Train a crosscoder on two stages' shards of a layer; write weights, cfg, metrics and the latent table."""
    crosscoder, metrics = train_crosscoder_on_shards(dir_a, dir_b, cfg, train, checkpoint_dir=checkpoint_dir)
    out_dir = Path(out_dir)
    save_crosscoder(crosscoder, out_dir)
    write_json({**cfg.metadata, **metrics}, out_dir / "metrics.json")
    latents = latent_table(crosscoder, paired_batches(dir_a, dir_b, 4096)())
    write_parquet(latents, out_dir / "latents.parquet", cfg.metadata)
    return crosscoder, latents
