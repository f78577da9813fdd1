"""The data layer: long-tail profile, groups, every source (real files, real readers), and bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltaug.data import class_groups, load_dataset, longtail_counts, select_longtail
from ltaug.errors import LtaugError, LtaugFailure

CIFAR10_LT_R100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


# ----------------------------------------------------------------------------------------------- profile and groups


def test_cifar10_lt_counts_are_the_published_ones():
    assert longtail_counts(5000, 10, 100) == CIFAR10_LT_R100
    assert sum(CIFAR10_LT_R100) == 12406


def test_cifar100_lt_counts_sum_and_groups():
    counts = longtail_counts(500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 5
    assert sum(counts) == 10847
    groups = class_groups(counts)
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [35, 35, 30]


def test_other_ratios_and_step_profile():
    assert longtail_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert longtail_counts(5000, 10, 1) == [5000] * 10
    assert longtail_counts(500, 4, 10, profile="step") == [500, 500, 50, 50]
    with pytest.raises(LtaugError, match="must be >= 1"):
        longtail_counts(5000, 10, 0.5)
    with pytest.raises(LtaugError, match="profile"):
        longtail_counts(5000, 10, 100, profile="linear")


def test_group_boundaries():
    # many > 100, medium 20..100 inclusive, few < 20
    assert class_groups([101, 100, 20, 19]) == {"many": [0], "medium": [1, 2], "few": [3]}


def test_subset_is_deterministic_for_a_seed_and_changes_with_it():
    labels = np.repeat(np.arange(5), 40)
    counts = longtail_counts(40, 5, 10)
    a = select_longtail(labels, counts, seed=0)
    b = select_longtail(labels, counts, seed=0)
    c = select_longtail(labels, counts, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.sort(a), np.sort(c))
    assert np.bincount(labels[a], minlength=5).tolist() == counts


# ----------------------------------------------------------------------------------------------- embedded MNIST-LT


def test_mnist_lt_embedded_default():
    train = load_dataset("mnist-lt")
    test = load_dataset("mnist-lt", split="test")
    assert train.images.shape[1:] == (32, 32, 1) and train.images.dtype == np.uint8
    assert train.counts == longtail_counts(400, 10, 100)
    assert test.counts == [100] * 10
    assert train.classes == [str(d) for d in range(10)]
    # 28x28 digits padded with a black 2-pixel border; real digits have ink in the middle
    assert train.images[:, :2].max() == 0 and train.images[:, :, -2:].max() == 0
    assert train.images[:, 8:24, 8:24].mean() > 30
    # train and test are disjoint rows of the same 5,000 digits
    flat = lambda d: {img.tobytes() for img in d.images}  # noqa: E731
    assert not flat(train) & flat(test)


def test_mnist_lt_ratio_and_seed_are_honoured():
    a = load_dataset("mnist-lt", imbalance_ratio=10, subset_seed=3)
    b = load_dataset("mnist-lt", imbalance_ratio=10, subset_seed=3)
    assert a.counts == longtail_counts(400, 10, 10)
    np.testing.assert_array_equal(a.images, b.images)


# ----------------------------------------------------------------------------------------------- CIFAR via torchvision


def _write_cifar10(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """The real pickled batch format: 5 train batches + test batch + batches.meta; rows are R, G, B planes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    parts = np.array_split(np.arange(len(images)), 5)
    for i, idx in enumerate(parts, 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "data": rows[idx],
                         "labels": labels[idx].tolist(), "filenames": [f"{j}.png" for j in idx]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": rows[:20], "labels": labels[:20].tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes, "num_cases_per_batch": 10, "num_vis": 3072}, f)


def test_cifar10_lt_through_torchvisions_reader(tmp_path, shared_data):
    with np.load(shared_data / "cifar10_test.npz") as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    keep = np.concatenate([np.flatnonzero(labels == c)[:40] for c in range(10)])  # 40 real images per class
    _write_cifar10(tmp_path, images[keep], labels[keep], classes)

    ds = load_dataset("cifar10-lt", data_root=tmp_path, imbalance_ratio=10)
    assert ds.counts == longtail_counts(40, 10, 10)
    assert ds.classes == classes and ds.images.shape[1:] == (32, 32, 3)
    # every kept image is one of the real source images of its class, pixel for pixel (channel order survived)
    source = {(images[i].tobytes(), int(labels[i])) for i in keep}
    assert all((img.tobytes(), int(y)) in source for img, y in zip(ds.images, ds.labels))
    # the same seed picks the same images; the test split is read as it is
    np.testing.assert_array_equal(ds.images, load_dataset("cifar10-lt", data_root=tmp_path, imbalance_ratio=10).images)
    assert len(load_dataset("cifar10-test", data_root=tmp_path)) == 20
    assert load_dataset("cifar10-train", data_root=tmp_path).counts == [40] * 10  # balanced: the FID reference


def test_cifar_missing_says_where_and_which_flag(tmp_path):
    with pytest.raises(LtaugError, match=r"cifar-10-batches-py.*--download"):
        load_dataset("cifar10-lt", data_root=tmp_path)


def test_cifar_download_calls_torchvision(tmp_path, monkeypatch):
    """--download goes through torchvision's downloader (the network is not reachable here, so intercept it)."""
    from torchvision.datasets import CIFAR10

    called = {}

    def fake_download(self):
        called["root"] = self.root
        raise OSError("network unreachable in tests")

    monkeypatch.setattr(CIFAR10, "download", fake_download)
    with pytest.raises(LtaugFailure, match="could not fetch CIFAR-10 from https://.*cifar-10-python.tar.gz into .*"
                                           "network unreachable in tests.*extract it into"):
        load_dataset("cifar10-lt", data_root=tmp_path, download=True)
    assert Path(called["root"]) == tmp_path


# ----------------------------------------------------------------------------------------------- npz


def test_shared_npz_files_load_with_published_counts(shared_data):
    lt = load_dataset(f"npz:{shared_data / 'cifar10_lt_r100_train.npz'}")
    assert lt.counts == CIFAR10_LT_R100
    assert lt.classes[0] == "airplane" and lt.classes[-1] == "truck"
    lt100 = load_dataset(f"npz:{shared_data / 'cifar100_lt_r100_train.npz'}")
    assert len(lt100) == 10847 and lt100.counts[0] == 500 and lt100.counts[-1] == 5
    test = load_dataset(f"npz:{shared_data / 'cifar10_test.npz'}")
    assert test.counts == [1000] * 10
    means = test.images.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(means, [0.4942, 0.4851, 0.4504], atol=1e-3)


def test_corrupt_npz_names_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(LtaugError, match="bad.npz"):
        load_dataset(f"npz:{bad}")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(LtaugError, match="missing array"):
        load_dataset(f"npz:{wrong}")


# ----------------------------------------------------------------------------------------------- folders


def _digits_tree(root: Path) -> None:
    mnist = load_dataset("mnist-lt", split="test")
    for c, size in [("3", 40), ("7", 64)]:
        d = root / c
        d.mkdir(parents=True)
        for i, img in enumerate(mnist.images[mnist.labels == int(c)][:3]):
            Image.fromarray(img[:, :, 0]).resize((size, size)).save(d / f"{i}.png")
    Image.new("RGB", (50, 30), (200, 10, 10)).save(root / "7" / "wide.jpg")


def test_folder_mixed_sizes_resized_and_cropped(tmp_path):
    _digits_tree(tmp_path)
    ds = load_dataset(f"folder:{tmp_path}", resolution=16)
    assert ds.classes == ["3", "7"] and ds.counts == [3, 4]
    assert ds.images.shape == (7, 16, 16, 3)  # one colour image makes the set RGB
    red = ds.images[ds.labels == 1][-1]  # the 50x30 red image, center-cropped
    assert red[..., 0].mean() > 150 and red[..., 1].mean() < 40
    gray = load_dataset(f"folder:{tmp_path}", resolution=16, channels=1)
    assert gray.images.shape == (7, 16, 16, 1)


def test_folder_bad_file_and_empty_class(tmp_path):
    _digits_tree(tmp_path)
    (tmp_path / "3" / "notes.dat").write_text("not an image")
    with pytest.raises(LtaugError, match="notes.dat"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "3" / "notes.dat").unlink()
    (tmp_path / "9").mkdir()
    with pytest.raises(LtaugError, match=r"class folder .*9 is empty"):
        load_dataset(f"folder:{tmp_path}")


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(LtaugError, match="valid: mnist-lt, cifar10-lt"):
        load_dataset("imagenet-lt")


def test_validation_split_is_what_the_long_tailed_subset_leaves_out():
    """A held-out split that is neither training nor test data: per class up to 100 of the pool's unused digits
    (the head class, whose 400 digits the profile keeps, has none)."""
    train, val, test = (load_dataset("mnist-lt", s) for s in ("train", "val", "test"))
    assert val.counts == [0] + [100] * 9 and val.name == "mnist-val"
    keys = [{img.tobytes() for img in ds.images} for ds in (train, val, test)]
    assert not keys[0] & keys[1] and not keys[1] & keys[2] and not keys[0] & keys[2]
    assert load_dataset("mnist-lt", "val", val_per_class=30).counts == [0] + [30] * 9
    assert np.array_equal(load_dataset("mnist-lt", "val").images, val.images)  # seeded: the same split every time
    with pytest.raises(LtaugError, match="no built-in validation split.*data.val_dataset"):
        load_dataset("npz:/nonexistent.npz", "val")
