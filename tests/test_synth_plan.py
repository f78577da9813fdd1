"""Plans (per-class / fill-to / classes), the seed rule, and the folder's crash repair, without a generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltaug.errors import LtaugError
from ltaug.synth import folder as F
from ltaug.synth.plan import Plan, image_seed, make_plan, plan_table, seed_index

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_fill_to_tops_up_and_the_head_gets_none():
    p = make_plan(CIFAR10, CIFAR10_LT, fill_to=1000)
    assert p.counts() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 355, 5: 613, 6: 768, 7: 861, 8: 917, 9: 950}
    assert p.total == 4464
    assert [r.total for r in p.rows][4:] == [1000] * 6


def test_per_class_and_classes_restriction():
    p = make_plan(CIFAR10, CIFAR10_LT, per_class=5000, only=["truck", "cat", "truck"])
    assert [(r.label, r.name, r.real, r.new) for r in p.rows] == [(3, "cat", 1077, 5000), (9, "truck", 50, 5000)]
    assert p.total == 10000
    back = Plan.from_json(json.loads(json.dumps(p.to_json())))
    assert back.counts() == p.counts() and back.classes == CIFAR10 and back.mode == "per_class"


@pytest.mark.parametrize("kw,msg", [
    (dict(per_class=0, fill_to=0), "--per-class N"),
    (dict(per_class=-3), "--per-class -3"),
    (dict(fill_to=-1), "--fill-to -1"),
    (dict(per_class=5, fill_to=5), "choose one"),
    (dict(per_class=5, only=["truck", "unicorn"]), "unknown class name 'unicorn'"),
])
def test_bad_plans_name_the_flag(kw, msg):
    with pytest.raises(LtaugError, match=msg):
        make_plan(CIFAR10, CIFAR10_LT, **kw)


def test_seeds_are_unique_stable_and_invertible():
    seeds = {image_seed(y, k, 100, 0) for y in range(100) for k in range(300)}
    assert len(seeds) == 100 * 300
    assert image_seed(7, 3, 10, 0) == 37 and image_seed(7, 3, 10, 2) == 2 * 2**32 + 37
    for y, k, s in [(0, 0, 0), (9, 1234, 5), (3, 7, 1)]:
        assert seed_index(image_seed(y, k, 10, s), 10, s) == (y, k)


def test_plan_table_renders_groups():
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(plan_table(make_plan(CIFAR10, CIFAR10_LT, fill_to=100)))
    text = console.export_text()
    assert "(--fill-to 100): 67 new images" in text  # 17 (ship) + 50 (truck)
    truck = next(line for line in text.splitlines() if "truck" in line)
    assert [c for c in truck.replace("│", " ").split()] == ["9", "truck", "50", "50", "100", "medium"]


def test_class_dirs_are_safe_and_unique():
    assert F.class_dirs(["a/b", "..", "a/b", "", "ok"]) == ["a_b", "class_1_", "a_b_2", "class_3", "ok"]


def test_scan_repairs_what_a_crash_leaves(tmp_path):
    classes = ["x", "y"]
    img = np.zeros((4, 4, 1), np.uint8)
    for d in F.class_dirs(classes):
        (tmp_path / d).mkdir()
    rec = lambda y, k: {"path": f"{classes[y]}/{F.png_name(k * 2 + y)}", "label": y, "seed": k * 2 + y, "k": k}
    good = [rec(0, 0), rec(1, 0), rec(0, 1)]
    for r in good:
        F.write_png(tmp_path / r["path"], img)
    gone = rec(1, 1)  # manifest line whose PNG was deleted
    orphan = rec(1, 2)  # PNG renamed, killed before its manifest line
    F.write_png(tmp_path / orphan["path"], img)
    (tmp_path / "x" / ".00000004.png.123.tmp").write_bytes(b"\x89PNG half")
    lines = [json.dumps(r) for r in good + [good[0], gone]] + ['{"path": "x/000']
    (tmp_path / F.MANIFEST).write_text("\n".join(lines))
    state = F.scan(tmp_path, classes)
    assert sorted(r["seed"] for r in state.records) == [0, 1, 2]
    assert state.repaired == {"torn_or_invalid_lines": 1, "duplicates": 1, "missing_png": 1, "orphan_png": 1,
                              "tmp_files": 1}
    assert not (tmp_path / orphan["path"]).exists()
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["00000000.png", "00000002.png"]
    again = F.scan(tmp_path, classes)  # the manifest was rewritten clean
    assert [r["seed"] for r in again.records] == [0, 1, 2] and not any(again.repaired.values())
    assert state.done_k(0) == {0, 1} and state.done_k(1) == {0}


def test_folder_identity_refuses_mixing(tmp_path):
    settings = {"checkpoint_sha256": "aa", "sampler": "ddim", "steps": 10, "eta": 0.0, "variance": None, "w": 0.0,
                "seed": 0, "clip_x0": False, "filter": None, "classes": ["x", "y"]}
    F.prepare(tmp_path, settings, ["x", "y"], overwrite=False)
    F.prepare(tmp_path, dict(settings), ["x", "y"], overwrite=False)  # same identity: fine
    with pytest.raises(LtaugError, match="checkpoint_sha256.*--overwrite"):
        F.prepare(tmp_path, settings | {"checkpoint_sha256": "bb"}, ["x", "y"], overwrite=False)
    with pytest.raises(LtaugError, match="w: folder has 0.0, this run asks 0.8"):
        F.prepare(tmp_path, settings | {"w": 0.8}, ["x", "y"], overwrite=False)
    (tmp_path / "x").mkdir()
    F.write_png(tmp_path / "x" / "00000000.png", np.zeros((2, 2, 1), np.uint8))
    (tmp_path / "x" / "mine.txt").write_text("user file")
    F.prepare(tmp_path, settings | {"w": 0.8}, ["x", "y"], overwrite=True)
    assert json.loads((tmp_path / F.SETTINGS).read_text())["w"] == 0.8
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["mine.txt"]
    foreign = tmp_path / "foreign"
    (foreign / "x").mkdir(parents=True)
    with pytest.raises(LtaugError, match="no settings.json"):
        F.prepare(foreign, settings, ["x", "y"], overwrite=False)
