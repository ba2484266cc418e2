"""What each SAE feature responds to: how often it fires, how strongly per class, and the sentences it fires on
most, with the tokens around its strongest firing.

:class:`FeatureProfiles` is fed one batch of latents at a time (from :func:`layer_codes.layer_codes`) and keeps
only running totals and, per feature, the top sentences seen so far: the sentence's row, the start of the
token window and the feature's activations in that window. Memory is ``[contexts, d_sae, context_tokens]``
whatever the split's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from layershift.models.batches import Batch


class FeatureProfiles:
    """Running per-feature profile of one SAE layer over a split, built one batch at a time."""

    def __init__(self, d_sae: int, n_classes: int, labels: np.ndarray, contexts: int, context_tokens: int):
        """``labels`` are the split's class ids in source-row order ``[n]``."""
        if context_tokens < 1:
            raise ValueError(f"context_tokens must be at least 1, got {context_tokens}")
        self.n_classes, self.contexts, self.context_tokens = n_classes, contexts, context_tokens
        self.labels = np.asarray(labels, dtype=np.int64)
        self.firing = np.zeros(d_sae)  # [d_sae] real tokens where the feature is > 0
        self.class_sum = np.zeros((n_classes, d_sae))  # [C, d_sae] activation summed over class c's tokens
        self.class_tokens = np.zeros(n_classes)  # [C] real tokens of class c's sentences
        self.token_ids: dict[int, list[int]] = {}  # source row -> its real token ids
        self.top: dict[str, torch.Tensor] | None = None  # the running top contexts, see _merge_top

    @property
    def n_tokens(self) -> int:
        """Real tokens seen so far."""
        return int(self.class_tokens.sum())

    def update(self, batch: Batch, codes: torch.Tensor) -> None:
        """Add one batch's latents ``[b, L, d_sae]`` (zero at padding; the batch on the codes' device)."""
        real = batch.attention_mask.bool()  # [b, L]
        rows = torch.as_tensor(batch.index, dtype=torch.long, device=codes.device)  # [b]
        labels = torch.as_tensor(self.labels[batch.index], device=codes.device)  # [b]
        token_codes = codes[real].double()  # [n_tokens, d_sae]
        token_labels = labels[:, None].expand_as(real)[real]  # [n_tokens]
        self.firing += (token_codes > 0).sum(dim=0).cpu().numpy()
        class_sum = torch.zeros(self.n_classes, codes.shape[-1], dtype=torch.float64, device=codes.device)
        class_sum.index_add_(0, token_labels, token_codes)  # [C, d_sae]
        self.class_sum += class_sum.cpu().numpy()
        self.class_tokens += torch.bincount(token_labels, minlength=self.n_classes).cpu().numpy()
        lengths = real.sum(dim=1)  # [b]
        for row, ids, length in zip(batch.index, batch.input_ids.cpu(), lengths.tolist(), strict=True):
            self.token_ids[int(row)] = ids[:length].tolist()
        self._merge_top(self._batch_contexts(codes, real, lengths, rows))

    def _batch_contexts(
        self, codes: torch.Tensor, real: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per sentence of the batch and feature: the max activation, the row, the window's start and the
        feature's activations over the window (centred on the max, shifted to stay inside the sentence)."""
        width = self.context_tokens
        masked = codes.masked_fill(~real.unsqueeze(-1), float("-inf"))  # [b, L, d_sae]
        activation, position = masked.max(dim=1)  # [b, d_sae] each
        last_start = (lengths - width).clamp(min=0).unsqueeze(-1)  # [b, 1]
        start = torch.minimum((position - width // 2).clamp(min=0), last_start)  # [b, d_sae]
        offsets = start.unsqueeze(-1) + torch.arange(width, device=codes.device)  # [b, d_sae, W]
        window = codes.transpose(1, 2).gather(2, offsets.clamp(max=codes.shape[1] - 1))  # [b, d_sae, W]
        return {
            "activation": activation,
            "row": rows.unsqueeze(-1).expand_as(start),
            "start": start,
            "window": window,
        }

    def _merge_top(self, candidates: dict[str, torch.Tensor]) -> None:
        """Keep, per feature, the ``contexts`` sentences of largest max activation among the kept and the new."""
        if self.top is not None:
            candidates = {key: torch.cat([self.top[key], value]) for key, value in candidates.items()}
        keep = min(self.contexts, len(candidates["activation"]))
        _, slot = candidates["activation"].topk(keep, dim=0)  # [keep, d_sae]
        self.top = {
            key: value.gather(
                0, slot if value.dim() == 2 else slot.unsqueeze(-1).expand(-1, -1, value.shape[2])
            )
            for key, value in candidates.items()
        }

    def table(self, tokenizer) -> pd.DataFrame:
        """One row per live feature (fires on at least one real token): ``feature``, ``firing_rate``,
        ``mean_activation_class_{c}`` (mean over class ``c``'s real tokens; NaN where the class is absent) and
        ``contexts`` (see :func:`feature_profile_table`)."""
        live = np.flatnonzero(self.firing > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            class_mean = self.class_sum[:, live] / self.class_tokens[:, None]  # [C, n_live]
        columns = {"feature": live, "firing_rate": self.firing[live] / max(self.n_tokens, 1)}
        columns |= {f"mean_activation_class_{label}": class_mean[label] for label in range(self.n_classes)}
        columns["contexts"] = self._contexts(live, tokenizer)
        return pd.DataFrame(columns)

    def _contexts(self, features: np.ndarray, tokenizer) -> list[list[dict]]:
        """The kept contexts of each of ``features``, by decreasing activation, those where it fires only."""
        if self.top is None:
            return [[] for _ in features]
        top = {key: value.cpu().numpy() for key, value in self.top.items()}
        out = []
        for feature in features:
            contexts = []
            for slot in range(len(top["activation"])):
                activation = float(top["activation"][slot, feature])
                if activation <= 0:
                    continue
                row, start = int(top["row"][slot, feature]), int(top["start"][slot, feature])
                ids = self.token_ids[row][start : start + self.context_tokens]
                contexts.append(
                    {
                        "tokens": list(tokenizer.convert_ids_to_tokens(ids)),
                        "activations": top["window"][slot, feature, : len(ids)].astype(float).tolist(),
                        "label": int(self.labels[row]),
                        "activation": activation,
                    }
                )
            out.append(contexts)
        return out


def feature_profile_table(
    profiles: Sequence[tuple[int, FeatureProfiles]], tokenizer, n_classes: int
) -> pd.DataFrame:
    """One row per (layer, live feature) of ``[(layer, profiles), ...]``: ``layer``, ``feature``,
    ``firing_rate``, ``mean_activation_class_{c}`` and ``contexts``, a list of the top sentences by the
    feature's max activation, each ``{"tokens": the real tokens around the strongest firing as the tokenizer
    writes them, "activations": the feature's activation on each, "label": the sentence's class id,
    "activation": the max}``."""
    columns = ["layer", "feature", "firing_rate"]
    columns += [f"mean_activation_class_{label}" for label in range(n_classes)] + ["contexts"]
    tables = [layer_profiles.table(tokenizer).assign(layer=layer) for layer, layer_profiles in profiles]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]
