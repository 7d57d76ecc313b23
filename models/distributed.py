"""Data-parallel training across processes (torchrun): process group, global-batch gathers, synced BatchNorm.

Design (why a DDP run equals a single-process run up to float rounding): every rank draws the same P×K batch
from the same seeded sampler and forwards its own contiguous slice of it (batch_size / world_size images).
BatchNorm normalises with statistics of the whole global batch (`SyncedBatchNorm`), and the embeddings (and
the flow's features/logdets) are all-gathered *with gradient*, so every rank computes the loss and the
regularizers on exactly the single-process global batch. The gather's backward sums the W identical upstream
gradients (W × the true one) and DDP averages parameter gradients over the W ranks, which cancels that
factor: the averaged gradient is the single-process gradient. Parameters used outside the model (proxies, a
learnable distance's L) see the same global loss on every rank; `average_gradients` keeps them bit-equal.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class Topology:
    rank: int  # 0 = the primary: the only rank that writes files, progress and store records
    world_size: int
    local_rank: int  # index on this machine: the GPU this rank uses (cuda:local_rank)

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def topology() -> Topology:
    """The current process's place in the job; a lone process (no group joined) is rank 0 of 1."""
    if not (dist.is_available() and dist.is_initialized()):
        return Topology(0, 1, 0)
    return Topology(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device: str = "auto") -> Iterator[Topology]:
    """Join the torchrun job described by the environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) for
    the block, then leave it; a no-op outside torchrun. `device` is the run's device setting: a CUDA run uses
    nccl on cuda:LOCAL_RANK, anything else gloo (CPU processes, e.g. on loopback in CI)."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield topology()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ValueError("device 'cuda' was requested but no CUDA GPU is visible; use device 'auto' or 'cpu'")
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo",
                            device_id=torch.device("cuda", local_rank) if cuda else None)
    try:
        yield topology()
    finally:
        dist.destroy_process_group()


def training_device(device: torch.device) -> torch.device:
    """cuda → this rank's own GPU (cuda:LOCAL_RANK) under DDP; unchanged otherwise."""
    top = topology()
    return torch.device("cuda", top.local_rank) if device.type == "cuda" and top.distributed else device


def local_slice(batch: list[int]) -> list[int]:
    """This rank's contiguous share of a global batch; concatenating the shares in rank order rebuilds it."""
    top = topology()
    if len(batch) % top.world_size:
        raise ValueError(f"the batch of {len(batch)} images (classes_per_batch × samples_per_class) does not "
                         f"split evenly over {top.world_size} processes; make it a multiple of the process count")
    share = len(batch) // top.world_size
    return batch[top.rank * share:(top.rank + 1) * share]


def gather(t: Tensor | None) -> Tensor | None:
    """Concatenate every rank's `t` along dim 0, in rank order, keeping the gradient path to each rank's part
    (backward sums the ranks' upstream gradients). None stays None; a lone process gets `t` back."""
    if t is None or not topology().distributed:
        return t
    return torch.cat(dist_fn.all_gather(t.contiguous()))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any (a cancel seen by one rank must stop them all together)."""
    if not topology().distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj: Any) -> Any:
    """The primary's `obj` on every rank (pickled; for small things: paths, configs, a checkpoint dict)."""
    if not topology().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """All-reduce-average the gradients of parameters DDP does not manage (criterion proxies, distance L)."""
    world = topology().world_size
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


class SyncedBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks, on any device (torch's SyncBatchNorm is GPU-only, and the
    equality with single-process training is tested on CPU). Two differentiable all-reduces per layer: the
    sums (→ mean), then the squared deviations (→ biased variance, as F.batch_norm normalises with); running
    statistics get the unbiased variance, as in BatchNorm. Eval mode, or a lone process, is plain BatchNorm."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected input of shape (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and topology().distributed):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device)
        totals = dist_fn.all_reduce(torch.cat([xf.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * n / (n - 1), alpha=m)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm layer for a SyncedBatchNorm with the same parameters and buffers, in place, before
    the model moves to its device (the state_dict keys stay the same: checkpoints load into a plain model)."""
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, SyncedBatchNorm):
            synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            sync_batchnorm(child)
    return module
