"""Rank awareness for ``torchrun`` (PyTorch DDP); one process on a CPU is the same code path."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistContext:
    """Join the process group when started by ``torchrun``; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, device=device)


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_gather_with_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate a tensor over ranks, keeping the gradient path (for the contrastive loss)."""
    if ctx.world_size == 1:
        return x
    import torch.distributed.nn

    gathered = torch.distributed.nn.all_gather(x)  # type: ignore[no-untyped-call]
    return torch.cat(list(gathered), dim=0)


def mean_over_ranks(value: float, ctx: DistContext) -> float:
    if ctx.world_size == 1:
        return value
    t = torch.tensor([value], device=ctx.device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / ctx.world_size
