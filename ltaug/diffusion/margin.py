"""`margin: auto`: DiffROP's hinge margin measured on the model itself (method.md §3: "measure D for random class
pairs on a trained plain DDPM and take a high quantile").

Over the first `auto_steps` steps the loss runs without its overlap term (DDPM exactly) while the distance D of
every kept (positive, negative) pair is recorded from step auto_steps/2 on; at step auto_steps the margin becomes
the `auto_quantile` of those values (all ranks pooled) and is fixed for the rest of the run. The state travels in
the checkpoint, so a resumed run keeps its margin (or keeps measuring).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ltaug.config.generator import GeneratorConfig
from ltaug.device import Distributed
from ltaug.errors import LtaugError


class MarginCalibrator:
    def __init__(self, g: GeneratorConfig):
        self.cfg = g.diffrop
        self.auto = g.margin_auto
        self.margin: Optional[float] = None if (self.auto or not g.uses_overlap) else float(g.diffrop.margin)
        self.calibration: Optional[dict] = None
        self.values: list[float] = []

    @property
    def measuring(self) -> bool:
        """True while margin auto has not been calibrated yet: the loss then only measures D."""
        return self.auto and self.margin is None

    def observe(self, step: int, D: torch.Tensor) -> None:
        """Record the D values of one micro-batch (NaN where the label was dropped) at optimizer step `step`."""
        if self.measuring and step >= self.cfg.auto_steps // 2:
            d = D.detach().float()
            self.values.extend(d[~torch.isnan(d)].cpu().tolist())

    def step_done(self, step: int, dist: Distributed) -> bool:
        """After optimizer step `step`: calibrate when its time has come. True when the margin was just fixed."""
        if not (self.measuring and step >= self.cfg.auto_steps):
            return False
        values = dist.gather(self.values)
        if not values:
            raise LtaugError("generator.diffrop.margin auto: no value of D was measured (every label was dropped?); "
                             "raise generator.diffrop.auto_steps or give the margin as a number")
        arr = np.asarray(values, dtype=np.float64)
        self.margin = float(np.quantile(arr, self.cfg.auto_quantile))
        self.calibration = {"margin": self.margin, "quantile": self.cfg.auto_quantile, "distance": self.cfg.distance,
                            "steps": [self.cfg.auto_steps // 2, self.cfg.auto_steps], "num_values": int(arr.size),
                            "D_quantiles": {str(q): float(np.quantile(arr, q)) for q in (0.1, 0.5, 0.9, 0.99)},
                            "calibrated_at_step": step}
        return True

    def state(self) -> dict:
        """What a checkpoint's meta keeps of the calibration."""
        return {"margin": self.margin, "calibration": self.calibration, "calibration_values": list(self.values)}

    def load(self, meta: dict) -> None:
        self.calibration = meta.get("calibration")
        if self.auto and self.calibration is not None:
            self.margin = float(self.calibration["margin"])
        self.values = list(meta.get("calibration_values", []))
