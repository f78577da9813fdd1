"""Paired comparisons over seeds, the way every results table of ltaug reports a claim: method A and method B share
the seed, the data and the plan; the table gives the mean of the per-seed differences with its 95% t-interval and on
how many seeds A beat B."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy.stats import t as student_t


@dataclass
class Paired:
    n: int
    mean: float  # mean of a_i - b_i
    lo: float  # 95% t-interval of the mean difference
    hi: float
    wins: int  # seeds where a is better than b (higher, or lower when lower_is_better)
    lower_is_better: bool = False

    def text(self, scale: float = 1.0, digits: int = 1) -> str:
        """'+3.2 [-1.0, 7.4], 4/5' (the difference, its interval, the wins); '–' without a pair."""
        if self.n == 0:
            return "–"
        f = f"{{:+.{digits}f}}"
        return (f"{f.format(self.mean * scale)} [{f.format(self.lo * scale)}, {f.format(self.hi * scale)}], "
                f"{self.wins}/{self.n}")


def paired(a: Sequence[Optional[float]], b: Sequence[Optional[float]], lower_is_better: bool = False) -> Paired:
    """The paired difference a - b over the seeds where both exist (n >= 2 for an interval)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    d = [x - y for x, y in pairs]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, 0, lower_is_better)
    m = statistics.fmean(d)
    half = student_t.ppf(0.975, n - 1) * statistics.stdev(d) / math.sqrt(n) if n > 1 else math.nan
    wins = sum((x < y) if lower_is_better else (x > y) for x, y in pairs)
    return Paired(n, m, float(m - half), float(m + half), wins, lower_is_better)


def mean_std(values: Sequence[Optional[float]], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± sd' (sample sd over seeds) of the values that exist, each multiplied by `scale`."""
    v = [x * scale for x in values if x is not None]
    if not v:
        return "–"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.{digits}f} ± {sd:.{digits}f}"
