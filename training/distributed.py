"""Data-parallel training across processes started by ``torchrun`` (one device per local rank).

Every rank holds the full G, D and G_ema and trains on its shard of each global batch; after every
backward the gradients are averaged across ranks by hand (:meth:`Dist.average_grads`) and each
rank takes the same optimiser step, so the weights stay identical everywhere. Why not the
``DistributedDataParallel`` wrapper: its reducer does not support the double backward of R1 and
WGAN-GP (``autograd.grad(..., create_graph=True)``), and a GAN step calls D several times with
parts of the graph frozen, which DDP only tolerates with ``find_unused_parameters``. An explicit
all-reduce just before each optimiser step is the same arithmetic with none of those conditions
(each D step of ``--n-critic`` and each G step is one boundary; there is no gradient accumulation).

BatchNorm sees the global batch through :class:`CrossRankBatchNorm2d` (the statistics through a
differentiable all-reduce) on every device: ``nn.SyncBatchNorm`` refuses CPU tensors and cannot be
differentiated twice, which R1 and WGAN-GP do (pytorch/pytorch#61222). Randomness: draws the
trainer makes per sample (latents, labels, noise inputs, style mixing, instance noise) are drawn
for the whole global batch on every rank from one shared generator and sliced (:meth:`Dist.shard`),
so an N-process run draws what a 1-process run draws; draws made inside DiffAugment and the
gradient penalty come from a per-rank generator.

Outside torchrun (no ``WORLD_SIZE`` in the environment) :func:`from_env` returns a world of one and
every method is a no-op, so single-process training runs exactly the code it always ran.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from training.errors import UserError

log = logging.getLogger(__name__)
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A collective that waits longer than this (a peer hung, not dead) fails the run.
TIMEOUT = datetime.timedelta(minutes=30)


class PeerLost(Exception):
    """Another process of the run died or hung: this one stops too (gan-train exits 1)."""


def is_peer_failure(e: BaseException) -> bool:
    """A collective failed because a peer went away (gloo: connection reset; nccl: DistError)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        s in text for s in ("gloo", "Connection reset", "Connection closed", "NCCL")
    )


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the run: ``rank`` of ``world`` (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files (checkpoints, samples, metrics, figures)."""
        return self.rank == 0

    def describe(self) -> dict[str, int]:
        return {"world_size": self.world}

    # --- data and randomness ----------------------------------------------------------------
    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's share of a tensor drawn for the global batch (dim 0): items rank,
        rank + N, rank + 2N, ... Strided, not contiguous, so that a group of samples the models
        form by stride (StyleGAN's minibatch-stddev groups i, i + n/4, ...; the mode-seeking
        pairs i, i + n/2) falls on one rank and is the group one process would form."""
        return t[self.rank :: self.world] if self.enabled else t

    # --- collectives --------------------------------------------------------------------------
    def average_grads(self, module: nn.Module) -> None:
        """Average ``module``'s gradients across ranks (call after backward, before step)."""
        if self.enabled:
            _average([p.grad for p in module.parameters() if p.grad is not None])

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (StyleGAN's ``w_avg`` is tracked from each rank's
        batch; an average of per-rank EMA updates is the EMA update of the global mean)."""
        if self.enabled:
            _average([b for b in module.buffers() if b.is_floating_point()])

    def average_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Global means of per-rank scalar losses (every rank then logs and checks the same)."""
        if not self.enabled or not stats:
            return stats
        values = torch.stack([v.detach().float().reshape(()) for v in stats.values()])
        dist.all_reduce(values)
        return dict(zip(stats, values / self.world))

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's weights and buffers to every rank, so that all start from the same."""
        if self.enabled:
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)

    def broadcast_ints(self, values: list[int], device: torch.device) -> list[int]:
        """Rank 0's integers on every rank: a decision (a planned length, "stop now") that every
        rank must take at the same step, whatever its own clock says."""
        if not self.enabled:
            return [int(v) for v in values]
        t = torch.tensor(values, dtype=torch.int64, device=device)
        dist.broadcast(t, src=0)
        return [int(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _average(tensors: list[torch.Tensor]) -> None:
    """All-reduce a list of tensors as one flat buffer (one collective instead of hundreds)."""
    if not tensors:
        return
    world = dist.get_world_size()
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def env_world() -> Dist:
    """The rank layout torchrun put in the environment (a world of one outside torchrun)."""
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        values = {k: os.environ.get(k) for k in ENV_KEYS}
        raise UserError(f"torchrun environment is not valid: {values}") from None
    return Dist(rank, world, local_rank, local_world)


def check_setup(d: Dist, batch_size: int, device: str) -> None:
    """Set-ups that cannot work, refused on every rank before any process group or training."""
    if not d.enabled:
        return
    if batch_size % d.world:
        raise UserError(
            f"--batch-size {batch_size} is the global batch and must divide by the world size "
            f"{d.world}; use a multiple of {d.world}, e.g. {max(1, batch_size // d.world) * d.world}"
        )
    if device in ("cuda", "auto") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if d.local_world > gpus:
            raise UserError(
                f"--nproc_per_node {d.local_world} starts more ranks on this node than it has "
                f"GPUs ({gpus}); use --nproc_per_node {gpus} or fewer (one GPU per rank)"
            )
    elif device == "cuda":
        raise UserError(
            "--device cuda was requested but no CUDA device is available; use auto or cpu"
        )


def device_for(d: Dist, name: str) -> torch.device:
    """One device per local rank: ``cuda:LOCAL_RANK`` on GPU nodes, the CPU otherwise."""
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(d.local_rank)
    return torch.device("cuda", d.local_rank)


def init(d: Dist, device: torch.device) -> None:
    """Join the process group torchrun set up: nccl for CUDA ranks, gloo for CPU ranks."""
    if not d.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    log.info("rank %d/%d (local rank %d) on %s, backend %s", d.rank, d.world, d.local_rank,
             device, backend)  # fmt: skip


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


# --- BatchNorm over the global batch ------------------------------------------------------------
class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch (all ranks). Same
    parameters and buffers as the BatchNorm2d it replaces, so checkpoints load either way.
    Gradients flow through the statistics (a differentiable all-reduce), twice if need be: R1's
    penalty differentiates D's input gradient, which ``nn.SyncBatchNorm`` cannot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        world = dist.get_world_size()
        count = x.numel() // x.shape[1] * world
        dims = (0, 2, 3)
        # Two passes (mean, then the mean squared deviation) as F.batch_norm computes them.
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                # In the buffers' dtype (fp32) also when autocast computed x in bf16.
                dtype = self.running_mean.dtype
                self.running_mean.lerp_(mean.detach().to(dtype), m)
                self.running_var.lerp_((var.detach() * count / max(count - 1, 1)).to(dtype), m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks: the gradient of
    the global loss reaches every rank's contribution to a shared statistic."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Through the Function itself, not a bare all_reduce: R1 differentiates this backward
        # again (create_graph), and an untracked all_reduce would drop the other ranks' share.
        return _AllReduceSum.apply(grad)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d with its global-batch version, :class:`CrossRankBatchNorm2d`
    (on CUDA too: R1 needs the second derivative ``nn.SyncBatchNorm`` does not have)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CrossRankBatchNorm2d):
        new = CrossRankBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats, device=_first_device(module.buffers()),
        )  # fmt: skip
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def _first_device(tensors: Iterable[torch.Tensor]) -> torch.device | None:
    for t in tensors:
        return t.device
    return None
