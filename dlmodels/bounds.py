"""The ranges of the spec language's numbers, in one place.

Every number a user writes in a spec has a lower and an upper bound, so that no spec can make the
service loop for ages, overflow an integer or size a tensor beyond any machine. The contract
states no ranges; these are generous (no course-level network comes near them) yet finite.
Sizes that only matter together (parameters, activation memory) are limited where they are
known: `MAX_SAMPLE_ELEMENTS` by shape inference, and the service's own size limits after it.
"""

from __future__ import annotations

# --- shapes and sizes -----------------------------------------------------------------------
MAX_AXIS = 1_000_000
"""One axis of `input_shape`."""
MAX_INPUT_RANK = 4
"""Axes of `input_shape`: channels plus up to three spatial axes."""
MAX_SPATIAL_AXES = MAX_INPUT_RANK - 1
"""Values in a per-axis `kernel_size`, `pool_size`, `stride` or `padding` list."""
MAX_SAMPLE_ELEMENTS = 2**31 - 1
"""Elements of one sample's input or of any layer's output (int32 indexing; 8 GiB of floats)."""

MAX_LAYERS = 1000
"""Layers in a model, the ones nested in `residual` blocks included."""
MAX_NESTING = 32
"""`residual` blocks inside `residual` blocks."""

MAX_UNITS = 1_000_000
"""`dense` units and a transformer's `dim_feedforward`."""
MAX_CHANNELS = 65_536
"""Conv `filters`, `embedding_dim` and recurrent `units`."""
MAX_VOCABULARY = 10_000_000
"""`embedding` `num_embeddings`."""
MAX_HEADS = 1024
"""`transformer_encoder` `num_heads`."""
MAX_STACKED_LAYERS = 64
"""`num_layers` of a recurrent layer or a transformer encoder."""
MAX_WINDOW = 4096
"""`kernel_size`, `pool_size` and `stride` along one axis."""
MAX_PADDING = MAX_WINDOW // 2
"""Conv and pool `padding` along one axis (what `"same"` pads for the largest kernel)."""

# --- training -------------------------------------------------------------------------------
MAX_EPOCHS = 100_000
"""`epochs`; also bounds the other counts of epochs: `step_size`, `t_max` and `patience`."""
MAX_BATCH_SIZE = 1_000_000
MAX_PROCESSES = 256
"""`distributed.processes`, one host's processes; a worker caps it lower (its CPUs or GPUs)."""
MAX_SEED = 2**32 - 1
"""Seeds (training and datasets): what numpy's legacy seeding and torch both take."""
MAX_LR = 10.0
"""Learning rates: `lr`, a scheduler's `eta_min` and `min_lr`."""
MAX_EPS = 1.0
"""The `eps` of norm layers and of Adam."""
MAX_MIN_DELTA = 1e9
"""Early stopping's `min_delta`, in units of the monitored loss or metric."""
MAX_NAME_LENGTH = 64
"""Names looked up in a list (a monitored metric, a built-in dataset)."""
