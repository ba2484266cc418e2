"""Spliced fidelity: does an SAE keep what the classifier uses?

An SAE's held-out explained variance says how close its reconstruction is to the activations; it does not say
whether the classifier still works on it. Here the hidden state ``hidden_states[layer]`` (the study's layer
numbering: ``layer`` is the output of encoder block ``layer``) is replaced inside the classifier's own forward
pass, at real (non-padding) tokens, by

* the SAE's reconstruction ("spliced"),
* zeros ("zero-ablated") or a fixed mean vector ("mean-ablated"), the two reference points of
  ``loss_recovered = (L_ablated - L_spliced) / (L_ablated - L_clean)`` (1: the SAE loses nothing the
  classifier uses; 0: no better than throwing the layer away),
* the reconstruction with the SAE's error term ``hidden - reconstruction`` added back (a check of the
  splicing itself: it must give the clean logits up to float rounding).

The classifier is a fine-tuned ``AutoModelForSequenceClassification`` or, for the pretrained stage, a
:class:`LinearProbeClassifier`: the frozen encoder, mean pooling and the study's fitted linear probe as one
torch module, so the same splice applies to both.

The splice is a forward hook on the module that produces ``hidden_states[layer]``. For most encoders that is
block ``layer`` (:func:`encoder_blocks`); where the model post-processes a block's output before reporting it
(DeBERTa-v2's convolution after block 1, ModernBERT's final norm after the last block),
:func:`hidden_state_producer` finds the module whose output *is* the reported tensor, so the SAE always sees
the activations it was trained on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from layershift.core.device import resolve_device, seed_everything
from layershift.dictionaries.sae.files import load_sae
from layershift.dictionaries.sae.model import SAE
from layershift.models.batches import Batch, encode_split, make_batches
from layershift.models.classifier import load_finetuned, load_tokenizer
from layershift.models.evaluate import fit_linear_probe

PathLike = str | Path
HiddenTransform = Callable[[torch.Tensor], torch.Tensor]  # [batch, seq, d] -> [batch, seq, d]
RowTransform = Callable[[torch.Tensor], torch.Tensor]  # real-token rows [n_tokens, d] -> [n_tokens, d]


# --- where to splice --------------------------------------------------------------------------------------
def encoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's blocks: the ``nn.ModuleList`` with ``config.num_hidden_layers`` entries (the one holding
    the most parameters if several have that length)."""
    n_layers = model.config.num_hidden_layers
    candidates = [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers
    ]
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no module list of {n_layers} blocks (blocks shared across layers, "
            "as in ALBERT, cannot be spliced one layer at a time)"
        )
    return max(candidates, key=lambda blocks: sum(parameter.numel() for parameter in blocks.parameters()))


def _hidden_of(output) -> torch.Tensor:
    """The hidden-state tensor of a module's output: the output itself or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot splice a module that returns {type(output).__name__}")


def _replace_hidden(output, hidden: torch.Tensor):
    """``output`` with its hidden-state tensor replaced by ``hidden`` (same container type)."""
    if isinstance(output, torch.Tensor):
        return hidden
    return (hidden, *output[1:])


@contextlib.contextmanager
def splice(
    model: torch.nn.Module,
    layer: int,
    transform: HiddenTransform,
    module: torch.nn.Module | None = None,
) -> Iterator[None]:
    """Within the block, the hidden state after encoder block ``layer`` (1-based) is ``transform(hidden)``.

    ``transform`` maps ``[batch, seq, d]`` to the same shape. The hook sits on ``module`` (default: block
    ``layer`` of :func:`encoder_blocks`; pass :func:`hidden_state_producer`'s module to splice exactly where
    ``hidden_states[layer]`` is reported).
    """
    blocks = encoder_blocks(model)
    if not 1 <= layer <= len(blocks):
        raise ValueError(f"layer must be in 1..{len(blocks)}, got {layer}")
    target = blocks[layer - 1] if module is None else module

    def hook(_module, _args, output):
        return _replace_hidden(output, transform(_hidden_of(output)))

    handle = target.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def hidden_state_producer(model: torch.nn.Module, batch: Batch, layer: int) -> torch.nn.Module:
    """The module whose output is ``hidden_states[layer]`` of ``model`` on ``batch`` (the outermost one when
    several return the very same tensor, e.g. a block and its final layer norm)."""
    device = next(model.parameters()).device
    produced: list[tuple[str, torch.nn.Module, object]] = []
    handles = [
        module.register_forward_hook(lambda mod, _args, out, name=name: produced.append((name, mod, out)))
        for name, module in model.named_modules()
        if name
    ]
    try:
        batch = batch.to(device)
        reported = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states[layer]
    finally:
        for handle in handles:
            handle.remove()
    matches = [(name, module) for name, module, out in produced if _is_output(out, reported)]
    if not matches:
        raise ValueError(f"no module of {type(model).__name__} returns hidden_states[{layer}] as such")
    return min(matches, key=lambda match: match[0].count("."))[1]


def _is_output(output, tensor: torch.Tensor) -> bool:
    try:
        return _hidden_of(output) is tensor
    except TypeError:
        return False


def real_token_transform(attention_mask: torch.Tensor, rows: RowTransform) -> HiddenTransform:
    """A hidden-state transform that applies ``rows`` to the real tokens of ``attention_mask`` ``[batch, seq]``
    and leaves padding positions as they are (identity ``rows``: the output equals the input bit for bit)."""
    real = attention_mask.bool()

    def transform(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[:2] != real.shape:
            raise ValueError(
                f"hidden state {tuple(hidden.shape)} does not match the mask {tuple(real.shape)}"
            )
        spliced = hidden.clone()
        spliced[real] = rows(hidden[real]).to(hidden.dtype)  # [n_tokens, d]
        return spliced

    return transform


# --- the classifier -----------------------------------------------------------------------------------------
def classifier_logits(classifier: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The classifier's logits ``[batch, num_labels]`` on one batch (already on the classifier's device)."""
    output = classifier(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return output.logits if hasattr(output, "logits") else output


CONSTANT_SCALE = 1e-6  # a probe feature scaled below this share of the median scale counts as constant


class LinearProbeClassifier(torch.nn.Module):
    """The study's linear probe as a classifier: frozen encoder -> last hidden state averaged over real tokens
    -> standardised with the training split's mean and scale -> logistic regression logits."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        feature_mean: torch.Tensor,
        feature_scale: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.name_or_path = getattr(encoder, "name_or_path", "")
        self.num_labels = int(weight.shape[0])
        self.register_buffer("feature_mean", feature_mean.float())  # [d]
        self.register_buffer("feature_scale", feature_scale.float())  # [d]
        self.register_buffer("weight", weight.float())  # [num_labels, d]
        self.register_buffer("bias", bias.float())  # [num_labels]

    def forward(self, input_ids, attention_mask, output_hidden_states: bool = False):
        """Logits (and, on request, the encoder's hidden states) as a ``SequenceClassifierOutput``."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        encoded = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        hidden = encoded.last_hidden_state  # [b, L, d]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # [b, d]
        standardised = (pooled - self.feature_mean) / self.feature_scale  # [b, d]
        logits = standardised @ self.weight.T + self.bias  # [b, num_labels]
        return SequenceClassifierOutput(logits=logits, hidden_states=encoded.hidden_states)


def probe_classifier(
    encoder: torch.nn.Module, probe: LogisticRegression, scaler: StandardScaler
) -> LinearProbeClassifier:
    """A :class:`LinearProbeClassifier` from a fitted sklearn probe and scaler (classes must be 0..C-1).

    A binary probe becomes the two logits ``[0, z]``, whose softmax is the probe's ``[1 - σ(z), σ(z)]``.
    A feature without variance on the training split (scale below ``CONSTANT_SCALE`` of the median scale:
    mean-pooled dimensions an encoder holds fixed) is left unscaled, as the scaler leaves an exactly constant
    one: its standardised value is float noise there, and a splice that moves it by 1e-3 would move the logits
    by ~1e30. The clean logits do not change (the feature equals its mean).
    """
    classes = np.asarray(probe.classes_)
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"the probe's classes must be 0..C-1, got {classes.tolist()}")
    coef = torch.as_tensor(probe.coef_, dtype=torch.float64)  # [1 or C, d]
    intercept = torch.as_tensor(probe.intercept_, dtype=torch.float64)  # [1 or C]
    if len(classes) == 2:
        coef = torch.cat([torch.zeros_like(coef), coef])  # [2, d]
        intercept = torch.cat([torch.zeros_like(intercept), intercept])  # [2]
    mean = torch.as_tensor(scaler.mean_, dtype=torch.float64)
    scale = torch.as_tensor(scaler.scale_, dtype=torch.float64)
    scale = torch.where(scale < CONSTANT_SCALE * scale.median(), torch.ones_like(scale), scale)
    return LinearProbeClassifier(encoder.eval(), mean, scale, coef, intercept)


def fit_probe_classifier(
    model_dir: PathLike,
    train_df: pd.DataFrame,
    n_classes: int,
    seed: int,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    C: float = 1.0,
    max_iter: int = 5000,
) -> LinearProbeClassifier:
    """The linear probe of :func:`layershift.models.evaluate.evaluate_linear_probe`, fitted the same way on
    ``train_df`` (standardised mean-pooled last hidden state, L2 logistic regression), as a torch module."""
    from transformers import AutoModel

    seed_everything(seed)
    encoder = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    train = encode_split(load_tokenizer(model_dir), train_df, n_classes, max_length, "train_df")
    scaler, probe = fit_linear_probe(encoder, train, seed, batch_size, device, C, max_iter)
    return probe_classifier(encoder.cpu(), probe, scaler)


# --- running the classifier with a splice -------------------------------------------------------------------
def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def labels_in_batch_order(batches: Sequence[Batch], labels: np.ndarray) -> torch.Tensor:
    """``labels`` (source-row order, ``[n]``) rearranged to the order the batches visit the rows."""
    return torch.from_numpy(np.concatenate([np.asarray(labels)[batch.index] for batch in batches]))


def spliced_logits(
    classifier: torch.nn.Module,
    batches: Sequence[Batch],
    layer: int,
    rows: RowTransform | None = None,
    producer: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Logits ``[n, num_labels]`` (float64, batch order) with the real-token rows of ``hidden_states[layer]``
    replaced by ``rows(...)`` at ``producer`` (see :func:`splice`); ``rows=None`` is the clean run."""
    device = model_device(classifier)
    outputs = []
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            if rows is None:
                outputs.append(classifier_logits(classifier, batch).double())
                continue
            with splice(classifier, layer, real_token_transform(batch.attention_mask, rows), producer):
                outputs.append(classifier_logits(classifier, batch).double())
    return torch.cat(outputs)


def sae_reconstruction(sae: SAE) -> RowTransform:
    """Rows -> the SAE's reconstruction of them (raw activation units)."""
    return lambda rows: sae.decode(sae.encode(rows))


def reconstruction_with_error(sae: SAE) -> RowTransform:
    """Rows -> reconstruction + (rows - reconstruction): the clean rows up to float rounding, through the SAE."""

    def rows_through_sae(rows: torch.Tensor) -> torch.Tensor:
        reconstruction = sae.decode(sae.encode(rows))
        return reconstruction + (rows - reconstruction)

    return rows_through_sae


# --- fidelity -------------------------------------------------------------------------------------------------
def loss_recovered(loss_ablated: float, loss_spliced: float, loss_clean: float) -> float:
    """``(L_ablated - L_spliced) / (L_ablated - L_clean)``; NaN when ablation does not change the loss."""
    gap = loss_ablated - loss_clean
    return (loss_ablated - loss_spliced) / gap if gap != 0 else float("nan")


def mean_kl(reference_logits: torch.Tensor, other_logits: torch.Tensor) -> float:
    """Mean over rows of KL(reference ‖ other) between the label distributions of two logit matrices."""
    reference = F.log_softmax(reference_logits.double(), dim=-1)  # [n, C]
    other = F.log_softmax(other_logits.double(), dim=-1)  # [n, C]
    return float((reference.exp() * (reference - other)).sum(dim=-1).mean())


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), targets))


def _accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == targets).double().mean())


@dataclass(frozen=True)
class LayerBaseline:
    """What every SAE spliced into one layer is compared with: the clean run and the two ablations."""

    producer: torch.nn.Module  # the module whose output is hidden_states[layer]
    targets: torch.Tensor  # [n] labels in batch order
    clean: torch.Tensor  # [n, C] clean logits
    losses: dict[str, float]  # clean, zero_ablated, mean_ablated
    n_tokens: int


def layer_baseline(
    classifier: torch.nn.Module,
    batches: Sequence[Batch],
    labels: np.ndarray,
    layer: int,
    mean_hidden: torch.Tensor | np.ndarray | None = None,
) -> LayerBaseline:
    """The clean run (which also averages the layer's real-token rows when ``mean_hidden`` is None: the
    mean-ablation vector ``[d]``) and the zero- and mean-ablated runs of one layer: three passes."""
    classifier.eval()
    device = model_device(classifier)
    producer = hidden_state_producer(classifier, batches[0], layer)
    targets = labels_in_batch_order(batches, labels).to(device)
    totals: dict[str, torch.Tensor | int] = {"sum": 0, "count": 0}

    def record(rows: torch.Tensor) -> torch.Tensor:  # the identity splice: bit-equal to the clean run
        totals["sum"] = totals["sum"] + rows.double().sum(dim=0)  # [d]
        totals["count"] += len(rows)
        return rows

    clean = spliced_logits(classifier, batches, layer, record, producer)
    if mean_hidden is None:
        mean_hidden = totals["sum"] / totals["count"]
    mean_row = torch.as_tensor(mean_hidden, device=device).float()  # [d]
    losses = {
        "clean": _loss(clean, targets),
        "zero_ablated": _loss(
            spliced_logits(classifier, batches, layer, torch.zeros_like, producer), targets
        ),
        "mean_ablated": _loss(
            spliced_logits(classifier, batches, layer, lambda rows: mean_row.expand_as(rows), producer),
            targets,
        ),
    }
    n_tokens = int(sum(batch.n_tokens for batch in batches))
    return LayerBaseline(producer, targets, clean, losses, n_tokens)


def spliced_fidelity(
    classifier: torch.nn.Module,
    batches: Sequence[Batch],
    labels: np.ndarray,
    layer: int,
    sae: SAE,
    mean_hidden: torch.Tensor | np.ndarray | None = None,
    baseline: LayerBaseline | None = None,
    error_check: bool = True,
) -> dict:
    """How much of the classifier's loss survives replacing ``hidden_states[layer]`` by the SAE's reconstruction.

    ``labels`` are the batches' source rows' class ids ``[n]``; ``mean_hidden`` ``[d]`` is the mean-ablation
    vector (None: the mean over the batches' real tokens); ``baseline``: the layer's :func:`layer_baseline`
    when several SAEs of one layer are judged (computed here otherwise). The SAE must sit on the classifier's
    device. Returns clean / spliced / zero-ablated / mean-ablated cross-entropy (mean over texts),
    ``loss_recovered_zero`` and ``loss_recovered_mean``, ``kl_clean_spliced``, clean and spliced accuracy, how
    often the spliced prediction agrees with the clean one, and (``error_check``) the error-term check
    (reconstruction + error spliced in): ``loss_error_term`` and ``max_logit_diff_error_term`` (max |logit -
    clean logit|), both ~clean.
    """
    if baseline is None:
        baseline = layer_baseline(classifier, batches, labels, layer, mean_hidden)
    clean, targets, losses = baseline.clean, baseline.targets, dict(baseline.losses)
    spliced = spliced_logits(classifier, batches, layer, sae_reconstruction(sae), baseline.producer)
    losses["spliced"] = _loss(spliced, targets)
    result = {
        "layer": layer,
        "n_texts": len(targets),
        "n_tokens": baseline.n_tokens,
        **{f"loss_{name}": losses[name] for name in ("clean", "spliced", "zero_ablated", "mean_ablated")},
        "loss_recovered_zero": loss_recovered(losses["zero_ablated"], losses["spliced"], losses["clean"]),
        "loss_recovered_mean": loss_recovered(losses["mean_ablated"], losses["spliced"], losses["clean"]),
        "kl_clean_spliced": mean_kl(clean, spliced),
        "accuracy_clean": _accuracy(clean, targets),
        "accuracy_spliced": _accuracy(spliced, targets),
        "prediction_agreement": float((clean.argmax(-1) == spliced.argmax(-1)).double().mean()),
    }
    if error_check:
        through_sae = spliced_logits(
            classifier, batches, layer, reconstruction_with_error(sae), baseline.producer
        )
        result["loss_error_term"] = _loss(through_sae, targets)
        result["max_logit_diff_error_term"] = float((through_sae - clean).abs().max())
    return result


# --- from files -------------------------------------------------------------------------------------------------
def load_spliceable_classifier(classifier: PathLike | torch.nn.Module, device: str = "auto"):
    """(classifier module in eval mode on ``device``, its tokenizer) from a saved fine-tuned classifier directory
    or an in-memory module (a :class:`LinearProbeClassifier` or a sequence classifier) that knows its
    ``name_or_path``."""
    if isinstance(classifier, (str, Path)):
        model, tokenizer = load_finetuned(classifier), load_tokenizer(classifier)
    else:
        model, tokenizer = classifier, load_tokenizer(classifier.name_or_path)
    return model.to(resolve_device(device)).eval(), tokenizer


def split_batches(
    classifier: torch.nn.Module, tokenizer, df: pd.DataFrame, max_length: int, batch_size: int
) -> tuple[list[Batch], np.ndarray]:
    """(length-sorted batches, labels ``[n]``) of a labelled split (columns ``text``, ``label``)."""
    encodings = encode_split(tokenizer, df, classifier.num_labels, max_length, "split")
    return make_batches(encodings, batch_size), encodings.labels


def load_judged_sae(
    classifier: PathLike | torch.nn.Module,
    test_df: pd.DataFrame,
    sae_dir: PathLike,
    max_length: int = 128,
    batch_size: int = 32,
    device: str = "auto",
) -> tuple[torch.nn.Module, list[Batch], np.ndarray, SAE]:
    """(classifier, test batches, labels ``[n]``, SAE on the classifier's device): what the file-based entry
    points judge, from a classifier directory or probe module, a labelled split and an SAE directory."""
    model, tokenizer = load_spliceable_classifier(classifier, device)
    batches, labels = split_batches(model, tokenizer, test_df, max_length, batch_size)
    return model, batches, labels, load_sae(sae_dir, model_device(model)).eval()


def sae_fidelity(
    classifier: PathLike | torch.nn.Module,
    test_df: pd.DataFrame,
    layer: int,
    sae_dir: PathLike,
    max_length: int = 128,
    batch_size: int = 32,
    device: str = "auto",
    mean_hidden: torch.Tensor | np.ndarray | None = None,
) -> dict:
    """:func:`spliced_fidelity` of the SAE saved in ``sae_dir`` on a classifier directory or probe module,
    over ``test_df`` tokenised to ``max_length``."""
    model, batches, labels, sae = load_judged_sae(
        classifier, test_df, sae_dir, max_length, batch_size, device
    )
    return spliced_fidelity(model, batches, labels, layer, sae, mean_hidden)
