import numpy as np
import pytest

from tinycnn.data import ArrayDataset, DataLoader
from tinycnn.data import transforms as T


@pytest.fixture
def ds():
    x = np.arange(23 * 1 * 2 * 2, dtype=np.float32).reshape(23, 1, 2, 2)
    return ArrayDataset(x, np.arange(23, dtype=np.int64))


@pytest.mark.parametrize("prefetch,workers", [(0, 0), (2, 0), (3, 2)])
def test_batching_and_drop_last(ds, prefetch, workers):
    dl = DataLoader(ds, batch_size=5, prefetch=prefetch, num_workers=workers, seed=0)
    sizes = [len(yb) for _, yb in dl]
    assert sizes == [5, 5, 5, 5, 3] and len(dl) == 5
    dl = DataLoader(ds, batch_size=5, drop_last=True, prefetch=prefetch, num_workers=workers, seed=0)
    assert [len(yb) for _, yb in dl] == [5, 5, 5, 5] and len(dl) == 4
    xb, yb = next(iter(dl))
    assert xb.dtype == np.float32 and yb.dtype == np.int64 and xb.shape == (5, 1, 2, 2)


def test_no_shuffle_keeps_order(ds):
    got = np.concatenate([yb for _, yb in DataLoader(ds, batch_size=4, seed=0)])
    np.testing.assert_array_equal(got, np.arange(23))


@pytest.mark.parametrize("workers", [0, 3])
def test_shuffle_is_deterministic_per_seed_and_epoch(ds, workers):
    def epochs(seed, n=3):
        dl = DataLoader(ds, batch_size=4, shuffle=True, seed=seed, num_workers=workers)
        return [np.concatenate([yb for _, yb in dl]) for _ in range(n)]
    a, b, c = epochs(1), epochs(1), epochs(2)
    for e in range(3):
        np.testing.assert_array_equal(a[e], b[e])
        assert sorted(a[e].tolist()) == list(range(23))
    assert not np.array_equal(a[0], a[1])  # a new order each epoch
    assert not np.array_equal(a[0], c[0])


def test_images_stay_paired_with_labels(ds):
    for xb, yb in DataLoader(ds, batch_size=7, shuffle=True, seed=3):
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb * 4)


def test_resume_mid_epoch_and_state_dict(ds):
    aug = T.Compose([T.RandomHorizontalFlip(), T.GaussianNoise(0.1)])
    dl = DataLoader(ds, batch_size=4, shuffle=True, seed=5, transform=aug, num_workers=2)
    full = [list(dl) for _ in range(3)]
    state = {"seed": 5, "epoch": 2}
    dl2 = DataLoader(ds, batch_size=4, shuffle=True, seed=99, transform=aug)
    dl2.load_state_dict(state)
    third = list(dl2)
    for (xa, ya), (xb, yb) in zip(full[2], third):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    tail = list(dl2.iter_epoch(1, start_batch=3))
    assert len(tail) == len(full[1]) - 3
    for (xa, _), (xb, _) in zip(full[1][3:], tail):
        np.testing.assert_array_equal(xa, xb)
    assert dl2.state_dict() == {"seed": 5, "epoch": 3}


def test_threads_do_not_change_results(ds):
    aug = T.Compose([T.RandomRotation(30), T.GaussianNoise(0.1)])
    ref = list(DataLoader(ds, batch_size=4, shuffle=True, seed=2, transform=aug, prefetch=0))
    for workers in (1, 3):
        got = list(DataLoader(ds, batch_size=4, shuffle=True, seed=2, transform=aug, num_workers=workers))
        for (xa, ya), (xb, yb) in zip(ref, got, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_transform_gets_per_batch_generator(ds):
    seen = []

    def record(x, rng):
        seen.append(rng.integers(0, 1 << 30))
        return x + 1
    dl = DataLoader(ds, batch_size=10, transform=record, seed=0, prefetch=0)
    xb, _ = next(iter(dl))
    np.testing.assert_array_equal(xb, ds.images[:10] + 1)
    list(dl)
    assert len(set(seen)) == len(seen)


def test_other_dataset_forms(ds):
    x, y = ds.images, ds.labels
    batches = list(DataLoader((x, y, y * 2), batch_size=10, seed=0))
    assert len(batches[0]) == 3 and batches[0][2][3] == 6
    only = list(DataLoader(x, batch_size=10, seed=0))
    assert isinstance(only[0], np.ndarray) and only[0].shape == (10, 1, 2, 2)

    class ItemSet:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, np.float32), i
    xb, yb = next(iter(DataLoader(ItemSet(), batch_size=5, seed=0)))
    assert xb.shape == (5, 1, 2, 2) and yb.tolist() == [0, 1, 2, 3, 4]


def test_break_early_and_errors_propagate(ds):
    dl = DataLoader(ds, batch_size=2, num_workers=2, seed=0)
    for i, _ in enumerate(dl):
        if i == 1:
            break

    def boom(x, rng):
        raise RuntimeError("transform failed")
    with pytest.raises(RuntimeError, match="transform failed"):
        list(DataLoader(ds, batch_size=2, transform=boom, seed=0))


def test_bad_arguments(ds):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(TypeError, match="dataset must be"):
        DataLoader(3)
    with pytest.raises(ValueError, match="same length: array 0 has 23, array 1 has 3"):
        DataLoader((ds.images, ds.labels[:3]))
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(ds, transform=5)


def test_seed_none_follows_manual_seed(ds):
    import tinycnn
    tinycnn.manual_seed(11)
    a = DataLoader(ds, shuffle=True).seed
    tinycnn.manual_seed(11)
    assert DataLoader(ds, shuffle=True).seed == a
