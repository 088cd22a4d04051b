"""A training state as a checkpoint: what `fit` needs to go on after an epoch exactly as if
it had never stopped. Only tensors and plain containers, so it loads with
`torch.load(..., weights_only=True)`."""

from __future__ import annotations

from typing import Any

import torch

from dlmodels.callbacks import FitState


def checkpoint(state: FitState) -> dict[str, Any]:
    """Everything needed to go on after `state.epoch`: weights, optimizer, scheduler, shuffle
    order, dropout's random state (CPU) and the callbacks' progress."""
    return {
        "epoch": state.epoch,
        "model": _to_cpu(state.model.state_dict()),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "generator": state.generator.get_state() if state.generator is not None else None,
        "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
        "extra": _to_cpu(state.extra),  # callbacks' progress (early stopping)
    }


def _to_cpu(value: Any) -> Any:
    """Tensors, also inside dicts, moved to the CPU (a checkpoint loads on any machine)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def restore(state: FitState, saved: dict[str, Any]) -> None:
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.scheduler is not None and saved.get("scheduler") is not None:
        state.scheduler.load_state_dict(saved["scheduler"])
    if state.generator is not None and saved.get("generator") is not None:
        state.generator.set_state(saved["generator"])
    if saved.get("torch_rng") is not None:
        torch.set_rng_state(saved["torch_rng"])
    state.extra = dict(saved.get("extra") or {})
    state.epoch = int(saved["epoch"])
