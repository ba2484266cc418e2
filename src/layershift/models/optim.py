"""The fine-tuning optimiser: Adam or AdamW with BERT's weight-decay groups, the linear warm-up/decay schedule,
and one optimiser step (backward, optional clip, step)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from layershift.models.finetune import FinetuneConfig


def make_optimizer(model, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """Adam or AdamW; weight decay (when > 0) skips biases and LayerNorm weights, as in BERT's recipe."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr)


def linear_schedule_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from 0 over ``warmup_steps``, then linear decay to 0 at ``total_steps`` (HF's formula)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def make_scheduler(optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_schedule_factor(step, total_steps, warmup_steps)
    )


def optimizer_step(loss, params, optimizer, scaler, max_grad_norm: float | None) -> None:
    """Backward, optional unscale + clip, step, zero grads (GradScaler only for fp16 on CUDA)."""
    if scaler is None:
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if max_grad_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
