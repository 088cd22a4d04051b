"""Weights as data: a state_dict saved with torch.save and loaded with `weights_only=True`,
which refuses anything but tensors and plain containers (no pickled code runs)."""

from __future__ import annotations

import hashlib
import io

import torch

from dlmodels.builder import SpecModel


def weights_to_bytes(model: SpecModel) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    torch.save(state, buffer)
    return buffer.getvalue()


def load_weights(model: SpecModel, data: bytes) -> SpecModel:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
