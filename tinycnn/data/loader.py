"""`DataLoader`: NumPy mini-batches with seeded shuffling, seeded augmentation and background prefetch.

Order and augmentation depend only on (seed, epoch, batch index):
  permutation for epoch e   = default_rng([seed, e]).permutation(N)            (shuffle=True)
  generator for batch b     = default_rng([seed, e, b, 1])                     (passed to `transform`)
so an epoch can be replayed or resumed exactly (`set_epoch`, `iter_epoch(e, start_batch=k)`,
`state_dict`/`load_state_dict`), whatever the number of worker threads. Batches are produced by a thread
pool (`num_workers`, default 1 when `prefetch > 0`) and yielded in order; NumPy releases the GIL in its
array loops, so augmentation overlaps with training.
"""
from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .base import ArrayDataset


def _as_arrays(dataset):
    """Normalise the accepted inputs to a tuple of equal-length arrays."""
    if isinstance(dataset, ArrayDataset):
        return (dataset.images, dataset.labels)
    if isinstance(dataset, np.ndarray):
        return (dataset,)
    if isinstance(dataset, (tuple, list)) and dataset and all(isinstance(a, np.ndarray) for a in dataset):
        n = len(dataset[0])
        for i, a in enumerate(dataset):
            if len(a) != n:
                raise ValueError(f"dataset arrays must have the same length: array 0 has {n}, array {i} has {len(a)}")
        return tuple(dataset)
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return (np.asarray(dataset.images), np.asarray(dataset.labels))
    return None


class DataLoader:
    """Iterate over a dataset in mini-batches of NumPy arrays.

    dataset: an `ArrayDataset` (yields `(images, labels)`), a tuple/list of arrays with equal first dimension
        (yields a tuple of batches), a single array (yields batches), or any object with `__len__` and
        `__getitem__(int)` returning a tuple of arrays/numbers (items are stacked).
    batch_size: samples per batch. shuffle: new seeded permutation each epoch. seed: int (None draws one
        from `tinycnn.random.generator("cpu")`, so `tinycnn.manual_seed` fixes it). drop_last: drop the
        final short batch. transform: callable(images, rng) applied to the first array of each batch.
    prefetch: batches prepared ahead in background threads (0 = synchronous). num_workers: threads
        (0 = one thread when prefetch > 0). Iterating again starts the next epoch (`epoch` counts up).
    """

    def __init__(self, dataset, batch_size=64, shuffle=False, seed=None, drop_last=False, transform=None,
                 prefetch=2, num_workers=0):
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(prefetch, numbers.Integral) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        if not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self._arrays = _as_arrays(dataset)
        if self._arrays is None and not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"dataset must be an ArrayDataset, array(s) or a sized indexable object, "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        if seed is None:
            from .. import random as _random
            seed = int(_random.generator("cpu").integers(0, 2 ** 31 - 1))
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.prefetch = int(prefetch)
        self.num_workers = int(num_workers)
        self.epoch = 0

    @property
    def n_samples(self) -> int:
        return len(self._arrays[0]) if self._arrays is not None else len(self.dataset)

    def __len__(self) -> int:
        n = self.n_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch` (int64 indices)."""
        n = self.n_samples
        if self.shuffle:
            return np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        return np.arange(n)

    def set_epoch(self, epoch: int) -> None:
        """The next `iter(loader)` yields epoch `epoch`."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]))

    def _make_batch(self, epoch, b, idx):
        if self._arrays is not None:
            parts = [a[idx] for a in self._arrays]
        else:
            items = [self.dataset[int(i)] for i in idx]
            if not isinstance(items[0], tuple):
                items = [(it,) for it in items]
            parts = [np.stack([np.asarray(it[k]) for it in items]) for k in range(len(items[0]))]
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, int(epoch), int(b), 1])
            parts[0] = self.transform(parts[0], rng)
        if self._arrays is not None and len(self._arrays) == 1:
            return parts[0]
        return tuple(parts)

    def iter_epoch(self, epoch: int, start_batch: int = 0):
        """Yield the batches of `epoch`, beginning at batch `start_batch` (to resume mid-epoch)."""
        order = self.order(epoch)
        nb = len(self)
        jobs = [(b, order[b * self.batch_size:(b + 1) * self.batch_size]) for b in range(int(start_batch), nb)]
        if self.prefetch == 0 and self.num_workers == 0:
            for b, idx in jobs:
                yield self._make_batch(epoch, b, idx)
            return
        workers = max(1, self.num_workers)
        depth = max(1, self.prefetch) + workers - 1
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinycnn-loader")
        pending = []
        try:
            it = iter(jobs)
            for b, idx in it:
                pending.append(pool.submit(self._make_batch, epoch, b, idx))
                if len(pending) > depth:
                    break
            while pending:
                fut = pending.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(self._make_batch, epoch, *nxt))
                yield fut.result()
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)
