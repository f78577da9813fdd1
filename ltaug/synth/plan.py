"""What to synthesize: how many new images per class, and which seed each one gets (torch-free).

Two ways to ask (method: one of them):
  per_class N   N new images for every (selected) class;
  fill_to N     top every class up to N images counting its real ones, so a head class with >= N gets none.
`classes` restricts either to some class names.

Seeds. Image k (0, 1, 2, ...) of class y gets `seed = base + k * C + y` (C = number of classes, base = 2^32 * the
recipe seed): unique across the whole folder, stable when the plan grows, and unbounded in k, so the filter can
draw replacements (k = N, N+1, ...) without ever reusing a seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from rich.markup import escape
from rich.table import Table

from ltaug.config.synth import MAX_PER_CLASS, MAX_PLAN_IMAGES, SynthConfig
from ltaug.data.longtail import group_of
from ltaug.errors import LtaugError

SEED_BASE = 2**32


@dataclass
class PlanRow:
    label: int
    name: str
    real: int  # real training images of this class
    new: int  # synthetic images to have in the folder when done

    @property
    def total(self) -> int:
        return self.real + self.new


@dataclass
class Plan:
    rows: list[PlanRow]
    classes: list[str]  # all class names of the generator, indexed by label
    mode: str  # "per_class" or "fill_to"
    n: int
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(r.new for r in self.rows)

    def counts(self) -> dict[int, int]:
        """label -> planned new images (only labels in the plan)."""
        return {r.label: r.new for r in self.rows}

    def seed_of(self, label: int, k: int) -> int:
        return image_seed(label, k, len(self.classes), self.seed)

    def to_json(self) -> dict:
        return {"mode": self.mode, "n": self.n, "seed": self.seed, "classes": self.classes,
                "total_new": self.total, "seed_rule": "seed = 2**32 * recipe_seed + k * num_classes + label",
                "rows": [asdict(r) | {"total": r.total} for r in self.rows], **self.meta}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        rows = [PlanRow(r["label"], r["name"], r["real"], r["new"]) for r in d["rows"]]
        return cls(rows, list(d["classes"]), d["mode"], int(d["n"]), int(d.get("seed", 0)))


def image_seed(label: int, k: int, num_classes: int, seed: int = 0) -> int:
    """The seed of image k (0-based) of class `label`; distinct for every (label, k)."""
    return SEED_BASE * int(seed) + int(k) * int(num_classes) + int(label)


def seed_index(seed: int, num_classes: int, base_seed: int = 0) -> tuple[int, int]:
    """Inverse of image_seed: (label, k)."""
    rest = int(seed) - SEED_BASE * int(base_seed)
    return rest % num_classes, rest // num_classes


def make_plan(classes: Sequence[str], real_counts: Sequence[int], *, per_class: int = 0, fill_to: int = 0,
              only: Sequence[str] | None = None, seed: int = 0) -> Plan:
    """The plan for a generator trained on `classes` with `real_counts` real images each.

    Exactly one of per_class / fill_to must be > 0 (the CLI flags --per-class / --fill-to). `only` restricts to
    class names (error on an unknown name). Raises LtaugError on bad input.
    """
    classes = [str(c) for c in classes]
    if len(real_counts) != len(classes):
        raise LtaugError(f"the generator has {len(classes)} class names but {len(real_counts)} real counts")
    if per_class < 0 or fill_to < 0:
        bad, v = ("--per-class", per_class) if per_class < 0 else ("--fill-to", fill_to)
        raise LtaugError(f"{bad} {v}: must be a positive number of images")
    if per_class > 0 and fill_to > 0:
        raise LtaugError(f"--per-class {per_class} and --fill-to {fill_to} both given; choose one")
    if per_class == 0 and fill_to == 0:
        raise LtaugError("nothing to synthesize: give --per-class N (N new images per class) or --fill-to N "
                         "(top every class up to N), a positive number (recipe keys synth.per_class / synth.fill_to)")
    labels = list(range(len(classes)))
    if only:
        index = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in only if c not in index]
        if unknown:
            shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
            raise LtaugError(f"--classes: unknown class name '{unknown[0]}'; this generator's classes are: {shown}")
        labels = sorted({index[c] for c in only})
    rows = []
    for y in labels:
        real = int(real_counts[y])
        new = per_class if per_class > 0 else max(0, fill_to - real)
        rows.append(PlanRow(y, classes[y], real, new))
    mode, n = ("per_class", per_class) if per_class > 0 else ("fill_to", fill_to)
    flag = "--per-class" if per_class > 0 else "--fill-to"
    if n > MAX_PER_CLASS:
        raise LtaugError(f"{flag} {n}: at most {MAX_PER_CLASS:,} images per class are planned; use a smaller number")
    total = sum(r.new for r in rows)
    if total > MAX_PLAN_IMAGES:
        raise LtaugError(f"{flag} {n}: the plan would draw {total:,} images for {len(rows)} classes; at most "
                         f"{MAX_PLAN_IMAGES:,} per synthesis: lower {flag}, or split the work with --classes")
    return Plan(rows, classes, mode, n, seed)


def plan_for(generator, cfg: SynthConfig, seed: int = 0) -> Plan:
    """The plan a recipe's `synth` section asks of a generator (anything with `classes` and `counts`, e.g. a
    LoadedGenerator)."""
    return make_plan(generator.classes, generator.counts, per_class=cfg.per_class, fill_to=cfg.fill_to,
                     only=cfg.classes or None, seed=seed)


def plan_table(plan: Plan, title: str = "") -> Table:
    """A rich Table of the plan (label, class, real, new, total, group)."""
    groups = group_of([r.real for r in plan.rows]) if plan.rows else []
    colors = {"many": "blue", "medium": "yellow", "few": "red"}
    how = f"--per-class {plan.n}" if plan.mode == "per_class" else f"--fill-to {plan.n}"
    table = Table(title=title or f"synthesis plan ({how}): {plan.total:,} new images")
    for col, justify in (("label", "right"), ("class", "left"), ("real", "right"), ("new", "right"),
                         ("total", "right"), ("group", "left")):
        table.add_column(col, justify=justify)
    for r, g in zip(plan.rows, groups):
        table.add_row(str(r.label), escape(r.name), f"{r.real:,}", f"{r.new:,}", f"{r.total:,}", f"[{colors[g]}]{g}[/]")
    return table
