"""The tensor-parallel group: one process per rank, gloo on CPU (nccl when CUDA is present)."""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist

# An idle server's followers wait in a broadcast: the default 30 min timeout would kill them.
IDLE_TIMEOUT = datetime.timedelta(days=7)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_group(rank: int, world_size: int, port: int) -> None:
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("STUDIO_NCCL") else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=IDLE_TIMEOUT,
    )


def tp_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def tp_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """vLLM's tensor_model_parallel_all_reduce (out of place, sum)."""
    if tp_size() == 1:
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out


def all_gather_last(x: torch.Tensor) -> torch.Tensor:
    """vLLM's tensor_model_parallel_all_gather along the last dimension."""
    if tp_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(tp_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)


def broadcast_object(obj: object | None) -> object:
    """Rank 0's object on every rank (the server's work orders)."""
    box = [obj]
    if tp_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
