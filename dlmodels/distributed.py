"""How `fit` spreads one training run over processes: `Local` (one process, the default) or
`DataParallel` (N processes with torch.distributed, gradients averaged by
DistributedDataParallel).

The data-parallel semantics, chosen so a 2-process run reproduces a 1-process run:
- `batch_size` is the global batch. Every rank draws the same shuffled order of the epoch (the
  shuffle generator's seed is rank 0's), cuts it into the same global batches as one process
  would, and takes the rows `rank, rank + N, rank + 2N, ...` of each batch (DistributedSampler's
  striding, per batch). The remainder rule: a batch of `b` rows gives each rank `b // N` or
  `b // N + 1` rows; nothing is padded, repeated or dropped. Each rank's loss is weighted by its
  share (`rows * N / b`), so DDP's average of the ranks' gradients is exactly the gradient of
  the global batch's mean loss, even for an uneven last batch.
- A last batch smaller than N rows (2N with batchnorm, which cannot normalise one row) joins
  the batch before it, so no rank ever gets an empty or one-row batch.
- The epoch's loss is the sum over ranks (all-reduce); training metrics are computed on rank 0
  from every rank's outputs (gathered once per epoch); validation runs once, on rank 0, over
  the whole validation set, and its numbers are broadcast, so every rank takes the same early
  stopping and learning-rate decisions.

Where N processes differ from one (documented for users): batchnorm normalises each rank's
share with its own batch statistics (no SyncBatchNorm on CPU), and dropout draws from each
rank's own random stream (rank 0's is the 1-process stream; rank r's is seeded `seed + r`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dlmodels.builder import SpecModel

Forward = Callable[[torch.Tensor], torch.Tensor]


class Strategy(Protocol):
    rank: int
    world: int

    def shared_seed(self, seed: int) -> int: ...

    def wrap(self, model: SpecModel, device: torch.device) -> Forward: ...

    def shard(self, rows: torch.Tensor) -> torch.Tensor: ...

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor: ...

    def gather_rows(self, rows: list[torch.Tensor]) -> list[torch.Tensor] | None: ...

    def from_rank0(self, value: Any) -> Any: ...


@dataclass
class Local:
    """One process: every hook is the identity."""

    rank: int = 0
    world: int = 1

    def shared_seed(self, seed: int) -> int:
        return seed

    def wrap(self, model: SpecModel, device: torch.device) -> Forward:
        return model.logits

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        return rows

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def gather_rows(self, rows: list[torch.Tensor]) -> list[torch.Tensor] | None:
        return rows

    def from_rank0(self, value: Any) -> Any:
        return value


class _Logits(nn.Module):
    """DDP wraps `forward`; training optimises the model's logits (the head is fused into the
    loss), so this module's forward is `logits`."""

    def __init__(self, model: SpecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


@dataclass
class DataParallel:
    """This process's place in an initialised default process group."""

    rank: int
    world: int
    local_rank: int = 0

    @classmethod
    def start(cls, *, device: str, timeout: float, init_method: str = "env://",
              rank: int | None = None, world: int | None = None) -> DataParallel:
        """Join the process group (gloo on CPU, NCCL on CUDA); under torchrun the rank and
        world size come from its environment. `timeout` bounds every collective, so a rank
        that dies can never leave the others waiting for ever."""
        rank = int(os.environ["RANK"]) if rank is None else rank
        world = int(os.environ["WORLD_SIZE"]) if world is None else world
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(local_rank)  # one GPU per process
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        return cls(rank=rank, world=world, local_rank=local_rank)

    @staticmethod
    def stop() -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def shared_seed(self, seed: int) -> int:
        value: int = self.from_rank0(seed)
        return value

    def wrap(self, model: SpecModel, device: torch.device) -> Forward:
        # DDP broadcasts rank 0's parameters and buffers here: every rank starts identical.
        ids = [device.index if device.index is not None else self.local_rank] \
            if device.type == "cuda" else None
        wrapped = DistributedDataParallel(_Logits(model), device_ids=ids)
        if self.rank > 0:  # dropout: rank 0 keeps the 1-process stream, the others their own
            torch.manual_seed(int(torch.initial_seed()) + self.rank)
        return wrapped

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[self.rank::self.world]

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather_rows(self, rows: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Every rank's tensors, on rank 0 (None elsewhere); moved through the CPU."""
        local = [r.detach().cpu() for r in rows]
        gathered: list[Any] = [None] * self.world if self.rank == 0 else []
        dist.gather_object(local, gathered if self.rank == 0 else None, dst=0)
        if self.rank != 0:
            return None
        return [torch.cat([part[i] for part in gathered]) for i in range(len(rows))]

    def from_rank0(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def min_last_batch(world: int, batchnorm: bool) -> int:
    """The smallest last batch that stands alone: every rank gets a row (two with batchnorm)."""
    return world * (2 if batchnorm else 1)
