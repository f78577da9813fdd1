"""Devices, mixed precision and torchrun: one place, used by the training loops, the synthesis workers, the
evaluation and the CLI (after timm's `init_distributed_device` and EDM's `torch_utils/distributed.py`).

    dev = resolve_device(recipe.device)     # "auto" | "cpu" | "cuda" | "cuda:N" | "mps" -> torch.device, checked
    dist = init_distributed(dev)            # WORLD_SIZE > 1 (torchrun): DDP process group, nccl on GPU, gloo on CPU
    with no_sync(ddp_net, enabled=not last_micro_batch): ...
    if is_main_process(): print(summary)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from ltaug.errors import LtaugError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 (and without torchrun): the process that writes files and prints summaries."""
    return rank() == 0


def resolve_device(name: Optional[str] = "auto", flag: str = "--device") -> torch.device:
    """The device a recipe's `device` names, checked: auto picks cuda when available (under torchrun the rank's own
    GPU, cuda:LOCAL_RANK), else mps, else cpu. A device that is not here is a LtaugError naming `flag`."""
    name = (name or "auto").strip()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LtaugError(f"{flag} '{name}': not a device; expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LtaugError(f"{flag} {name}: no CUDA device is available here; use {flag} cpu or auto")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.index >= torch.cuda.device_count():
            raise LtaugError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LtaugError(f"{flag} mps: no Apple GPU is available here; use {flag} cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise LtaugError(f"{flag} '{name}': unsupported device type; expected auto, cpu, cuda, cuda:N or mps")
    return dev


def amp_dtype(mode: str, device: torch.device, key: str = "amp") -> Optional[torch.dtype]:
    """The autocast dtype of an amp mode (none | auto | bf16 | fp16) on `device`, or None for full precision.

    auto = bf16 on a GPU that supports it (fp16 on one that does not), none elsewhere: on CPUs without bf16
    instructions bf16 autocast is much slower than fp32 (measured: 15x on the 2-core test machine)."""
    if mode == "none":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise LtaugError(f"{key} fp16 needs a GPU (this runs on {device}); use bf16 or none")
    if mode not in AMP_DTYPES:
        raise LtaugError(f"{key} '{mode}': expected none, auto, bf16 or fp16")
    return AMP_DTYPES[mode]


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype`, or a no-op for full precision."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass
class Distributed:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # this process started the process group and ends it in `close`

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a float64 tensor (values itself without torchrun), on the CPU."""
        if self.world == 1:
            return values.cpu()
        v = values.to(self.device) if self.device.type == "cuda" else values.cpu()
        torch_dist.all_reduce(v)
        return (v / self.world).cpu()

    def gather(self, values: list) -> list:
        """Every rank's list, concatenated in rank order."""
        if self.world == 1:
            return list(values)
        parts: list = [None] * self.world
        torch_dist.all_gather_object(parts, list(values))
        return [v for part in parts for v in part]

    def close(self) -> None:
        """Wait for every rank; end the process group if this process started it."""
        self.barrier()
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun job this process belongs to (nccl on GPU, gloo on CPU); a no-op without torchrun."""
    world = world_size()
    own = False
    if world > 1 and not torch_dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own = True
    return Distributed(rank(), world, device, own)


def wrap_ddp(net: torch.nn.Module, dist: Distributed) -> torch.nn.Module:
    """DistributedDataParallel around `net` under torchrun; `net` itself otherwise."""
    if dist.world == 1:
        return net
    return DistributedDataParallel(net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)


@contextlib.contextmanager
def no_sync(net: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce for this backward (gradient accumulation: every micro-batch but the last)."""
    if enabled and hasattr(net, "no_sync"):
        with net.no_sync():
            yield
    else:
        yield
