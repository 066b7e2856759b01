"""Several processes attribute one reference set: batches are sharded, sums all-reduced.

Works under ``accelerate launch`` and ``torchrun`` (any launcher that sets ``WORLD_SIZE``/``RANK``
/``MASTER_ADDR``): the process group is taken from ``torch.distributed`` when the caller already
initialised it, else ``accelerate.PartialState`` initialises it from the launcher's environment
(gloo on CPU, NCCL on GPUs). Every process passes the same texts and gets the full result.

Batches are formed from the whole reference set first and dealt round-robin, so each batch is
padded and computed exactly as in one process; sums are float64 until the end, so the reduced
result does not depend on how many processes shared the work (see ``Collector``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's share of the batches."""

    rank: int = 0
    world_size: int = 1

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.world_size == self.rank

    def all_reduce(self, tensors: dict[str, torch.Tensor]) -> None:
        """Sum each tensor over all processes, in place (same key order on every rank)."""
        if self.world_size > 1:
            for name in sorted(tensors):
                dist.all_reduce(tensors[name], op=dist.ReduceOp.SUM)

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def current_shard(distributed: bool | None) -> Shard:
    """The shard of this process.

    Args:
        distributed: ``None`` shards when several processes were launched (an initialised process
            group, or ``WORLD_SIZE > 1``); ``False`` never shards; ``True`` requires a launch with
            several processes.
    """
    if distributed is False or not dist.is_available():
        if distributed:
            raise ValueError("distributed=True needs torch.distributed, which this torch build lacks.")
        return Shard()
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()  # initialises the default process group from the launcher's environment
    if not dist.is_initialized():
        if distributed:
            raise ValueError(
                "distributed=True but no process group: launch with `accelerate launch` or `torchrun "
                "--nproc_per_node N`, or call torch.distributed.init_process_group() first."
            )
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size())
