"""The hidden states of several layers and their SAEs' latents, batch by batch, from one forward pass each.

``hidden_states[layer]`` is read from the classifier's own forward pass (``output_hidden_states=True``), the
very tensor the splice of :mod:`layershift.analysis.fidelity` replaces and the one the SAEs were trained on,
so every layer of a run costs one pass over a split together. Latents are computed for the real tokens only
and laid back on the padded grid with zeros at padding, one batch at a time (never for the whole split).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from layershift.analysis.fidelity import model_device
from layershift.dictionaries.sae.model import SAE
from layershift.models.batches import Batch


def padded_codes(sae: SAE, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The SAE's latents of ``hidden`` ``[b, L, d]`` at real tokens: ``[b, L, d_sae]``, zeros at padding."""
    real = attention_mask.bool()  # [b, L]
    token_codes = sae.encode(hidden[real])  # [n_tokens, d_sae]
    codes = torch.zeros(*real.shape, token_codes.shape[-1], dtype=token_codes.dtype, device=hidden.device)
    codes[real] = token_codes
    return codes


def mean_over_real_tokens(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``values`` ``[b, L, k]`` averaged over each row's real tokens: ``[b, k]`` float64."""
    mask = attention_mask.unsqueeze(-1).double()  # [b, L, 1]
    return (values.double() * mask).sum(dim=1) / mask.sum(dim=1)


@torch.no_grad()
def layer_codes(
    classifier: torch.nn.Module, batches: Sequence[Batch], saes: Mapping[int, SAE]
) -> Iterator[tuple[Batch, int, torch.Tensor, torch.Tensor]]:
    """``(batch, layer, hidden [b, L, d], codes [b, L, d_sae])`` for every batch and every layer of ``saes``
    (``{layer: SAE}``, each on the classifier's device), one forward pass per batch; the batch is on the
    classifier's device and the codes are zero at padding."""
    classifier.eval()
    device = model_device(classifier)
    for batch in batches:
        batch = batch.to(device)
        hidden_states = classifier(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
        for layer, sae in saes.items():
            hidden = hidden_states[layer]  # [b, L, d]
            yield batch, layer, hidden, padded_codes(sae, hidden, batch.attention_mask)
