"""Every measure of a compare_methods.py record as paired differences to a reference method, whichever way each
points: accuracy per group (both classifier losses), KID and FID per group, and the judge's agreement and leakage per
group, each as the mean difference with its 95% t-interval and the wins over the seeds.

  python benchmarks/paired_table.py benchmarks/results/compare_mnist5.json --reference ddpm
"""

from __future__ import annotations

import argparse
import json

from ltaug.config.data import GROUPS
from ltaug.stats import paired


def measures(row: dict) -> dict[str, tuple[float | None, bool, float]]:
    """name -> (value, lower is better, scale for the table)."""
    out = {}
    for loss in ("ce", "balanced_softmax"):
        for g in GROUPS:
            out[f"accuracy {g}, {loss} (points)"] = ((row.get(f"acc_synth_{loss}") or {}).get(g), False, 100)
    for metric, scale in (("kid", 1000), ("fid", 1)):
        for g in GROUPS:
            name = f"{metric.upper()}{'×10³' if scale == 1000 else ''} {g}"
            out[name] = ((row.get(metric) or {}).get(g), True, scale)
    for g in ("many", "medium", "few"):
        j = (row.get("judge") or {}).get(g) or {}
        out[f"judge agreement {g} (points)"] = (j.get("agreement"), False, 100)
        out[f"judge leakage into head {g} (points)"] = (j.get("leakage_into_head"), True, 100)
    return out


def table(record: dict, reference: str) -> str:
    rows = record["rows"]
    ref = {r["seed"]: measures(r) for r in rows if r["method"] == reference}
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != reference]
    lines = [f"| measure | {' | '.join(f'{m} − {reference}' for m in methods)} |",
             "|---|" + "---|" * len(methods)]
    names = list(next(iter(ref.values())))
    for name in names:
        cells = []
        for m in methods:
            mine = {r["seed"]: measures(r) for r in rows if r["method"] == m}
            seeds = sorted(set(mine) & set(ref))
            lower, scale = ref[seeds[0]][name][1], ref[seeds[0]][name][2]
            p = paired([mine[s][name][0] for s in seeds], [ref[s][name][0] for s in seeds], lower_is_better=lower)
            cells.append(p.text(scale=scale, digits=2 if scale == 1000 else 1))
        if any(c != "–" for c in cells):  # a measure the record did not compute is left out
            lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("record")
    ap.add_argument("--reference", default="ddpm")
    args = ap.parse_args()
    print(table(json.load(open(args.record)), args.reference))


if __name__ == "__main__":
    main()
