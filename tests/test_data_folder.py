import numpy as np
import pytest
from PIL import Image

from tinycnn import data


def _make_folder(root, counts, mode="L", size=(10, 8), ext=".png"):
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(a, mode=None).save(d / f"img_{i}{ext}")


def test_stratified_split_sizes(tmp_path):
    counts = {"benign": 50, "malignant": 20, "normal": 31}
    _make_folder(tmp_path / "ds", counts)
    ds = data.load_dataset(str(tmp_path / "ds"), size=16, seed=3)
    assert ds.info.class_names == ("benign", "malignant", "normal") and ds.info.task == "multi-class"
    # per class: val = test = round(0.1 n), train = rest
    expect = {0: (40, 5, 5), 1: (16, 2, 2), 2: (25, 3, 3)}
    for k, (tr, va, te) in expect.items():
        assert (ds.train.labels == k).sum() == tr
        assert (ds.val.labels == k).sum() == va
        assert (ds.test.labels == k).sum() == te
    assert ds.train.images.shape == (81, 1, 16, 16) and ds.train.images.dtype == np.float32
    assert ds.info.n_samples == {"train": 81, "val": 10, "test": 10}


def test_split_is_seeded_and_disjoint(tmp_path):
    _make_folder(tmp_path / "ds", {"a": 30, "b": 30})
    a = data.load_image_folder(tmp_path / "ds", seed=1)
    b = data.load_image_folder(tmp_path / "ds", seed=1)
    c = data.load_image_folder(tmp_path / "ds", seed=2)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.test.images, c.test.images)
    flat = lambda s: {im.tobytes() for im in s.images}  # noqa: E731
    assert not (flat(a.train) & flat(a.test)) and not (flat(a.val) & flat(a.test))
    tr, va, te = data.stratified_split(np.repeat([0, 1], 30), seed=1)
    assert len(set(tr) | set(va) | set(te)) == 60


def test_existing_train_val_test_folders_are_used(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        _make_folder(tmp_path / "ds" / split, {"cat": n, "dog": n}, mode="RGB", ext=".jpg")
    ds = data.load_dataset(tmp_path / "ds", size=12)
    assert len(ds.train) == 8 and len(ds.val) == 4 and len(ds.test) == 6
    assert ds.info.n_channels == 3 and ds.train.images.shape[1:] == (3, 12, 12)
    assert ds.info.extra["split"] == "folders" and ds.info.task == "binary-class"


def test_train_and_test_folders_get_val_from_train(tmp_path):
    _make_folder(tmp_path / "ds" / "train", {"cat": 18, "dog": 9})
    _make_folder(tmp_path / "ds" / "test", {"cat": 4, "dog": 4})
    ds = data.load_dataset(tmp_path / "ds", size=8)
    assert ds.info.class_names == ("cat", "dog")          # not ("test", "train")
    assert [(s.labels == 0).sum() for s in ds] == [16, 2, 4] and [(s.labels == 1).sum() for s in ds] == [8, 1, 4]
    flat = lambda s: {im.tobytes() for im in s.images}  # noqa: E731
    assert not (flat(ds.train) & flat(ds.val))
    assert ds.info.extra["split"] == "folders, val 1/9 of train"


@pytest.mark.parametrize("splits", [("train",), ("train", "val"), ("val", "test")])
def test_partial_split_folders_are_an_error(tmp_path, splits):
    for split in splits:
        _make_folder(tmp_path / "ds" / split, {"cat": 3, "dog": 3})
    with pytest.raises(data.DatasetError, match="expected train/, val/ and test/"):
        data.load_dataset(tmp_path / "ds", size=8)


def test_grayscale_pixels_and_resize(tmp_path):
    d = tmp_path / "ds"
    for cls in ("x", "y"):
        (d / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((28, 28), 51 * (cls == "y"), np.uint8)).save(d / cls / f"{i}.png")
    ds = data.load_image_folder(d)
    assert ds.info.n_channels == 1
    allx = np.concatenate([ds.train.images, ds.val.images, ds.test.images])
    ally = np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels])
    np.testing.assert_allclose(allx[ally == 1], 0.2, atol=1e-7)
    np.testing.assert_allclose(allx[ally == 0], 0.0)


def test_gray_jpeg_saved_as_rgb_is_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (tmp_path / "ds" / cls).mkdir(parents=True)
        for i in range(5):
            g = rng.integers(0, 256, (12, 12), dtype=np.uint8)
            Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "ds" / cls / f"{i}.jpg", quality=90)
    assert data.load_image_folder(tmp_path / "ds").info.n_channels == 1


def test_folder_errors(tmp_path):
    with pytest.raises(data.DatasetError, match="does not exist or is not a directory"):
        data.load_image_folder(tmp_path / "missing")
    _make_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(data.DatasetError, match="expected at least 2 class sub-folders.*found 1"):
        data.load_image_folder(tmp_path / "one")
    _make_folder(tmp_path / "empty", {"a": 3})
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(data.DatasetError, match=r"class folder\(s\) \['b'\] hold no images"):
        data.load_image_folder(tmp_path / "empty")
    _make_folder(tmp_path / "broken", {"a": 3, "b": 3})
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(data.DatasetError, match="bad.png: cannot read image"):
        data.load_image_folder(tmp_path / "broken")
