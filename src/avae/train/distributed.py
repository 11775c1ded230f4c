"""Data-parallel training across processes, as started by ``torchrun``: one process per rank,
each owning a shard of every batch.

``torchrun --nproc_per_node=N -m avae train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous address; :func:`setup` joins the process group (gloo on CPU, NCCL on CUDA).
The loop then does what ``DistributedDataParallel`` does, written out because the regimes call
``model.loss(...)`` (not ``forward``, the only call DDP hooks): every rank starts from rank 0's
weights, takes its stride of the epoch's shared permutation (as ``DistributedSampler``), and
after each backward pass the gradients are averaged across ranks in one all-reduce, so every
rank takes the same optimizer step and the weights stay identical. Batch-norm running statistics
are averaged in the same all-reduce (DDP would broadcast rank 0's); batch statistics in the
forward pass stay per rank (no SyncBatchNorm, which needs a GPU), so N ranks of batch B match one
process of batch N*B exactly only for models without batch norm.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from avae.errors import AvaeError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto``: the GPU of this rank if CUDA is available, else the CPU."""
    if device not in DEVICES:
        raise AvaeError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AvaeError("--device cuda: no CUDA GPU is available to this process (use --device auto or cpu)")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def setup(device: str = "auto") -> Context:
    """Join the process group ``torchrun`` describes in the environment (if any, and not yet joined)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        atexit.register(_leave)
    if not dist.is_initialized():
        return Context(device=resolved)
    return Context(dist.get_rank(), dist.get_world_size(), resolved)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(order: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This rank's indices of an epoch's permutation, as ``DistributedSampler``: padded by wrapping
    around to a multiple of the world size (so every rank takes the same number of steps), then
    every ``world``-th index from ``rank``. Batch k of every rank then lies inside batch k of a
    single process with a ``world`` times larger batch."""
    if not ctx.distributed:
        return order
    padded = -(-len(order) // ctx.world) * ctx.world
    order = torch.cat([order, order[: padded - len(order)]]) if padded > len(order) else order
    return order[ctx.rank :: ctx.world]


def broadcast_model(model: torch.nn.Module, ctx: Context) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if ctx.distributed:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)


def average_gradients(model: torch.nn.Module, ctx: Context) -> None:
    """Mean of each parameter's gradient over ranks, and of floating-point buffers (batch-norm
    running statistics), in one all-reduce. A parameter without a gradient counts as zero."""
    if not ctx.distributed:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    tensors = [p.grad for p in params] + buffers
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def any_rank(flags: list[bool], ctx: Context) -> list[bool]:
    """Element-wise OR of boolean flags over ranks (every rank gets the same answer)."""
    if not ctx.distributed:
        return flags
    t = torch.tensor([float(f) for f in flags], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def all_sum(values: list[float], ctx: Context) -> list[float]:
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_values(values: list[float], ctx: Context) -> list[list[float]]:
    """Each rank's ``values``, in rank order, on every rank."""
    if not ctx.distributed:
        return [values]
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    parts = [torch.empty_like(t) for _ in range(ctx.world)]
    dist.all_gather(parts, t)
    return [p.tolist() for p in parts]


def rows_of_rank(n: int, ctx: Context) -> slice:
    """This rank's contiguous share of ``n`` rows (for evaluation; ``gather_rows`` joins them)."""
    chunk = -(-n // ctx.world)
    return slice(min(n, ctx.rank * chunk), min(n, (ctx.rank + 1) * chunk))


def gather_rows(part: torch.Tensor, n: int, ctx: Context) -> torch.Tensor:
    """Join every rank's ``rows_of_rank`` share of a 1-D tensor into all ``n`` rows, on every rank."""
    if not ctx.distributed:
        return part
    chunk = -(-n // ctx.world)
    padded = torch.zeros(chunk, dtype=part.dtype, device=ctx.device)
    padded[: len(part)] = part.to(ctx.device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n].cpu()


def merge_records(record: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Merge per-image records (NaN where a rank did not see the image): each image takes the value
    of the lowest rank that recorded it, so every rank ends with the same, complete record."""
    if not ctx.distributed:
        return record
    local = record.to(ctx.device)
    parts = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(parts, local)
    merged = torch.full_like(record, float("nan"))
    for part in reversed(parts):  # lower ranks overwrite higher ones
        part = part.cpu()
        merged = torch.where(torch.isnan(part), merged, part)
    return merged


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
