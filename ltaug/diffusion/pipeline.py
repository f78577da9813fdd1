"""`ClassConditionalPipeline`: a diffusers `DiffusionPipeline` (unet + scheduler) that samples an ltaug generator
with classifier-free guidance, one noise stream per image.

This file imports only torch, numpy, PIL and diffusers (never ltaug), so a saved pipeline carries a copy of it
(`pipeline.py`, written by `save_pretrained` itself, so a re-saved pipeline keeps it) and `model_index.json` names it
the way diffusers' remote code expects (`"_class_name": ["pipeline", "ClassConditionalPipeline"]`): plain diffusers
loads the folder or its Hub repository without ltaug installed,
`DiffusionPipeline.from_pretrained(DIR_OR_HUB_ID, trust_remote_code=True)`. With ltaug installed,
`from ltaug import ClassConditionalPipeline; ClassConditionalPipeline.from_pretrained(DIR)` runs no remote code.

Guidance follows the long-tail papers: `eps~ = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null)`, with the null label
`num_classes` (the last row of the UNet's class embedding); diffusers' `guidance_scale` is `s = 1 + w`, so either
can be given. With a list of generators, image i draws x_T and every step's noise from generator i only (the same
order as ltaug's own sampler), so an image depends on its (label, seed) alone, never on the batch it is drawn in.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import is_accelerate_available
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

# diffusers' remote-code convention: model_index.json names (module file, class) for a pipeline it does not ship
REMOTE_CLASS = ["pipeline", "ClassConditionalPipeline"]


def load_kwargs() -> dict:
    """from_pretrained keywords for diffusers models and pipelines: without accelerate diffusers falls back to
    low_cpu_mem_usage=False anyway, after a five-line notice on every load; asking for it directly is silent."""
    return {} if is_accelerate_available() else {"low_cpu_mem_usage": False}


class ClassConditionalPipeline(DiffusionPipeline):
    """unet: a class-conditional `UNet2DModel` with `num_class_embeds = num_classes + 1` (the last is the null
    class); scheduler: any diffusers scheduler (the export holds a `DDPMScheduler` on the training schedule);
    class_names: the label names, in label order (stored in model_index.json)."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, class_names: Optional[List[str]] = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        rows = unet.config.num_class_embeds
        if rows is None or rows < 2:
            raise ValueError("the UNet has no class embedding (num_class_embeds); a class-conditional UNet with "
                             "num_classes + 1 rows (the last one the null class) is needed")
        names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(rows - 1)]
        if len(names) != rows - 1:
            raise ValueError(f"{len(names)} class names for a UNet with {rows - 1} classes (+ the null class)")
        self.register_to_config(class_names=names)

    @classmethod
    def load_config(cls, *args, **kwargs):
        # Loading through this class itself needs no remote code: the class named in the file is this one.
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        if isinstance(config, dict) and list(config.get("_class_name") or []) == REMOTE_CLASS:
            config["_class_name"] = cls.__name__
        return out

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return super().from_pretrained(*args, **{**load_kwargs(), **kwargs})

    def save_config(self, save_directory, *args, **kwargs):
        # save_pretrained writes the config last (before any push): the folder then carries this file and names it,
        # so a folder re-saved by `pipe.save_pretrained(new)` still loads with plain diffusers.
        super().save_config(save_directory, *args, **kwargs)
        index_file = os.path.join(save_directory, self.config_name)
        with open(index_file, encoding="utf-8") as f:
            index = json.load(f)
        index["_class_name"] = REMOTE_CLASS
        with open(index_file, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        source = inspect.getsourcefile(ClassConditionalPipeline)
        target = os.path.join(save_directory, REMOTE_CLASS[0] + ".py")
        if source and not (os.path.exists(target) and os.path.samefile(source, target)):
            shutil.copyfile(source, target)

    @property
    def num_classes(self) -> int:
        return len(self.config.class_names)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def labels(self, class_labels: Union[int, str, Sequence[Union[int, str]]]) -> torch.Tensor:
        """Label indices from ints or class names (a name that is also an int, as MNIST's "3", means that class)."""
        if isinstance(class_labels, (int, str)):
            class_labels = [class_labels]
        names = list(self.config.class_names)
        out = []
        for c in class_labels:
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"unknown class name {c!r}; the classes are {names}")
                out.append(names.index(c))
            else:
                i = int(c)
                if not 0 <= i < len(names):
                    raise ValueError(f"label {i} is not in [0, {len(names)}) (the null class {len(names)} is used "
                                     "by guidance only)")
                out.append(i)
        return torch.tensor(out, dtype=torch.long)

    def _step_kwargs(self, generator, eta: float) -> dict:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kw = {}
        if "generator" in params:
            kw["generator"] = generator
        if "eta" in params:
            kw["eta"] = eta
        return kw

    @torch.no_grad()
    def __call__(self, class_labels: Union[int, str, Sequence[Union[int, str]]], num_inference_steps: int = 50,
                 guidance_scale: Optional[float] = None, w: Optional[float] = None,
                 generator: Union[torch.Generator, List[torch.Generator], None] = None, eta: float = 0.0,
                 output_type: str = "pil", return_dict: bool = True):
        """Draw one image per label.

        class_labels: ints in [0, num_classes) or class names. w: guidance weight >= 0 (default 0: conditional);
        guidance_scale: the same as s = 1 + w (give one of the two). generator: one torch.Generator per image (an
        image then depends on its own generator only), or one for the batch. eta: DDIM's eta (schedulers whose
        step takes it). output_type: "pil" (list of PIL images), "np" (float [N,H,W,C] in [0, 1]) or "pt" (float
        [N,C,H,W] in [0, 1]). With the exported DDPMScheduler, num_inference_steps = T is ancestral DDPM.
        """
        if guidance_scale is not None and w is not None and abs(guidance_scale - (1.0 + w)) > 1e-12:
            raise ValueError(f"guidance_scale {guidance_scale} and w {w} disagree (guidance_scale = 1 + w): give one")
        w = float(w) if w is not None else (float(guidance_scale) - 1.0 if guidance_scale is not None else 0.0)
        if w < 0:
            raise ValueError(f"guidance weight w must be >= 0 (guidance_scale >= 1), got w = {w}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        y = self.labels(class_labels)
        n = len(y)
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"{n} labels but {len(generator)} generators (one per image)")
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size,) * 2
        shape = (n, cfg.in_channels, *size)
        device, dtype = self._execution_device, self.unet.dtype
        # Noise is drawn on the CPU, generator by generator, then moved: the same numbers on every device.
        x = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        x = (x * self.scheduler.init_noise_sigma).to(device=device, dtype=dtype)
        y = y.to(device)
        null = torch.full_like(y, self.null_class)
        self.scheduler.set_timesteps(num_inference_steps)
        step_kw = self._step_kwargs(generator, eta)
        for t in self.progress_bar(self.scheduler.timesteps):
            xin = self.scheduler.scale_model_input(x, t)
            tt = torch.full((n,), int(t), dtype=torch.long, device=device)
            if w == 0.0:  # exactly the conditional prediction, as ltaug's sampler
                eps = self.unet(xin, tt, class_labels=y).sample
            else:  # both branches in one forward of the doubled batch
                eps_c, eps_u = self.unet(torch.cat([xin, xin]), torch.cat([tt, tt]),
                                         class_labels=torch.cat([y, null])).sample.chunk(2)
                eps = (1.0 + w) * eps_c - w * eps_u
            x = self.scheduler.step(eps, t, x, **step_kw).prev_sample
        x = x.clamp(-1, 1).float()
        images = to_output(x, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def to_output(x: torch.Tensor, output_type: str):
    """[N,C,H,W] in [-1, 1] -> "pt" [0, 1] tensor, "np" [N,H,W,C] float in [0, 1], or PIL images rounded as ltaug
    writes its PNGs (round((x + 1) * 127.5)), grayscale for one channel."""
    if output_type == "pt":
        return (x + 1) / 2
    if output_type == "np":
        return ((x + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    u8 = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a[..., 0] if a.shape[-1] == 1 else a)) for a in u8]
