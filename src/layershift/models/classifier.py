"""The sequence classifier and its tokenizer: load (pretrained with a fresh seeded head, or fine-tuned), save,
and predict logits, at fp32 or under CUDA autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from layershift.core.device import seed_everything
from layershift.core.io import atomic_dir, write_json
from layershift.models.batches import Batch

SUMMARY_FILE = "finetune.json"  # written into out_dir beside the weights: config, best epoch, log


def load_tokenizer(model_dir: str | Path):
    """The tokenizer saved in ``model_dir``, loaded from local files only."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def load_classifier(model_dir: str | Path, label_names: Sequence[str], seed: int):
    """The encoder in ``model_dir`` with a classification head freshly initialised from ``seed`` (fp32)."""
    from transformers import AutoModelForSequenceClassification

    names = list(label_names)
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"label_names must be >= 2 distinct names, got {names}")
    seed_everything(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        problem_type="single_label_classification",
        local_files_only=True,
        dtype=torch.float32,
    )
    return model


def load_finetuned(model_dir: str | Path):
    """A saved sequence classifier (fp32), loaded from local files only."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32
    )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32 (always the case on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def predict_logits(
    model, batches: Sequence[Batch], device: torch.device, amp: torch.dtype | None = None
) -> np.ndarray:
    """Logits for every row the batches cover, in source-row order: [n, num_labels] float32."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            b = batch.to(device)
            with autocast(device, amp):
                logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits  # [b, C]
            outputs.append(logits.float())
    index = np.concatenate([b.index for b in batches])
    result = np.empty((len(index), outputs[0].shape[1]), dtype=np.float32)
    result[index] = torch.cat(outputs).cpu().numpy()
    return result


def save_model(model, tokenizer, out_dir: str | Path, summary: dict | None = None) -> None:
    """Write a self-contained model directory atomically: safetensors weights, config, tokenizer, summary."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if summary is not None:
            write_json(summary, tmp / SUMMARY_FILE)
