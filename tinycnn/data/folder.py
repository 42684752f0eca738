"""Image folders: `root/<class>/*.png|jpg|...`, optionally already split as `root/{train,val,test}/<class>/`.

Class names are the sorted sub-folder names (class index = position). Without train/val/test sub-folders
the images of each class are shuffled with `default_rng(seed)` and split 80/10/10 (stratified: every class
is split on its own, val and test get round(0.1 * n) each, train the rest). Images are read with Pillow,
converted to grayscale ("L") or RGB, resized to `size` x `size` (bilinear, antialiased) and returned as
float32 (N, C, size, size) in [0, 1] with int64 labels. A folder with only `train/` and `test/` gets its
val split from train (stratified, 1/9 of each class, the same seed); other partial sets of split folders are
an error rather than being read as classes named "train" or "test".
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError, DatasetInfo, DatasetSplits

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def _class_dirs(root: Path):
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(d: Path):
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def read_image(path, size: int, channels: int) -> np.ndarray:
    """One image file -> float32 (channels, size, size) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
                im = Image.fromarray(np.round(a * 255).astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / np.float32(255.0)
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _detect_channels(files) -> int:
    """3 if any of `files` has real colour (channels that differ), else 1."""
    from PIL import Image
    for p in files:
        try:
            with Image.open(p) as im:
                if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                    continue
                rgb = np.asarray(im.convert("RGB"))
        except OSError:
            continue
        spread = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)
        if spread.max() > 3:  # JPEG chroma noise in a gray picture stays within a few levels
            return 3
    return 1


def _load(files_labels, size, channels):
    n = len(files_labels)
    x = np.empty((n, channels, size, size), dtype=np.float32)
    y = np.array([label for _, label in files_labels], dtype=np.int64)

    def one(i):
        x[i] = read_image(files_labels[i][0], size, channels)
    # Pillow releases the GIL while decoding and resizing, so threads load folders of JPEGs in parallel
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(n)))
    return ArrayDataset(x, y)


def stratified_split(labels: np.ndarray, fractions=(0.8, 0.1, 0.1), seed: int = 0):
    """Indices (train, val, test) splitting each class separately; val/test get round(f * n_class) each."""
    labels = np.asarray(labels)
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(f[1] * len(idx)))
        n_test = int(round(f[2] * len(idx)))
        n_val = min(n_val, len(idx))
        n_test = min(n_test, len(idx) - n_val)
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


def load_image_folder(root, size: int = 28, channels=None, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> DatasetSplits:
    """Load an image folder as train/val/test splits (see the module docstring).

    channels: 1 (grayscale), 3 (RGB) or None (3 if any sampled image is colour, else 1).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {str(root)!r} does not exist or is not a directory")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    split_dirs = {s: root / s for s in ("train", "val", "test")}
    present = [s for s, d in split_dirs.items() if d.is_dir()]
    # train/ + test/ without val/ (a common layout): val is split off train, stratified, 1/9 of it
    val_from_train = present == ["train", "test"]
    if present and len(present) < 3 and not val_from_train:
        raise DatasetError(f"image folder {str(root)!r} has split folder(s) {'/, '.join(present)}/ but not "
                           f"{'/, '.join(s for s in split_dirs if s not in present)}/: expected train/, val/ and "
                           f"test/ (or train/ and test/, or one folder per class and no split folders)")
    presplit = bool(present)
    if presplit:
        classes = sorted({d.name for s in present for d in _class_dirs(split_dirs[s])})
    else:
        classes = [d.name for d in _class_dirs(root)]
    if len(classes) < 2:
        raise DatasetError(f"image folder {str(root)!r}: expected at least 2 class sub-folders "
                           f"(root/<class>/*.png or root/train/<class>/...), found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}

    def listing(base):
        out = []
        for c in classes:
            d = base / c
            if d.is_dir():
                out.extend((p, index[c]) for p in _images_in(d))
        return out

    if presplit:
        lists = [listing(split_dirs[s]) if s in present else [] for s in ("train", "val", "test")]
        if val_from_train:
            train_items = lists[0]
            tr, va, _ = stratified_split(np.array([lab for _, lab in train_items]), (8 / 9, 1 / 9, 0.0), seed)
            lists[:2] = [[train_items[i] for i in tr], [train_items[i] for i in va]]
        for s, lst in zip(("train", "val", "test"), lists):
            if not lst:
                raise DatasetError(f"image folder {str(split_dirs[s])!r} holds no images "
                                   f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    else:
        all_items = listing(root)
        counts = np.bincount([lab for _, lab in all_items], minlength=len(classes))
        empty = [c for c, k in zip(classes, counts) if k == 0]
        if empty:
            raise DatasetError(f"image folder {str(root)!r}: class folder(s) {empty} hold no images "
                               f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        tr, va, te = stratified_split(np.array([lab for _, lab in all_items]), fractions, seed)
        lists = [[all_items[i] for i in part] for part in (tr, va, te)]
    if channels is None:
        sample = [p for lst in lists for p, _ in lst[:: max(1, len(lst) // 16)]]
        channels = _detect_channels(sample)
    parts = [_load(lst, size, channels) for lst in lists]
    info = DatasetInfo(name=root.name, task="binary-class" if len(classes) == 2 else "multi-class",
                       class_names=tuple(classes), n_channels=channels, image_size=size,
                       n_samples={s: len(p) for s, p in zip(("train", "val", "test"), parts)},
                       source=str(root), extra={"split": ("folders, val 1/9 of train" if val_from_train else "folders")
                                                if presplit else "stratified 80/10/10",
                                                "seed": int(seed)})
    return DatasetSplits(*parts, info)
