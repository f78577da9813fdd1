"""Classifier folders in timm's format: `timm.create_model("local-dir:...", pretrained=True)` after `import ltaug`
gives the trained weights, and timm's own data config + transform on PIL images give ltaug's predictions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ltaug  # noqa: F401  (what a timm user imports: registers the CIFAR ResNets)
from ltaug.classify.checkpoint import load_classifier, predict_logits, read_checkpoint, write_timm_files
from ltaug.classify.init import init_from
from ltaug.classify.models import build_model
from ltaug.classify.train import train_classifier
from ltaug.cli import app
from ltaug.config import load_recipe
from ltaug.data import load_dataset
from ltaug.errors import LtaugError
from ltaug.synth.filter import ConfidenceFilter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(out, model="cifar_resnet8", epochs=3, loss="ldam"):
    recipe = load_recipe(None, ["device=cpu", f"classifier.model={model}", f"classifier.epochs={epochs}",
                                f"classifier.loss={loss}", "classifier.flip=false", "classifier.batch_size=64",
                                "classifier.lr=0.05", "classifier.warmup_epochs=0.5"])
    return train_classifier(recipe, out, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """CIFAR ResNet-8 with LDAM's cosine head, 3 epochs on MNIST-LT (the recipe's 16x16, 1 channel): ~5 s."""
    out = tmp_path_factory.mktemp("timm") / "classifier-real"
    torch.set_num_threads(1)
    return out, _train(out)


def test_timm_loads_the_trained_classifier_and_its_own_transform_matches_ltaug(trained):
    import timm
    from timm.data import create_transform, resolve_data_config

    out = trained[0]
    ckpt = read_checkpoint(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "cifar_resnet8" and cfg["num_classes"] == 10
    assert cfg["label_names"] == [str(d) for d in range(10)]
    pcfg = cfg["pretrained_cfg"]
    res = ckpt["meta"]["resolution"]
    assert res == 16 and pcfg["input_size"] == [1, res, res] and pcfg["crop_pct"] == 1.0  # the training resolution
    assert pcfg["mean"] == pytest.approx(ckpt["meta"]["mean"]) and pcfg["std"] == pytest.approx(ckpt["meta"]["std"])
    assert pcfg["mean"][0] != pytest.approx(0.485)  # the data's normalization, not ImageNet's

    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert model.normed_head  # the LDAM cosine head comes back from model_args
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
    assert list(model.pretrained_cfg["label_names"]) == [str(d) for d in range(10)]

    data_cfg = resolve_data_config(model=model)
    assert data_cfg["input_size"] == (1, 16, 16)
    transform = create_transform(**data_cfg)
    test = load_dataset("mnist-lt", "test")
    x = torch.stack([transform(Image.fromarray(img[:, :, 0], "L")) for img in test.images])
    with torch.no_grad():
        logits_timm = model(x).numpy()
    own, meta = load_classifier(out)
    logits_ltaug = predict_logits(own, meta, test.images)
    assert np.allclose(logits_timm, logits_ltaug, atol=1e-5)
    acc = float((logits_timm.argmax(1) == test.labels).mean())
    assert acc == pytest.approx(trained[1]["top1"]) and acc > 0.2  # the balanced test set: chance is 0.1


def test_a_timm_only_folder_loads_through_ltaug_and_a_changed_head_goes_back_to_timm(trained, tmp_path):
    out, _ = trained
    only = tmp_path / "from-the-hub"
    only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (only / name).write_bytes((out / name).read_bytes())
    model, meta = load_classifier(only)
    assert meta["classes"] == [str(d) for d in range(10)] and meta["in_chans"] == 1 and meta["resolution"] == 16
    assert meta["normed_head"] and meta["logit_scale"] == 30.0  # LDAM's s, kept for probabilities
    test = load_dataset("mnist-lt", "test")
    ref, ref_meta = load_classifier(out)
    assert np.allclose(predict_logits(model, meta, test.images[:64]), predict_logits(ref, ref_meta, test.images[:64]))

    old = tmp_path / "trained-before"  # a folder without the timm files gets them from its checkpoint
    old.mkdir()
    (old / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    write_timm_files(old)
    assert json.loads((old / "config.json").read_text()) == json.loads((out / "config.json").read_text())

    f = ConfidenceFilter(str(only), 0.5, [str(d) for d in range(10)])  # --filter-classifier takes one too
    assert len(f.sha256) == 64 and f.confidence(test.images[:4], test.labels[:4]).shape == (4,)


def test_timm_options_work_or_are_refused_never_ignored():
    import timm

    feats = timm.create_model("test_cifar_resnet", features_only=True, in_chans=1)
    shapes = [tuple(t.shape[1:]) for t in feats(torch.zeros(2, 1, 32, 32))]
    assert shapes == [(4, 32, 32), (4, 32, 32), (8, 16, 16), (16, 8, 8)]
    assert feats.feature_info.channels() == [4, 4, 8, 16]
    for bad in ({"drop_path_rate": 0.1}, {"global_pool": "max"}, {"img_size": 64}):
        with pytest.raises(LtaugError, match=next(iter(bad))):
            timm.create_model("cifar_resnet8", **bad)
    with pytest.raises(LtaugError, match="no pretrained weights"):
        timm.create_model("cifar_resnet32", pretrained=True)


def test_the_cifar_resnets_speak_timms_feature_checkpointing_and_layer_decay_api():
    """What timm's train.py --grad-checkpointing / --layer-decay and its feature tools call."""
    import timm
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    model = timm.create_model("test_cifar_resnet", in_chans=1, num_classes=3)
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    final, taps = model.forward_intermediates(x)
    assert [tuple(t.shape[1:]) for t in taps] == [(4, 32, 32), (4, 32, 32), (8, 16, 16), (16, 8, 8)]
    torch.testing.assert_close(final, model.forward_features(x))
    torch.manual_seed(0)  # the same initial weights
    feats = timm.create_model("test_cifar_resnet", features_only=True, in_chans=1, num_classes=3)
    for a, b in zip(feats.eval()(x), taps, strict=True):  # the same taps as features_only
        torch.testing.assert_close(a, b)
    last = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True, stop_early=True)
    assert [t.shape[1] for t in last] == [4, 8]
    # gradient checkpointing recomputes the blocks: the same loss and gradients
    model.train()
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    # layer-wise decay: the stem, one group per block, the head last
    assert model.group_matcher() == {"stem": r"^stem", "blocks": r"^stages\.(\d+)\.(\d+)"}
    opt = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) == 5 and scales[-1] == 1.0  # stem + 3 blocks + head
    pruned = timm.create_model("test_cifar_resnet", in_chans=1)
    assert pruned.prune_intermediate_layers([2]) == [2] and pruned.forward_features(x).shape[1] == 8


def test_a_classifier_export_is_a_timm_repository_that_hf_hub_loads(trained, tmp_path, monkeypatch):
    """`ltaug export CLASSIFIER` / `RUN --classifier NAME`: the timm files at the repository root (timm's hf-hub:
    reads config.json and model.safetensors there, served here from the folder as the Hub would) and a card."""
    import timm
    import timm.models._hub as timm_hub
    from huggingface_hub import ModelCard
    from huggingface_hub.errors import EntryNotFoundError

    out, res = trained
    exp = tmp_path / "clf-export"
    r = CliRunner().invoke(app, ["export", str(out.parent), "--classifier", "real", "--out", str(exp),
                                 "--license", "apache-2.0"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in exp.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    def hub_download(repo_id, filename, revision=None, cache_dir=None, **kw):  # the repository is the folder
        path = exp / filename
        if repo_id != "me/ltaug-clf" or not path.is_file():
            raise EntryNotFoundError(f"{repo_id}/{filename}")
        return str(path)

    monkeypatch.setattr(timm_hub, "hf_hub_download", hub_download)
    model = timm.create_model("hf-hub:me/ltaug-clf", pretrained=True).eval()
    ckpt = read_checkpoint(out)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    assert timm.data.resolve_data_config(model=model)["input_size"] == (1, 16, 16)
    card = ModelCard.load(exp / "README.md").data
    assert (card.library_name, card.pipeline_tag, card.license) == ("timm", "image-classification", "apache-2.0")
    accs = {e.metric_config: e.metric_value for e in card.eval_results}
    assert accs["overall"] == pytest.approx(res["top1"]) and set(accs) == {"overall", "many", "medium", "few"}
    # the classifier folder itself works too; a folder that is not a classifier export is never replaced
    r = CliRunner().invoke(app, ["export", str(out), "--out", str(exp)])
    assert r.exit_code == 0, r.output
    (exp / "mine.txt").write_text("x")
    r = CliRunner().invoke(app, ["export", str(out), "--out", str(exp)])
    assert r.exit_code == 2 and "--out" in r.output and (exp / "mine.txt").is_file()
    r = CliRunner().invoke(app, ["export", str(out.parent), "--classifier", "nope"])
    assert r.exit_code == 2 and "classifier-nope" in r.output


def test_a_stock_timm_model_gets_the_same_files(tmp_path):
    import timm

    out = tmp_path / "classifier-resnet"
    res = _train(out, model="test_resnet", epochs=1, loss="ce")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 10
    assert cfg["pretrained_cfg"]["input_size"] == [1, 16, 16]
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    ckpt = read_checkpoint(out)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    assert res["timm"] == {"config": "config.json", "weights": "model.safetensors"}


def test_init_takes_the_weights_and_keeps_the_head_only_for_the_same_classes(trained, tmp_path):
    out, _ = trained
    ckpt = read_checkpoint(out)
    for source in (out, out / "checkpoint.pt"):
        model, _ = build_model("cifar_resnet8", 10, 1, normed_head=True)
        done = init_from(model, str(source), "cifar_resnet8", [str(d) for d in range(10)])
        assert done["head"] == "kept"
        assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    model, _ = build_model("cifar_resnet8", 3, 1, normed_head=True)
    fresh = model.state_dict()["fc.weight"].clone()
    assert init_from(model, str(out), "cifar_resnet8", ["a", "b", "c"])["head"] == "fresh"
    assert torch.equal(model.state_dict()["fc.weight"], fresh)
    assert torch.equal(model.state_dict()["stem.0.weight"], ckpt["model"]["stem.0.weight"])
    with pytest.raises(LtaugError, match="--model cifar_resnet8"):
        init_from(build_model("test_cifar_resnet", 10, 1)[0], str(out), "test_cifar_resnet",
                  [str(d) for d in range(10)])
    with pytest.raises(LtaugError, match="cosine head"):  # a linear head where the source has LDAM's cosine one
        init_from(build_model("cifar_resnet8", 10, 1)[0], str(out), "cifar_resnet8", [str(d) for d in range(10)])


def test_train_classifier_init_from_a_folder_through_the_cli(trained, tmp_path):
    out, _ = trained
    result = CliRunner().invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--model",
                                      "cifar_resnet8", "--loss", "ldam", "--epochs", "1", "--init", str(out),
                                      "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "classifier-real" / "results.json").read_text())
    assert saved["init"]["head"] == "kept" and saved["init"]["init"] == str(out)


@pytest.mark.parametrize("flag", ["--init", "--filter-classifier"])
def test_a_hub_id_offline_names_the_flag_and_exits_2(tmp_path, flag, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    if flag == "--init":
        result = CliRunner().invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--init",
                                          "nobody-here/no-such-classifier"])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert not (tmp_path / "run").exists()  # nothing left behind
    else:
        with pytest.raises(LtaugError) as e:
            ConfidenceFilter("nobody-here/no-such-classifier", 0.5, ["0"])
        text = str(e.value)
    assert flag in text and "offline" in text and "nobody-here/no-such-classifier" in text


def test_import_ltaug_registers_with_timm_without_importing_torch():
    code = ("import sys, importlib.util, ltaug; assert 'torch' not in sys.modules; "
            "importlib.util.find_spec('timm'); import diffusers, timm; "  # diffusers looks timm up first
            "print(timm.is_model('cifar_resnet32'), timm.is_model('test_cifar_resnet'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_init_and_pretrained_together_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--init", str(tmp_path),
                                      "--pretrained"])
    assert result.exit_code == 2 and "choose one" in result.output, result.output
