"""MedMNIST v2 2D datasets: find `<name>.npz`, download it if needed, verify MD5 and layout, load arrays.

Lookup order for `<name>.npz` (first directory that holds the file wins):
  1. `data_dir` (the CLI's `--data-dir`),
  2. `$TINYCNN_DATA_DIR`,
  3. the user cache `~/.cache/tinycnn` (`$XDG_CACHE_HOME/tinycnn` when that is set).
A file found there is trusted only after its MD5 equals an official one and its arrays have the official
layout; otherwise a `ChecksumError` / `LayoutError` names the file, the expected and the actual value (it
is never silently skipped or replaced). If the file is nowhere, it is downloaded from the official record
into the first of those directories that is writable (`download=True`); set `TINYCNN_OFFLINE=1` to forbid
network access. The download streams into a temporary file in the target directory, verifies the MD5
and renames it into place, so a killed download never leaves a broken `<name>.npz`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .base import ArrayDataset, ChecksumError, DatasetInfo, DatasetNotFoundError, DatasetSplits, LayoutError
from .registry import SPLITS, MedMNISTInfo, get_info

ENV_DATA_DIR = "TINYCNN_DATA_DIR"
ENV_OFFLINE = "TINYCNN_OFFLINE"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The user cache directory, `~/.cache/tinycnn` (or `$XDG_CACHE_HOME/tinycnn`)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "tinycnn"


def search_dirs(data_dir=None) -> list:
    """The directories searched for `<name>.npz`, in lookup order (duplicates removed)."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_dir())
    out = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_file(name: str, data_dir=None):
    """Path of the first `<name>.npz` in `search_dirs(data_dir)`, or None. Does not verify it."""
    info = get_info(name)
    for d in search_dirs(data_dir):
        p = d / info.filename
        if p.is_file():
            return p
    return None


def file_md5(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path, info: MedMNISTInfo):
    """Return the official `Release` whose MD5 equals the file's; ChecksumError otherwise."""
    actual = file_md5(path)
    release = info.release_for_md5(actual)
    if release is None:
        expected = " or ".join(info.md5s if len(set(info.md5s)) > 1 else info.md5s[:1])
        raise ChecksumError(f"{path}: MD5 mismatch for {info.filename}: expected {expected}, got {actual} "
                            f"(corrupted or not the official file; delete it and retry, or replace it with "
                            f"the official file from {info.url})")
    return release


def _expected_image_shape(info: MedMNISTInfo):
    return (28, 28) if info.n_channels == 1 else (28, 28, 3)


def check_layout(arrays, info: MedMNISTInfo, n_samples: dict, path="<arrays>") -> None:
    """Check keys, dtypes, shapes, split sizes and label range of a MedMNIST archive; LayoutError if wrong.

    arrays: mapping key -> ndarray (an opened npz works). `n_samples`: expected split sizes.
    """
    keys = set(arrays.keys()) if hasattr(arrays, "keys") else set(arrays.files)
    wanted = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [k for k in wanted if k not in keys]
    if missing:
        raise LayoutError(f"{path}: missing arrays {missing}: expected keys {wanted}, found {sorted(keys)}")
    img_shape = _expected_image_shape(info)
    n_labels = info.n_classes if info.task.startswith("multi-label") else 1
    for s in SPLITS:
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        n = n_samples[s]
        if x.dtype != np.uint8:
            raise LayoutError(f"{path}: {s}_images dtype: expected uint8, got {x.dtype}")
        if x.shape != (n, *img_shape):
            raise LayoutError(f"{path}: {s}_images shape: expected {(n, *img_shape)}, got {x.shape}")
        if y.shape != (n, n_labels):
            raise LayoutError(f"{path}: {s}_labels shape: expected {(n, n_labels)}, got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise LayoutError(f"{path}: {s}_labels dtype: expected an integer dtype, got {y.dtype}")
        hi = 1 if n_labels > 1 else info.n_classes - 1
        if y.size and (y.min() < 0 or y.max() > hi):
            raise LayoutError(f"{path}: {s}_labels values: expected integers in [0, {hi}], "
                              f"got range [{y.min()}, {y.max()}]")


def _where_to_put(info: MedMNISTInfo, data_dir) -> str:
    places = ", ".join(str(d) for d in search_dirs(data_dir))
    return (f"put {info.filename} (md5 {info.md5}, from {info.url}) in one of: {places} "
            f"(or pass --data-dir DIR / set ${ENV_DATA_DIR})")


def _open_url(url, timeout=60):
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (fixed official https URLs or file:// in tests)


def download(info: MedMNISTInfo, dest_dir, url=None, progress=None, opener=None) -> Path:
    """Download `info.filename` into `dest_dir` atomically and MD5-verified; return the final path.

    url: override of the official URL (tests use file://). progress: True / False / None (None = a tqdm bar
    only when stderr is a terminal). opener: callable(url) -> binary file-like response (tests).
    The bytes go to a temporary file in `dest_dir`; after the MD5 check it is renamed to `<name>.npz`.
    """
    from tqdm.auto import tqdm

    url = url or info.url
    opener = opener or _open_url
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / info.filename
    fd, tmp = tempfile.mkstemp(prefix=f".{info.name}.", suffix=".part", dir=dest_dir)
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            resp = opener(url)
            try:
                total = getattr(resp, "length", None) or None
                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=info.filename,
                           disable=(not progress) if progress is not None else None, leave=False)
                with bar:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
            finally:
                close = getattr(resp, "close", None)
                if close:
                    close()
        actual = h.hexdigest()
        if info.release_for_md5(actual) is None:
            raise ChecksumError(f"downloaded {info.filename} from {url}: MD5 mismatch: expected {info.md5}, "
                                f"got {actual}; the file was discarded")
        os.replace(tmp, final)
        return final
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def locate(name: str, data_dir=None, download_missing=True, progress=None, url=None, opener=None) -> Path:
    """Find (or download) `<name>.npz` following the lookup order; return its path (not yet verified)."""
    info = get_info(name)
    found = find_file(info.name, data_dir)
    if found is not None:
        return found
    if not download_missing or os.environ.get(ENV_OFFLINE, "") not in ("", "0"):
        raise DatasetNotFoundError(f"{info.filename} not found and downloading is off; "
                                   f"{_where_to_put(info, data_dir)}")
    errors = []
    for d in search_dirs(data_dir):
        try:
            return download(info, d, url=url, progress=progress, opener=opener)
        except ChecksumError:
            raise
        except PermissionError as e:  # read-only directory: try the next place
            errors.append(f"{d}: {e.strerror or e}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DatasetNotFoundError(f"{info.filename} not found locally and the download from "
                                       f"{url or info.url} failed ({reason}); offline? "
                                       f"{_where_to_put(info, data_dir)}") from None
    raise DatasetNotFoundError(f"{info.filename}: no writable directory to download into ({'; '.join(errors)}); "
                               f"{_where_to_put(info, data_dir)}")


def to_nchw_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    x = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def load_medmnist(name: str, data_dir=None, download=True, progress=None, url=None, opener=None) -> DatasetSplits:
    """Load MedMNIST dataset `name` (28x28) as float32 (N, C, 28, 28) images in [0, 1] and int64 labels.

    Labels are (N,) for binary/multi-class/ordinal tasks and (N, L) of 0/1 for ChestMNIST (multi-label).
    Raises ChecksumError / LayoutError naming the file, DatasetNotFoundError saying where to put it.
    """
    info = get_info(name)
    path = locate(info.name, data_dir, download_missing=download, progress=progress, url=url, opener=opener)
    release = verify_md5(path, info)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # an MD5-valid file always opens; this guards a file changed underneath us
        raise LayoutError(f"{path}: cannot be read as a .npz archive ({e})") from None
    with npz:
        # each member is decompressed once: read them all, then check and convert the in-memory arrays
        arrays = {k: npz[k] for k in npz.files if k.endswith(("_images", "_labels"))}
    check_layout(arrays, info, release.n_samples, path)
    multilabel = info.task.startswith("multi-label")
    parts = {}
    for s in SPLITS:
        y = arrays.pop(f"{s}_labels").astype(np.int64)
        parts[s] = ArrayDataset(to_nchw_float(arrays.pop(f"{s}_images")), y if multilabel else y.reshape(-1))
    meta = DatasetInfo(name=info.name, task=info.task, class_names=info.class_names, n_channels=info.n_channels,
                       image_size=28, n_samples=dict(release.n_samples), source=str(path), md5=release.md5,
                       extra={"medmnist_release": release.version, "license": info.license})
    return DatasetSplits(parts["train"], parts["val"], parts["test"], meta)


def status(name: str, data_dir=None, verify=True) -> dict:
    """Where `<name>.npz` is found and whether it verifies: {"path": str|None, "verified": bool|None, "error": str|None}.

    For `tinycnn datasets`; never downloads. verify=True checks the MD5 (not the full layout).
    """
    info = get_info(name)
    p = find_file(info.name, data_dir)
    if p is None:
        return {"path": None, "verified": None, "error": None}
    if not verify:
        return {"path": str(p), "verified": None, "error": None}
    try:
        verify_md5(p, info)
        return {"path": str(p), "verified": True, "error": None}
    except ChecksumError as e:
        return {"path": str(p), "verified": False, "error": str(e)}
