"""tinycnn.data: datasets, transforms and mini-batch loading, in NumPy only.

Loading a dataset
-----------------
    from tinycnn import data
    ds = data.load_dataset("pneumoniamnist", data_dir=None)   # or "synthetic", or "path/to/folder"
    ds.train.images   # float32 (N, C, H, W) in [0, 1]
    ds.train.labels   # int64 (N,)  ((N, L) of 0/1 for the multi-label chestmnist)
    ds.val, ds.test   # same; ds.split("test") by name
    ds.info           # DatasetInfo: name, task, class_names, n_classes, n_channels, image_size,
                      #   n_samples, source (file/folder/"generated"), md5; .to_dict() is JSON-able

`load_dataset(name, data_dir=None, download=True, size=28, seed=0, progress=None, synthetic_sizes=None)`:
  - a MedMNIST 2D name (`data.names()`; metadata in `data.MEDMNIST[name]` / `data.get_info(name)`) ->
    `<name>.npz` looked up in `data_dir`, `$TINYCNN_DATA_DIR`, `~/.cache/tinycnn`, else downloaded
    (tqdm bar, MD5-verified, atomic). Files with a wrong MD5 or layout raise `ChecksumError`/`LayoutError`;
    missing + offline raises `DatasetNotFoundError` saying where to put the file. All are `DatasetError`
    (a ValueError) with a one-line message the CLI can print as is.
  - "synthetic" -> `make_synthetic(...)`: discs vs irregular blobs, binary, no download
    (sizes 2000/400/400 at 28x28 unless `synthetic_sizes=(n_train, n_val, n_test)`; `seed` picks the images).
  - "synthetic-multilabel" -> `make_synthetic_multilabel(...)`: 4 labels (disc, square, cross, ring
    present), task "multi-label, binary-class" like ChestMNIST; same sizes and seeding as "synthetic".
  - a path to `<medmnist name>.npz` -> that file, MD5- and layout-checked.
  - an existing directory -> `load_image_folder(path, size=size, seed=seed)`: one sub-folder per class,
    train/val/test sub-folders used when present, else a seeded stratified 80/10/10 split.
`data.dataset_table(data_dir)` lists every known dataset with where its file is found and whether its
MD5 verifies (for `tinycnn datasets`). `data.status(name, data_dir)` does it for one.

Batches and augmentation
------------------------
    from tinycnn.data import DataLoader, transforms as T
    aug = T.Compose([T.RandomHorizontalFlip(), T.RandomAffine(10, translate=0.05, scale=(0.9, 1.1))])
    # or aug = T.parse_augment("hflip,rotate=10,shift=0.05")  (the CLI's --augment string)
    loader = DataLoader(ds.train, batch_size=128, shuffle=True, seed=0, transform=aug, drop_last=False)
    for epoch in range(E):
        loader.set_epoch(epoch)                 # optional: iterating again moves to the next epoch itself
        for xb, yb in loader: ...               # xb float32 (B, C, H, W), yb int64 (B,)
    loader.iter_epoch(e, start_batch=k)         # resume inside an epoch; order depends on (seed, epoch) only

Transforms take `(x, rng=None)` with x (N, C, H, W) and are vectorised over the batch (see
`tinycnn.data.transforms`). Normalisation (`T.Normalize(mean, std)`, `T.Standardize()`) is a transform too.

Conversion (for `tinycnn convert`) is in `tinycnn.data.convert.convert_paths(inputs, out_dir, window=None,
sidecar=False) -> list[Path]` (DICOM needs the `dicom` extra: pip install tinycnn[dicom]).
Metrics live in `tinycnn.metrics`.
"""
from __future__ import annotations

from pathlib import Path

from . import transforms  # noqa: F401
from .base import (ArrayDataset, ChecksumError, DatasetError, DatasetInfo, DatasetNotFoundError,  # noqa: F401
                   DatasetSplits, LayoutError)
from .folder import load_image_folder, stratified_split  # noqa: F401
from .loader import DataLoader  # noqa: F401
from .medmnist import cache_dir, find_file, load_medmnist, search_dirs, status  # noqa: F401
from .registry import MEDMNIST, MedMNISTInfo, get_info, names  # noqa: F401
from .synthetic import MULTILABEL_NAME, make_synthetic, make_synthetic_multilabel  # noqa: F401

SYNTHETIC = "synthetic"
SYNTHETIC_MULTILABEL = MULTILABEL_NAME


def known_datasets() -> list:
    """Every dataset name `load_dataset` accepts besides folders: the synthetic sets and the MedMNIST 2D names."""
    return [SYNTHETIC, SYNTHETIC_MULTILABEL] + names()


def load_dataset(name, data_dir=None, download=True, size=28, seed=0, progress=None,
                 synthetic_sizes=None) -> DatasetSplits:
    """Load a dataset by name or folder path; see the module docstring for what each kind returns."""
    if not isinstance(name, (str, Path)):
        raise TypeError(f"dataset must be a name or a folder path, got {type(name).__name__}")
    key = str(name)
    if key.lower() == SYNTHETIC:
        sizes = synthetic_sizes or (2000, 400, 400)
        return make_synthetic(*sizes, size=size, seed=seed)
    if key.lower() == SYNTHETIC_MULTILABEL:
        sizes = synthetic_sizes or (2000, 400, 400)
        return make_synthetic_multilabel(*sizes, size=size, seed=seed)
    if key.lower().removesuffix(".npz") in MEDMNIST:
        if size != 28:
            raise ValueError(f"size for MedMNIST datasets must be 28 (the 28x28 files), got {size}")
        return load_medmnist(key, data_dir=data_dir, download=download, progress=progress)
    path = Path(key).expanduser()
    if path.is_file() and path.suffix == ".npz" and path.stem.lower() in MEDMNIST:
        # an explicit MedMNIST file: verified like any other copy, searched first in its own folder
        return load_medmnist(path.stem.lower(), data_dir=path.parent, download=False, progress=progress)
    if path.is_dir():
        return load_image_folder(key, size=size, seed=seed)
    raise DatasetError(f"unknown dataset {key!r}: not a directory and not one of {', '.join(known_datasets())}")


def dataset_table(data_dir=None, verify=True) -> list:
    """One row per known dataset (for `tinycnn datasets`): name, task, n_classes, n_channels, n_samples,
    path (where the file is found, None if nowhere, "generated" for synthetic), verified (True/False/None)."""
    rows = [{"name": SYNTHETIC, "task": "binary-class", "n_classes": 2, "n_channels": 1,
             "n_samples": {"train": 2000, "val": 400, "test": 400}, "path": "generated", "verified": None,
             "error": None},
            {"name": SYNTHETIC_MULTILABEL, "task": "multi-label, binary-class", "n_classes": 4, "n_channels": 1,
             "n_samples": {"train": 2000, "val": 400, "test": 400}, "path": "generated", "verified": None,
             "error": None}]
    for n in names():
        info = MEDMNIST[n]
        st = status(n, data_dir, verify=verify)
        rows.append({"name": n, "task": info.task, "n_classes": info.n_classes, "n_channels": info.n_channels,
                     "n_samples": info.n_samples, **st})
    return rows
