"""Who draws the images: this process, or N Ray actors (one GPU each where the cluster has GPUs, else one CPU each).

Both engines take batches of (labels, seeds) and yield `(labels, seeds, images uint8 [B,H,W,C])` as batches finish,
in completion order. The images depend on (label, seed) only (see ltaug.diffusion.sampler), so the split into
batches and workers never changes them. Workers return arrays instead of writing files, so a cluster joined with
`--address` needs no shared filesystem: the checkpoint travels through Ray's object store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import ray
import torch

from ltaug import raycluster
from ltaug.config.synth import SynthConfig
from ltaug.device import amp_dtype, autocast
from ltaug.diffusion.checkpoint import LoadedGenerator, load_generator
from ltaug.diffusion.sampler import sample, to_uint8
from ltaug.errors import LtaugError

Batch = tuple[list[int], list[int]]


def draw(gen: LoadedGenerator, labels: Sequence[int], seeds: Sequence[int], cfg: SynthConfig,
         device: str | torch.device, batch_size: int) -> np.ndarray:
    """Images for (labels, seeds) from a LoadedGenerator with the sampling settings of `cfg`, in batches of
    batch_size: uint8 [N, H, W, C]."""
    out = []
    device = torch.device(device)
    shape = (gen.channels, gen.resolution, gen.resolution)
    net = gen.net.to(memory_format=torch.channels_last)  # ~1.2x faster convolutions on CPU; a no-op once done
    dtype = amp_dtype(cfg.amp, device, "--amp")
    for i in range(0, len(labels), batch_size):
        y = torch.as_tensor(list(labels[i:i + batch_size]), dtype=torch.long)
        # the network runs in bf16/fp16 under amp; the sampler's update arithmetic stays float32
        with autocast(device, dtype):
            x = sample(net, gen.schedule, y, list(seeds[i:i + batch_size]), num_classes=gen.num_classes,
                       sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta, w=cfg.w, variance=cfg.variance,
                       clip_x0=cfg.clip_x0, device=device, shape=shape, channels_last=True)
        out.append(to_uint8(x.float()))
    if not out:
        return np.zeros((0, gen.resolution, gen.resolution, gen.channels), np.uint8)
    return np.concatenate(out)


class LocalEngine:
    """Sample in this process (workers = 1, no --address)."""

    def __init__(self, gen: LoadedGenerator, cfg: SynthConfig, device: torch.device):
        self.gen, self.cfg, self.device = gen, cfg, device
        self.description = f"1 worker in this process on {device}"

    def run(self, batches: list[Batch]) -> Iterator[tuple[list[int], list[int], np.ndarray]]:
        for labels, seeds in batches:
            yield labels, seeds, draw(self.gen, labels, seeds, self.cfg, self.device, len(labels))

    def close(self) -> None:
        pass


class _Worker:
    """A Ray actor that loads the generator once and draws batches."""

    def __init__(self, checkpoint, cfg: SynthConfig, device: str, threads: int):
        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        if isinstance(checkpoint, (bytes, bytearray)):  # joined cluster: the file arrives through the object store
            fd, path = tempfile.mkstemp(suffix=".pt")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(checkpoint)
                self.gen = load_generator(path, device=device, ema=True)
            finally:
                os.unlink(path)  # the worker's copy is in memory now; leave nothing in its temporary folder
        else:
            self.gen = load_generator(checkpoint, device=device, ema=True)
        self.cfg, self.device = cfg, device

    def generate(self, labels: list[int], seeds: list[int]):
        return labels, seeds, draw(self.gen, labels, seeds, self.cfg, self.device, len(labels))


class RayEngine:
    """N actors over a local Ray (started here unless one is running, and ended with this process however it ends:
    ltaug.raycluster) or the cluster at `address` (checked first: a dead address fails in seconds)."""

    def __init__(self, checkpoint_path: Path, cfg: SynthConfig, device: torch.device):
        self.ray = ray
        self.actors: list = []
        self.started = raycluster.connect(cfg.address or None, num_cpus=max(cfg.workers, os.cpu_count() or 1))
        try:
            self._start(checkpoint_path, cfg, device)
        except BaseException:
            self.close()
            raise

    def _start(self, checkpoint_path: Path, cfg: SynthConfig, device: torch.device) -> None:
        workers, address = cfg.workers, cfg.address
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = device.type != "cpu" and gpus > 0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = 1 if use_gpu else max(1, cpus // workers)
        # A joined cluster may not share our filesystem: ship the checkpoint bytes; locally the path is enough.
        if address and Path(checkpoint_path).is_dir():
            raise LtaugError(f"--address {address}: a joined Ray cluster is sent one checkpoint file, and "
                             f"{checkpoint_path} is a pipeline folder; sample it on local workers (drop --address), "
                             "or give the run directory")
        ckpt = ray.put(Path(checkpoint_path).read_bytes()) if address else str(checkpoint_path)
        actor = ray.remote(num_gpus=1, num_cpus=1)(_Worker) if use_gpu else ray.remote(num_cpus=1)(_Worker)
        self.device = "cuda" if use_gpu else "cpu"
        self.actors = [actor.remote(ckpt, cfg, self.device, threads) for _ in range(workers)]
        where = f"cluster {address}" if address else "a local Ray"
        self.description = f"{workers} Ray workers on {where}, one {'GPU' if use_gpu else 'CPU'} each"

    def run(self, batches: list[Batch]) -> Iterator[tuple[list[int], list[int], np.ndarray]]:
        ray = self.ray
        queue = list(batches)[::-1]
        pending: dict = {}
        idle = list(self.actors) * 2  # two batches in flight per actor hides the round trip
        while queue or pending:
            while queue and idle:
                actor = idle.pop()
                labels, seeds = queue.pop()
                pending[actor.generate.remote(labels, seeds)] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                idle.append(pending.pop(ref))
                yield ray.get(ref)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.started = False
            raycluster.disconnect()
