"""Multi-GPU (or multi-process CPU) training with DistributedDataParallel.

Launch the ordinary command under ``torchrun``; the trainer notices the environment::

    torchrun --nproc_per_node=4 "$(command -v litefer)" train configs/lfnsb_rafdb.yaml

(torchrun runs the ``litefer`` console script, a Python file, once per GPU.)

- backend: NCCL when training on CUDA, gloo on CPU; each rank uses ``cuda:LOCAL_RANK``;
- ``train.batch_size`` is the *per-process* batch (the global batch is ``world * batch_size``);
- every rank draws the same seeded epoch order and takes its shard
  (:class:`litefer.data.sampling.EpochSampler`); validation and test are sharded too and
  their confusion matrices summed, so metrics, model selection, LR plateaus and early
  stopping are identical on all ranks;
- the model and the loss's learnable centres are wrapped together in one DDP module,
  so the centres' gradients are averaged like the weights';
- only rank 0 writes checkpoints, CSV, TensorBoard and progress bars.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: True when this call created the process group (and must destroy it)
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_type: str) -> DistInfo:
    """Join (or create) the process group described by torchrun's environment variables.

    Without ``WORLD_SIZE > 1`` this is a no-op returning a single-process :class:`DistInfo`.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, True)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; returns it)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap(module: torch.nn.Module, info: DistInfo, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """``module`` in DDP when running distributed (SyncBatchNorm first if asked)."""
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP
    if sync_bn:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids: Optional[list[int]] = [device.index if device.index is not None else info.local_rank] \
        if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def average_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so that
    evaluation and checkpoints see one model: DDP syncs buffers from rank 0 only at the
    start of each forward, and the last step's statistics differ per rank."""
    if not info.enabled:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b.div_(info.world_size)
