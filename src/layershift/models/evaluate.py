"""Before/after classification scores: the paper's Table 2 rows plus the baseline it lacks.

Three rows per model × dataset, all on the same test split:

- ``pretrained``: the pretrained encoder with a freshly initialised, seeded classification head (the paper's
  "pre-trained" column: what the model does before any task training, i.e. about chance);
- ``linear_probe``: a logistic regression on frozen, mean-pooled pretrained features (a stronger "before"
  baseline: how much of the task is already linearly readable from the untouched encoder);
- ``finetuned``: the fine-tuned model written by :func:`layershift.models.finetune.finetune`.

Each row is a :func:`layershift.models.metrics.classification_metrics` dict (the paper's Fig. 6
classification reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from layershift.core.device import resolve_device, seed_everything, set_threads
from layershift.models.batches import Batch, Encodings, encode_split, encode_texts, make_batches
from layershift.models.classifier import load_classifier, load_finetuned, load_tokenizer, predict_logits
from layershift.models.metrics import classification_metrics

PathLike = str | Path


def predict(
    model_dir_or_model,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    threads: int | None = None,
    device: str = "auto",
    tokenizer=None,
) -> np.ndarray:
    """Predicted label ids [n] for ``texts`` from a saved classifier directory or an in-memory model.

    For an in-memory model the tokenizer is ``tokenizer`` or, if None, the one saved in ``model.name_or_path``;
    the model is moved to ``device`` and left in eval mode.
    """
    set_threads(threads)
    if isinstance(model_dir_or_model, (str, Path)):
        model, tokenizer = load_finetuned(model_dir_or_model), tokenizer or load_tokenizer(model_dir_or_model)
    else:
        model = model_dir_or_model
        tokenizer = tokenizer or load_tokenizer(model.name_or_path)
    enc = encode_texts(tokenizer, texts, max_length)
    return _predict_encoded(model, make_batches(enc, batch_size), device)


def _predict_encoded(model, batches: Sequence[Batch], device: str) -> np.ndarray:
    """argmax of the model's logits over every row the batches cover, in row order: [n] int64."""
    dev = resolve_device(device)
    return predict_logits(model.to(dev), batches, dev).argmax(axis=1).astype(np.int64)


def evaluate_pretrained_head(
    model_dir: PathLike,
    test_df: pd.DataFrame,
    label_names: Sequence[str],
    seed: int,
    batch_size: int = 64,
    max_length: int = 128,
    threads: int | None = None,
    device: str = "auto",
) -> dict:
    """Scores of the pretrained encoder + a classification head initialised from ``seed`` (no training)."""
    set_threads(threads)
    model = load_classifier(model_dir, label_names, seed)
    return _evaluate_model(
        model, load_tokenizer(model_dir), test_df, label_names, batch_size, max_length, device
    )


def evaluate_finetuned(
    finetuned_dir: PathLike,
    test_df: pd.DataFrame,
    label_names: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    threads: int | None = None,
    device: str = "auto",
) -> dict:
    """Scores of the fine-tuned classifier saved in ``finetuned_dir``."""
    set_threads(threads)
    model = load_finetuned(finetuned_dir)
    if model.config.num_labels != len(label_names):
        raise ValueError(
            f"{finetuned_dir} predicts {model.config.num_labels} classes, not {len(label_names)}"
        )
    tokenizer = load_tokenizer(finetuned_dir)
    return _evaluate_model(model, tokenizer, test_df, label_names, batch_size, max_length, device)


def _evaluate_model(model, tokenizer, test_df, label_names, batch_size, max_length, device) -> dict:
    enc = encode_split(tokenizer, test_df, len(label_names), max_length, "test_df")
    y_pred = _predict_encoded(model, make_batches(enc, batch_size), device)
    return classification_metrics(enc.labels, y_pred, label_names)


def evaluate_linear_probe(
    model_dir: PathLike,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    label_names: Sequence[str],
    seed: int,
    batch_size: int = 64,
    max_length: int = 128,
    threads: int | None = None,
    device: str = "auto",
    C: float = 1.0,
    max_iter: int = 5000,
) -> dict:
    """Scores of a logistic regression (L2, strength ``1/C``) on frozen mean-pooled features of ``model_dir``.

    Features are the last hidden state averaged over real (non-pad) tokens, standardised with the training
    split's mean and standard deviation; the probe is fitted on ``train_df`` and scored on ``test_df``.
    """
    set_threads(threads)
    from transformers import AutoModel

    seed_everything(seed)
    encoder = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    tokenizer = load_tokenizer(model_dir)
    n_classes = len(label_names)
    train = encode_split(tokenizer, train_df, n_classes, max_length, "train_df")
    test = encode_split(tokenizer, test_df, n_classes, max_length, "test_df")
    scaler, probe = fit_linear_probe(encoder, train, seed, batch_size, device, C, max_iter)
    x_test = mean_pooled_features(encoder, make_batches(test, batch_size), device)  # [n_test, d]
    y_pred = probe.predict(scaler.transform(x_test))
    return classification_metrics(test.labels, y_pred, label_names)


def fit_linear_probe(
    encoder,
    train: Encodings,
    seed: int,
    batch_size: int = 64,
    device: str = "auto",
    C: float = 1.0,
    max_iter: int = 5000,
) -> tuple[StandardScaler, LogisticRegression]:
    """(scaler, probe): the study's linear probe, an L2 logistic regression (strength ``1/C``, seeded) on the
    standardised mean-pooled last hidden state of the frozen ``encoder`` over the ``train`` encodings."""
    x_train = mean_pooled_features(encoder, make_batches(train, batch_size), device)  # [n_train, d]
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    probe.fit(scaler.transform(x_train), train.labels)
    return scaler, probe


def mean_pooled_features(encoder, batches: Sequence[Batch], device: str = "auto") -> np.ndarray:
    """Last hidden state averaged over each row's real tokens, in row order: [n, d_model] float64."""
    dev = resolve_device(device)
    encoder = encoder.to(dev).eval()
    pooled, index = [], []
    with torch.inference_mode():
        for batch in batches:
            b = batch.to(dev)
            hidden = encoder(
                input_ids=b.input_ids, attention_mask=b.attention_mask
            ).last_hidden_state  # [b, L, d]
            mask = b.attention_mask.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
            pooled.append((hidden * mask).sum(dim=1) / mask.sum(dim=1))  # [b, d]
            index.append(batch.index)
    order = np.concatenate(index)
    features = np.empty((len(order), pooled[0].shape[1]), dtype=np.float64)
    features[order] = torch.cat(pooled).double().cpu().numpy()
    return features


def classification_report(
    pretrained_dir: PathLike,
    finetuned_dir: PathLike,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    label_names: Sequence[str],
    seed: int,
    batch_size: int = 64,
    max_length: int = 128,
    threads: int | None = None,
    device: str = "auto",
) -> dict:
    """The before/after table for one model × dataset: pretrained head, linear probe, fine-tuned."""
    common = {"batch_size": batch_size, "max_length": max_length, "threads": threads, "device": device}
    return {
        "pretrained": evaluate_pretrained_head(pretrained_dir, test_df, label_names, seed, **common),
        "linear_probe": evaluate_linear_probe(pretrained_dir, train_df, test_df, label_names, seed, **common),
        "finetuned": evaluate_finetuned(finetuned_dir, test_df, label_names, **common),
        "n_test": int(len(test_df)),
        "label_names": list(label_names),
    }
