"""The README's walk-through prints what it says: its heights spec, trained as a worker trains it
(seed, then build, then fit), gives the numbers the README shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dlmodels.builder import build_model
from dlmodels.spec import JobSpec
from dlmodels.training import fit

README = Path(__file__).resolve().parents[2] / "README.md"


def _heights_spec() -> JobSpec:
    found = re.search(r"cat > heights.json <<'JSON'\n(.*?)\nJSON\n", README.read_text(), re.S)
    assert found, "the README's walk-through no longer writes heights.json"
    return JobSpec.model_validate(json.loads(found.group(1)))


def test_the_walkthrough_prints_what_the_readme_shows() -> None:
    spec = _heights_spec()
    assert spec.data.inline is not None
    x = np.asarray(spec.data.inline.x, dtype=np.float32)
    y = np.asarray(spec.data.inline.y, dtype=np.float32)
    assert spec.training.seed is not None
    torch.manual_seed(spec.training.seed)
    model = build_model(spec.model, loss=spec.training.loss,
                        standardize=spec.training.standardize)
    history = fit(model, x, y, spec.training)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.tensor([[80.0], [65.0]])).flatten().tolist()
    text = README.read_text()
    assert predicted == pytest.approx([174.184, 166.578], abs=0.05)
    assert "[[174.18438720703125], [166.57786560058594]]" in text
    assert history.epochs[-1]["loss"] == pytest.approx(9.597, abs=0.05)
    assert history.epochs[0]["loss"] == pytest.approx(31441.1, rel=1e-3)
    # Heights in the data run 160-192 cm: the answers must be among them.
    assert all(160 <= value <= 192 for value in predicted)
