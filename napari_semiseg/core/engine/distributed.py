"""Data-parallel training across processes and machines, started by ``torchrun``.

``torchrun --nproc-per-node N -m napari_semiseg.cli train ...`` starts N copies of the
training command; each finds its rank in the environment torchrun sets (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``...), joins the process group (NCCL on CUDA, gloo on the CPU) and
trains on its own random batches. Trained members are wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages their gradients, so
every rank holds the same weights after every step; members without trainable parameters
(EMA teachers) start from rank 0's weights and, updated from identical students, stay
identical. Each step the ranks agree on progress (the furthest clock) and on stopping, so
learning-rate and loss-weight schedules match and all ranks stop at the same iteration.
Only rank 0 writes checkpoints, the model and logs.

Anything a loss term needs from a trained member must come out of the wrapped module's
``forward`` (what :class:`~napari_semiseg.core.engine.loop._Run` calls), since DDP only
synchronises gradients of a forward pass it ran.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..device import DeviceError

log = logging.getLogger(__name__)

# Ranks draw different batches: the sampler and dropout seeds are offset by rank times this.
RANK_SEED_STRIDE = 1_000_003


@dataclass
class Distributed:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def seed_offset(self) -> int:
        return RANK_SEED_STRIDE * self.rank

    def threads(self, requested: int) -> int:
        """CPU threads per rank: the request, or this machine's cores shared among its ranks."""
        if requested > 0:
            return requested
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    def wrap(self, network: nn.Module) -> nn.Module:
        """DDP around a network with trainable parameters; others are brought to rank 0's state."""
        if not any(p.requires_grad for p in network.parameters()):
            self.broadcast_state(network)
            return MethodDispatch(network)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(MethodDispatch(network), device_ids=device_ids)

    def average_gradients(self, module: nn.Module) -> None:
        """Average the gradients of parameters DDP does not own (loss terms' projection heads)."""
        for parameter in module.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
                parameter.grad /= self.world_size

    def broadcast_state(self, network: nn.Module) -> None:
        for tensor in list(network.parameters()) + list(network.buffers()):
            dist.broadcast(tensor.data, src=0)

    def broadcast_buffers(self, network: nn.Module) -> None:
        for tensor in network.buffers():
            dist.broadcast(tensor.data, src=0)

    def agree(self, progress: float, stopped: bool) -> tuple[float, bool]:
        """The furthest progress of any rank, and whether any rank was asked to stop."""
        state = torch.tensor([progress, float(stopped)], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(state, op=dist.ReduceOp.MAX)
        return float(state[0]), bool(state[1] > 0)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def from_environment(device_name: str = "auto") -> Distributed | None:
    """Join the process group described by torchrun's environment; None when not under torchrun.

    Raises:
        DeviceError: a device that cannot train data-parallel here (CUDA asked for but
            missing, or Apple MPS, which has no collective backend).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if device_name == "mps":
        raise DeviceError("Distributed training does not support Apple MPS. Use --device cpu or cuda.")
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise DeviceError("CUDA was requested for distributed training but no usable GPU was found. "
                          "Use --device cpu (gloo backend) or a CUDA build of torch.")
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    log.info("rank %d of %d on %s", rank, world_size, device)
    return Distributed(rank, world_size, local_rank, local_world_size, device, owns_group)


class MethodDispatch(nn.Module):
    """Routes ``forward(images, method)`` to ``network.method(images)``.

    DDP synchronises gradients only for calls through its own ``forward``; terms that read
    multi-scale features or extra heads call other methods, so they go through this.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images, method: str = "forward"):
        return getattr(self.network, method)(images)
