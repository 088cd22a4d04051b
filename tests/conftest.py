"""Shared test configuration."""

from __future__ import annotations

import os

import torch

# Two cores: tests that train in-process must not oversubscribe them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
