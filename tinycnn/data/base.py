"""Containers shared by every dataset source: `ArrayDataset`, `DatasetInfo`, `DatasetSplits`, and the errors."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset could not be found, read or trusted. The message says which file and what to do."""


class ChecksumError(DatasetError):
    """A file's MD5 is not the official one."""


class LayoutError(DatasetError):
    """A file has the wrong keys, shapes, dtypes or label values."""


class DatasetNotFoundError(DatasetError):
    """The file is in none of the lookup places and could not be downloaded."""


@dataclass
class ArrayDataset:
    """Images and labels held in memory.

    images: float32 (N, C, H, W), values in [0, 1].
    labels: int64 (N,) class indices, or (N, L) 0/1 for multi-label tasks.
    `ds[i]` gives `(images[i], labels[i])`; `i` may be an int, a slice or an index array.
    """
    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if not isinstance(self.images, np.ndarray) or not isinstance(self.labels, np.ndarray):
            raise TypeError(f"images and labels must be numpy arrays, got {type(self.images).__name__} "
                            f"and {type(self.labels).__name__}")
        if self.images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got shape {self.images.shape}")
        if self.labels.ndim not in (1, 2) or len(self.labels) != len(self.images):
            raise ValueError(f"labels must have shape (N,) or (N, L) with N={len(self.images)}, "
                             f"got shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], self.labels[idx]

    def subset(self, indices) -> "ArrayDataset":
        """A new dataset holding the given rows (copies)."""
        idx = np.asarray(indices)
        return ArrayDataset(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class DatasetInfo:
    """What a user (and a run's config.json) needs to know about a loaded dataset.

    task: "binary-class", "multi-class", "multi-label, binary-class" or "ordinal-regression".
    class_names: one name per class (per label for multi-label).
    source: the file or folder the data came from, or "generated" (synthetic).
    md5: the verified MD5 of the source file (MedMNIST only), else None.
    """
    name: str
    task: str
    class_names: tuple
    n_channels: int
    image_size: int
    n_samples: dict
    source: str
    md5: str = None
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        """JSON-able form (for config.json / metrics.json)."""
        return {"name": self.name, "task": self.task, "class_names": list(self.class_names),
                "n_classes": self.n_classes, "n_channels": self.n_channels, "image_size": self.image_size,
                "n_samples": dict(self.n_samples), "source": self.source, "md5": self.md5, **self.extra}


@dataclass
class DatasetSplits:
    """The train / val / test splits of one dataset plus its `DatasetInfo`."""
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    info: DatasetInfo

    def split(self, name: str) -> ArrayDataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def __iter__(self):
        return iter((self.train, self.val, self.test))
