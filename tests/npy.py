"""What a client sends as a `.npy` predict body (tests and the B3 bench)."""

from __future__ import annotations

import io

import numpy as np


def npy_bytes(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    """`array` as `numpy.save` writes it."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()
