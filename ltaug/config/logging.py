"""The `logging` section of a recipe: where the training curves of the generator and the classifiers go.

metrics.jsonl is the source of truth and always written; TensorBoard and Weights & Biases are extra views of the
same records (ltaug.curves), written by the main process only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config.fields import Section, opt
from ltaug.errors import LtaugError

BACKENDS = ("jsonl", "tensorboard", "wandb")


@dataclass
class LoggingConfig(Section):
    KEY = "logging"

    backends: list[str] = opt(["jsonl"], "where training curves go: jsonl (metrics.jsonl, always written), "
                                         "tensorboard (event files in the stage's tb/ folder), wandb (pip install "
                                         "'ltaug[wandb]'; WANDB_MODE=offline is respected)")
    wandb_project: str = opt("ltaug", "wandb project")
    wandb_entity: str = opt("", "wandb entity (user or team; empty = wandb's default)")
    wandb_name: str = opt("", "wandb run name (empty = RUN_DIR_NAME/STAGE, e.g. 00003-mnist_lt-ddpm/generator)")

    def validate(self) -> None:
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad:
            raise LtaugError(f"recipe key 'logging.backends': unknown backend {bad[0]!r}; valid backends: "
                             f"{', '.join(BACKENDS)} (e.g. --set 'logging.backends=[jsonl, tensorboard]')")

    @property
    def extra(self) -> list[str]:
        """The backends beside metrics.jsonl, each once, in the given order."""
        return [b for b in dict.fromkeys(self.backends) if b != "jsonl"]
