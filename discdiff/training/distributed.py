"""Distributed set-up from `torchrun`'s environment: PyTorch DDP or FSDP, nothing home-made."""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @classmethod
    def from_environment(cls) -> "Distributed":
        """Read `torchrun`'s variables; initialise the process group (gloo or NCCL)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        cuda = torch.cuda.is_available()
        if world <= 1:
            return cls(0, 1, 0, torch.device("cuda" if cuda else "cpu"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return cls(dist.get_rank(), dist.get_world_size(), local, device)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This rank's contiguous slice of a global batch."""
        size = batch_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def wrap(self, model: nn.Module, *, fsdp: bool = False) -> nn.Module:
        """DDP (or FSDP) around `model` when there are several processes.

        FSDP is PyTorch's `fully_shard` (gloo on the CPU, NCCL on CUDA), applied
        to every module of each `nn.ModuleList` (the transformer blocks) and
        then to the whole model, in place: parameters become sharded `DTensor`s
        and the model itself is returned.
        """
        if self.world_size == 1:
            return model
        if fsdp:
            from torch.distributed.fsdp import fully_shard

            for module in list(model.modules()):
                if isinstance(module, nn.ModuleList):
                    for block in module:
                        if any(True for _ in block.parameters()):
                            fully_shard(block)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def maybe_no_sync(self, wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if self.world_size > 1 and not sync and hasattr(wrapped, "no_sync"):
            return wrapped.no_sync()
        return contextlib.nullcontext()

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in a single process)."""
        if self.world_size > 1:
            dist.barrier()

    def sum(self, value: Tensor) -> Tensor:
        """Sum a tensor over ranks."""
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value
