import numpy as np
import pytest

from tinycnn import data


def test_synthetic_shapes_balance_and_range():
    ds = data.load_dataset("synthetic", synthetic_sizes=(200, 40, 60), seed=0)
    assert ds.train.images.shape == (200, 1, 28, 28) and ds.train.images.dtype == np.float32
    assert ds.train.labels.dtype == np.int64 and np.bincount(ds.train.labels).tolist() == [100, 100]
    assert len(ds.val) == 40 and len(ds.test) == 60
    assert ds.train.images.min() >= 0 and ds.train.images.max() <= 1
    assert ds.info.class_names == ("disc", "blob") and ds.info.source == "generated"


def test_synthetic_is_deterministic_and_seed_dependent():
    a = data.make_synthetic(50, 10, 10, seed=4)
    b = data.make_synthetic(50, 10, 10, seed=4)
    c = data.make_synthetic(50, 10, 10, seed=5)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.train.images, c.train.images)
    # a split does not depend on the other splits' sizes
    d = data.make_synthetic(80, 10, 10, seed=4)
    np.testing.assert_array_equal(a.val.images, d.val.images)


def test_synthetic_options():
    ds = data.make_synthetic(10, 2, 2, size=32, channels=3, seed=0)
    assert ds.train.images.shape == (10, 3, 32, 32) and ds.info.n_channels == 3
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        data.make_synthetic(10, 2, 2, channels=2)


def test_synthetic_is_learnable_by_a_small_cnn():
    """A tiny CNN (PyTorch, as an independent reference) gets > 90% test accuracy in 5 epochs."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = data.make_synthetic(1600, 200, 400, seed=1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 7 * 7, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = data.DataLoader(ds.train, batch_size=32, shuffle=True, seed=0)
    for _ in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb))
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(torch.from_numpy(ds.test.images)).argmax(1).numpy()
    torch.set_num_threads(threads)
    assert (pred == ds.test.labels).mean() > 0.9
